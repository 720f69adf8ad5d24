"""Consume a queue and note when each message arrived, for the accepted -> published lag.

    python bench/consumer.py AMQP_URL QUEUE OUT_FILE

Prints "ready" once it consumes. On SIGTERM it goes on until the queue has been quiet for
``QUIET`` seconds, then writes one "message_id<TAB>time.time() of arrival" line per message (a
message published twice appears twice) and exits. Plain aiormq with no_ack: the consumer shares
the load core with the load generator, so it does as little per message as it can.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import aiormq
from aiormq.abc import DeliveredMessage

QUIET = 0.5


async def consume(url: str, queue: str, out: Path) -> None:
    arrivals: list[tuple[str, float]] = []
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)

    async def arrived(message: DeliveredMessage) -> None:
        arrivals.append((message.header.properties.message_id or "", time.time()))

    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.basic_consume(queue, arrived, no_ack=True)
        print("ready", flush=True)
        await stopping.wait()
        seen = -1
        while seen != len(arrivals):  # quiet for QUIET seconds: nothing more is on its way
            seen = len(arrivals)
            await asyncio.sleep(QUIET)
    finally:
        await connection.close()
    out.write_text("".join(f"{mid}\t{at:.6f}\n" for mid, at in arrivals))


def main() -> int:
    url, queue, out = sys.argv[1:4]
    asyncio.run(consume(url, queue, Path(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
