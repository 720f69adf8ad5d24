"""In-process dispatchers and spool helpers for the worker and reload unit tests."""

from __future__ import annotations

import asyncio
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


class Pipe(EventBackend):
    """A pipelined backend (``submit``) whose futures the test settles with ``settle``.

    With ``auto``, each future settles on the next loop turn, as ``plan`` says for that id: a
    list of what its submissions get in turn (an exception, or ``None`` for delivered; when the
    list runs out, delivered). ``plan`` may also hold ``"hang"``: that submission never settles;
    or a number: it is delivered after that many seconds.
    """

    def __init__(self, name: str = "p", auto: bool = False) -> None:
        super().__init__(name)
        self.auto = auto
        self.plan: dict[str, list[BaseException | str | float | None]] = {}
        self.submitted: list[list[str]] = []  # the ids of each submit call
        self.futures: dict[str, asyncio.Future[None]] = {}  # each id's latest future
        self.delivered: list[str] = []  # ids in the order their futures succeeded
        self.unsettled_at_submit: list[int] = []  # futures not yet settled, after each submit

    async def submit(self, events: list[Record]) -> list[asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        futures = []
        for event in events:
            future: asyncio.Future[None] = loop.create_future()
            self.futures[event.id] = future
            futures.append(future)
            if self.auto:
                steps = self.plan.get(event.id)
                step = steps.pop(0) if steps else None
                if isinstance(step, float):
                    loop.call_later(step, self.settle, event.id, None, future)
                elif step != "hang":
                    loop.call_soon(self.settle, event.id, step, future)
        self.submitted.append([event.id for event in events])
        self.unsettled_at_submit.append(sum(not f.done() for f in self.futures.values()))
        return futures

    def settle(self, id_: str, error: BaseException | str | None = None,
               future: asyncio.Future[None] | None = None) -> None:
        future = future or self.futures[id_]
        if future.done():
            return
        if isinstance(error, BaseException):
            future.set_exception(error)
        else:
            future.set_result(None)
            self.delivered.append(id_)

    async def dump_batch(self, events: list[Record]) -> None:
        raise AssertionError("a pipelined backend gets everything through submit")
