"""Corrupt or hostile state: a damaged spool file, a full disk, an unwritable store."""

from __future__ import annotations

import json
import signal
import sqlite3

import aiohttp

from dispatchd.spool import Spool

from .support.daemon import Daemon, eventually, post
from .support.inprocess import run_service
from .support.records import record


async def test_a_garbage_spool_is_moved_aside_and_the_daemon_starts_fresh(tmp_path):
    (tmp_path / "spool.db").write_bytes(b"this is not a database\x00" * 500)
    daemon = Daemon(tmp_path, ["database"])
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await post(session, daemon.url + "/v1/events", record())
            assert status == 202
            await eventually(lambda: [r["id"] for r in daemon.db_rows()] == body["ids"])
            async with session.get(daemon.url + "/metrics") as resp:
                assert "dispatchd_spool_quarantined_total 1.0" in await resp.text()
        # It still exits on SIGTERM: the connection that found the file unreadable was closed
        # (left open, its non-daemon thread kept the process alive after "stopped").
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    finally:
        daemon.kill()
    [moved] = list(tmp_path.glob("spool.db.corrupt-*"))
    assert moved.read_bytes().startswith(b"this is not a database")
    assert "is unreadable" in daemon.logs() and "moved it aside" in daemon.logs()


async def test_a_truncated_spool_is_moved_aside(tmp_path):
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE spool (seq INTEGER PRIMARY KEY, level INTEGER, body TEXT,"
                   " target TEXT)")
        db.executemany("INSERT INTO spool VALUES (?, 20, ?, NULL)",
                       [(i, "x" * 200) for i in range(1, 5001)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    spool = Spool(path)
    await spool.open()
    try:
        assert len(spool.quarantined) == 1 and spool.head == 0
        await spool.ensure_cursor("d")
        assert await spool.append([(20, "{}")]) == [1]
    finally:
        await spool.close()


async def test_a_full_disk_answers_503_and_keeps_what_was_accepted(tmp_path):
    (tmp_path / "flaky.down").touch()  # the only dispatcher is down: everything stays spooled
    async with run_service(tmp_path, ["flaky"]) as (service, session, url):
        status, first = await post(session, url + "/v1/events", [record()] * 10)
        assert status == 202
        writer = service.core.spool._writer_db
        assert writer is not None
        (pages,) = await writer.run(lambda db: db.execute("PRAGMA page_count").fetchone())
        # The disk is now full.
        await writer.run(lambda db: db.execute(f"PRAGMA max_page_count = {pages}"))
        big = [record(reason="x" * 60000) for _ in range(10)]
        for _ in range(3):
            async with session.post(url + "/v1/events", json=big) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"]
                assert (await resp.json())["error"]["code"] == "spool_unavailable"
        await writer.run(lambda db: db.execute("PRAGMA max_page_count = 1073741823"))  # freed
        status, second = await post(session, url + "/v1/events", record())
        assert status == 202
        bodies = await writer.run(lambda db: db.execute("SELECT body FROM spool").fetchall())
        stored = [json.loads(line)["id"] for (body,) in bodies for line in body.split("\n")]
        assert stored == first["ids"] + second["ids"]  # a request's records share a row


async def test_an_unwritable_database_fails_only_that_dispatcher(tmp_path):
    (tmp_path / "file").write_text("a file where the store's directory should be")
    unwritable = {"database": {"url": f"sqlite:///{tmp_path}/file/events.db"}}
    async with run_service(tmp_path, ["database", "jsonfile"], dispatchers=unwritable) as (
            _, session, url):
        status, body = await post(session, url + "/v1/events", record())
        assert status == 202
        jsonl = tmp_path / "events.jsonl"
        await eventually(lambda: jsonl.exists() and jsonl.read_text().count("\n") == 1)
        async with session.get(url + "/v1/dispatchers") as resp:
            states = {d["name"]: d for d in (await resp.json())["dispatchers"]}
    assert states["database"]["state"] == "failed"
    assert "start failed" in states["database"]["last_error"]
    assert states["database"]["backlog"] == 1  # kept for when the path is fixed
    assert states["jsonfile"]["state"] == "running"
