"""SQLite connections that each own one thread; a whole unit of work crosses to it at once.

aiosqlite hands every statement (and every 64 fetched rows) to its thread and back, and those
hand-offs cost more than the statements themselves for the spool's small commits: measured with
bench/sqlite_threads.py, one hand-off per commit doubles single-row commits per second. So the
spool and the ``database`` dispatcher give their thread a whole function to run instead.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
THREAD_PREFIX = "sqlite:"  # every connection's thread is named so: tests look for leaks by it


class Connection:
    """A plain ``sqlite3`` connection used only from its own thread, in autocommit mode."""

    def __init__(self, db: sqlite3.Connection, thread: ThreadPoolExecutor) -> None:
        self._db = db
        self._thread = thread
        self.closed = False

    @classmethod
    async def open(
        cls, path: str | Path, synchronous: str = "NORMAL", journal_mode: str | None = "WAL"
    ) -> Connection:
        """Open ``path`` (switched to ``journal_mode`` unless None); a failure leaves no thread."""
        thread = ThreadPoolExecutor(1, thread_name_prefix=f"{THREAD_PREFIX}{Path(path).name}")

        def connect() -> sqlite3.Connection:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                if journal_mode:
                    db.execute(f"PRAGMA journal_mode={journal_mode}")
                db.execute(f"PRAGMA synchronous={synchronous.upper()}")
                db.execute("PRAGMA busy_timeout=5000")
            except BaseException:
                db.close()
                raise
            return db

        try:
            db = await asyncio.get_running_loop().run_in_executor(thread, connect)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(db, thread)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the connection's thread."""
        if self.closed:
            raise sqlite3.ProgrammingError("the connection is closed")
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, self._db)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` inside ``BEGIN IMMEDIATE .. COMMIT``, rolled back if it raises."""
        return await self.run(lambda db: in_transaction(db, fn))

    async def close(self) -> None:
        """Close the connection, then let its thread end; closing twice is harmless."""
        if self.closed:
            return
        self.closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._db.close)
        finally:
            self._thread.shutdown(wait=True)


def in_transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result
