"""The spool's data safety with the real ``dispatchd`` process: one daemon per spool, a start
that fails changes nothing, and a small real disk that fills up and empties again."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dispatchd.lock import Holder, read_holder
from dispatchd.spool import DeadLetter, Spool

from .support import TESTPLUGINS
from .support.config import config_data, write_config
from .support.daemon import DISPATCHD, Daemon, eventually, free_port, post
from .support.fs import read_only, small_filesystem
from .support.records import record

HELD = 100_000  # max_attempts for a dispatcher held back: it waits, it never dead-letters


# -- helpers -----------------------------------------------------------------------------------


def serve(config: Path, cwd: Path, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """``dispatchd serve`` for a start expected to fail: its exit, or killed after ``timeout``
    (then the return code is -9 and what it did so far is there to compare)."""
    path = os.pathsep.join(filter(None, [str(TESTPLUGINS), os.environ.get("PYTHONPATH")]))
    with subprocess.Popen([str(DISPATCHD), "serve", "-c", str(config)], cwd=cwd, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={**os.environ, "PYTHONPATH": path}) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every file under ``root``, by relative path, with a digest of its bytes; the WAL index
    (``-shm``, which readers write to) and ``skip`` names are listed without one."""
    return {str(p.relative_to(root)): "" if p.name.endswith("-shm") or p.name in skip
            else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def contents(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of a spool, read without changing it: a live one through its WAL, a closed
    one as immutable (a read-only connection would leave a WAL and its index behind)."""
    mode = "mode=ro" if Path(f"{path}-wal").exists() else "immutable=1"
    with contextlib.closing(sqlite3.connect(f"file:{path}?{mode}", uri=True)) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}


def ids(lines: list[str]) -> list[str]:
    return [json.loads(line)["id"] for line in lines]


# -- one daemon per spool ------------------------------------------------------------------------


async def test_a_second_daemon_on_the_same_spool_exits_and_changes_nothing(tmp_path):
    # The scenario: B, configured with `database` only, would have retired A's
    # `jsonfile` and `flaky` cursors and dead-lettered what `flaky` was still owed.
    (tmp_path / "flaky.down").touch()  # holds `flaky` back: its events wait in the spool
    a = Daemon(tmp_path, ["jsonfile", "flaky"], dispatchers={"flaky": {"max_attempts": HELD}})
    await a.start()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await post(session, a.url + "/v1/events", [record()] * 20)
            assert status == 202
            sent = body["ids"]
            spool = tmp_path / "spool.db"
            await eventually(lambda: contents(spool)["cursor"] == [("flaky", 0), ("jsonfile", 20)])
            assert a.proc is not None
            assert read_holder(spool) == Holder(a.proc.pid, a.url, str(spool))
            b_config = write_config(tmp_path / "b.toml", config_data(tmp_path, ["database"],
                                                                     port=free_port()))
            before = tree(tmp_path, skip=("daemon.log",)), contents(spool)

            b = serve(b_config, tmp_path)
            after = tree(tmp_path, skip=("daemon.log",)), contents(spool)
            assert after == before  # byte for byte, and table for table
            assert b.returncode == 1, f"B ran on A's spool (exit {b.returncode}):\n{b.stderr}"
            assert str(spool) in b.stderr and f"pid {a.proc.pid}" in b.stderr, b.stderr
            assert not (tmp_path / "events.db").exists()  # B's database never started either

            (tmp_path / "flaky.down").unlink()
            await eventually(lambda: len(a.lines("flaky.jsonl")) >= 20)
            async with session.get(a.url + "/v1/dead-letters") as resp:
                assert (await resp.json())["dead_letters"] == []
            dispatchers = await a.dispatchers(session)
            assert dispatchers["flaky"]["backlog"] == 0 and dispatchers["flaky"]["dead_letters"] == 0
        a.signal(signal.SIGTERM)
        assert a.wait() == 0
    finally:
        a.kill()
    assert ids(a.lines("events.jsonl")) == sent and ids(a.lines("flaky.jsonl")) == sent
    assert "disabled" not in a.logs() and "dead-lettered seq" not in a.logs()


# -- a start that fails leaves no trace ------------------------------------------------------------


CAUSES = ["port taken", "tls cert missing", "spool unwritable"]


@pytest.mark.parametrize("cause", CAUSES)
@pytest.mark.parametrize("spool_exists", [False, True], ids=["fresh", "existing spool"])
async def test_a_start_that_fails_changes_nothing(tmp_path, cause, spool_exists):
    work = tmp_path / "work"  # the daemon's working directory; every path in the config is relative
    (work / "var").mkdir(parents=True)
    if spool_exists:
        await _spool_with_everything(work / "var" / "spool.db")
    taken = _listening_socket()
    server: dict[str, Any] = {"host": "127.0.0.1", "port": free_port()}
    if cause == "port taken":
        server["port"] = taken.getsockname()[1]
    if cause == "tls cert missing":
        server.update(tls_cert="tls/cert.pem", tls_key="tls/key.pem")
    config = write_config(tmp_path / "dispatchd.toml", {
        "server": server,
        "spool": {"path": "var/spool.db"},
        "dispatch": {"enabled": ["database", "jsonfile", "flaky", "failing"]},
        "dispatchers": {"database": {"url": "sqlite:///var/events.db"},
                        "jsonfile": {"path": "var/events.jsonl"},
                        "flaky": {"path": "var/flaky.jsonl", "fail_file": "var/flaky.down"}},
    })
    before = tree(work), contents(work / "var" / "spool.db") if spool_exists else None
    try:
        with read_only(work / "var") if cause == "spool unwritable" else contextlib.nullcontext():
            done = serve(config, work)
    finally:
        taken.close()
    assert done.returncode != 0, done.stderr
    expected = {"port taken": "cannot listen", "tls cert missing": "tls",
                "spool unwritable": "var/spool.db"}[cause]
    assert expected in done.stderr.lower(), done.stderr
    after = tree(work), contents(work / "var" / "spool.db") if spool_exists else None
    assert after == before
    assert not (work / "var" / "spool.db.lock").exists()


async def _spool_with_everything(path: Path) -> None:
    """A spool as a stopped daemon leaves it: cursors, rows still owed, dead letters."""
    spool = Spool(path)
    await spool.open()
    try:
        for name in ("database", "jsonfile", "flaky", "failing"):
            await spool.ensure_cursor(name)
        body = json.dumps(record())
        await spool.append([(20, body)] * 5)
        await spool.move_cursor("database", 5)
        await spool.move_cursor("jsonfile", 3)
        await spool.dead_letter([DeadLetter("failing", row, "always fails", 1)
                                 for row in await spool.read(0, 5)])
        await spool.move_cursor("failing", 5)
    finally:
        await spool.close()
    counts = {t: len(rows) for t, rows in contents(path).items()}
    assert counts["spool"] == 5 and counts["cursor"] == 4 and counts["dead_letter"] == 5


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


# -- a full disk -------------------------------------------------------------------------------------


async def test_a_full_disk_stops_ingest_at_the_reserve_and_recovers_by_itself(tmp_path):
    started = time.monotonic()
    with small_filesystem(tmp_path / "fs", "8m") as fs:
        (tmp_path / "flaky.down").touch()
        daemon = Daemon(tmp_path, ["flaky"], spool={"path": str(fs / "spool.db"),
                                                    "reserve_bytes": 2_000_000},
                        dispatchers={"flaky": {"max_attempts": HELD}})
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                accepted = await _fill(session, daemon.url)
                async with session.get(daemon.url + "/readyz") as resp:
                    assert resp.status == 503
                    assert "space" in " ".join((await resp.json())["problems"])
                async with session.get(daemon.url + "/v1/status") as resp:
                    spool = (await resp.json())["spool"]
                    assert spool["low_space"] is True and spool["free_bytes"] < 2_000_000
                statvfs = os.statvfs(fs)
                assert statvfs.f_bavail * statvfs.f_frsize > 1_000_000  # stopped before full

                (tmp_path / "flaky.down").unlink()  # the stuck dispatcher comes back
                await eventually(lambda: len(daemon.lines("flaky.jsonl")) >= len(accepted))
                await eventually(lambda: _ready(session, daemon.url), timeout=10)
                status, body = await post(session, daemon.url + "/v1/events", record())
                assert status == 202, body  # without a restart
                accepted += body["ids"]
                await eventually(lambda: len(daemon.lines("flaky.jsonl")) >= len(accepted))
                await eventually(lambda: contents(fs / "spool.db")["spool"] == [])  # compacted
            daemon.signal(signal.SIGTERM)
            assert daemon.wait() == 0
            await daemon.start()  # nothing is owed: nothing may be delivered again
            async with aiohttp.ClientSession() as session:
                status, body = await post(session, daemon.url + "/v1/events", record())
                assert status == 202
                accepted += body["ids"]
                await eventually(lambda: len(daemon.lines("flaky.jsonl")) >= len(accepted))
            daemon.signal(signal.SIGTERM)
            assert daemon.wait() == 0
        finally:
            daemon.kill()
    assert ids(daemon.lines("flaky.jsonl")) == accepted  # each once, in order
    assert time.monotonic() - started < 30


async def _fill(session: aiohttp.ClientSession, url: str) -> list[str]:
    """POST batches until ingest answers 503 spool_low_space; the ids of all accepted."""
    accepted: list[str] = []
    batch = [record(reason="r" * 2000) for _ in range(50)]
    for _ in range(200):
        async with session.post(url + "/v1/events", json=batch) as resp:
            body = await resp.json()
            if resp.status == 202:
                accepted += body["ids"]
                continue
            assert resp.status == 503 and body["error"]["code"] == "spool_low_space", body
            assert int(resp.headers["Retry-After"]) > 0
            assert len(accepted) > 500  # most of the disk was used first
            return accepted
    raise AssertionError(f"ingest never stopped: {len(accepted)} records accepted")


async def _ready(session: aiohttp.ClientSession, url: str) -> bool:
    async with session.get(url + "/readyz") as resp:
        return resp.status == 200

