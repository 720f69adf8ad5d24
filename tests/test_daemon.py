"""Black-box tests: the real ``dispatchd`` process on a free port, over HTTP."""

from __future__ import annotations

import json
import signal
from collections import Counter

import aiohttp
import pytest

from .support.daemon import eventually, post
from .support.records import record
from .support.stream import streaming


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_events_reach_sqlite_and_the_jsonfile_plugin(make_daemon, loop):
    daemon = make_daemon(["database", "jsonfile"], server={"event_loop": loop})
    await daemon.start()
    assert f"({loop} event loop)" in daemon.logs()
    async with aiohttp.ClientSession() as session:
        url = daemon.url + "/v1/events"
        status, one = await post(session, url, record(level="WARNING"))
        assert status == 202
        status, many = await post(session, url, [record() for _ in range(10)])
        assert status == 202
        ndjson = "\n".join(json.dumps(record()) for _ in range(5))
        status, nd = await post(
            session, url, ndjson, headers={"Content-Type": "application/x-ndjson"}
        )
        assert status == 202
    ids = one["ids"] + many["ids"] + nd["ids"]
    await eventually(lambda: len(daemon.db_rows()) == len(ids))
    await eventually(lambda: len(daemon.lines("events.jsonl")) == len(ids))
    rows = {row["id"]: dict(row) for row in daemon.db_rows()}
    assert set(rows) == set(ids)
    first = rows[one["ids"][0]]
    assert (first["level"], first["otype"], first["oid"], first["cluster_id"]) == (
        "30", "CLUSTER", "c-1", "c-1"
    )
    assert (first["action"], first["status"], json.loads(first["meta_data"])) == (
        "CLUSTER_SCALE_OUT", "end", {"count": 2}
    )
    lines = [json.loads(line) for line in daemon.lines("events.jsonl")]
    assert [line["id"] for line in lines] == ids  # one dispatcher, one cursor: in order
    assert lines[0]["action"]["entity"]["name"] == "web"


async def test_sigterm_drains_and_exits_zero(make_daemon):
    daemon = make_daemon(["database"])
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, daemon.url + "/v1/events", [record()] * 50)
    assert status == 202
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    logs = daemon.logs()
    assert "received SIGTERM: shutting down" in logs and "stopped ◆" in logs
    # Whatever was not yet stored is delivered after the next start.
    await daemon.start()
    await eventually(lambda: {r["id"] for r in daemon.db_rows()} == set(body["ids"]))


async def test_a_second_signal_forces_exit(make_daemon, tmp_path):
    calls = tmp_path / "slow.calls"
    daemon = make_daemon(["slow"], server={"shutdown_timeout": 600.0},
                         dispatchers={"slow": {"delay": 3600, "calls_file": str(calls)}})
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        assert (await post(session, daemon.url + "/v1/events", record()))[0] == 202
    await eventually(calls.exists)  # the slow dispatcher is now inside its call
    daemon.signal(signal.SIGINT)
    await eventually(lambda: "received SIGINT: shutting down" in daemon.logs())
    assert daemon.proc is not None and daemon.proc.poll() is None  # draining, up to 600 s
    daemon.signal(signal.SIGINT)
    assert daemon.wait(timeout=15) == 0
    assert "forcing exit" in daemon.logs()


async def test_a_broken_plugin_is_reported_and_the_rest_runs(make_daemon):
    daemon = make_daemon(["broken", "database", "badstart"])
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, daemon.url + "/v1/events", record())
        assert status == 202
        await eventually(lambda: len(daemon.db_rows()) == 1)
        states = await daemon.dispatchers(session)
    assert states["database"]["state"] == "running" and states["database"]["delivered"] == 1
    assert states["broken"]["state"] == "failed" and "failed to import" in states["broken"]["last_error"]
    assert states["badstart"]["state"] == "failed"
    assert "ConnectionRefusedError" in states["badstart"]["last_error"]
    assert states["badstart"]["backlog"] == 1 and states["broken"]["backlog"] == 1  # kept for later


PATIENT = {"max_attempts": 100000}  # an outage outlasting it: records wait, not dead-letter


async def test_sigkill_with_a_failing_dispatcher_loses_nothing(make_daemon):
    daemon = make_daemon(["database", "jsonfile", "flaky"], dispatch=PATIENT)
    down = daemon.tmp / "flaky.down"
    down.touch()
    accepted: list[str] = []
    for _ in range(3):  # three rounds: stream, kill -9 mid-stream, restart
        await daemon.start()
        async with aiohttp.ClientSession() as session:
            async with streaming(session, daemon.url + "/v1/events", writers=4,
                                 until_gone=True) as stream:
                await stream.advance(batches=20)
                daemon.kill()  # SIGKILL while requests are in flight
        accepted += stream.accepted
    assert len(accepted) > 50
    down.unlink()  # the failing sink recovers only now
    await daemon.start()
    want = set(accepted)
    await eventually(lambda: want <= {r["id"] for r in daemon.db_rows()}, timeout=60)
    await eventually(lambda: want <= {json.loads(x)["id"] for x in daemon.lines("events.jsonl")},
                     timeout=60)
    await eventually(lambda: want <= {json.loads(x)["id"] for x in daemon.lines("flaky.jsonl")},
                     timeout=60)
    counts = Counter(r["id"] for r in daemon.db_rows())
    assert max(counts.values()) == 1  # upsert on id: at-least-once never duplicates a row
    async with aiohttp.ClientSession() as session:
        states = await daemon.dispatchers(session)
    assert all(d["dead_letters"] == 0 for d in states.values())


async def test_a_dispatcher_disabled_while_stopped_gets_its_backlog_dead_lettered(make_daemon):
    daemon = make_daemon(["database", "flaky"], dispatch=PATIENT)
    (daemon.tmp / "flaky.down").touch()
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        status, _ = await post(session, daemon.url + "/v1/events", [record()] * 4)
    assert status == 202
    await eventually(lambda: len(daemon.db_rows()) == 4)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    daemon.write_config(["database"])  # flaky is switched off while the daemon is down
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        states = await daemon.dispatchers(session)
    assert states["flaky"]["enabled"] is False and states["flaky"]["dead_letters"] == 4
    assert "4 undelivered events moved to its dead letters" in daemon.logs()
