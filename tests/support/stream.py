"""A steady stream of POSTed batches against a daemon, remembering which ids were accepted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp

from .daemon import eventually, post
from .records import record


@dataclass
class Batch:
    sent: float  # time.monotonic() when the POST began
    answered: float  # ... and when its 202 came back
    ids: list[str]


@dataclass
class Stream:
    """Batches of ``size`` records POSTed to ``url`` (the events URL) by one or more writers.

    With ``until_gone``, a connection error ends a writer quietly: the test kills the daemon under
    it. Otherwise it fails the writer. Answers other than 202 are kept in ``errors``.
    """

    url: str
    size: int = 5
    until_gone: bool = False
    pause: float = 0.0  # between a writer's batches
    batches: list[Batch] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def accepted(self) -> list[str]:
        """Every accepted id, in the order the answers came."""
        return [i for batch in self.batches for i in batch.ids]

    def ids(self, sent_after: float = 0.0, answered_before: float = float("inf")) -> set[str]:
        """Ids of the batches sent after and answered before the given ``time.monotonic()``."""
        return {i for batch in self.batches
                if batch.sent >= sent_after and batch.answered <= answered_before for i in batch.ids}

    async def run(self, session: aiohttp.ClientSession) -> None:
        """One writer: POST until ``stop`` is set (or the daemon is gone, with ``until_gone``)."""
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                status, body = await post(session, self.url, [record() for _ in range(self.size)])
            except (aiohttp.ClientError, json.JSONDecodeError):
                if self.until_gone:
                    return
                raise
            if status == 202:
                self.batches.append(Batch(sent, time.monotonic(), body["ids"]))
            else:
                self.errors.append(f"{status}: {body}")
            if self.pause:
                await asyncio.sleep(self.pause)  # pacing on purpose: a steady trickle, not a flood

    async def advance(self, batches: int = 5, timeout: float = 20.0) -> None:
        """Wait until ``batches`` more batches have been accepted than when called."""
        target = len(self.batches) + batches
        await eventually(lambda: len(self.batches) >= target, timeout=timeout)


@contextlib.asynccontextmanager
async def streaming(
    session: aiohttp.ClientSession, url: str, writers: int = 1, *, size: int = 5,
    until_gone: bool = False, pause: float = 0.0,
) -> AsyncIterator[Stream]:
    """Run ``writers`` writers of one ``Stream`` for the ``async with`` body; on leaving, stop
    them and wait for each to finish its request in flight."""
    stream = Stream(url, size=size, until_gone=until_gone, pause=pause)
    tasks = [asyncio.create_task(stream.run(session)) for _ in range(writers)]
    try:
        yield stream
    finally:
        stream.stop.set()
        await asyncio.gather(*tasks)
