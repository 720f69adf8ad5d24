"""The SQLite store: Senlin's ``event`` table in a file, written by one dedicated-thread connection.

Pointed at a database whose ``event`` table exists (Senlin's own), it writes into it as it is:
no DDL, no index, no journal-mode change. Otherwise it creates the table with Senlin's DDL and
dispatchd's indexes. Queries (``fetch``) run on a second, read-only connection of their own.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.sql import Select

from dispatchd import Unavailable
from dispatchd.sqlite import Connection

from .event_table import check_columns, ddl, row_encoder, sqlite_upsert, table_state
from .store import Reported, Row, compile_query
from .store_url import StoreUrl

SQLITE = sqlite.dialect()
UPSERT = sqlite_upsert()
row_of = row_encoder(SQLITE)


def prepare(conn: sqlite3.Connection) -> bool:
    """Make sure an ``event`` table Senlin can read is there; True if it was created now."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "event" in tables:
        check_columns({row[1] for row in conn.execute("PRAGMA table_info(event)")})
        return False
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in ddl(SQLITE):
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if not tables:  # a database of dispatchd's own: WAL lets readers run beside the writer
        conn.execute("PRAGMA journal_mode=WAL")
    return True


# Settings of this connection only, stored nowhere in the file: a Senlin database is left as it
# is. Random (uuid4) ids put nearly every row on an index page of its own, so a transaction
# dirties a page per row: a larger cache reads fewer of them back, and checkpoints every 10,000
# WAL pages instead of 1,000 write a page dirtied by several transactions once. Together they
# took 500-row upserts into a 300k-row table from 44 to 24 us of CPU per row. A 32 MiB cache did
# no better there, and cost 37 MB more RSS than 2 MiB with a 1M-event backlog (bench/rss.py).
CACHE_KIB = 16 * 1024
WAL_PAGES = 10_000


def tune(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_PAGES}")  # no effect unless in WAL mode


async def _open(path: Path) -> tuple[Connection, bool]:
    # No journal-mode switch here: the file may be Senlin's, and WAL would stay on it for good.
    db = await Connection.open(path, journal_mode=None)
    try:
        created = await db.run(prepare)
        await db.run(tune)
    except BaseException:
        await db.close()
        raise
    return db, created


def _read_only(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA query_only = ON")


class SqliteStore:
    """Senlin's ``event`` table in a SQLite file; batches go in one transaction."""

    dialect = SQLITE
    row_of = staticmethod(row_of)

    def __init__(self, url: StoreUrl, name: str) -> None:
        assert url.sqlite_path is not None
        self.url = url
        self.path = url.sqlite_path
        self.name = name
        self._opening: asyncio.Task[tuple[Connection, bool]] | None = None
        self._db: Connection | None = None
        self._reader: Connection | None = None
        self._reader_lock = asyncio.Lock()
        self._table = "not open yet"

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A task of its own, which a start cut off (timeout, cancellation) does not cancel:
        # close() waits for it and closes what it opened, so no connection thread is left.
        self._opening = asyncio.create_task(_open(self.path),
                                            name=f"{self.name}: opening {self.path}")
        await asyncio.wait({self._opening})
        self._db, created = self._opening.result()
        self._table = table_state(created)

    async def close(self) -> None:
        opening, self._opening, self._db = self._opening, None, None
        async with self._reader_lock:  # a query opening the reader finishes first
            reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()
        if opening is None or opening.cancelled():
            return
        try:
            # Awaited, not waited on: a close cut off in turn cancels the opening, which then
            # closes what it had opened itself.
            db, _ = await opening
        except Exception:  # a failed opening closed what it had opened; start reported why
            return
        await db.close()

    def report(self) -> Mapping[str, Reported]:
        return {"url": self.url.masked, "event_table": self._table}

    async def write(self, rows: list[Row]) -> None:
        db = self._db
        if db is None:
            raise RuntimeError("database dispatcher is not started")
        await db.transaction(lambda conn: conn.executemany(UPSERT, rows))

    async def fetch(self, statement: Select[Any]) -> list[dict[str, Any]]:
        query = compile_query(statement, SQLITE)
        reader = await self._read_connection()
        rows = await reader.run(lambda conn: conn.execute(query.sql, query.params).fetchall())
        return query.dicts(rows)

    async def _read_connection(self) -> Connection:
        """The readers' connection, opened on the first query (it costs a thread)."""
        async with self._reader_lock:
            if self._db is None:
                raise Unavailable("the database dispatcher has not started")
            if self._reader is None:
                reader = await Connection.open(self.path, journal_mode=None)
                try:
                    await reader.run(_read_only)
                except BaseException:
                    await reader.close()
                    raise
                self._reader = reader
            return self._reader
