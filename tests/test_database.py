from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from dispatchd.dispatchers.database import DatabaseDispatcher, DatabaseOptions, row_of
from dispatchd.dispatchers.event_table import COLUMNS
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
        # SQLAlchemy's DateTime on SQLite, as Senlin's TZAwareDateTime stores UTC: naive text.
        "id": r.id, "timestamp": "2026-11-28 06:00:00.000000", "oid": "c-1", "oname": "web",
        "otype": "CLUSTER", "cluster_id": "c-1", "level": "30", "user": "user-1",
        "project": "project-1", "action": "CLUSTER_SCALE_OUT", "status": "end",
        "status_reason": "Cluster scaled out", "meta_data": '{"count": 2}',
    }


async def test_batch_is_stored_and_redelivery_does_not_duplicate(database, tmp_path):
    records = [Record.model_validate(record()) for _ in range(3)]
    await database.dump_batch(records)
    await database.dump_batch(records[1:])  # at-least-once: the same ids again
    rows = fetch(tmp_path)
    assert sorted(r["id"] for r in rows) == sorted(r.id for r in records)
    assert json.loads(rows[0]["meta_data"]) == {"count": 2}
    assert {row["level"] for row in rows} == {"20"} and len(rows) == 3


async def test_single_dump_uses_senlins_signature(database, tmp_path):
    r = Record.model_validate(record())
    await database.dump(r.level, r.action, **r.dump_kwargs())
    assert [row["id"] for row in fetch(tmp_path)] == [r.id]


async def test_a_table_it_creates_is_senlins_with_dispatchds_indexes_in_wal(database, tmp_path):
    with sqlite3.connect(tmp_path / "ev.db") as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        columns = [(r[1], r[2], r[3], r[5]) for r in db.execute("PRAGMA table_info(event)")]
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert {"ix_event_timestamp", "ix_event_oid_timestamp", "ix_event_cluster_id_timestamp"} <= names
    # (name, type, not null, primary key), as Senlin's migrations leave the table
    assert columns[:3] == [("id", "VARCHAR(36)", 1, 1), ("timestamp", "DATETIME", 1, 0),
                           ("oid", "VARCHAR(36)", 0, 0)]
    assert ("level", "VARCHAR(63)", 0, 0) in columns and ("meta_data", "TEXT", 0, 0) in columns
    assert mode == "wal"
    assert database.report() == {"url": f"sqlite:///{tmp_path}/ev.db",
                                 "event_table": "created by dispatchd"}


SENLINS_TABLE = """CREATE TABLE "event" (id VARCHAR(36) NOT NULL, timestamp DATETIME NOT NULL,
    oid VARCHAR(36), oname VARCHAR(255), otype VARCHAR(36), cluster_id VARCHAR(36),
    level VARCHAR(63), user VARCHAR(64), project VARCHAR(64), action VARCHAR(36),
    status VARCHAR(255), status_reason TEXT, meta_data TEXT, PRIMARY KEY (id))"""


def schema(path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return [*db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name"),
                db.execute("PRAGMA journal_mode").fetchone()]


async def test_an_existing_event_table_is_written_as_it_is(tmp_path):
    with sqlite3.connect(tmp_path / "ev.db") as db:
        db.execute(SENLINS_TABLE)
        db.execute("CREATE TABLE cluster (id VARCHAR(36) PRIMARY KEY)")  # more of Senlin's
    before = schema(tmp_path / "ev.db")
    backend = DatabaseDispatcher("database", DatabaseOptions(url=f"sqlite:///{tmp_path}/ev.db"))
    await backend.start()
    try:
        assert backend.report()["event_table"] == "existing (written as it is)"
        await backend.dump_batch([Record.model_validate(record())])
    finally:
        await backend.close()
    assert schema(tmp_path / "ev.db") == before  # no index, no DDL, journal mode unchanged
    assert before[-1] == ("delete",)
    assert len(fetch(tmp_path)) == 1


async def test_the_connection_caches_more_and_checkpoints_less_without_touching_the_file(tmp_path):
    from dispatchd.dispatchers.store_sqlite import CACHE_KIB, WAL_PAGES

    backend = DatabaseDispatcher("database", DatabaseOptions(url=f"sqlite:///{tmp_path}/ev.db"))
    await backend.start()
    try:
        db = backend._store._db
        assert db is not None
        settings = await db.run(lambda db: (
            db.execute("PRAGMA cache_size").fetchone()[0],
            db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]))
    finally:
        await backend.close()
    assert settings == (-CACHE_KIB, WAL_PAGES)
    with sqlite3.connect(tmp_path / "ev.db") as db:  # another connection has SQLite's defaults
        assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        assert db.execute("PRAGMA cache_size").fetchone()[0] == -2000


