"""Live reload against the real process: toggles under load, invalid edits, SIGHUP, new plugins."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from .conftest import record
from .daemon import DISPATCHD, Daemon, eventually, post

pytestmark = pytest.mark.integration


@dataclass
class Stream:
    """Batches POSTed continuously: when each was sent, when its 202 came back, and its ids."""

    batches: list[tuple[float, float, list[str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, session: aiohttp.ClientSession, url: str) -> None:
        while not self.stop.is_set():
            sent = time.monotonic()
            status, body = await post(session, url + "/v1/events", [record() for _ in range(10)])
            if status != 202:
                self.errors.append(f"{status}: {body}")
            else:
                self.batches.append((sent, time.monotonic(), body["ids"]))
            await asyncio.sleep(0.005)

    def ids(self, sent_after: float = 0.0, answered_before: float = float("inf")) -> set[str]:
        return {i for sent, answered, ids in self.batches
                if sent >= sent_after and answered <= answered_before for i in ids}


async def config_status(session: aiohttp.ClientSession, daemon: Daemon) -> dict:
    async with session.get(daemon.url + "/v1/config") as resp:
        return await resp.json()


async def edit(session: aiohttp.ClientSession, daemon: Daemon, text: str) -> float:
    """Write the config file; return when the daemon has applied it (generation moved)."""
    before = (await config_status(session, daemon))["generation"]
    daemon.config.write_text(text)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = await config_status(session, daemon)
        if status["generation"] > before:
            assert status["last_reload_error"] is None
            return time.monotonic()
        await asyncio.sleep(0.02)
    raise AssertionError(f"edit not applied: {await config_status(session, daemon)}")


def config_for(daemon: Daemon, enabled: list[str], db_path: str = "events.db") -> str:
    text = daemon.config.read_text()
    start = text.index("enabled = ")
    end = text.index("\n", start)
    text = text[:start] + f"enabled = {enabled!r}" + text[end:]
    return text.replace(
        text[text.index('url = "sqlite:///'):text.index("\n", text.index('url = "sqlite:///'))],
        f'url = "sqlite:///{daemon.tmp}/{db_path}"',
    )


async def test_toggling_under_load_loses_nothing(tmp_path):
    daemon = Daemon(tmp_path, ["database"])
    await daemon.start()
    stream = Stream()
    windows: list[tuple[float, float]] = []  # jsonfile certainly enabled: [applied, edit written)
    try:
        async with aiohttp.ClientSession() as session:
            writers = [asyncio.create_task(stream.run(session, daemon.url)) for _ in range(2)]
            await asyncio.sleep(0.5)
            for round_ in range(3):
                on = await edit(session, daemon, config_for(daemon, ["database", "jsonfile"]))
                await asyncio.sleep(0.6)
                if round_ == 1:  # the database's options change once: restarted alone, cursor kept
                    await edit(session, daemon, config_for(daemon, ["database", "jsonfile"],
                                                           db_path="./events.db"))
                    await asyncio.sleep(0.3)
                off_written = time.monotonic()
                await edit(session, daemon, config_for(daemon, ["database"], db_path=(
                    "./events.db" if round_ >= 1 else "events.db")))
                windows.append((on, off_written))
                await asyncio.sleep(0.4)
            stream.stop.set()
            await asyncio.gather(*writers)
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
    good = daemon.config.read_text()
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            for name, (text, key) in BAD_EDITS.items():
                daemon.config.write_text(text)
                await eventually_async(session, daemon, key)
                status, body = await post(session, daemon.url + "/v1/events", record())
                assert status == 202, name
                new_id = body["ids"][0]
                await eventually(lambda: new_id in  # noqa: B023  (awaited within the iteration)
                                 {json.loads(x)["id"] for x in daemon.lines("events.jsonl")})
                assert (await config_status(session, daemon))["enabled"] == ["database", "jsonfile"]
            await edit(session, daemon, good)
            assert (await config_status(session, daemon))["last_reload_error"] is None
    finally:
        daemon.kill()
    assert len(daemon.db_rows()) == len(BAD_EDITS)


async def eventually_async(session: aiohttp.ClientSession, daemon: Daemon, key: str) -> None:
    for _ in range(200):
        error = (await config_status(session, daemon))["last_reload_error"]
        if error and key in error:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{key!r} not reported: {await config_status(session, daemon)}")


async def test_sighup_and_the_reload_command(tmp_path):
    daemon = Daemon(tmp_path, ["database"])
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            generation = (await config_status(session, daemon))["generation"]
            daemon.signal(signal.SIGHUP)
            for _ in range(200):
                if (await config_status(session, daemon))["generation"] > generation:
                    break
                await asyncio.sleep(0.025)
            assert (await config_status(session, daemon))["generation"] == generation + 1

            result = await asyncio.to_thread(_cli, "reload", "-c", str(daemon.config))
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["generation"] == generation + 2

            # [server] cannot change live: reported, and the old value stays in force.
            daemon.config.write_text(daemon.config.read_text().replace(
                "[server]", "[server]\nmax_batch = 2"))
            result = await asyncio.to_thread(_cli, "reload", "-c", str(daemon.config))
            assert json.loads(result.stdout)["restart_required"] == ["server.max_batch"]
            assert (await config_status(session, daemon))["restart_required"] == ["server.max_batch"]
            assert (await post(session, daemon.url + "/v1/events", [record()] * 5))[0] == 202

            daemon.config.write_text(daemon.config.read_text() + "\n[bogus]\n")
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
            text = config_for(daemon, ["database", "late"])
            await edit(session, daemon, text + f'\n[dispatchers.late]\npath = "{tmp_path}/late.txt"\n')
            status, body = await post(session, daemon.url + "/v1/events", [record()] * 3)
            assert status == 202
            await eventually(lambda: set(body["ids"]) == set(daemon.lines("late.txt")))
    finally:
        daemon.kill()
