"""The ``database`` dispatcher: Senlin's ``event`` table, upserted on the record id.

Pointed at a database whose ``event`` table exists (Senlin's own), it writes into it as it is:
no DDL, no index, no journal-mode change. Otherwise it creates the table with Senlin's DDL and
its own indexes. Built on what any plugin may use: the ``dispatchd`` package's exports and
``dispatchd.sqlite``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select

from dispatchd import Action, EventBackend, Record, Unavailable
from dispatchd.sqlite import Connection

from .event_table import ddl, missing_columns, row_encoder, sqlite_upsert
from .sqlite_reader import SqliteReader

SQLITE = sqlite.dialect()
UPSERT = sqlite_upsert()
row_of = row_encoder(SQLITE)

SQLITE_PREFIX = "sqlite:///"


class DatabaseOptions(BaseModel):
    """``[dispatchers.database]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "sqlite:///var/events.db"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith(SQLITE_PREFIX) or url == SQLITE_PREFIX:
            raise ValueError(
                "url must be sqlite:///relative/path or sqlite:////absolute/path"
            )
        return url

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url[len(SQLITE_PREFIX):])


def prepare(conn: sqlite3.Connection) -> bool:
    """Make sure an ``event`` table Senlin can read is there; True if it was created now."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "event" in tables:
        present = {row[1] for row in conn.execute("PRAGMA table_info(event)")}
        if missing := missing_columns(present):
            raise RuntimeError(
                f"the existing event table lacks column(s) {', '.join(missing)}: it is not "
                "Senlin's (run Senlin's migrations, or point url at another database)"
            )
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


async def _open(path: Path) -> tuple[Connection, bool, SqliteReader]:
    # No journal-mode switch here: the file may be Senlin's, and WAL would stay on it for good.
    db = await Connection.open(path, journal_mode=None)
    try:
        created = await db.run(prepare)
        await db.run(tune)
        reader = await SqliteReader.open(path)  # the query API's, so reads never queue writes
    except BaseException:
        await db.close()
        raise
    return db, created, reader


class DatabaseDispatcher(EventBackend[DatabaseOptions]):
    """Stores events in Senlin's ``event`` table; batches go in one transaction."""

    def __init__(self, name: str, options: DatabaseOptions | None = None) -> None:
        super().__init__(name, options)
        self._opening: asyncio.Task[tuple[Connection, bool, SqliteReader]] | None = None
        self._db: Connection | None = None
        self._reader: SqliteReader | None = None
        self._table = "not open yet"

    async def start(self) -> None:
        path = self.options.sqlite_path
        path.parent.mkdir(parents=True, exist_ok=True)
        # A task of its own, which a start cut off (timeout, cancellation) does not cancel:
        # close() waits for it and closes what it opened, so no connection thread is left.
        self._opening = asyncio.create_task(_open(path), name=f"{self.name}: opening {path}")
        await asyncio.wait({self._opening})
        self._db, created, self._reader = self._opening.result()
        self._table = "created by dispatchd" if created else "existing (written as it is)"

    async def close(self) -> None:
        opening, self._opening, self._db, self._reader = self._opening, None, None, None
        if opening is None or opening.cancelled():
            return
        try:
            # Awaited, not waited on: a close cut off in turn cancels the opening, which then
            # closes what it had opened itself.
            db, _, reader = await opening
        except Exception:  # a failed opening closed what it had opened; start reported why
            return
        try:
            await reader.close()
        finally:
            await db.close()

    @property
    def dialect(self) -> Dialect:
        """The query API's selects are shaped for this dialect (``EventStore``)."""
        return SQLITE

    async def fetch(self, statement: Select[Any]) -> list[dict[str, Any]]:
        """Run a select of the query API on the read connection (``EventStore``)."""
        reader = self._reader
        if reader is None:
            raise Unavailable("the database dispatcher is not started")
        return await reader.fetch(statement)

    def report(self) -> Mapping[str, str]:
        return {"url": self.options.url, "event_table": self._table}

    async def dump(self, level: int, action: Action, **kwargs: Any) -> None:
        record = Record(level=level, action=action, **kwargs)
        await self.dump_batch([record])

    async def dump_batch(self, events: list[Record]) -> None:
        db = self._db
        if db is None:
            raise RuntimeError("database dispatcher is not started")
        rows = [row_of(record) for record in events]
        await db.transaction(lambda conn: conn.executemany(UPSERT, rows))
