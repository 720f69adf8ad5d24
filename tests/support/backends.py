"""In-process dispatchers and spool helpers for the worker and reload unit tests."""

from __future__ import annotations

from typing import Any

from dispatchd import EventBackend, Record
from dispatchd.models import Action
from dispatchd.spool import Spool


async def put(spool: Spool, *bodies: dict[str, Any]) -> list[Record]:
    """Validate ``bodies`` as records and append them to ``spool``, as ingest would."""
    records = [Record.model_validate(b) for b in bodies]
    await spool.append([(r.level, r.model_dump_json()) for r in records])
    return records


class Collect(EventBackend):
    """Async per-event dump that records what it got; fails for ids in ``poison``."""

    def __init__(self, name: str = "c", options: Any = None) -> None:
        super().__init__(name, options)
        self.got: list[str] = []
        self.calls = 0
        self.poison: set[str] = set()
        self.fail_times = 0

    async def dump(self, level: int, action: Action, **kwargs: Any) -> None:
        self.calls += 1
        if kwargs["id"] in self.poison:
            raise ValueError(f"poison {kwargs['id']}")
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("down")
        self.got.append(kwargs["id"])
