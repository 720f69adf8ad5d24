"""Dead letters end to end: the real daemon, its HTTP API and the ``dispatchd dead-letters`` CLI."""

from __future__ import annotations

import json
import subprocess

import aiohttp

from .support.daemon import DISPATCHD, Daemon, eventually, post
from .support.records import record


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DISPATCHD), "dead-letters", *args, "-c", str(daemon.config)],
                          capture_output=True, text=True, timeout=60)


async def test_list_replay_to_one_dispatcher_and_purge(tmp_path):
    daemon = Daemon(tmp_path, ["database", "flaky", "failing"])
    (tmp_path / "flaky.down").touch()
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await post(session, daemon.url + "/v1/events", [record()] * 3)
            assert status == 202
            ids = body["ids"]

            async def all_dead_lettered() -> bool:  # max_attempts 3 with fast backoff
                states = await daemon.dispatchers(session)
                return states["flaky"]["dead_letters"] == 3 == states["failing"]["dead_letters"]

            await eventually(all_dead_lettered)
            before = await daemon.dispatchers(session)
            assert before["flaky"]["dead_lettered"] == 3 and before["database"]["delivered"] == 3

            listed = cli(daemon, "list", "--json", "--dispatcher", "flaky")
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
            after = await daemon.dispatchers(session)
            assert after["flaky"]["dead_letters"] == 0
            assert after["database"]["delivered"] == 3  # the replay went to flaky only
            assert after["failing"]["dead_letters"] == 3

            purged = cli(daemon, "purge", "--dispatcher", "failing")
            assert json.loads(purged.stdout) == {"dispatcher": "failing", "purged": 3}
            assert (await daemon.dispatchers(session))["failing"]["dead_letters"] == 0

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
