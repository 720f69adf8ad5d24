"""The database dispatcher on PostgreSQL and MariaDB in the real daemon, through a proxy the test
cuts and restores: a server down at start, then gone mid-stream, loses nothing and stores each
accepted event once; the password (from ``${NAME}``) never shows in status or logs."""

from __future__ import annotations

import json

import aiohttp
import pytest

from .support.amqp import TcpProxy
from .support.daemon import Daemon, eventually, post
from .support.records import record
from .support.sql import DIALECTS, HOST, fresh_database, user_with_password
from .support.stream import streaming

PASSWORD = "DaemonS3cretPw"  # no URL-special characters: it goes into the url through ${NAME}


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_an_outage_loses_nothing_and_stores_each_event_once(tmp_path, monkeypatch, dialect):
    monkeypatch.setenv("DSP_TEST_DB_PASSWORD", PASSWORD)
    async with fresh_database(dialect) as db, user_with_password(db, PASSWORD) as user:
        proxy = TcpProxy(target=(HOST, db.port))
        await proxy.start()
        await proxy.cut()  # the server is down when the daemon starts
        url = db.url(port=proxy.port, user=user, password="${DSP_TEST_DB_PASSWORD}")
        database = {"url": url, "connect_timeout": 1.0, "command_timeout": 2.0}
        daemon = Daemon(tmp_path, ["database"], dispatchers={"database": database})
        try:
            await daemon.start()  # ready, though the database cannot be reached
            async with aiohttp.ClientSession() as session:
                early = [record() for _ in range(20)]
                status, body = await post(session, daemon.url + "/v1/events", early)
                assert status == 202
                accepted_early = body["ids"]

                async def waiting() -> dict:
                    entry = (await daemon.dispatchers(session))["database"]
                    return entry if entry["backlog"] == 20 and entry["failed"] > 3 else {}

                entry = await eventually(waiting, timeout=30)
                assert entry["last_error"].startswith("unavailable: cannot reach")
                assert entry["dead_letters"] == 0  # outages spend no attempts
                assert PASSWORD not in json.dumps(entry)
                await proxy.restore()
                await eventually(lambda: _backlog(daemon, session, 0), timeout=30)

                async with streaming(session, daemon.url + "/v1/events", pause=0.01) as stream:
                    await stream.advance(batches=20)
                    await proxy.cut()  # gone mid-stream, batches in flight
                    await eventually(lambda: _state(daemon, session, "retrying"), timeout=30)
                    await stream.advance(batches=10)
                    states = await daemon.dispatchers(session)
                    assert states["database"]["backlog"] > 0
                    assert PASSWORD not in json.dumps(states)
                    await proxy.restore()
                    await stream.advance(batches=10)
                await eventually(lambda: _backlog(daemon, session, 0), timeout=30)
                final = (await daemon.dispatchers(session))["database"]
        finally:
            daemon.kill()
            await proxy.close()
        accepted = accepted_early + stream.accepted
        assert not stream.errors
        stored = [row[0] for row in await db.query("SELECT id FROM event")]
    assert len(stored) == len(accepted) and set(stored) == set(accepted)  # each once
    assert final["dead_letters"] == 0 and final["state"] == "running"
    assert final["report"]["outages"] >= 2
    logs = daemon.logs()
    assert "will retry" in logs and "connected to" in logs
    assert PASSWORD not in logs
    assert PASSWORD not in daemon.config.read_text()  # only the ${NAME} reference is on disk


async def _backlog(daemon: Daemon, session: aiohttp.ClientSession, n: int) -> bool:
    return (await daemon.dispatchers(session))["database"]["backlog"] == n


async def _state(daemon: Daemon, session: aiohttp.ClientSession, state: str) -> bool:
    return (await daemon.dispatchers(session))["database"]["state"] == state
