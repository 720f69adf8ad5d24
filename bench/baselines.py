"""The baselines dispatchd is measured against, each run as its own process by bench/run.py.

    python bench/baselines.py bare   --port P              # (a) aiohttp answering 202, no parsing
    python bench/baselines.py store  --db F --seconds S    # (b) aiosqlite batch inserts, prints JSON
    python bench/baselines.py pg-store    --db-url U --seconds S  # (p) asyncpg, the store's upsert
    python bench/baselines.py mysql-store --db-url U --seconds S  # (m) asyncmy, the store's upsert
    python bench/baselines.py senlin --port P --db F       # (c) Senlin's per-event ORM insert+commit
    python bench/baselines.py amqp   --url U --events N    # raw aio-pika publishing with confirms

``--loop uvloop`` runs bare, senlin and amqp on uvloop, as dispatchd runs by default: a ratio
compares the two on the same event loop.

(b) and (c) write the ``event`` table of dispatchd's ``database`` dispatcher with its own pragmas
(WAL, synchronous NORMAL, the spool's default), so they differ from dispatchd only in the pattern.
``pg-store`` and ``mysql-store`` are the ceilings of the PostgreSQL and MariaDB stores: the same
rows, through the same driver, with the very statement each store sends (its ``UPSERT``), into
the same table and indexes, and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import aiosqlite
from aiohttp import web
from common import aio_pika_message

from dispatchd.dispatchers.database import SQLITE, UPSERT, row_of
from dispatchd.dispatchers.event_table import COLUMNS, EVENT, ddl
from dispatchd.models import RECORD, Record, new_id

SQLITE_SCHEMA = ";\n".join(ddl(SQLITE))

ACCEPTED = b'{"accepted":1}'


def sample(index: int = 0) -> dict[str, Any]:
    """The record every benchmark sends: a node action with the usual fields filled in."""
    return {
        "level": "INFO", "phase": "end", "reason": "Node created successfully",
        "extra": {"attempt": index % 7},
        "action": {
            "action": "NODE_CREATE", "id": "5f2b7c1e-1c4a-4f5b-9d7e-0e4f7a1d2c3b",
            "name": "node_create_5f2b7c1e", "cause": "RPC Request", "status": "SUCCEEDED",
            "user": "5e8b62a1c3f24f0cb1f0a6b8c1d7e9f0", "project": "3c1f0b2e9d8a4c7b",
            "inputs": {"count": 1},
            "entity": {"type": "NODE", "id": "a1b2c3d4-0000-4000-8000-000000000001",
                       "name": "node-1", "cluster_id": "c0ffee00-0000-4000-8000-000000000002",
                       "status": "ACTIVE"},
        },
    }


# -- (a) the HTTP ceiling ---------------------------------------------------------------------


async def _bare(request: web.Request) -> web.Response:
    await request.read()  # the body must be consumed for keep-alive; it is not parsed
    return web.Response(status=202, body=ACCEPTED, content_type="application/json")


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def serve(app: web.Application, port: int, loop: str) -> None:
    app.router.add_get("/readyz", lambda _: _ok())
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=new_loop(loop))


def serve_bare(port: int, loop: str) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/events", _bare)
    serve(app, port, loop)


async def _ok() -> web.Response:
    return web.Response(text="ok")


# -- (b) the store ceiling --------------------------------------------------------------------


def _connect_pragmas(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")


async def store_ceiling(path: Path, seconds: float, batch: int) -> dict[str, float]:
    """Rows/s of 100-row upsert transactions into the ``event`` table through aiosqlite."""
    template = [row_of(RECORD.validate_python(sample(i))) for i in range(batch)]
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.executescript(SQLITE_SCHEMA)
        rows, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            # Fresh ids of the kind dispatchd gives records that come without one.
            fresh = [(new_id(), *row[1:]) for row in template]
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany(UPSERT, fresh)
            await db.execute("COMMIT")
            rows += len(fresh)
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed}


async def server_store_ceiling(url: str, seconds: float, batch: int) -> dict[str, float]:
    """Rows/s of ``batch``-row upserts, one transaction each, on a PostgreSQL or MySQL database,
    as the ``database`` dispatcher's store writes them; and this process's CPU per row."""
    from dispatchd.dispatchers import store_url
    from dispatchd.dispatchers.event_table import row_encoder

    where = store_url.parse(url)
    postgres = where.dialect == "postgresql"
    if postgres:
        import asyncpg

        from dispatchd.dispatchers.store_postgres import DIALECT, UPSERT
    else:
        import asyncmy

        from dispatchd.dispatchers.store_mysql import DIALECT, UPSERT  # type: ignore[assignment]
    row = row_encoder(DIALECT)
    template = [row(RECORD.validate_python(sample(i))) for i in range(batch)]
    conn: Any
    if postgres:
        conn = await asyncpg.connect(host=where.host, port=where.port, user=where.username,
                                     database=where.database)
    else:
        conn = await asyncmy.connect(host=where.host, port=where.port, user=where.username,
                                     db=where.database, charset=where.charset, autocommit=False)
    try:
        for statement in ddl(DIALECT):
            if postgres:
                await conn.execute(statement)
            else:
                async with conn.cursor() as cur:
                    await cur.execute(statement)
        rows, started, cpu = 0, time.perf_counter(), time.process_time()
        while (elapsed := time.perf_counter() - started) < seconds:
            # Fresh ids of the kind dispatchd gives records that come without one.
            fresh = [(new_id(), *values[1:]) for values in template]
            if postgres:  # PostgresStore._write: a column per array, one statement
                await conn.execute(UPSERT, *[list(c) for c in zip(*fresh, strict=True)])
            else:  # MysqlStore._write: multi-row statements, then the commit
                async with conn.cursor() as cur:
                    await cur.executemany(UPSERT, fresh)
                await conn.commit()
            rows += len(fresh)
        cpu = time.process_time() - cpu
    finally:
        if postgres:
            await conn.close()
        else:
            conn.close()
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed,
            "cpu_us_per_row": cpu / rows * 1e6}


# -- (c) Senlin's pattern ---------------------------------------------------------------------


def serve_senlin(port: int, path: Path, loop: str) -> None:
    """Per event: validate, one ORM object, one commit; in the request, as Senlin's engine did."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.orm import DeclarativeBase, Session

    class Base(DeclarativeBase):
        pass

    class Event(Base):  # senlin.db.sqlalchemy.models.Event: an ORM object on the event table
        __table__ = EVENT

    with sqlite3.connect(path) as raw:
        raw.executescript(SQLITE_SCHEMA)
    engine = create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", lambda conn, _: _connect_pragmas(conn))

    async def post(request: web.Request) -> web.Response:
        record: Record = RECORD.validate_json(await request.read())
        with Session(engine) as session:  # senlin.db.sqlalchemy.api.event_create
            values = dict(zip(COLUMNS, row_of(record), strict=True))
            values["timestamp"] = record.timestamp.astimezone(UTC).replace(tzinfo=None)
            session.add(Event(**values))
            session.commit()
        return web.json_response({"accepted": 1, "ids": [record.id]}, status=202)

    app = web.Application()
    app.router.add_post("/v1/events", post)
    serve(app, port, loop)


