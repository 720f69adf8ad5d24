"""Black-box tests: the real ``dispatchd`` process on a free port, over HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from .conftest import record
from .daemon import Daemon, eventually, post

pytestmark = pytest.mark.integration


@pytest.fixture
async def make_daemon(tmp_path: Path) -> AsyncIterator[type[Daemon]]:
    made: list[Daemon] = []

    def factory(enabled: list[str], extra: str = "") -> Daemon:
        daemon = Daemon(tmp_path, enabled, extra)
        made.append(daemon)
        return daemon

    yield factory  # type: ignore[misc]
    for daemon in made:
        daemon.kill()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_events_reach_sqlite_and_the_jsonfile_plugin(make_daemon, loop):
    daemon = make_daemon(["database", "jsonfile"])
    text = daemon.config.read_text()
    daemon.config.write_text(text.replace("[server]\n", f'[server]\nevent_loop = "{loop}"\n'))
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
        30, "CLUSTER", "c-1", "c-1"
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


async def test_a_second_signal_forces_exit(make_daemon):
    daemon = make_daemon(["slow"], extra="delay = 3600")
    daemon.config.write_text(daemon.config.read_text().replace("shutdown_timeout = 5.0",
                                                               "shutdown_timeout = 600.0"))
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        assert (await post(session, daemon.url + "/v1/events", record()))[0] == 202
    await asyncio.sleep(0.3)  # the slow dispatcher is now inside its call
    daemon.signal(signal.SIGINT)
    await asyncio.sleep(0.5)
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
        async with session.get(daemon.url + "/v1/dispatchers") as resp:
            states = {d["name"]: d for d in (await resp.json())["dispatchers"]}
    assert states["database"]["state"] == "running" and states["database"]["delivered"] == 1
    assert states["broken"]["state"] == "failed" and "failed to import" in states["broken"]["last_error"]
    assert states["badstart"]["state"] == "failed"
    assert "ConnectionRefusedError" in states["badstart"]["last_error"]
    assert states["badstart"]["backlog"] == 1 and states["broken"]["backlog"] == 1  # kept for later


async def stream(session: aiohttp.ClientSession, url: str, accepted: list[str],
                 stop: asyncio.Event) -> None:
    """POST small batches until ``stop`` or the daemon dies; keep every 202-accepted id."""
    while not stop.is_set():
        try:
            status, body = await post(session, url, [record() for _ in range(5)])
        except (aiohttp.ClientError, json.JSONDecodeError):
            return
        if status == 202:
            accepted.extend(body["ids"])


async def test_sigkill_with_a_failing_dispatcher_loses_nothing(make_daemon):
    daemon = make_daemon(["database", "jsonfile", "flaky"])
    # The outage outlasts the test's usual 3 attempts; here records must wait, not dead-letter.
    daemon.config.write_text(daemon.config.read_text().replace("max_attempts = 3",
                                                               "max_attempts = 100000"))
    down = daemon.tmp / "flaky.down"
    down.touch()
    accepted: list[str] = []
    for _ in range(3):  # three rounds: stream, kill -9 mid-stream, restart
        await daemon.start()
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            writers = [asyncio.create_task(stream(session, daemon.url + "/v1/events", accepted, stop))
                       for _ in range(4)]
            await asyncio.sleep(0.7)
            daemon.kill()  # SIGKILL while requests are in flight
            stop.set()
            await asyncio.gather(*writers)
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
        async with session.get(daemon.url + "/v1/dispatchers") as resp:
            states = (await resp.json())["dispatchers"]
    assert all(d["dead_letters"] == 0 for d in states)


async def test_a_dispatcher_disabled_while_stopped_gets_its_backlog_dead_lettered(make_daemon):
    daemon = make_daemon(["database", "flaky"])
    (daemon.tmp / "flaky.down").touch()
    daemon.config.write_text(daemon.config.read_text().replace("max_attempts = 3",
                                                               "max_attempts = 100000"))
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
        async with session.get(daemon.url + "/v1/dispatchers") as resp:
            states = {d["name"]: d for d in (await resp.json())["dispatchers"]}
    assert states["flaky"]["enabled"] is False and states["flaky"]["dead_letters"] == 4
    assert "4 undelivered events moved to its dead letters" in daemon.logs()
