"""The promises of DESIGN.md, tried hard against the real process: kill -9, hostile plugins."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

import aiohttp
import pytest

from .amqp import bound_queue
from .conftest import record
from .daemon import Daemon, eventually, post

pytestmark = pytest.mark.integration


def message_table(exchange: str) -> str:
    url = "amqp://guest:guest@127.0.0.1:5672/"
    return f'\n[dispatchers.message]\nurl = "{url}"\nexchange = "{exchange}"\n'


def tune(daemon: Daemon, **dispatch: object) -> None:
    text = daemon.config.read_text()
    for key, value in dispatch.items():
        start = text.index(f"\n{key} = ") if f"\n{key} = " in text else -1
        line = f"\n{key} = {json.dumps(value)}"
        if start >= 0:
            end = text.index("\n", start + 1)
            text = text[:start] + line + text[end:]
        else:
            text = text.replace("[dispatch]", "[dispatch]" + line)
    daemon.config.write_text(text)


async def stream(session: aiohttp.ClientSession, url: str, accepted: list[str],
                 stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            status, body = await post(session, url + "/v1/events", [record() for _ in range(5)])
        except (aiohttp.ClientError, json.JSONDecodeError):
            return  # the daemon was killed under us
        if status == 202:
            accepted.extend(body["ids"])


async def test_kill_9_at_random_moments_loses_nothing_in_any_sink(tmp_path):
    rng = random.Random(20261128)
    async with bound_queue() as bound:
        daemon = Daemon(tmp_path, ["database", "jsonfile", "message"],
                        extra=message_table(bound.exchange))
        accepted: list[str] = []
        try:
            for _ in range(4):
                await daemon.start()
                stop = asyncio.Event()
                async with aiohttp.ClientSession() as session:
                    writers = [asyncio.create_task(stream(session, daemon.url, accepted, stop))
                               for _ in range(3)]
                    await asyncio.sleep(rng.uniform(0.2, 1.2))
                    daemon.kill()
                    stop.set()
                    await asyncio.gather(*writers)
            await daemon.start()
            want = set(accepted)
            await eventually(lambda: want <= {r["id"] for r in daemon.db_rows()}, timeout=60)
            await eventually(
                lambda: want <= {json.loads(x)["id"] for x in daemon.lines("events.jsonl")},
                timeout=60)
            published = await bound.drain(want, timeout=60)
        finally:
            daemon.kill()
    assert len(want) > 100
    assert want <= {m.message_id for m in published}
    assert max(Counter(r["id"] for r in daemon.db_rows()).values()) == 1


async def test_hanging_raising_and_slow_plugins_do_not_hold_back_the_others(tmp_path):
    async with bound_queue() as bound:
        daemon = Daemon(tmp_path, ["database", "message", "hang", "failing", "slow"],
                        extra="delay = 0.1\n" + message_table(bound.exchange))
        tune(daemon, timeout=2.0, batch_size=10, max_attempts=3, backoff_initial=0.001,
             backoff_max=0.002)
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                ids: list[str] = []
                for _ in range(10):
                    status, body = await post(session, daemon.url + "/v1/events",
                                              [record() for _ in range(20)])
                    assert status == 202
                    ids.extend(body["ids"])
                await eventually(lambda: len(daemon.db_rows()) == 200, timeout=20)
                published = await bound.drain(set(ids), timeout=20)
                async with session.get(daemon.url + "/v1/dispatchers") as resp:
                    at_that_moment = {d["name"]: d for d in (await resp.json())["dispatchers"]}
                # The database and the broker have everything while the slow one (100 ms per
                # event: 20 s for all) and the hanging one are still far behind.
                assert {m.message_id for m in published} >= set(ids)
                assert at_that_moment["slow"]["backlog"] > 0
                assert at_that_moment["hang"]["delivered"] == 0

                async def state(name: str) -> dict:
                    async with session.get(daemon.url + "/v1/dispatchers") as resp:
                        return {d["name"]: d for d in (await resp.json())["dispatchers"]}[name]

                for _ in range(1200):  # the raising one dead-letters after max_attempts,
                    failing, hang = await state("failing"), await state("hang")
                    if failing["dead_letters"] == 200 and hang["failed"] >= 2:  # hang: cut off
                        break
                    await asyncio.sleep(0.05)
                failing, hang, slow = [await state(n) for n in ("failing", "hang", "slow")]
        finally:
            daemon.kill()
    assert failing["dead_letters"] == 200 and failing["last_error"] == "RuntimeError: always fails"
    assert hang["state"] == "retrying" and hang["last_error"] == "timed out after 2s"
    assert hang["failed"] >= 2 and hang["delivered"] == 0  # cut off by the timeout, retried
    assert slow["delivered"] > 0 and slow["state"] == "running"
