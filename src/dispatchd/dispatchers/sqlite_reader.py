"""The ``database`` dispatcher's read side on SQLite: a connection of its own for the query API.

Selects run through SQLAlchemy on a second ``dispatchd.sqlite.Connection``, so the writer's
thread never waits behind a query, and values come back typed (``timestamp`` a datetime).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import Select

from dispatchd import Unavailable
from dispatchd.sqlite import Connection


class SqliteReader:
    """A read-only connection and the SQLAlchemy engine over it, used from its thread only."""

    def __init__(self, conn: Connection, engine: Engine) -> None:
        self._conn = conn
        self._engine = engine

    @classmethod
    async def open(cls, path: Path) -> SqliteReader:
        conn = await Connection.open(path, journal_mode=None)  # the writer chose the mode
        try:
            engine = await conn.run(_engine)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, engine)

    async def fetch(self, statement: Select[Any]) -> list[dict[str, Any]]:
        def run(_: sqlite3.Connection) -> list[dict[str, Any]]:
            with self._engine.connect() as conn:
                return [dict(row) for row in conn.execute(statement).mappings()]

        try:
            return await self._conn.run(run)
        except (sqlite3.ProgrammingError, sqlite3.OperationalError, exc.OperationalError) as error:
            raise Unavailable(f"cannot read the event table: {error}") from None  # closed, locked

    async def close(self) -> None:
        await self._conn.close()


def _engine(db: sqlite3.Connection) -> Engine:
    db.execute("PRAGMA query_only = 1")  # a bug here must not write to Senlin's table
    engine = create_engine("sqlite://", creator=lambda: db, poolclass=StaticPool)
    with engine.connect():  # the dialect's first-connect queries, on this thread
        pass
    return engine
