"""The PostgreSQL store, through asyncpg: a batch is one ``INSERT … SELECT FROM unnest(…)``.

One statement per batch whatever its size: each column travels as one array parameter, so the
statement is prepared once and a batch is one round trip (bench/sql_drivers.py compares it with
``VALUES`` lists and ``executemany``). A single statement is its own transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
from asyncpg import exceptions as pg
from sqlalchemy import DateTime, String, Text, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.types import TypeEngine

from .event_table import COLUMNS, EVENT, creation_ddl
from .store import Query, Row
from .store_server import ServerStore

DIALECT = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]
# Replicas starting together on an empty database would race to create the table; the one that
# takes this transaction-scoped lock first creates it, the others then find it.
LOCK_KEY = 0x64697370_61746368  # "dispatch"
COLUMNS_SQL = ("SELECT column_name FROM information_schema.columns"
               " WHERE table_schema = current_schema() AND table_name = 'event'")


def _array_of(type_: TypeEngine[Any]) -> ARRAY[Any]:
    # Unbounded element types: a cast to VARCHAR(36)[] would silently cut longer values, while
    # the insert into the VARCHAR(36) column refuses them, as Senlin's own insert would.
    if isinstance(type_, DateTime):
        return ARRAY(DateTime())
    return ARRAY(Text() if isinstance(type_, Text) else String())


def upsert() -> str:
    """``INSERT … SELECT FROM unnest($1 … $13) ON CONFLICT (id) DO UPDATE``: a column per array."""
    arrays = [bindparam(column.name, type_=_array_of(column.type)) for column in EVENT.columns]
    rows = func.unnest(*arrays).table_valued(*COLUMNS).render_derived()
    stmt = insert(EVENT).from_select(list(COLUMNS), select(*[rows.c[name] for name in COLUMNS]))
    # DO UPDATE, as on SQLite: a redelivered record leaves the row as its last delivery wrote it.
    stmt = stmt.on_conflict_do_update(
        index_elements=[EVENT.c.id],
        set_={name: stmt.excluded[name] for name in COLUMNS if name != "id"},
    )
    compiled = stmt.compile(dialect=DIALECT)
    assert tuple(compiled.positiontup or ()) == COLUMNS  # the arrays are passed in this order
    return str(compiled)


UPSERT = upsert()
# Errors that mean the server cannot be used right now, not that it refused a statement:
# connection (08), operator intervention and shutdown (57), resources such as too many
# connections (53), logins (28), no such database (3D), deadlocks and serialization (40),
# read-only during a failover (25006); InterfaceError: the connection is closed.
OUTAGES: tuple[type[BaseException], ...] = (
    OSError, pg.PostgresConnectionError, pg.OperatorInterventionError,
    pg.InsufficientResourcesError, pg.InvalidAuthorizationSpecificationError,
    pg.InvalidCatalogNameError, pg.TransactionRollbackError, pg.ReadOnlySQLTransactionError,
    pg.InterfaceError,
)

Pool = asyncpg.Pool
Connection = asyncpg.pool.PoolConnectionProxy  # generic in the stubs only


class PostgresStore(ServerStore[Pool, Connection]):
    """Senlin's ``event`` table in a PostgreSQL database."""

    dialect = DIALECT

    async def _create_pool(self, size: int, writer: bool) -> Pool:
        url, settings = self.url, self.settings
        return await asyncpg.create_pool(
            host=url.host, port=url.port, user=url.username, password=url.password,
            database=url.database, ssl=settings.ssl or False,
            min_size=1, max_size=size, timeout=settings.connect_timeout,
            server_settings={"application_name": f"dispatchd {self.name}"},
        )

    async def _close_pool(self, pool: Pool, graceful: bool) -> None:
        if graceful:
            await pool.close()
        else:
            pool.terminate()

    async def _prepare(self, pool: Pool) -> bool:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            statements = creation_ddl({row[0] for row in await conn.fetch(COLUMNS_SQL)}, DIALECT)
            for statement in statements:
                await conn.execute(statement)
            return bool(statements)

    def _acquire(self, pool: Pool) -> AbstractAsyncContextManager[Connection]:
        return pool.acquire()

    async def _write(self, conn: Connection, rows: list[Row]) -> None:
        if len(rows) > 1:
            # One statement may not update a row twice: a record posted twice (same id) in a
            # batch keeps its last delivery, as the SQLite store's row-by-row upsert does.
            rows = list({row[0]: row for row in rows}.values())
        columns = [list(column) for column in zip(*rows, strict=True)]
        try:
            await conn.execute(UPSERT, *columns)
        except BaseException as exc:
            self._abandon(conn, exc)
            raise

    async def _fetch(self, conn: Connection, query: Query) -> Sequence[Iterable[Any]]:
        try:
            return await conn.fetch(query.sql, *query.params)
        except BaseException as exc:
            self._abandon(conn, exc)
            raise

    def _abandon(self, conn: Connection, exc: BaseException) -> None:
        """Cut a connection whose statement was cut off or lost: returning it to the pool
        would wait for the server to confirm a cancel, which a silent server never does."""
        if isinstance(exc, asyncio.CancelledError) or self._is_outage(exc):
            conn.terminate()

    def _is_outage(self, exc: BaseException) -> bool:
        return isinstance(exc, OUTAGES)
