"""The ``database`` dispatcher: Senlin's ``event`` table, upserted on the record id."""

from __future__ import annotations

import asyncio
from datetime import UTC
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic_core import to_json

from ..backend import EventBackend
from ..models import Action, Record
from ..sqlite import Connection

COLUMNS = (
    "id", "timestamp", "oid", "oname", "otype", "cluster_id", "level", "user", "project",
    "action", "status", "status_reason", "meta_data",
)

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS event (
    id            TEXT PRIMARY KEY,
    timestamp     TEXT NOT NULL,
    oid           TEXT,
    oname         TEXT,
    otype         TEXT,
    cluster_id    TEXT,
    level         INTEGER NOT NULL,
    user          TEXT,
    project       TEXT,
    action        TEXT,
    status        TEXT,
    status_reason TEXT,
    meta_data     TEXT
);
CREATE INDEX IF NOT EXISTS ix_event_timestamp ON event (timestamp);
CREATE INDEX IF NOT EXISTS ix_event_oid ON event (oid);
CREATE INDEX IF NOT EXISTS ix_event_cluster_id ON event (cluster_id);
"""

UPSERT = (
    f"INSERT INTO event ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
    " ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "id")
)

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


def row_of(record: Record) -> tuple[Any, ...]:
    """The ``event`` row Senlin's database dispatcher would write for this record."""
    d = record.derived()
    ts = record.timestamp
    if ts.utcoffset():
        ts = ts.astimezone(UTC)
    return (
        record.id, ts.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z",
        d.oid, d.oname, d.otype, d.cluster_id, record.level, d.user, d.project, d.action,
        d.status, d.status_reason, to_json(d.meta_data).decode() if d.meta_data else "{}",
    )


async def _open(path: Path) -> Connection:
    db = await Connection.open(path)
    try:
        await db.run(lambda conn: conn.executescript(SQLITE_SCHEMA))
    except BaseException:
        await db.close()
        raise
    return db


def _close_when_opened(opening: asyncio.Future[Connection]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        _closing.add(asyncio.ensure_future(opening.result().close()))
        for task in list(_closing):
            if task.done():
                _closing.discard(task)


_closing: set[asyncio.Future[None]] = set()  # keeps late closes alive until they finish


class DatabaseDispatcher(EventBackend):
    """Stores events in Senlin's ``event`` table; batches go in one transaction."""

    Options = DatabaseOptions

    def __init__(self, name: str, options: BaseModel | None = None) -> None:
        super().__init__(name, options)
        assert isinstance(options, DatabaseOptions)
        self.settings = options
        self._db: Connection | None = None

    async def start(self) -> None:
        path = self.settings.sqlite_path
        path.parent.mkdir(parents=True, exist_ok=True)
        opening = asyncio.ensure_future(_open(path))
        try:
            # Shielded: a start cut off by the worker's timeout must still close what it opened,
            # or the connection's thread outlives the daemon and blocks its exit.
            self._db = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_when_opened)
            raise

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def dump(self, level: int, action: Action, **kwargs: Any) -> None:
        record = Record(level=level, action=action, **kwargs)
        await self.dump_batch([record])

    async def dump_batch(self, events: list[Record]) -> None:
        db = self._db
        if db is None:
            raise RuntimeError("database dispatcher is not started")
        rows = [row_of(record) for record in events]
        await db.transaction(lambda conn: conn.executemany(UPSERT, rows))
