"""The MySQL/MariaDB store, through asyncmy: ``INSERT … VALUES (…),(…) ON DUPLICATE KEY UPDATE``.

asyncmy was measured against aiomysql on the same multi-row upserts (bench/sql_drivers.py,
docs/dispatchers.md) and is the faster. Its ``executemany`` sends an ``INSERT … VALUES`` as
multi-row statements of up to 1 MB each; a batch is those statements in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncmy
from asyncmy.errors import InterfaceError, OperationalError
from sqlalchemy.dialects.mysql import asyncmy as asyncmy_dialect
from sqlalchemy.dialects.mysql import insert

from .event_table import COLUMNS, EVENT, creation_ddl
from .store import Query, Row
from .store_server import ServerStore

DIALECT = asyncmy_dialect.dialect()
LOCK_NAME = "dispatchd.event_table"  # replicas starting together create the table once
LOCK_WAIT = 30
COLUMNS_SQL = ("SELECT column_name FROM information_schema.columns"
               " WHERE table_schema = DATABASE() AND table_name = 'event'")


def upsert() -> str:
    """``INSERT … VALUES (%s, …) ON DUPLICATE KEY UPDATE col = VALUES(col), …``, COLUMNS order."""
    stmt = insert(EVENT)
    # Updating every column, as SQLite's DO UPDATE does. VALUES(col): MariaDB has no row alias,
    # and MySQL 8 still takes VALUES() (deprecated there, not removed).
    stmt = stmt.on_duplicate_key_update({name: stmt.inserted[name] for name in COLUMNS
                                         if name != "id"})
    compiled = stmt.compile(dialect=DIALECT, column_keys=list(COLUMNS))
    assert tuple(compiled.positiontup or ()) == COLUMNS  # the rows are built in this order
    return str(compiled)


UPSERT = upsert()
# Error codes that mean the server cannot be used right now rather than that it refused a
# statement (asyncmy raises OperationalError for both). Client side, 2000-2999: cannot connect,
# unknown host, server gone away, lost connection. Server side: too many connections (1040),
# access denied (1044, 1045), unknown database (1049), shutdown (1053), aborted or broken
# connection (1152, 1158-1161), lock wait timeout (1205), deadlock (1213), read-only during a
# failover (1290, 1836), connection killed (1927), disconnected for inactivity (4031).
SERVER_OUTAGES = frozenset({1040, 1044, 1045, 1049, 1053, 1152, 1158, 1159, 1160, 1161, 1205,
                            1213, 1290, 1836, 1927, 4031})

Pool = asyncmy.Pool
Connection = asyncmy.Connection


def _code(exc: BaseException) -> int:
    code = exc.args[0] if exc.args else 0
    return code if isinstance(code, int) else 0


class MysqlStore(ServerStore[Pool, Connection]):
    """Senlin's ``event`` table in a MySQL or MariaDB database."""

    dialect = DIALECT

    async def _create_pool(self, size: int, writer: bool) -> Pool:
        url, settings = self.url, self.settings
        options: dict[str, Any] = {"ssl": settings.ssl} if settings.ssl else {}
        pool: Pool = await asyncmy.create_pool(
            minsize=1, maxsize=size, host=url.host or "localhost", port=url.port,
            user=url.username or "", password=url.password or "", db=url.database,
            charset=url.charset,
            # Readers see each commit: a pooled connection in a transaction would keep reading
            # the snapshot of its first query (REPEATABLE READ).
            autocommit=not writer,
            connect_timeout=max(1, round(settings.connect_timeout)), echo=False, **options,
        )
        return pool

    async def _close_pool(self, pool: Pool, graceful: bool) -> None:
        if graceful:
            pool.close()
        else:
            pool.terminate()
        await pool.wait_closed()

    async def _prepare(self, pool: Pool) -> bool:
        async with pool.acquire() as conn, conn.cursor() as cur:
            # DDL commits as it goes in MySQL: a named lock, not a transaction, keeps it single.
            await cur.execute("SELECT GET_LOCK(%s, %s)", (LOCK_NAME, LOCK_WAIT))
            try:
                await cur.execute(COLUMNS_SQL)
                statements = creation_ddl({row[0] for row in await cur.fetchall()}, DIALECT)
                for statement in statements:
                    await cur.execute(statement)
                return bool(statements)
            finally:
                await cur.execute("SELECT RELEASE_LOCK(%s)", (LOCK_NAME,))
                await conn.commit()

    def _acquire(self, pool: Pool) -> AbstractAsyncContextManager[Connection]:
        return pool.acquire()

    async def _write(self, conn: Connection, rows: list[Row]) -> None:
        try:
            async with conn.cursor() as cur:
                await cur.executemany(UPSERT, rows)
            await conn.commit()
        except BaseException:
            conn.close()  # rolled back by the server; the pool drops a closed connection
            raise

    async def _fetch(self, conn: Connection, query: Query) -> Sequence[Iterable[Any]]:
        try:
            async with conn.cursor() as cur:
                await cur.execute(query.sql, query.params)
                rows: Sequence[Iterable[Any]] = await cur.fetchall()
                return rows
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) or self._is_outage(exc):
                conn.close()  # its answer may still come: never hand it out again
            raise

    def _is_outage(self, exc: BaseException) -> bool:
        if isinstance(exc, OSError | InterfaceError):
            return True
        if isinstance(exc, OperationalError):
            code = _code(exc)
            return 2000 <= code < 3000 or code in SERVER_OUTAGES
        return False
