from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from dispatchd import config
from dispatchd.reload import Plan, Reloader, ReloadResult, plan, watch
from dispatchd.spool import Spool
from dispatchd.workers import Policy, Worker

from .support.backends import Collect, put
from .support.config import toml_text
from .support.daemon import eventually
from .support.records import record


def cfg(enabled: list[str], **dispatchers: dict) -> config.Config:
    """A config with ``enabled`` dispatchers and these dispatchers' tables, defaults elsewhere."""
    data = {"dispatch": {"enabled": enabled}, "dispatchers": dispatchers}
    return config.parse(toml_text(data))


def test_plan_starts_stops_and_keeps():
    p = plan(cfg(["database", "jsonfile"]), cfg(["database", "message"]), failed=set())
    assert p == Plan(start=("message",), stop=("jsonfile",))
    assert p.describe() == "enabled message; disabled jsonfile"


def test_changed_options_restart_only_that_dispatcher():
    old = cfg(["database", "jsonfile"], jsonfile={"path": "a"})
    new = cfg(["database", "jsonfile"], jsonfile={"path": "b"})
    assert plan(old, new, set()) == Plan(restart=("jsonfile",))


def test_a_level_change_is_applied_in_place_not_by_restart():
    old = cfg(["jsonfile"], jsonfile={"path": "a"})
    new = cfg(["jsonfile"], jsonfile={"path": "a", "level": "ERROR"})
    assert plan(old, new, set()) == Plan()


def test_failed_dispatchers_are_tried_again():
    assert plan(cfg(["nope"]), cfg(["nope"]), failed={"nope"}) == Plan(restart=("nope",))


def test_server_and_spool_changes_need_a_restart():
    old = cfg(["database"])
    new = config.parse(toml_text({"server": {"port": 9999}, "spool": {"sync": "full"},
                                  "dispatch": {"level": 40}}))
    assert plan(old, new, set()).restart_required == ("server.port", "spool.sync")
    renamed = config.parse(toml_text({"server": {"instance": "another-name"}}))
    assert plan(old, renamed, set()).restart_required == ("server.instance",)


async def test_requests_coalesce_and_reloads_never_overlap():
    running, applied = 0, []

    async def apply(reason: str) -> ReloadResult:
        nonlocal running
        running += 1
        assert running == 1  # serial
        applied.append(reason)
        await asyncio.sleep(0.05)  # a reload takes a while: long enough for requests to pile up
        running -= 1
        return ReloadResult(True, len(applied))

    reloader = Reloader(apply)
    task = asyncio.create_task(reloader.run())
    first = reloader.request("a")
    await eventually(lambda: applied == ["a"])  # "a" is being applied; the burst waits for the next
    burst = [reloader.request(r) for r in ("b", "c", "b")]
    results = await asyncio.gather(first, *burst)
    task.cancel()
    assert applied == ["a", "b, c"]
    assert [r.generation for r in results] == [1, 2, 2, 2]


@pytest.mark.parametrize("how", ["rewrite", "rename", "symlink swap"])
async def test_watch_sees_every_way_of_replacing_the_file(tmp_path, how):
    # A Kubernetes ConfigMap: dispatchd.toml -> ..data/dispatchd.toml, ..data -> ..v1
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v1" / "dispatchd.toml").write_text("v = 1\n")
    (tmp_path / "..data").symlink_to("..v1")
    path = tmp_path / "dispatchd.toml"
    path.symlink_to("..data/dispatchd.toml")
    seen: list[str] = []
    changed = asyncio.Event()

    def on_change(reason: str) -> None:
        seen.append(reason)
        changed.set()

    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(path, on_change, stop))
    await watching(tmp_path / "..v1" / "dispatchd.toml", changed)
    seen.clear()
    if how == "rewrite":
        (tmp_path / "..v1" / "dispatchd.toml").write_text("v = 2\n")
    elif how == "rename":
        (tmp_path / "new.toml").write_text("v = 2\n")
        path.unlink()
        os.rename(tmp_path / "new.toml", path)
    else:
        (tmp_path / "..v2").mkdir()
        (tmp_path / "..v2" / "dispatchd.toml").write_text("v = 2\n")
        (tmp_path / "..data_tmp").symlink_to("..v2")
        os.rename(tmp_path / "..data_tmp", tmp_path / "..data")
    await asyncio.wait_for(changed.wait(), 5)
    (tmp_path / "unrelated.txt").write_text("x")  # same directory, same config: no reload
    # Not a wait for an event but a window for a wrong one: a reload would show within it.
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(watcher, 5)
    assert seen == ["file changed"]


async def watching(target: Path, changed: asyncio.Event, timeout: float = 10.0) -> None:
    """Rewrite ``target`` until the watcher reports it: then it is watching (``watch`` gives no
    other sign of having started)."""
    deadline = asyncio.get_running_loop().time() + timeout
    probe = 0
    while not changed.is_set():
        assert asyncio.get_running_loop().time() < deadline, "the watcher never saw a change"
        probe += 1
        target.write_text(f"probe = {probe}\n")
        with contextlib.suppress(TimeoutError):  # a watching watcher answers in ~0.1 s
            await asyncio.wait_for(changed.wait(), 1.0)
    changed.clear()


async def test_drain_delivers_up_to_a_seq_then_stops(tmp_path):
    spool = Spool(tmp_path / "spool.db")
    await spool.open()
    try:
        await spool.ensure_cursor("c")
        await put(spool, *(record() for _ in range(5)))
        upto = spool.head
        await put(spool, record(), record())  # accepted after the disable: not owed
        backend = Collect()
        worker = Worker("c", backend, spool, Policy(min_level=10, batch_size=2))
        worker.start()
        assert await worker.drain(upto, timeout=5)
        await worker.stop(0)
        assert len(backend.got) == 5 and spool.cursors["c"] == 5
        assert await spool.retire_cursor("c", "disabled", upto) == 0
        assert "c" not in spool.cursors and await spool.dead_letter_counts() == {}
    finally:
        await spool.close()


async def test_a_drain_that_times_out_dead_letters_only_what_was_owed(tmp_path):
    spool = Spool(tmp_path / "spool.db")
    await spool.open()
    try:
        await spool.ensure_cursor("c")
        await spool.ensure_cursor("other")
        await put(spool, *(record() for _ in range(3)))
        upto = spool.head
        await put(spool, record())
        assert await spool.retire_cursor("c", "disabled", upto) == 3
        assert [d.row.seq for d in await spool.dead_letters("c")] == [1, 2, 3]
    finally:
        await spool.close()
