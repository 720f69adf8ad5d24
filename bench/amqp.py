"""AMQP publishing: dispatchd's message dispatcher against raw aio-pika, measured in one run.

    .venv/bin/python bench/amqp.py [--events 20000] [--rounds 3]

(a) raw aio-pika: the same pre-built messages, publisher confirms gathered per 100;
(b) the message dispatcher in-process: ``dump_batch`` of 100 records (builds the messages too);
(c) the real daemon, ``message`` only: POST batches of 100, until a bound queue holds them all;
(d) as (b) with ``format = "batch"``: each ``dump_batch`` of 100 is one message of 100 records.
Figures are medians of ``--rounds``; ratios are against (a) from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
from common import aio_pika_message, free_port, wait_ready

from dispatchd.dispatchers.message import MessageDispatcher, MessageOptions
from dispatchd.models import Record

URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
CHUNK = 100


def make_records(n: int) -> list[Record]:
    return [Record.model_validate(_body()) for _ in range(n)]


def _body() -> dict[str, object]:
    return {
        "level": "INFO", "phase": "end", "reason": "Cluster scaled out", "extra": {"count": 2},
        "action": {"id": "a-1", "name": "scale_out_web", "action": "CLUSTER_SCALE_OUT",
                   "cause": "RPC Request", "user": "u-1", "project": "p-1",
                   "entity": {"type": "CLUSTER", "id": "c-1", "name": "web", "status": "ACTIVE"}},
    }


async def sink(exchange: str) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractQueue]:
    connection = await aio_pika.connect(URL)
    channel = await connection.channel()
    ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue("", exclusive=True)
    await queue.bind(ex, "#")
    return connection, queue


async def raw(records: list[Record], exchange: str) -> float:
    builder = MessageDispatcher("m", MessageOptions(url=URL, exchange=exchange))
    messages = [(out.key, aio_pika_message(out)) for out in map(builder.message, records)]
    connection = await aio_pika.connect(URL)
    channel = await connection.channel(publisher_confirms=True)
    ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    started = time.perf_counter()
    for i in range(0, len(messages), CHUNK):
        await asyncio.gather(*(ex.publish(m, k, mandatory=False) for k, m in messages[i : i + CHUNK]))
    elapsed = time.perf_counter() - started
    await connection.close()
    return len(records) / elapsed


async def dispatcher(records: list[Record], exchange: str, **options: Any) -> float:
    backend = MessageDispatcher("m", MessageOptions(url=URL, exchange=exchange, **options))
    await backend.start()
    started = time.perf_counter()
    for i in range(0, len(records), CHUNK):
        await backend.dump_batch(records[i : i + CHUNK])
    elapsed = time.perf_counter() - started
    await backend.close()
    return len(records) / elapsed


async def batch(records: list[Record], exchange: str) -> float:
    return await dispatcher(records, exchange, format="batch", batch_max=CHUNK)


async def daemon(n: int, exchange: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        config = Path(tmp) / "dispatchd.toml"
        config.write_text(f"""
[server]
port = {port}
[spool]
path = "{tmp}/spool.db"
[dispatch]
enabled = ["message"]
batch_size = {CHUNK}
[dispatchers.message]
url = "{URL}"
exchange = "{exchange}"
""")
        exe = Path(sys.executable).parent / "dispatchd"
        proc = subprocess.Popen([str(exe), "serve", "-c", str(config)], stderr=subprocess.DEVNULL)
        try:
            connection, queue = await sink(exchange)
            base = f"http://127.0.0.1:{port}"
            await wait_ready(base, proc)
            async with aiohttp.ClientSession() as session:
                bodies = [[_body() for _ in range(CHUNK)] for _ in range(n // CHUNK)]
                started = time.perf_counter()
                for body in bodies:
                    async with session.post(base + "/v1/events", json=body) as resp:
                        assert resp.status == 202, await resp.text()
                await _count(queue, n)
                elapsed = time.perf_counter() - started
            await connection.close()
        finally:
            proc.terminate()
            proc.wait(30)
    return n / elapsed


async def _count(queue: aio_pika.abc.AbstractQueue, n: int) -> None:
    seen = 0
    async with queue.iterator(no_ack=True) as messages:
        async for _ in messages:
            seen += 1
            if seen >= n:
                return


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    records = make_records(args.events)
    figures: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": []}
    for round_ in range(1, args.rounds + 1):
        for key, run in (("a", raw), ("b", dispatcher), ("d", batch)):
            exchange = f"bench-{uuid.uuid4().hex[:8]}"
            connection, queue = await sink(exchange)  # a bound queue, as in production
            figures[key].append(await run(records, exchange))
            await queue.purge()
            await connection.close()
        figures["c"].append(await daemon(args.events, f"bench-{uuid.uuid4().hex[:8]}"))
        print(f"round {round_}: " + ", ".join(f"{k}={v[-1]:,.0f}/s" for k, v in figures.items()),
              file=sys.stderr)
    a, b, c, d = (statistics.median(figures[k]) for k in "abcd")
    print(f"AMQP publishing with confirms, {args.events:,} events x {args.rounds} rounds (medians)\n")
    print("| path | events/s | ratio to raw |")
    print("|---|---:|---:|")
    print(f"| (a) raw aio-pika, confirms gathered per {CHUNK} | {a:,.0f} | 1.00 |")
    print(f"| (b) message dispatcher, dump_batch of {CHUNK} | {b:,.0f} | {b / a:.2f} |")
    print(f"| (c) dispatchd end to end (POST -> spool -> queue) | {c:,.0f} | {c / a:.2f} |")
    print(f"| (d) message dispatcher, format = batch, dump_batch of {CHUNK} (one message) "
          f"| {d:,.0f} | {d / a:.2f} |")
    print("\nrounds: " + "; ".join(
        f"{k} = " + " / ".join(f"{v:,.0f}" for v in figures[k]) for k in "abcd"
    ))


if __name__ == "__main__":
    asyncio.run(main())
