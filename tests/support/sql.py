"""PostgreSQL and MariaDB test helpers: a fresh database per test, dropped afterwards.

The servers are this machine's (``.ci/run`` starts them): PostgreSQL with trust auth on
127.0.0.1:5432, MariaDB with a passwordless root on 127.0.0.1:3306; a test with a server of its
own passes that server's port. Anything else a test needs on the server (a user with a
password) it creates here and drops again.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncmy
import asyncpg

from .amqp import require_service

HOST = "127.0.0.1"
PORTS = {"postgresql": 5432, "mysql": 3306}
ADMIN = {"postgresql": "postgres", "mysql": "root"}
DIALECTS = ("postgresql", "mysql")


async def mysql_rows(sql: str, params: tuple[Any, ...], **connect: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``%s`` parameters) on a MariaDB connection of its own, made with
    ``connect``'s arguments."""
    conn = await asyncmy.connect(autocommit=True, **connect)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql, params or None)
            return [tuple(row) for row in await cur.fetchall()]
    finally:
        conn.close()


@dataclass
class ServerDb:
    """A database of the test's own on one server, and a connection to look into it."""

    dialect: str
    name: str
    port: int = 0

    def __post_init__(self) -> None:
        self.port = self.port or PORTS[self.dialect]

    def url(self, port: int | None = None, user: str | None = None, password: str | None = None,
            host: str = HOST, scheme: str | None = None) -> str:
        credentials = user or ADMIN[self.dialect]
        if password is not None:
            credentials += f":{password}"
        return f"{scheme or self.dialect}://{credentials}@{host}:{port or self.port}/{self.name}"

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (``$1`` parameters on PostgreSQL, ``%s`` on MariaDB), own connection."""
        if self.dialect == "postgresql":
            conn = await asyncpg.connect(host=HOST, port=self.port, user="postgres",
                                         database=self.name)
            try:
                return [tuple(row) for row in await conn.fetch(sql, *params)]
            finally:
                await conn.close()
        return await mysql_rows(sql, params, host=HOST, port=self.port, user="root", db=self.name)

    async def execute(self, *statements: str) -> None:
        for statement in statements:
            await self.query(statement)


async def admin(dialect: str, *statements: str, port: int | None = None) -> None:
    """Run ``statements`` on the server (this machine's, or the one on ``port``) as its
    administrator, outside any test database."""
    port = port or PORTS[dialect]
    if dialect == "postgresql":
        conn = await asyncpg.connect(host=HOST, port=port, user="postgres",
                                     database="postgres")
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()
        return
    my = await asyncmy.connect(host=HOST, port=port, user="root", autocommit=True)
    try:
        async with my.cursor() as cur:
            for statement in statements:
                await cur.execute(statement)
    finally:
        my.close()


def require_server(dialect: str) -> None:
    require_service("PostgreSQL" if dialect == "postgresql" else "MariaDB", HOST, PORTS[dialect])


@contextlib.asynccontextmanager
async def fresh_database(dialect: str, port: int | None = None) -> AsyncIterator[ServerDb]:
    """A new, empty database on ``dialect``'s server (this machine's, or a test's own on
    ``port``), dropped (connections and all) afterwards."""
    if port is None:
        require_server(dialect)
    db = ServerDb(dialect, f"dispatchd_test_{uuid.uuid4().hex[:12]}", port=port or 0)
    await admin(dialect, f"CREATE DATABASE {db.name}", port=db.port)
    try:
        yield db
    finally:
        if dialect == "postgresql":
            await admin(dialect, f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)", port=db.port)
        else:
            await admin(dialect, f"DROP DATABASE IF EXISTS {db.name}", port=db.port)


@contextlib.asynccontextmanager
async def user_with_password(db: ServerDb, password: str) -> AsyncIterator[str]:
    """A login on ``db``'s server that may use ``db`` only, with ``password``; dropped after."""
    user = f"dsp_{uuid.uuid4().hex[:10]}"
    if db.dialect == "postgresql":
        await admin(db.dialect, f"CREATE ROLE {user} LOGIN PASSWORD '{password}'",
                    f"GRANT ALL ON DATABASE {db.name} TO {user}", port=db.port)
        await db.execute(f"GRANT ALL ON SCHEMA public TO {user}")
    else:
        await admin(db.dialect, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'",
                    f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'",
                    f"GRANT ALL ON {db.name}.* TO '{user}'@'%'",
                    f"GRANT ALL ON {db.name}.* TO '{user}'@'localhost'", port=db.port)
    try:
        yield user
    finally:
        if db.dialect == "postgresql":
            await admin(db.dialect, f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)",
                        f"DROP ROLE IF EXISTS {user}", port=db.port)
        else:
            await admin(db.dialect, f"DROP USER IF EXISTS '{user}'@'%'",
                        f"DROP USER IF EXISTS '{user}'@'localhost'", port=db.port)


async def insert_rows(db: ServerDb, table: str, columns: tuple[str, ...],
                      rows: list[tuple[Any, ...]]) -> None:
    """Many rows fast: ``COPY`` on PostgreSQL, multi-row ``INSERT``s on MariaDB; then ``ANALYZE``,
    as autovacuum or InnoDB's statistics would soon do, so the planner knows the table."""
    if db.dialect == "postgresql":
        conn = await asyncpg.connect(host=HOST, port=db.port, user="postgres",
                                     database=db.name)
        try:
            await conn.copy_records_to_table(table, records=rows, columns=list(columns))
            await conn.execute(f"ANALYZE {table}")
        finally:
            await conn.close()
        return
    names = ", ".join(f"`{name}`" for name in columns)
    marks = ", ".join(["%s"] * len(columns))
    my = await asyncmy.connect(host=HOST, port=db.port, user="root", db=db.name)
    try:
        async with my.cursor() as cur:
            for first in range(0, len(rows), 5000):  # asyncmy makes multi-row statements of these
                await cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})",
                                      rows[first:first + 5000])
            await my.commit()
            await cur.execute(f"ANALYZE TABLE {table}")
            await cur.fetchall()
    finally:
        my.close()
