from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from dispatchd.dispatchers.database import COLUMNS, DatabaseDispatcher, DatabaseOptions, row_of
from dispatchd.models import Record
from dispatchd.spool import Spool
from dispatchd.workers import Policy, Worker

from .support.daemon import eventually
from .support.records import record


@pytest.fixture
async def database(tmp_path):
    backend = DatabaseDispatcher("database", DatabaseOptions(url=f"sqlite:///{tmp_path}/ev.db"))
    await backend.start()
    yield backend
    await backend.close()


def fetch(tmp_path) -> list[dict]:
    with sqlite3.connect(tmp_path / "ev.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM event ORDER BY timestamp")]


def test_row_is_what_senlins_database_dispatcher_stores():
    r = Record.model_validate(record(timestamp="2026-11-28T07:00:00+01:00", level="WARNING"))
    row = dict(zip(COLUMNS, row_of(r), strict=True))
    assert row == {
        "id": r.id, "timestamp": "2026-11-28T06:00:00.000000Z", "oid": "c-1", "oname": "web",
        "otype": "CLUSTER", "cluster_id": "c-1", "level": 30, "user": "user-1",
        "project": "project-1", "action": "CLUSTER_SCALE_OUT", "status": "end",
        "status_reason": "Cluster scaled out", "meta_data": '{"count":2}',
    }


async def test_batch_is_stored_and_redelivery_does_not_duplicate(database, tmp_path):
    records = [Record.model_validate(record()) for _ in range(3)]
    await database.dump_batch(records)
    await database.dump_batch(records[1:])  # at-least-once: the same ids again
    rows = fetch(tmp_path)
    assert sorted(r["id"] for r in rows) == sorted(r.id for r in records)
    assert json.loads(rows[0]["meta_data"]) == {"count": 2}


async def test_single_dump_uses_senlins_signature(database, tmp_path):
    r = Record.model_validate(record())
    await database.dump(r.level, r.action, **r.dump_kwargs())
    assert [row["id"] for row in fetch(tmp_path)] == [r.id]


async def test_schema_has_the_query_indexes(database, tmp_path):
    with sqlite3.connect(tmp_path / "ev.db") as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"ix_event_timestamp", "ix_event_oid", "ix_event_cluster_id"} <= names


async def test_a_failed_batch_stores_nothing(database, tmp_path):
    good = Record.model_validate(record())
    with pytest.raises(sqlite3.Error):
        bad = Record.model_construct(**{**good.__dict__, "id": object()})  # not bindable
        await database.dump_batch([good, bad])
    assert fetch(tmp_path) == []


@pytest.mark.parametrize("url", ["postgresql://x/y", "sqlite:///", "events.db"])
def test_url_must_be_sqlite_for_now(url):
    with pytest.raises(ValidationError):
        DatabaseOptions(url=url)


async def test_an_unwritable_path_fails_start(tmp_path):
    (tmp_path / "file").write_text("not a directory")  # permissions would not stop root
    backend = DatabaseDispatcher("database", DatabaseOptions(url=f"sqlite:///{tmp_path}/file/ev.db"))
    with pytest.raises(OSError):
        await backend.start()


# -- a start cut off part way leaves no connection behind ------------------------------------------


def _threads_for(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.is_alive() and t.name.startswith(f"sqlite:{name}")]


@pytest.fixture
def locked_db(tmp_path) -> Iterator[sqlite3.Connection]:
    """``ev.db`` in WAL mode with a write transaction held: creating the schema waits on it."""
    db = sqlite3.connect(tmp_path / "ev.db", isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("BEGIN IMMEDIATE")
    yield db
    if db.in_transaction:
        db.execute("ROLLBACK")
    db.close()


async def test_close_releases_a_connection_whose_start_timed_out(tmp_path, locked_db):
    backend = DatabaseDispatcher("database", DatabaseOptions(url=f"sqlite:///{tmp_path}/ev.db"))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await backend.start()
    assert _threads_for("ev.db"), "the opening was not in progress: the test proves nothing"
    asyncio.get_running_loop().call_later(0.1, locked_db.execute, "ROLLBACK")
    await backend.close()  # waits for the opening, then closes it
    assert _threads_for("ev.db") == []


async def test_a_worker_whose_start_is_cut_off_leaves_no_sqlite_thread(tmp_path, locked_db):
    spool = Spool(tmp_path / "spool.db")
    await spool.open()
    try:
        await spool.ensure_cursor("database")
        backend = DatabaseDispatcher("database",
                                     DatabaseOptions(url=f"sqlite:///{tmp_path}/ev.db"))
        worker = Worker("database", backend, spool, Policy(timeout=10.0))
        worker.start()
        await eventually(lambda: _threads_for("ev.db"), timeout=5)  # opening, held by the lock
        asyncio.get_running_loop().call_later(0.1, locked_db.execute, "ROLLBACK")
        await worker.stop(grace=0.0)  # cancels the start in progress; the worker closes
    finally:
        await spool.close()
    assert _threads_for("ev.db") == []