async def test_an_event_table_that_is_not_senlins_fails_start_naming_what_is_missing(tmp_path):
    with sqlite3.connect(tmp_path / "ev.db") as db:
        db.execute("CREATE TABLE event (id TEXT PRIMARY KEY, obj_id TEXT)")
    backend = DatabaseDispatcher("database", DatabaseOptions(url=f"sqlite:///{tmp_path}/ev.db"))
    with pytest.raises(RuntimeError, match="lacks column.*timestamp.*oid"):
        await backend.start()
    await backend.close()


async def test_a_failed_batch_stores_nothing(database, tmp_path):
    good = Record.model_validate(record())
    with pytest.raises(sqlite3.Error):
        bad = Record.model_construct(**{**good.__dict__, "id": object()})  # not bindable
        await database.dump_batch([good, bad])
    assert fetch(tmp_path) == []


@pytest.mark.parametrize("url", ["oracle://x/y", "sqlite:///", "events.db", "sqlite://host/x.db"])
def test_url_must_name_a_known_store(url):
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


@given(st.datetimes())
def test_timestamps_are_encoded_as_sqlalchemy_encodes_them_on_sqlite(value):
    """The fast path (isoformat) stands in for SQLAlchemy's processor only where they agree."""
    from sqlalchemy import DateTime
    from sqlalchemy.dialects import sqlite

    from dispatchd.dispatchers.event_table import _datetime_encoder

    dialect = sqlite.dialect()
    processor = DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert _datetime_encoder(dialect)(value) == processor(value)


# -- row building: the fast path against the plain one ----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=8,
)
entities = st.one_of(st.none(), st.fixed_dictionaries(
    {"type": st.sampled_from(["NODE", "node", "CLUSTER", "cluster", "PROFILE"])},
    optional={"id": st.text(max_size=5), "name": st.text(max_size=5), "status": st.text(max_size=5),
              "cluster_id": st.text(max_size=5), "status_reason": st.text(max_size=5)}))
offsets = st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.tuples(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 1, 1)),
                    offsets).map(lambda t: t[0].replace(tzinfo=t[1]))


@st.composite
def records(draw: st.DrawFn) -> Record:
    action = {"action": draw(st.sampled_from(["NODE_CREATE", "CLUSTER_OPERATION", "NODE_OPERATION"])),
              "inputs": draw(st.fixed_dictionaries({}, optional={"operation": json_values})),
              "user": draw(st.none() | st.text(max_size=4)),
              "project": draw(st.none() | st.text(max_size=4))}
    if (entity := draw(entities)) is not None:
        action["entity"] = entity
    body = {"level": draw(st.integers(10, 50)), "action": action,
            "timestamp": draw(moments).isoformat(),
            "phase": draw(st.none() | st.text(max_size=4)),
            "reason": draw(st.none() | st.text(max_size=4)),
            "extra": draw(st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3))}
    if draw(st.booleans()):
        body["context"] = {"user_id": draw(st.none() | st.text(max_size=4)),
                           "project_id": draw(st.none() | st.text(max_size=4))}
    return Record.model_validate_json(json.dumps(body))


def plain_row(record: Record) -> tuple[object, ...]:
    """The row as first written: Derived's fields by name, SQLAlchemy's processor, json.dumps."""
    from sqlalchemy import DateTime
    from sqlalchemy.dialects import sqlite

    dialect = sqlite.dialect()
    processor = DateTime().dialect_impl(dialect).bind_processor(dialect)
    action, entity, context = record.action, record.action.entity, record.context
    name = action.action
    if name in ("CLUSTER_OPERATION", "NODE_OPERATION"):
        operation = action.inputs.get("operation")
        name = operation if isinstance(operation, str) and operation else name
    otype = entity.type.upper() if entity else None
    cluster_id = None if entity is None else entity.id if otype == "CLUSTER" else entity.cluster_id
    extra = record.extra or {}
    return (
        record.id, processor(record.timestamp.astimezone(UTC).replace(tzinfo=None)),
        entity.id if entity else None, entity.name if entity else None, otype, cluster_id,
        str(record.level),
        context.user_id if context else action.user, context.project_id if context else action.project,
        name, record.phase or (entity.status if entity else None),
        record.reason or (entity.status_reason if entity else None),
        json.dumps(extra) if extra else "{}",
    )


@given(records())
def test_rows_are_built_as_the_plain_way_builds_them(r):
    assert row_of(r) == plain_row(r)
