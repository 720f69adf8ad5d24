"""A byte budget for request bodies in flight: bounds the daemon's memory under many large POSTs.

Requests are admitted in arrival order while the bytes held stay within the limit; one request
larger than the whole limit is admitted alone, when nothing else is held, so it is not starved.
A request that cannot be admitted within ``wait`` seconds gets ``Busy`` (503 + Retry-After).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .errors import Busy


@dataclass(slots=True)
class _Waiter:
    size: int
    granted: asyncio.Future[None]


class ByteBudget:
    """An asyncio semaphore counted in bytes, first come first served, with a bounded wait."""

    def __init__(self, limit: int, wait: float) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        if wait < 0:
            raise ValueError("wait must not be negative")
        self.limit = limit
        self.wait = wait
        self._held = 0
        self._holders = 0
        # Waiters that gave up stay in the queue, done, until they reach its head: O(1) to leave.
        self._queue: deque[_Waiter] = deque()
        self._waiting = 0

    @property
    def held(self) -> int:
        """Bytes held by admitted requests."""
        return self._held

    @property
    def holders(self) -> int:
        """Requests admitted and not yet released."""
        return self._holders

    @property
    def waiting(self) -> int:
        """Requests waiting to be admitted."""
        return self._waiting

    @asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        """Hold ``size`` bytes for the body of the block; raises ``Busy`` when they do not come."""
        await self._acquire(size)
        try:
            yield
        finally:
            self._release(size)

    async def _acquire(self, size: int) -> None:
        if size < 0:
            raise ValueError("size must not be negative")
        if self._waiting == 0 and self._fits(size):
            self._take(size)
            return
        waiter = _Waiter(size, asyncio.get_running_loop().create_future())
        self._queue.append(waiter)
        self._waiting += 1
        try:
            async with asyncio.timeout(self.wait):
                await waiter.granted
        except TimeoutError:
            self._abandon(waiter)
            raise Busy(
                f"request bodies in flight hold {self._held} of server.max_inflight_bytes "
                f"({self.limit}); {size} more bytes did not fit within {self.wait:g}s"
            ) from None
        except BaseException:  # cancelled (client gone, shutdown): leave no bytes and no gap
            self._abandon(waiter)
            raise

    def _fits(self, size: int) -> bool:
        return self._held == 0 or self._held + size <= self.limit

    def _take(self, size: int) -> None:
        self._held += size
        self._holders += 1

    def _release(self, size: int) -> None:
        self._held -= size
        self._holders -= 1
        self._wake()

    def _abandon(self, waiter: _Waiter) -> None:
        if waiter.granted.done() and not waiter.granted.cancelled():
            # Admitted in the same loop turn the wait ended: hand the bytes on.
            self._release(waiter.size)
            return
        waiter.granted.cancel()
        self._waiting -= 1
        self._wake()  # it may have been the head that kept smaller requests behind it

    def _wake(self) -> None:
        queue = self._queue
        while queue:
            head = queue[0]
            if head.granted.done():
                queue.popleft()
                continue
            if not self._fits(head.size):
                return
            queue.popleft()
            self._waiting -= 1
            self._take(head.size)
            head.granted.set_result(None)
