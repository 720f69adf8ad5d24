"""Senlin's documented example dispatcher, ``JsonDispatcher``, as a dispatchd plugin."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from dispatchd import Action, EventBackend, Record


class JsonOptions(BaseModel):
    """``[dispatchers.jsonfile]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = "var/events.jsonl"
    fsync: bool = False  # also survive a power cut, not just a crash of the daemon


class JsonDispatcher(EventBackend[JsonOptions]):
    """Appends one JSON object per event (the record with its ``id``) to ``path``."""

    async def start(self) -> None:
        Path(self.options.path).parent.mkdir(parents=True, exist_ok=True)

    def dump(self, level: int, action: Action, **kwargs: Any) -> None:
        self.dump_batch([Record(level=level, action=action, **kwargs)])

    def dump_batch(self, events: list[Record]) -> None:
        # Plain def: dispatchd runs it in a thread, so blocking file I/O is fine here.
        lines = "".join(record.model_dump_json(exclude_none=True) + "\n" for record in events)
        with open(self.options.path, "a", encoding="utf-8") as out:
            out.write(lines)
            out.flush()
            if self.options.fsync:
                os.fsync(out.fileno())
