"""Senlin reads dispatchd's ``event`` rows as its own: Senlin 16.0.0's DB API, versioned objects
and ``DBEvent.dump``, run in Senlin's environments (tests/support/senlin.py), beside the real
``dispatchd`` writing through its ``database`` dispatcher."""

from __future__ import annotations

import signal
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .support.daemon import Daemon, eventually, post
from .support.senlin import run_script

CLUSTER, OTHER_CLUSTER = str(uuid.uuid4()), str(uuid.uuid4())
NOW = datetime.now(UTC).replace(microsecond=123456)
OLD = NOW - timedelta(days=40)


def item(kind: str, name: str, level: int, when: datetime, **kwargs: Any) -> dict[str, Any]:
    """One Senlin ``dump(level, action, **kwargs)`` call, as data for tests/senlin/db.py."""
    entity: dict[str, Any] = {"id": str(uuid.uuid4()), "name": f"{kind}-{uuid.uuid4().hex[:6]}"}
    if kind == "node":
        entity["cluster_id"] = kwargs.pop("cluster_id", CLUSTER)
    else:
        entity["id"] = kwargs.pop("cluster_id", CLUSTER)
    spec = {"kind": kind, "entity": entity,
            "action": {"id": str(uuid.uuid4()), "action": name, **kwargs.pop("action", {})},
            "context": {"user_id": "u-1", "project_id": "p-1", "request_id": "req-1"}}
    return {"spec": spec, "level": level, "kwargs": {"timestamp": when.isoformat(), **kwargs}}


# Each of Senlin's cases: cluster and node, phase or not, reason or the entity's, an operation
# named by its input, an orphan node (cluster_id ''), extra data, every level.
ITEMS = [
    item("cluster", "CLUSTER_SCALE_OUT", 20, NOW, phase="start", extra={"count": 2}),
    item("cluster", "CLUSTER_SCALE_OUT", 30, NOW, phase="end", reason="scaled out"),
    item("cluster", "CLUSTER_CHECK", 40, OLD, reason="check failed"),
    item("node", "NODE_CREATE", 20, OLD, phase="end", extra={"note": "café"}),
    item("node", "NODE_OPERATION", 50, NOW, action={"inputs": {"operation": "reboot"}}),
    item("node", "NODE_DELETE", 10, OLD, cluster_id="", phase="end"),
    item("cluster", "CLUSTER_RESIZE", 20, OLD, cluster_id=OTHER_CLUSTER, phase="end"),
]


def senlin_db(tmp: Path, venv: str = "sa2") -> Path:
    """A database made by Senlin's own migrations."""
    path = tmp / "senlin.db"
    run_script("db", "migrate", f"sqlite:///{path}", venv=venv)
    return path


def rows(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in db.execute("SELECT * FROM event ORDER BY oname")]
        except sqlite3.OperationalError:  # dispatchd has not created the table yet
            return []


def schema(path: Path) -> list[Any]:
    with sqlite3.connect(path) as db:
        return [*db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"),
                *db.execute("PRAGMA journal_mode"), *db.execute("PRAGMA user_version")]


async def write_through_dispatchd(tmp: Path, db: Path, records: list[dict[str, Any]]) -> None:
    """POST ``records`` in one batch to a real dispatchd whose ``database`` is ``db``."""
    daemon = Daemon(tmp, ["database"], dispatchers={"database": {"url": f"sqlite:///{db}"}})
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await post(session, daemon.url + "/v1/events", records)
            assert status == 202, body
            ids = set(body["ids"])
            await eventually(lambda: ids <= {row["id"] for row in rows(db)})
    finally:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0


async def test_rows_are_the_ones_senlins_own_dump_writes(tmp_path):
    """Column by column; only the generated id differs (each side draws a uuid4)."""
    senlin = senlin_db(tmp_path)
    records = run_script("db", "dump", f"sqlite:///{senlin}", stdin=ITEMS)["records"]
    ours = tmp_path / "dispatchd.db"
    await write_through_dispatchd(tmp_path, ours, records)
    theirs, mine = rows(senlin), rows(ours)
    assert len(theirs) == len(mine) == len(ITEMS)
    for senlin_row, dispatchd_row in zip(theirs, mine, strict=True):
        assert {**senlin_row, "id": None} == {**dispatchd_row, "id": None}
    assert {row["action"] for row in mine} >= {"reboot", "CLUSTER_SCALE_OUT"}
    assert "" in {row["cluster_id"] for row in mine}  # the orphan node, as Senlin writes it


