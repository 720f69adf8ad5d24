"""Live reload against the real process: toggles under load, invalid edits, SIGHUP, new plugins."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest

from .support.daemon import DISPATCHD, Daemon, eventually, post
from .support.records import record
from .support.stream import streaming


async def config_status(session: aiohttp.ClientSession, daemon: Daemon) -> dict:
    async with session.get(daemon.url + "/v1/config") as resp:
        return await resp.json()


async def edit(session: aiohttp.ClientSession, daemon: Daemon, enabled: list[str],
               **sections: dict) -> float:
    """Rewrite the config; return when the daemon has applied it (generation moved)."""
    before = (await config_status(session, daemon))["generation"]
    daemon.write_config(enabled, **sections)
    status = await eventually(lambda: applied(session, daemon, before), timeout=10)
    assert status["last_reload_error"] is None, status
    return time.monotonic()


async def applied(session: aiohttp.ClientSession, daemon: Daemon, generation: int) -> dict | None:
    """The config status once a reload after ``generation`` has been applied, else ``None``."""
    status = await config_status(session, daemon)
    return status if status["generation"] > generation else None


def database_at(daemon: Daemon, db_path: str) -> dict:
    return {"database": {"url": f"sqlite:///{daemon.tmp}/{db_path}"}}


async def test_toggling_under_load_loses_nothing(tmp_path):
    daemon = Daemon(tmp_path, ["database"])
    await daemon.start()
    windows: list[tuple[float, float]] = []  # jsonfile certainly enabled: [applied, edit written)
    try:
        async with aiohttp.ClientSession() as session:
            async with streaming(session, daemon.url + "/v1/events", writers=2, size=10,
                                 pause=0.005) as stream:
                await stream.advance()
                db = database_at(daemon, "events.db")
                for round_ in range(3):
                    on = await edit(session, daemon, ["database", "jsonfile"], dispatchers=db)
                    await stream.advance()  # traffic while jsonfile is on: owed to it
                    if round_ == 1:  # the database's options change once: restarted alone,
                        db = database_at(daemon, "./events.db")  # cursor kept
                        await edit(session, daemon, ["database", "jsonfile"], dispatchers=db)
                        await stream.advance()
                    off_written = time.monotonic()
                    await edit(session, daemon, ["database"], dispatchers=db)
                    windows.append((on, off_written))
                    await stream.advance()  # traffic while jsonfile is off
            async with session.get(daemon.url + "/v1/dispatchers") as resp:
                states = {d["name"]: d for d in (await resp.json())["dispatchers"]}
    finally:
        daemon.kill()
    assert stream.errors == []
    accepted = stream.ids()
    assert len(accepted) > 300
    rows = daemon.db_rows()
    assert len(rows) == len(accepted) and {r["id"] for r in rows} == accepted  # exactly once
    in_jsonfile = [json.loads(line)["id"] for line in daemon.lines("events.jsonl")]
    for on, off in windows:
        owed = stream.ids(sent_after=on, answered_before=off)
        assert owed and owed <= set(in_jsonfile), f"{len(owed - set(in_jsonfile))} missing"
    assert states["jsonfile"]["enabled"] is False and states["jsonfile"]["dead_letters"] == 0
    logs = daemon.logs()
    assert logs.count("dispatcher jsonfile disabled") == 3
    assert "restarted database" in logs


BAD_EDITS = {
    "bad TOML": ("[dispatch\n", "invalid TOML"),
    "unknown key": ("[dispatch]\nenabled = ['database']\nbatch_sise = 5\n", "dispatch.batch_sise"),
    "unknown dispatcher": ("[dispatch]\nenabled = ['database', 'nope']\n", "no dispatcher named 'nope'"),
    "bad option": ("[dispatch]\nenabled = ['database']\n[dispatchers.database]\nurl = 'mysql://x'\n",
                   "dispatchers.database.url"),
}


async def test_invalid_edits_change_nothing_and_are_reported(tmp_path):
    daemon = Daemon(tmp_path, ["database", "jsonfile"])
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            for name, (text, key) in BAD_EDITS.items():
                daemon.config.write_text(text)
                await eventually(lambda: reported(session, daemon, key))  # noqa: B023
                status, body = await post(session, daemon.url + "/v1/events", record())
                assert status == 202, name
                new_id = body["ids"][0]
                await eventually(lambda: new_id in  # noqa: B023  (awaited within the iteration)
                                 {json.loads(x)["id"] for x in daemon.lines("events.jsonl")})
                assert (await config_status(session, daemon))["enabled"] == ["database", "jsonfile"]
            await edit(session, daemon, ["database", "jsonfile"])
            assert (await config_status(session, daemon))["last_reload_error"] is None
    finally:
        daemon.kill()
    assert len(daemon.db_rows()) == len(BAD_EDITS)


async def reported(session: aiohttp.ClientSession, daemon: Daemon, key: str) -> bool:
    """Whether the last reload error names ``key``."""
    error = (await config_status(session, daemon))["last_reload_error"]
    return bool(error) and key in error


async def test_sighup_and_the_reload_command(tmp_path):
    daemon = Daemon(tmp_path, ["database"])
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            generation = (await config_status(session, daemon))["generation"]
            daemon.signal(signal.SIGHUP)
            await eventually(lambda: applied(session, daemon, generation), timeout=10)
            assert (await config_status(session, daemon))["generation"] == generation + 1

            result = await asyncio.to_thread(_cli, "reload", "-c", str(daemon.config))
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["generation"] == generation + 2

            # [server] cannot change live: reported, and the old value stays in force.
            daemon.write_config(["database"], server={"max_batch": 2})
            result = await asyncio.to_thread(_cli, "reload", "-c", str(daemon.config))
            assert json.loads(result.stdout)["restart_required"] == ["server.max_batch"]
            assert (await config_status(session, daemon))["restart_required"] == ["server.max_batch"]
            assert (await post(session, daemon.url + "/v1/events", [record()] * 5))[0] == 202

            daemon.write_config(["database"], server={"max_batch": 2}, bogus={})
            result = await asyncio.to_thread(_cli, "reload", "-c", str(daemon.config))
            assert result.returncode == 1 and "bogus" in result.stderr
    finally:
        daemon.kill()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DISPATCHD), *args], capture_output=True, text=True, timeout=60)


LATE_PLUGIN = '''
from pathlib import Path
from pydantic import BaseModel
from dispatchd import EventBackend


class Options(BaseModel):
    path: str


class Late(EventBackend):
    Options = Options

    def dump_batch(self, events):
        with Path(self.options.path).open("a") as out:
            out.writelines(f"{event.id}\\n" for event in events)
'''


@pytest.fixture
def late_plugin(tmp_path: Path):
    """A plugin package to pip-install into the daemon's environment while it runs."""
    package = tmp_path / "late-plugin"
    (package / "dispatchd_lateplugin").mkdir(parents=True)
    (package / "dispatchd_lateplugin" / "__init__.py").write_text(LATE_PLUGIN)
    (package / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "dispatchd-lateplugin"
        version = "0.1"
        [project.entry-points."dispatchd.dispatchers"]
        late = "dispatchd_lateplugin:Late"
        [tool.setuptools]
        packages = ["dispatchd_lateplugin"]
    """))
    yield package
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "dispatchd-lateplugin"],
                   capture_output=True, timeout=120)


async def test_a_plugin_installed_while_running_is_enabled_by_an_edit(tmp_path, late_plugin):
    daemon = Daemon(tmp_path, ["database"])
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            assert (await post(session, daemon.url + "/v1/events", record()))[0] == 202
            install = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                "--no-build-isolation", str(late_plugin)], capture_output=True, text=True,
                timeout=300)
            assert install.returncode == 0, install.stderr
            late = {"late": {"path": f"{tmp_path}/late.txt"}}
            await edit(session, daemon, ["database", "late"], dispatchers=late)
            status, body = await post(session, daemon.url + "/v1/events", [record()] * 3)
            assert status == 202
            await eventually(lambda: set(body["ids"]) == set(daemon.lines("late.txt")))
    finally:
        daemon.kill()
