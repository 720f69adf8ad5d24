"""This machine's PostgreSQL and MariaDB for the benchmarks: fresh databases, dropped afterwards,
and the CPU time the servers spend.

PostgreSQL with trust auth on 127.0.0.1:5432 (user postgres), MariaDB with a passwordless root on
127.0.0.1:3306, as the tests use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncmy
import asyncpg

HOST = "127.0.0.1"
PORTS = {"postgresql": 5432, "mysql": 3306}
ADMIN = {"postgresql": "postgres", "mysql": "root"}
LABELS = {"postgresql": "PostgreSQL", "mysql": "MariaDB", "sqlite": "SQLite"}
# Process names of the servers, for their CPU time (/proc/<pid>/comm).
COMMANDS = {"postgresql": {"postgres"}, "mysql": {"mariadbd", "mysqld"}}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def url(dialect: str, database: str) -> str:
    return f"{dialect}://{ADMIN[dialect]}@{HOST}:{PORTS[dialect]}/{database}"


async def admin(dialect: str, *statements: str) -> list[tuple[object, ...]]:
    """Run ``statements`` as the server's administrator; the last one's rows."""
    rows: list[tuple[object, ...]] = []
    if dialect == "postgresql":
        pg = await asyncpg.connect(host=HOST, port=PORTS[dialect], user=ADMIN[dialect],
                                   database="postgres")
        try:
            for statement in statements:
                rows = [tuple(row) for row in await pg.fetch(statement)]
        finally:
            await pg.close()
        return rows
    my = await asyncmy.connect(host=HOST, port=PORTS[dialect], user=ADMIN[dialect],
                               autocommit=True)
    try:
        async with my.cursor() as cur:
            for statement in statements:
                await cur.execute(statement)
                rows = [tuple(row) for row in await cur.fetchall() or ()]
    finally:
        my.close()
    return rows


@contextlib.asynccontextmanager
async def fresh(dialect: str, prefix: str = "dispatchd_bench") -> AsyncIterator[str]:
    """The url of a new, empty database on ``dialect``'s server, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await admin(dialect, f"CREATE DATABASE {name}")
    try:
        yield url(dialect, name)
    finally:
        force = " WITH (FORCE)" if dialect == "postgresql" else ""
        await admin(dialect, f"DROP DATABASE IF EXISTS {name}{force}")


@contextlib.contextmanager
def fresh_database(dialect: str, prefix: str = "dispatchd_bench") -> Iterator[str]:
    """``fresh`` for synchronous code (bench/run.py)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin(dialect, f"CREATE DATABASE {name}"))
    try:
        yield url(dialect, name)
    finally:
        force = " WITH (FORCE)" if dialect == "postgresql" else ""
        asyncio.run(admin(dialect, f"DROP DATABASE IF EXISTS {name}{force}"))


def version(dialect: str) -> str:
    rows = asyncio.run(admin(dialect, "SELECT version()"))
    return str(rows[0][0]).split(" on ")[0] if rows else "?"


def server_cpu(dialect: str) -> float:
    """CPU seconds the server's processes have used, including their ended children (a
    PostgreSQL backend's time moves to the postmaster when it exits)."""
    names = COMMANDS[dialect]
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in names:
                continue
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile
        # utime, stime, cutime, cstime: fields 14-17, at 11-14 after the command.
        total += sum(int(value) for value in fields[11:15])
    return total / CLOCK_TICKS


class ServerCpu:
    """The server's CPU time from when the meter is made, per event."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.start = server_cpu(dialect)

    def us_per_event(self, events: float) -> float:
        return (server_cpu(self.dialect) - self.start) / events * 1e6 if events else float("nan")


async def query(db_url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Rows of ``sql`` on the database ``db_url`` names (``$1`` parameters on PostgreSQL,
    ``%s`` on MySQL), on a connection of its own."""
    from dispatchd.dispatchers import store_url

    where = store_url.parse(db_url)
    if where.dialect == "postgresql":
        pg = await asyncpg.connect(host=where.host, port=where.port, user=where.username,
                                   database=where.database)
        try:
            return [tuple(row) for row in await pg.fetch(sql, *params)]
        finally:
            await pg.close()
    my = await asyncmy.connect(host=where.host, port=where.port, user=where.username,
                               db=where.database, autocommit=True)
    try:
        async with my.cursor() as cur:
            await cur.execute(sql, params or None)
            return [tuple(row) for row in await cur.fetchall() or ()]
    finally:
        my.close()
