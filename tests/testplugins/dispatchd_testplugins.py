"""Dispatchers that misbehave on purpose, registered through a dist-info on PYTHONPATH."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dispatchd import Action, EventBackend, Record


class FlakyOptions(BaseModel):
    path: str
    fail_file: str  # while this file exists, every dump raises


class Flaky(EventBackend[FlakyOptions]):
    """Plain per-event ``dump`` (no batch path) that fails while ``fail_file`` exists."""

    def dump(self, level: int, action: Action, **kwargs: Any) -> None:
        if os.path.exists(self.options.fail_file):
            raise ConnectionError("flaky sink is down")
        with open(self.options.path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"id": kwargs["id"], "level": level}) + "\n")


class Failing(EventBackend):
    async def dump(self, level: int, action: Action, **kwargs: Any) -> None:
        raise RuntimeError("always fails")


class BadStart(EventBackend):
    async def start(self) -> None:
        raise ConnectionRefusedError("cannot reach the sink")

    async def dump(self, level: int, action: Action, **kwargs: Any) -> None:
        pass


class SlowOptions(BaseModel):
    path: str
    delay: float = 0.1
    calls_file: str | None = None  # a line per call as it begins: a test can wait for one


class Slow(EventBackend[SlowOptions]):
    """Async ``dump_batch`` that sleeps ``delay`` per event before recording the ids."""

    async def dump_batch(self, events: list[Record]) -> None:
        if self.options.calls_file is not None:
            with Path(self.options.calls_file).open("a", encoding="utf-8") as calls:
                calls.write(f"{len(events)}\n")
        await asyncio.sleep(self.options.delay * len(events))
        with Path(self.options.path).open("a", encoding="utf-8") as out:
            out.writelines(f"{event.id}\n" for event in events)


class Hang(EventBackend):
    """Never returns: only the per-call timeout gets the worker out."""

    async def dump(self, level: int, action: Action, **kwargs: Any) -> None:
        await asyncio.Event().wait()


class NotABackend:
    pass


class NoDump(EventBackend):
    """Overrides neither ``dump`` nor ``dump_batch``: rejected when loaded."""

    async def start(self) -> None:
        pass
