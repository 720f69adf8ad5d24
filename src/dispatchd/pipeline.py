"""What a pipelined dispatcher holds in flight: records handed to ``submit`` and not yet settled.

The ledger keeps them in spool order. The cursor may pass a record only once it and every record
before it are settled (delivered or dead-lettered): the cursor moves over a settled prefix, so a
crash delivers again what was in flight and never skips it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from .errors import Unavailable
from .models import Record
from .spool import Row


@dataclass(frozen=True)
class Failure:
    """Why a call did not deliver; ``outage`` failures (``Unavailable``) spend no attempt."""

    error: str
    outage: bool = False
    retry_after: float | None = None  # the sink's own wait, from ``Unavailable(retry_after=)``


def failure_of(exc: BaseException, timeout: float) -> Failure:
    """The failure a plugin's exception stands for; ``timeout`` names a ``TimeoutError``."""
    if isinstance(exc, TimeoutError):
        return Failure(f"timed out after {timeout:g}s")
    if isinstance(exc, Unavailable):
        return Failure(f"unavailable: {exc}", outage=True, retry_after=exc.retry_after)
    return Failure(f"{type(exc).__name__}: {exc}")


def outcome(future: asyncio.Future[None], timeout: float) -> Failure | None:
    """``None`` if a settled future means delivered, else why not."""
    if future.cancelled():
        return Failure("cancelled by the dispatcher")
    exc = future.exception()
    return None if exc is None else failure_of(exc, timeout)


def failed_future(exc: BaseException) -> asyncio.Future[None]:
    """A future that already failed with ``exc``, its error marked as seen."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    future.exception()  # retrieved: whoever holds it may stop before it reads it
    return future


def delivered(future: asyncio.Future[None]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


@dataclass(eq=False, slots=True)
class Slot:
    """One record handed over: its outcome, and where the cursor may go once it is settled."""

    row: Row
    record: Record
    future: asyncio.Future[None]
    upto: int  # also covers the rows after it that need no delivery (skipped, for others)
    attempts: int = 0  # failed attempts; outages spend none
    dead: bool = False  # dead-lettered: settled, not delivered

    @property
    def settled(self) -> bool:
        return self.dead or delivered(self.future)


class Ledger:
    """The slots between the cursor and the newest record handed over, in spool order."""

    def __init__(self) -> None:
        self._slots: deque[Slot] = deque()

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def head(self) -> Slot | None:
        return self._slots[0] if self._slots else None

    def add(self, slot: Slot) -> None:
        self._slots.append(slot)

    def pass_over(self, seq: int) -> bool:
        """Rows up to ``seq`` need no delivery: the newest slot carries the cursor past them.

        ``False`` if there is none: nothing is in flight, so the cursor may move there now.
        """
        if not self._slots:
            return False
        self._slots[-1].upto = seq
        return True

    def pop_settled(self) -> tuple[int, int | None]:
        """Drop the settled prefix: how many of it were delivered, and where the cursor may go."""
        count, upto = 0, None
        slots = self._slots
        while slots and slots[0].settled:
            slot = slots.popleft()
            count += not slot.dead
            upto = slot.upto
        return count, upto

    def unsettled(self) -> list[Slot]:
        """Slots neither delivered nor dead-lettered, in order: failed, or still in flight."""
        return [slot for slot in self._slots if not slot.settled]

    def waiting(self) -> list[asyncio.Future[None]]:
        """The futures still in flight."""
        return [slot.future for slot in self._slots if not slot.future.done()]


class Turn:
    """A pipelined worker's turn on the event loop: as long as everything else had before it.

    Between turns the worker yields one loop iteration, in which every other ready task (each
    request being read, validated and committed, every other worker) takes a step; the next turn
    lasts as long as those steps took. While both have work, the worker and the rest of the loop
    each get about half of it: a busy ingest cannot starve delivery, nor a deep backlog ingest.
    Alone, the worker keeps the loop, yielding a moment between fills.
    """

    LONGEST = 0.025  # seconds: a request waits at most about this long for a worker's turn

    def __init__(self) -> None:
        self._began = time.monotonic()
        self._length = 0.0

    def over(self) -> bool:
        return time.monotonic() - self._began >= self._length

    async def pass_on(self) -> None:
        """Yield one loop iteration; the next turn is as long as the others' steps in it."""
        away = time.monotonic()
        await asyncio.sleep(0)
        self._began = time.monotonic()
        self._length = min(self._began - away, self.LONGEST)
