"""Durability and isolation, tried hard against the real process: kill -9, hostile plugins."""

from __future__ import annotations

import json
import random
from collections import Counter

import aiohttp

from .support.amqp import RABBIT_URL, bound_queue
from .support.daemon import Daemon, eventually, post
from .support.records import record
from .support.stream import streaming


async def test_kill_9_at_random_moments_loses_nothing_in_any_sink(tmp_path):
    rng = random.Random(20261128)
    async with bound_queue() as bound:
        message = {"url": RABBIT_URL, "exchange": bound.exchange}
        daemon = Daemon(tmp_path, ["database", "jsonfile", "message"],
                        dispatchers={"message": message})
        accepted: list[str] = []
        try:
            for _ in range(4):
                await daemon.start()
                async with aiohttp.ClientSession() as session:
                    async with streaming(session, daemon.url + "/v1/events", writers=3,
                                         until_gone=True) as stream:
                        # A random moment, counted in accepted batches rather than seconds.
                        await stream.advance(batches=rng.randint(10, 60), timeout=60)
                        daemon.kill()
                accepted += stream.accepted
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
        dispatch = {"timeout": 2.0, "batch_size": 10, "max_attempts": 3, "backoff_initial": 0.001,
                    "backoff_max": 0.002}
        dispatchers = {"slow": {"delay": 0.1},
                       "message": {"url": RABBIT_URL, "exchange": bound.exchange}}
        daemon = Daemon(tmp_path, ["database", "message", "hang", "failing", "slow"],
                        dispatch=dispatch, dispatchers=dispatchers)
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
                at_that_moment = await daemon.dispatchers(session)
                # The database and the broker have everything while the slow one (100 ms per
                # event: 20 s for all) and the hanging one are still far behind.
                assert {m.message_id for m in published} >= set(ids)
                assert at_that_moment["slow"]["backlog"] > 0
                assert at_that_moment["hang"]["delivered"] == 0

                async def settled() -> bool:  # the raising one dead-letters after max_attempts,
                    states = await daemon.dispatchers(session)  # the hanging one is cut off
                    return states["failing"]["dead_letters"] == 200 and states["hang"]["failed"] >= 2

                await eventually(settled, timeout=60)
                states = await daemon.dispatchers(session)
                failing, hang, slow = states["failing"], states["hang"], states["slow"]
        finally:
            daemon.kill()
    assert failing["dead_letters"] == 200 and failing["last_error"] == "RuntimeError: always fails"
    assert hang["state"] == "retrying" and hang["last_error"] == "timed out after 2s"
    assert hang["failed"] >= 2 and hang["delivered"] == 0  # cut off by the timeout, retried
    assert slow["delivered"] > 0 and slow["state"] == "running"
