"""Multi-row upserts into Senlin's ``event`` table through each candidate driver, same rows.

    python bench/sql_drivers.py [--rows 20000] [--batch 500] [--rounds 3]

Needs the local MariaDB (root, no password) and PostgreSQL (trust auth); each run creates a
database of its own and drops it. MySQL/MariaDB: asyncmy against aiomysql, both sending one
``INSERT … VALUES (…),(…) ON DUPLICATE KEY UPDATE`` per batch (their ``executemany`` rewrites the
statement into multi-row ones). PostgreSQL: asyncpg, ``INSERT … SELECT FROM unnest(…)`` (one
statement whatever the batch size) against one ``VALUES (…),(…)`` statement per batch and
against ``executemany``. Each round inserts the rows into an empty table, then upserts them again
(every row a conflict); the candidates take turns round by round. Figures: rows per second (wall
clock, the best round) and this process's CPU per row (the least), which is what the driver
costs the daemon and what load elsewhere on the machine disturbs least.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiomysql
import asyncmy
import asyncpg
from baselines import sample
from sqlalchemy.dialects import mysql, postgresql

from dispatchd.dispatchers.event_table import COLUMNS, EVENT, ddl, row_encoder
from dispatchd.models import Record

Row = tuple[Any, ...]


def mysql_upsert() -> str:
    insert = mysql.insert(EVENT)
    stmt = insert.on_duplicate_key_update({n: insert.inserted[n] for n in COLUMNS if n != "id"})
    return str(stmt.compile(dialect=mysql.dialect(), column_keys=list(COLUMNS)))


Way = Callable[[Any, list[Row]], Awaitable[None]]


class Best:
    """The best wall-clock rate and the least client CPU per row seen for each phase."""

    def __init__(self) -> None:
        self.rate = {"insert": 0.0, "upsert": 0.0}
        self.cpu = {"insert": float("inf"), "upsert": float("inf")}

    async def phase(self, name: str, rows: int, run: Callable[[], Awaitable[None]]) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        await run()
        self.rate[name] = max(self.rate[name], rows / (time.perf_counter() - wall))
        self.cpu[name] = min(self.cpu[name], (time.process_time() - cpu) / rows * 1e6)

    def line(self, label: str) -> str:
        return (f"{label:30} {self.rate['insert']:9,.0f} / {self.rate['upsert']:9,.0f} rows/s"
                f"   {self.cpu['insert']:5.1f} / {self.cpu['upsert']:5.1f} µs CPU per row")


async def mysql_round(connect: Callable[..., Awaitable[Any]], name: str, rows: list[Row],
                      batch: int, best: Best) -> None:
    conn = await connect(host="127.0.0.1", user="root", db=name, autocommit=False,
                         charset="utf8mb4")
    sql = mysql_upsert()
    try:
        async with conn.cursor() as cur:
            await cur.execute("DROP TABLE IF EXISTS event")
            for statement in ddl(mysql.dialect()):
                await cur.execute(statement)
        await conn.commit()

        async def run() -> None:
            for i in range(0, len(rows), batch):
                async with conn.cursor() as cur:
                    await cur.executemany(sql, rows[i:i + batch])
                await conn.commit()

        await best.phase("insert", len(rows), run)
        await best.phase("upsert", len(rows), run)
    finally:
        conn.close()


PG_TYPES = ("varchar", "timestamp", "varchar", "varchar", "varchar", "varchar", "varchar",
            "varchar", "varchar", "varchar", "varchar", "text", "text")
PG_SET = ", ".join(f'"{c}" = excluded."{c}"' for c in COLUMNS if c != "id")
PG_COLS = ", ".join(f'"{c}"' for c in COLUMNS)


def pg_statements() -> dict[str, Callable[[list[Row]], tuple[str, list[Any]]]]:
    unnest = (f"INSERT INTO event ({PG_COLS}) SELECT * FROM unnest("
              + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(PG_TYPES))
              + f") ON CONFLICT (id) DO UPDATE SET {PG_SET}")
    width = len(COLUMNS)

    def values(chunk: list[Row]) -> tuple[str, list[Any]]:
        groups = ", ".join("(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")"
                           for r in range(len(chunk)))
        return (f"INSERT INTO event ({PG_COLS}) VALUES {groups} ON CONFLICT (id) DO UPDATE"
                f" SET {PG_SET}", [v for row in chunk for v in row])

    return {"unnest": lambda chunk: (unnest, [list(c) for c in zip(*chunk, strict=True)]),
            "values": values}


PG_SINGLE = (f"INSERT INTO event ({PG_COLS}) VALUES ("
             + ", ".join(f"${i + 1}" for i in range(len(COLUMNS)))
             + f") ON CONFLICT (id) DO UPDATE SET {PG_SET}")


async def pg_round(way: str, name: str, rows: list[Row], batch: int, best: Best) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database=name)
    statements = pg_statements()
    try:
        await conn.execute("DROP TABLE IF EXISTS event")
        for statement in ddl(postgresql.dialect()):
            await conn.execute(statement)

        async def run() -> None:
            for i in range(0, len(rows), batch):
                chunk = rows[i:i + batch]
                async with conn.transaction():
                    if way == "executemany":
                        await conn.executemany(PG_SINGLE, chunk)
                    else:
                        sql, args = statements[way](chunk)
                        await conn.execute(sql, *args)

        await best.phase("insert", len(rows), run)
        await best.phase("upsert", len(rows), run)
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    records = [Record.model_validate(sample(i)) for i in range(args.rows)]
    my_rows = [row_encoder(mysql.dialect())(r) for r in records]
    pg_rows = [row_encoder(postgresql.dialect())(r) for r in records]
    print(f"{args.rows} rows, batches of {args.batch}, best of {args.rounds} rounds taken in turns:"
          " insert into an empty table / upsert of the same rows again")
    name = f"bench_{uuid.uuid4().hex[:8]}"
    my_admin = await asyncmy.connect(host="127.0.0.1", user="root", autocommit=True)
    pg_admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
    async with my_admin.cursor() as cur:
        await cur.execute(f"CREATE DATABASE {name}")
    await pg_admin.execute(f"CREATE DATABASE {name}")
    mysql_drivers = {"mariadb asyncmy": asyncmy.connect, "mariadb aiomysql": aiomysql.connect}
    pg_ways = ("unnest", "values", "executemany")
    best = {label: Best() for label in [*mysql_drivers, *(f"postgresql asyncpg {w}" for w in pg_ways)]}
    try:
        for _ in range(args.rounds):  # the candidates take turns, so load on the machine hits each
            for label, connect in mysql_drivers.items():
                await mysql_round(connect, name, my_rows, args.batch, best[label])
            for way in pg_ways:
                await pg_round(way, name, pg_rows, args.batch, best[f"postgresql asyncpg {way}"])
    finally:
        async with my_admin.cursor() as cur:
            await cur.execute(f"DROP DATABASE {name}")
        my_admin.close()
        await pg_admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await pg_admin.close()
    for label, result in best.items():
        print(result.line(label))


if __name__ == "__main__":
    asyncio.run(main())