def expected_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    def count(test: Any) -> int:
        return sum(1 for r in records if test(r))

    entity = lambda r: r["action"]["entity"]  # noqa: E731
    cluster_of = lambda r: entity(r)["id"] if entity(r)["type"] == "CLUSTER" \
        else entity(r)["cluster_id"]  # noqa: E731
    return {
        "level=20": count(lambda r: r["level"] == 20),
        "otype=NODE": count(lambda r: entity(r)["type"] == "NODE"),
        "action=reboot": count(lambda r: r["action"]["action"] == "NODE_OPERATION"),
        f"cluster_id={CLUSTER}": count(lambda r: cluster_of(r) == CLUSTER),
    }


FILTERS = [["level", 20], ["otype", "NODE"], ["action", "reboot"], ["cluster_id", CLUSTER]]


@pytest.mark.parametrize("venv", ["sa2", "sa14"])
@pytest.mark.parametrize("made_by", ["senlin", "dispatchd"])
async def test_senlin_reads_events_posted_together_without_ids(tmp_path, venv, made_by):
    """Pagination, purge by age, short ids, filters and counts, on SQLAlchemy 2 and 1.4."""
    # Three of each, sent without ids: dispatchd gives each its uuid4 in the same request.
    made = run_script("db", "records", "-", venv=venv, stdin=ITEMS)["records"]
    records = [{k: v for k, v in r.items() if k != "id"} for r in made * 3]
    db = senlin_db(tmp_path, venv) if made_by == "senlin" else tmp_path / "events.db"
    before = schema(db) if made_by == "senlin" else None
    await write_through_dispatchd(tmp_path, db, records)
    if before is not None:  # Senlin's own database: written into, not changed
        assert schema(db) == before
    ids = {row["id"] for row in rows(db)}
    assert len(ids) == len(records)
    plan = {"filters": FILTERS, "clusters": [CLUSTER, OTHER_CLUSTER],
            "add_cluster_table": made_by == "dispatchd"}
    got = run_script("db", "read", f"sqlite:///{db}", venv=venv, stdin=plan)
    paged = [i for page in got["pages"] for i in page]
    assert sorted(paged) == sorted(ids) and len(paged) == len(ids)  # each once, none missed
    assert got["short_ids"] == {i[:8]: i for i in ids}
    assert got["counts"] == expected_counts(records)
    assert got["by_cluster"][OTHER_CLUSTER] == 3
    newest = [got["fields"][i]["timestamp"] for i in got["newest_first"]]
    assert newest == sorted(newest, reverse=True)
    cutoff = NOW - timedelta(days=30)
    older = sum(1 for r in records if datetime.fromisoformat(r["timestamp"]) < cutoff)
    assert older == 12
    purged = run_script("db", "purge", f"sqlite:///{db}", "30", venv=venv)
    assert purged["purged"] == older and len(purged["left"]) == len(ids) - older
    levels = {f["level"] for f in got["fields"].values()}
    assert levels == {"10", "20", "30", "40", "50"}


async def test_the_table_dispatchd_creates_is_the_one_senlins_migrations_make(tmp_path):
    """Names, types, lengths, nullability, primary key and order, on SQLAlchemy 2 and 1.4."""
    ours = tmp_path / "events.db"
    await write_through_dispatchd(tmp_path, ours, [{"level": 20, "action": {"action": "X"}}])

    def columns(path: Path) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as db:
            return list(db.execute("PRAGMA table_info(event)"))

    for venv in ("sa2", "sa14"):
        (tmp_path / venv).mkdir()
        assert columns(senlin_db(tmp_path / venv, venv)) == columns(ours)
