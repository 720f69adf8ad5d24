"""The CLI against the real daemon, as an operator meets it: status, dead letters, reload, logs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from .support import TESTPLUGINS
from .support.config import config_data, write_config
from .support.daemon import DISPATCHD, Daemon, eventually, free_port
from .support.records import record

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    filter(None, [str(TESTPLUGINS), os.environ.get("PYTHONPATH")]))}


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DISPATCHD), *args, "-c", str(config)], capture_output=True,
                          text=True, env=ENV, timeout=60)


async def status_of(url: str) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url + "/v1/status") as resp:
        return {d["name"]: d for d in (await resp.json())["dispatchers"]}


async def post(url: str, records: list[dict[str, Any]]) -> list[str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/events", json=records) as resp:
            assert resp.status == 202
            ids: list[str] = (await resp.json())["ids"]
            return ids


def table(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the table that starts at the line beginning with ``first_header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header))
    headers = re.split(r" {2,}", lines[start])
    body = lines[start + 1:]
    body = body[:body.index("")] if "" in body else body  # the table ends at a blank line
    rows = [re.split(r" {2,}", line.strip()) for line in body]
    assert all(len(row) == len(headers) for row in rows), (headers, rows)
    return [dict(zip(headers, row, strict=True)) for row in rows]


async def test_status_and_dead_letters_as_tables_and_as_json(tmp_path):
    daemon = Daemon(tmp_path, ["database", "flaky"])
    (tmp_path / "flaky.down").touch()
    await daemon.start()
    try:
        ids = await post(daemon.url, [record()] * 3)

        async def settled() -> bool:
            now = await status_of(daemon.url)
            return now["flaky"]["dead_letters"] == 3 and now["database"]["delivered"] == 3

        await eventually(settled)
        result = cli(daemon.config, "status")
        assert result.returncode == 0, result.stderr
        head, config, spool = result.stdout.splitlines()[:3]
        assert head == (f"dispatchd {socket.gethostname()} pid {daemon.proc.pid} at {daemon.url}, "
                        "3 events accepted since start")
        assert config == f"config {daemon.config}, generation 1"
        assert spool.startswith(f"spool {tmp_path}/spool.db: open, backlog 0 of 1,000,000")
        rows = {row["DISPATCHER"]: row for row in table(result.stdout, "DISPATCHER")}
        assert rows["database"] == {"DISPATCHER": "database", "STATE": "running", "BACKLOG": "0",
                                    "DELIVERED": "3", "FAILED": "0", "DEAD LETTERS": "0",
                                    "LAG": "0.0s", "LAST ERROR": "-"}
        assert rows["flaky"]["DEAD LETTERS"] == "3" and rows["flaky"]["FAILED"] == "9"
        assert "flaky sink is down" in rows["flaky"]["LAST ERROR"]
        # what a dispatcher reports of itself follows the table
        assert f"database: url=sqlite:///{tmp_path}/events.db, event_table=created by dispatchd" \
            in result.stdout.splitlines()
        raw = json.loads(cli(daemon.config, "status", "--json").stdout)
        assert {"spool", "config", "dispatchers"} <= set(raw)
        enabled = {d["name"]: d["enabled"] for d in raw["dispatchers"]}
        assert enabled == {"database": True, "flaky": True, "jsonfile": False, "slow": False}
        assert rows["slow"]["STATE"] == "stopped" and rows["slow"]["LAG"] == "-"

        listed = cli(daemon.config, "dead-letters", "list", "-d", "flaky")
        assert listed.returncode == 0, listed.stderr
        letters = table(listed.stdout, "ID")
        assert [row["DISPATCHER"] for row in letters] == ["flaky"] * 3
        assert [row["ATTEMPTS"] for row in letters] == ["3"] * 3
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["FAILED AT"])
                   for row in letters)
        assert "flaky sink is down" in letters[0]["ERROR"]
        assert listed.stderr.strip() == "3 dead letters"
        as_json = cli(daemon.config, "dead-letters", "list", "-d", "flaky", "--json")
        assert [json.loads(line)["record"]["id"] for line in as_json.stdout.splitlines()] == ids

        unknown = cli(daemon.config, "dead-letters", "list", "-d", "nope")
        assert unknown.returncode == 1 and unknown.stdout == ""
        assert unknown.stderr.startswith("dispatchd: ") and "nope" in unknown.stderr

        (tmp_path / "flaky.down").unlink()
        replayed = cli(daemon.config, "dead-letters", "replay", "-d", "flaky")
        assert replayed.returncode == 0, replayed.stderr
        assert "3 dead letters of flaky queued for delivery" in replayed.stderr
    finally:
        daemon.kill()


async def test_reload_after_a_port_edit_reaches_the_daemon_and_shows_progress(tmp_path):
    daemon = Daemon(tmp_path, ["database", "slow"], dispatch={"drain_timeout": 3.0},
                    dispatchers={"slow": {"delay": 0.05}})
    await daemon.start()
    try:
        await post(daemon.url, [record()] * 100)  # slow needs 5 s for these: the drain waits 3 s
        old_port, new_port = daemon.port, free_port()
        daemon.write_config(["database"], server={"port": new_port})
        result = cli(daemon.config, "reload")
        assert result.returncode == 0, result.stderr
        assert (f"asking dispatchd pid {daemon.proc.pid} at http://127.0.0.1:{old_port} to reload"
                in result.stderr)
        assert "still waiting for the reload" in result.stderr
        assert json.loads(result.stdout)["restart_required"] == ["server.port"]

        status = cli(daemon.config, "status")
        assert status.returncode == 0, status.stderr
        assert f"at http://127.0.0.1:{old_port}" in status.stdout.splitlines()[0]
        assert "restart required to apply: server.port" in status.stdout
        states = {row["DISPATCHER"]: row["STATE"] for row in table(status.stdout, "DISPATCHER")}
        assert states["database"] == "running" and states["slow"] == "stopped", states

        daemon.write_config(["database"], server={"port": new_port}, bogus={"key": 1},
                            dispatch={"batch_size": 0})
        rejected = cli(daemon.config, "reload")
        assert rejected.returncode == 1
        lines = rejected.stderr.splitlines()
        assert any(line.startswith("dispatchd: reload rejected") for line in lines), lines
        assert "  dispatch.batch_size: Input should be greater than 0" in lines
        assert "  bogus: Extra inputs are not permitted" in lines
        status = cli(daemon.config, "status")
        assert status.returncode == 0 and "dispatchd: warning: " in status.stderr  # still found
        assert "\nlast reload rejected: " in status.stdout
    finally:
        daemon.kill()


async def test_json_logs_with_the_level_flag_after_the_command(tmp_path):
    port = free_port()
    config = write_config(tmp_path / "dispatchd.toml", config_data(
        tmp_path, ["database", "failing"], port, log={"format": "json", "level": "WARNING",
                                                       "access": True}))
    url, stderr = f"http://127.0.0.1:{port}", tmp_path / "stderr.log"
    with stderr.open("wb") as err:  # the flag after the command, and it wins over [log] level
        proc = subprocess.Popen([str(DISPATCHD), "serve", "-c", str(config), "--log-level", "DEBUG"],
                                stdout=subprocess.DEVNULL, stderr=err, env=ENV)
    try:
        await eventually(lambda: ready(url, proc))
        await post(url, [record()])

        def worker_errors() -> list[dict[str, Any]]:
            return [line for line in map(json.loads, stderr.read_text().splitlines())
                    if line.get("dispatcher") == "failing" and line["level"] == "ERROR"]

        errors = await eventually(worker_errors)
        assert "always fails" in errors[0]["message"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    lines = [json.loads(line) for line in stderr.read_text().splitlines()]  # each, or it raises
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["level"] == "DEBUG" for line in lines)
    assert any(line["level"] == "INFO" and line["logger"].startswith("dispatchd") for line in lines)
    access = [line for line in lines if line["logger"] == "dispatchd.access"]
    assert any(a["http"]["method"] == "POST" and a["http"]["status"] == 202 for a in access)


async def ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, f"dispatchd exited with {proc.returncode}"
    try:
        async with aiohttp.ClientSession() as session, session.get(url + "/readyz") as resp:
            return resp.status == 200
    except aiohttp.ClientConnectionError:
        return False
