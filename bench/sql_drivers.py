"""Multi-row upserts into Senlin's ``event`` table through each candidate driver, same rows.

    python bench/sql_drivers.py [--rows 20000] [--batch 500] [--rounds 3]

Needs the local MariaDB (root, no password) and PostgreSQL (trust auth); each run creates a
database of its own and drops it. MySQL/MariaDB: asyncmy against aiomysql, both sending one
``INSERT … VALUES (…),(…) ON DUPLICATE KEY UPDATE`` per batch (their ``executemany`` rewrites the
statement into multi-row ones). PostgreSQL: asyncpg, ``INSERT … SELECT FROM unnest(…)`` (one
statement whatever the batch size) against one ``VALUES (…),(…)`` statement per batch and
against ``executemany``. Each round inserts the rows into an empty table, then upserts them again
(every row a conflict); the figure is rows per second, the best round.
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


async def mysql_driver(connect: Callable[..., Awaitable[Any]], rows: list[Row], batch: int,
                       rounds: int) -> tuple[float, float]:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncmy.connect(host="127.0.0.1", user="root", autocommit=True)
    async with admin.cursor() as cur:
        await cur.execute(f"CREATE DATABASE {name}")
    sql = mysql_upsert()
    best_insert = best_update = 0.0
    try:
        conn = await connect(host="127.0.0.1", user="root", db=name, autocommit=False,
                             charset="utf8mb4")
        for _ in range(rounds):
            async with conn.cursor() as cur:
                await cur.execute("DROP TABLE IF EXISTS event")
                for statement in ddl(mysql.dialect()):
                    await cur.execute(statement)
            for phase in ("insert", "update"):
                started = time.perf_counter()
                for i in range(0, len(rows), batch):
                    async with conn.cursor() as cur:
                        await cur.executemany(sql, rows[i:i + batch])
                    await conn.commit()
                rate = len(rows) / (time.perf_counter() - started)
                if phase == "insert":
                    best_insert = max(best_insert, rate)
                else:
                    best_update = max(best_update, rate)
        conn.close()
    finally:
        async with admin.cursor() as cur:
            await cur.execute(f"DROP DATABASE {name}")
        admin.close()
    return best_insert, best_update


PG_TYPES = ("varchar", "timestamp", "varchar", "varchar", "varchar", "varchar", "varchar",
            "varchar", "varchar", "varchar", "varchar", "text", "text")
PG_SET = ", ".join(f'"{c}" = excluded."{c}"' for c in COLUMNS if c != "id")
PG_COLS = ", ".join(f'"{c}"' for c in COLUMNS)


async def pg_way(way: str, rows: list[Row], batch: int, rounds: int) -> tuple[float, float]:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
    await admin.execute(f"CREATE DATABASE {name}")
    best = [0.0, 0.0]
    try:
        conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database=name)
        unnest = (f"INSERT INTO event ({PG_COLS}) SELECT * FROM unnest("
                  + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(PG_TYPES))
                  + f") ON CONFLICT (id) DO UPDATE SET {PG_SET}")
        single = (f"INSERT INTO event ({PG_COLS}) VALUES ("
                  + ", ".join(f"${i + 1}" for i in range(len(COLUMNS)))
                  + f") ON CONFLICT (id) DO UPDATE SET {PG_SET}")

        def values(n: int) -> str:
            width = len(COLUMNS)
            groups = ", ".join(
                "(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")"
                for r in range(n))
            return f"INSERT INTO event ({PG_COLS}) VALUES {groups} ON CONFLICT (id) DO UPDATE" \
                   f" SET {PG_SET}"

        for _ in range(rounds):
            await conn.execute("DROP TABLE IF EXISTS event")
            for statement in ddl(postgresql.dialect()):
                await conn.execute(statement)
            for phase in (0, 1):
                started = time.perf_counter()
                for i in range(0, len(rows), batch):
                    chunk = rows[i:i + batch]
                    async with conn.transaction():
                        if way == "unnest":
                            await conn.execute(unnest, *map(list, zip(*chunk, strict=True)))
                        elif way == "values":
                            await conn.execute(values(len(chunk)),
                                               *[v for row in chunk for v in row])
                        else:
                            await conn.executemany(single, chunk)
                best[phase] = max(best[phase], len(rows) / (time.perf_counter() - started))
        await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE {name}")
        await admin.close()
    return best[0], best[1]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    records = [Record.model_validate(sample(i)) for i in range(args.rows)]
    my_rows = [row_encoder(mysql.dialect())(r) for r in records]
    pg_rows = [row_encoder(postgresql.dialect())(r) for r in records]
    print(f"{args.rows} rows, batches of {args.batch}, best of {args.rounds}: rows/s"
          " (insert into an empty table / upsert of the same rows again)")
    for label, connect in (("mariadb asyncmy", asyncmy.connect),
                           ("mariadb aiomysql", aiomysql.connect)):
        ins, upd = await mysql_driver(connect, my_rows, args.batch, args.rounds)
        print(f"{label:28} {ins:9,.0f} / {upd:9,.0f}")
    for way in ("unnest", "values", "executemany"):
        ins, upd = await pg_way(way, pg_rows, args.batch, args.rounds)
        print(f"{'postgresql asyncpg ' + way:28} {ins:9,.0f} / {upd:9,.0f}")


if __name__ == "__main__":
    asyncio.run(main())
