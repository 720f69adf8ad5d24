"""The ``database`` dispatcher: Senlin's ``event`` table, upserted on the record id.

Built on what any plugin may use: the ``dispatchd`` package's exports and ``dispatchd.sqlite``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic_core import to_json

from dispatchd import Action, EventBackend, Record
from dispatchd.sqlite import Connection

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


class DatabaseDispatcher(EventBackend[DatabaseOptions]):
    """Stores events in Senlin's ``event`` table; batches go in one transaction."""

    def __init__(self, name: str, options: DatabaseOptions | None = None) -> None:
        super().__init__(name, options)
        self._opening: asyncio.Task[Connection] | None = None
        self._db: Connection | None = None

    async def start(self) -> None:
        path = self.options.sqlite_path
        path.parent.mkdir(parents=True, exist_ok=True)
        # A task of its own, which a start cut off (timeout, cancellation) does not cancel:
        # close() waits for it and closes what it opened, so no connection thread is left.
        self._opening = asyncio.create_task(_open(path), name=f"{self.name}: opening {path}")
        await asyncio.wait({self._opening})
        self._db = self._opening.result()

    async def close(self) -> None:
        opening, self._opening, self._db = self._opening, None, None
        if opening is None or opening.cancelled():
            return
        try:
            # Awaited, not waited on: a close cut off in turn cancels the opening, which then
            # closes what it had opened itself.
            db = await opening
        except Exception:  # a failed opening closed what it had opened; start reported why
            return
        await db.close()

    async def dump(self, level: int, action: Action, **kwargs: Any) -> None:
        record = Record(level=level, action=action, **kwargs)
        await self.dump_batch([record])

    async def dump_batch(self, events: list[Record]) -> None:
        db = self._db
        if db is None:
            raise RuntimeError("database dispatcher is not started")
        rows = [row_of(record) for record in events]
        await db.transaction(lambda conn: conn.executemany(UPSERT, rows))
