"""Memory stays bounded under many large requests at once: the real daemon, default server settings.

120 clients each POST about 3.6 MB (1,000 records) at the same moment and retry on 503 until
accepted. Without a bound on the bodies in flight the daemon's RSS peaked at 1.7 GB here.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from .support.daemon import Daemon, eventually
from .support.records import record

CLIENTS = 120
RECORDS = 1000
PAYLOAD = 3200  # characters of payload per record: ~3.6 KB of JSON, ~3.6 MB per request
MiB = 1024 * 1024
CONTAINER = 512 * MiB  # the memory limit the daemon must fit in with default settings
# docs/operations.md, "Sizing memory", for this load: 3 x max_inflight_bytes (32 MiB) in flight,
# the spool's window of 4096 such records (~45 MiB), 0.75 MiB per connection whose body waits:
# ~230 MiB over the idle daemon; the rest is headroom for allocator noise.
GROWTH = 320 * MiB
DEADLINE = 45.0  # seconds the clients keep retrying before the test gives up on them


def bodies() -> tuple[list[bytes], list[list[str]]]:
    """One body per client: RECORDS records like ``record()``, each with its own id and payload."""
    extra = {"count": 2, "payload": "x" * PAYLOAD}
    text = json.dumps(record(id="@ID@", extra=extra), separators=(",", ":")).encode()
    head, tail = text.split(b"@ID@")
    texts, ids = [], []
    for _ in range(CLIENTS):
        mine = [str(uuid.uuid4()) for _ in range(RECORDS)]
        texts.append(b"[" + b",".join(head + i.encode() + tail for i in mine) + b"]")
        ids.append(mine)
    return texts, ids


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def stored_ids(daemon: Daemon) -> set[str]:
    path = daemon.tmp / "events.db"
    if not path.exists():
        return set()
    with sqlite3.connect(path) as db:
        try:
            return {row[0] for row in db.execute("SELECT id FROM event")}
        except sqlite3.OperationalError:  # the dispatcher has not created its table yet
            return set()


async def post_until_accepted(session: aiohttp.ClientSession, url: str, body: bytes) -> list[tuple]:
    """POST ``body`` until accepted, honouring Retry-After; each answer as (status, Retry-After)."""
    answers: list[tuple] = []
    deadline = time.monotonic() + DEADLINE
    headers = {"Content-Type": "application/json"}  # BytesIO: sent with its Content-Length
    while time.monotonic() < deadline:
        async with session.post(url, data=io.BytesIO(body), headers=headers) as resp:
            await resp.read()
            retry_after = resp.headers.get("Retry-After")
            answers.append((resp.status, retry_after))
            if resp.status != 503 or retry_after is None:
                return answers
        await asyncio.sleep(float(retry_after))
    return answers


@pytest.fixture
async def daemon(tmp_path):
    daemon = Daemon(tmp_path, ["database"])  # [server] as shipped: max_inflight_bytes = 32 MiB
    await daemon.start()
    yield daemon
    daemon.kill()


async def test_many_large_requests_at_once_stay_within_512_mib(daemon):
    texts, ids = bodies()
    assert all(3_400_000 < len(text) < 4 * MiB for text in texts)  # under max_body_bytes
    assert daemon.proc is not None
    idle = memory(daemon.proc.pid)["VmRSS"]

    connector = aiohttp.TCPConnector(limit=0)  # every client its own connection, all at once
    async with aiohttp.ClientSession(connector=connector) as session:
        url = daemon.url + "/v1/events"
        answers = await asyncio.gather(*(post_until_accepted(session, url, t) for t in texts))
        accepted = [mine for mine, got in zip(ids, answers, strict=True) if got[-1][0] == 202]
        wanted = {i for mine in accepted for i in mine}
        # Stored while every client's keep-alive connection is still open.
        await eventually(lambda: wanted <= stored_ids(daemon), timeout=60, interval=0.5)
        peak = memory(daemon.proc.pid)["VmHWM"]

    every = [answer for got in answers for answer in got]
    assert {status for status, _ in every} <= {202, 503}, every
    assert all(retry_after is not None for status, retry_after in every if status == 503)
    assert peak < CONTAINER, f"peak RSS {peak / MiB:.0f} MiB (idle {idle / MiB:.0f} MiB)"
    assert peak - idle < GROWTH, f"peak RSS {peak / MiB:.0f} MiB, idle {idle / MiB:.0f} MiB"
    assert len(accepted) == CLIENTS, f"{CLIENTS - len(accepted)} clients never accepted"
    assert sum(status == 503 for status, _ in every) > 0  # the bound was reached: it was tested