# -- raw AMQP publishing ----------------------------------------------------------------------


async def amqp_ceiling(url: str, events: int, per_confirm: int) -> dict[str, float]:
    """Messages/s of raw aio-pika persistent publishes, confirms gathered per ``per_confirm``."""
    import aio_pika

    from dispatchd.dispatchers.message import MessageDispatcher, MessageOptions

    # The same messages the ``message`` dispatcher publishes, built before the clock starts.
    builder = MessageDispatcher("bench", MessageOptions(url=url))
    outgoing = [builder.message(RECORD.validate_python(sample(i))) for i in range(events)]
    messages = [(out.key, aio_pika_message(out)) for out in outgoing]
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange("dispatchd", "topic", durable=True)
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(0, events, per_confirm):
            chunk = messages[i : i + per_confirm]
            await asyncio.gather(*(exchange.publish(m, key) for key, m in chunk))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await connection.close()
    # CPU per message: the publisher's own cost, whatever the broker's speed.
    return {"messages": events, "seconds": elapsed, "messages_per_s": events / elapsed,
            "cpu_us_per_message": cpu / events * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["bare", "store", "pg-store", "mysql-store", "senlin",
                                         "amqp"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--db", type=Path, default=Path("bench-events.db"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--db-url", help="pg-store, mysql-store: the database (its table is made)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args(argv)
    if args.what == "bare":
        serve_bare(args.port, args.loop)
    elif args.what == "senlin":
        serve_senlin(args.port, args.db, args.loop)
    elif args.what == "store":
        print(json.dumps(asyncio.run(store_ceiling(args.db, args.seconds, args.batch))))
    elif args.what in ("pg-store", "mysql-store"):
        result = asyncio.run(server_store_ceiling(args.db_url, args.seconds, args.batch))
        print(json.dumps(result))
    else:
        with asyncio.Runner(loop_factory=lambda: new_loop(args.loop)) as runner:
            print(json.dumps(runner.run(amqp_ceiling(args.url, args.events, args.batch))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
