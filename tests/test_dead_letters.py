"""Dead letters end to end: the real daemon, its HTTP API and the ``dispatchd dead-letters`` CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess

import aiohttp
import pytest

from .conftest import record
from .daemon import DISPATCHD, Daemon, eventually, post

pytestmark = pytest.mark.integration


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DISPATCHD), "dead-letters", *args, "-c", str(daemon.config)],
                          capture_output=True, text=True, timeout=60)


async def states(session: aiohttp.ClientSession, daemon: Daemon) -> dict[str, dict]:
    async with session.get(daemon.url + "/v1/dispatchers") as resp:
        return {d["name"]: d for d in (await resp.json())["dispatchers"]}


async def test_list_replay_to_one_dispatcher_and_purge(tmp_path):
    daemon = Daemon(tmp_path, ["database", "flaky", "failing"])
    (tmp_path / "flaky.down").touch()
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await post(session, daemon.url + "/v1/events", [record()] * 3)
            assert status == 202
            ids = body["ids"]

            async def dead_of(name: str) -> int:
                return (await states(session, daemon))[name]["dead_letters"]

            for _ in range(200):  # max_attempts 3 with fast backoff
                if await dead_of("flaky") == 3 and await dead_of("failing") == 3:
                    break
                await asyncio.sleep(0.05)
            before = await states(session, daemon)
            assert before["flaky"]["dead_lettered"] == 3 and before["database"]["delivered"] == 3

            listed = cli(daemon, "list", "--dispatcher", "flaky")
            assert listed.returncode == 0, listed.stderr
            letters = [json.loads(line) for line in listed.stdout.splitlines()]
            assert [letter["record"]["id"] for letter in letters] == ids
            assert letters[0]["attempts"] == 3 and "flaky sink is down" in letters[0]["error"]
            async with session.get(daemon.url + "/v1/dead-letters?limit=2") as resp:
                assert len((await resp.json())["dead_letters"]) == 2

            (tmp_path / "flaky.down").unlink()  # the sink is fixed: send its dead letters back
            replayed = cli(daemon, "replay", "--dispatcher", "flaky")
            assert replayed.returncode == 0 and json.loads(replayed.stdout)["replayed"] == 3
            await eventually(lambda: [json.loads(x)["id"] for x in daemon.lines("flaky.jsonl")] == ids)
            after = await states(session, daemon)
            assert after["flaky"]["dead_letters"] == 0
            assert after["database"]["delivered"] == 3  # the replay went to flaky only
            assert after["failing"]["dead_letters"] == 3

            purged = cli(daemon, "purge", "--dispatcher", "failing")
            assert json.loads(purged.stdout) == {"dispatcher": "failing", "purged": 3}
            assert (await states(session, daemon))["failing"]["dead_letters"] == 0

            async with session.get(daemon.url + "/metrics") as resp:
                text = await resp.text()
            assert 'dispatchd_dispatcher_dead_lettered_total{dispatcher="failing"} 3.0' in text
            assert 'dispatchd_dispatcher_dead_lettered_total{dispatcher="flaky"} 3.0' in text
            assert "dispatchd_events_accepted_total 3.0" in text
    finally:
        daemon.kill()


async def test_replay_and_purge_need_a_dispatcher_and_replay_an_enabled_one(tmp_path):
    daemon = Daemon(tmp_path, ["database"])
    await daemon.start()
    try:
        result = cli(daemon, "replay")
        assert result.returncode == 2 and "needs --dispatcher" in result.stderr
        result = cli(daemon, "replay", "--dispatcher", "jsonfile")
        assert result.returncode == 1 and "not enabled" in result.stderr
        async with aiohttp.ClientSession() as session:
            async with session.delete(daemon.url + "/v1/dead-letters") as resp:
                assert resp.status == 422
    finally:
        daemon.kill()
