"""The dispatch core driven without any server: ingest, delivery, the snapshot, reload, shutdown."""

from __future__ import annotations

import json
import sqlite3

import pytest

from dispatchd import config
from dispatchd.core import Core
from dispatchd.errors import NotEnabled, Stopping, UnknownDispatcher
from dispatchd.models import Record

from .support.config import config_data, toml_text, write_config
from .support.daemon import eventually
from .support.records import record


def core_for(tmp_path, enabled=("database", "jsonfile"), **sections) -> Core:
    path = write_config(tmp_path / "dispatchd.toml", config_data(tmp_path, enabled, **sections))
    return Core(config.parse(toml_text(config_data(tmp_path, enabled, **sections))), str(path))


def records(n: int) -> list[Record]:
    return [Record.model_validate(record()) for _ in range(n)]


def stored(tmp_path) -> int:
    if not (tmp_path / "events.db").exists():
        return 0
    with sqlite3.connect(tmp_path / "events.db") as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM event").fetchone()[0])
        except sqlite3.OperationalError:  # the table is not there yet
            return 0


def lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_ingest_delivers_to_every_dispatcher_and_the_snapshot_says_so(tmp_path):
    core = core_for(tmp_path)
    await core.start()
    try:
        seqs = await core.ingest(records(5))
        assert seqs == [1, 2, 3, 4, 5]
        await eventually(lambda: stored(tmp_path) == 5)
        await eventually(lambda: lines(tmp_path / "events.jsonl") == 5)
        snapshot = await core.snapshot()
        by_name = {d.name: d for d in snapshot.dispatchers}
        assert snapshot.accepted == 5 and snapshot.readiness_problems() == []
        assert by_name["database"].delivered == 5 and by_name["jsonfile"].delivered == 5
        assert by_name["database"].backlog == 0 and by_name["database"].state == "running"
        assert not by_name["flaky"].enabled  # configured, not enabled: listed at zero
        assert snapshot.as_dict()["config"]["enabled"] == ["database", "jsonfile"]
    finally:
        await core.stop(grace=5.0)
    assert not core.spool.is_open


async def test_typed_errors_not_http_ones(tmp_path):
    core = core_for(tmp_path, enabled=("database",))
    await core.start()
    try:
        with pytest.raises(UnknownDispatcher):
            await core.dead_letters("nope", 0, 10)
        with pytest.raises(NotEnabled):
            await core.replay_dead_letters("jsonfile")  # configured, not enabled
        assert await core.dead_letters("jsonfile", 0, 10) == []
        core.stopping = True
        with pytest.raises(Stopping):
            await core.ingest(records(1))
    finally:
        await core.stop(grace=5.0)


async def test_a_failing_shutdown_step_does_not_skip_closing_the_spool(tmp_path, caplog):
    core = core_for(tmp_path, enabled=("database",))
    await core.start()
    worker = core.workers["database"]
    real_stop = worker.stop

    async def broken_stop(grace: float) -> None:
        await real_stop(grace)
        raise RuntimeError("stop failed on purpose")

    worker.stop = broken_stop  # type: ignore[method-assign]

    async def broken_background() -> None:
        raise RuntimeError("background stop failed on purpose")

    core._stop_background = broken_background  # type: ignore[method-assign]
    await core.stop(grace=5.0)
    assert not core.spool.is_open and core.spool.lock is None  # closed and unlocked all the same
    assert "stop failed on purpose" in caplog.text and "background stop failed" in caplog.text
    for task in core._background:  # what the broken step left running
        task.cancel()


async def test_counters_survive_a_restart_and_a_disable(tmp_path):
    core = core_for(tmp_path)
    await core.start()
    try:
        await core.ingest(records(3))
        await eventually(lambda: core.stats["jsonfile"].delivered == 3)
        # Change jsonfile's options: the reload restarts it alone, its counters go on.
        data = config_data(tmp_path, ["database", "jsonfile"],
                           dispatchers={"jsonfile": {"path": f"{tmp_path}/other.jsonl"}})
        write_config(tmp_path / "dispatchd.toml", data)
        result = await core.reload("test")
        assert result.ok and result.plan.restart == ("jsonfile",)
        await core.ingest(records(2))
        await eventually(lambda: core.stats["jsonfile"].delivered == 5)
        write_config(tmp_path / "dispatchd.toml", config_data(tmp_path, ["database"]))
        result = await core.reload("test")
        assert result.ok and result.plan.stop == ("jsonfile",)
        jsonfile = {d.name: d for d in (await core.snapshot()).dispatchers}["jsonfile"]
        assert not jsonfile.enabled and jsonfile.delivered == 5
    finally:
        await core.stop(grace=5.0)


async def test_an_invalid_reload_changes_nothing_and_names_every_problem(tmp_path):
    core = core_for(tmp_path, enabled=("database",))
    await core.start()
    try:
        (tmp_path / "dispatchd.toml").write_text(toml_text(config_data(
            tmp_path, ["database", "nope"], spool={"max_events": 10},
            dispatchers={"database": {"url": "mysql://x"}})))
        result = await core.reload("test")
        assert not result.ok and core.generation == 1
        locs = {p.loc for p in result.problems}
        assert ("dispatchers", "database", "url") in locs and ("dispatchers", "nope") in locs
        assert any(loc[:1] == ("spool",) or loc == () for loc in locs), locs  # max_events < max_batch
        assert json.loads(json.dumps([p.as_dict() for p in result.problems]))[0].keys() == {"loc", "msg"}
    finally:
        await core.stop(grace=5.0)
