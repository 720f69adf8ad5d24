"""Open-loop load at a fixed rate, for latency at a given load (wrk measures the maximum).

    python bench/loadgen.py URL BODY_FILE --rate 50 --seconds 10 [--connections 16] [--accepted F]

Request ``i`` is due at ``start + i / rate``; its latency counts from when it was due, so a server
that stalls is charged for the requests it held up (no coordinated omission). Prints one JSON line.
With ``--accepted``, writes one "id<TAB>time.time() of the 202" line per accepted record, for the
accepted -> published lag that bench/consumer.py's arrivals give.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp
from common import percentile


async def run(url: str, body: bytes, rate: float, seconds: float, connections: int,
              accepted: list[tuple[str, float]] | None = None) -> dict[str, float]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    headers = {"Content-Type": "application/json"}
    slots = asyncio.Semaphore(connections)
    connector = aiohttp.TCPConnector(limit=connections)
    loop = asyncio.get_running_loop()

    async def one(session: aiohttp.ClientSession, due: float) -> None:
        async with slots:
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    answer = await resp.read()
                    if accepted is not None and resp.status == 202:
                        now = time.time()
                        accepted.extend((i, now) for i in json.loads(answer)["ids"])
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
            except aiohttp.ClientError:
                statuses[0] = statuses.get(0, 0) + 1
        latencies.append(loop.time() - due)

    async with aiohttp.ClientSession(connector=connector) as session:
        start, total = loop.time(), int(rate * seconds)
        tasks = []
        for i in range(total):
            due = start + i / rate
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(session, due)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    return {
        "requests": total, "ok": ok, "errors": total - ok, "seconds": elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1e3, "p99_ms": percentile(latencies, 0.99) * 1e3,
        "ended": time.time(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("body", type=Path)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--accepted", type=Path, help="write each accepted id and its 202's time")
    args = parser.parse_args()
    accepted: list[tuple[str, float]] | None = [] if args.accepted else None
    result = asyncio.run(run(args.url, args.body.read_bytes(), args.rate, args.seconds,
                             args.connections, accepted))
    if args.accepted and accepted is not None:
        args.accepted.write_text("".join(f"{i}\t{t:.6f}\n" for i, t in accepted))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
