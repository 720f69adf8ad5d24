"""The event query: parameters, the selects for each dialect, keyset pages over a real SQLite table
(the ``database`` dispatcher's read connection), and the indexes SQLite takes on 100k rows."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect

from dispatchd import Record
from dispatchd.dispatchers.database import DatabaseDispatcher, DatabaseOptions
from dispatchd.dispatchers.event_table import COLUMNS, ddl
from dispatchd.errors import AmbiguousEventId, EventNotFound, InvalidQuery, StoreUnavailable
from dispatchd.event_query import (
    EVENT,
    get_event,
    list_events,
    page_statement,
    parse_query,
    prefix_statement,
)
from dispatchd.event_store import EventStore

from .support.records import record

DIALECTS = {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect(),
            "mysql": mysql.dialect()}
LEVEL_NUMBER = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def test_the_query_reads_the_columns_the_dispatcher_writes():
    assert tuple(EVENT.columns.keys()) == COLUMNS


# -- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "field"), [
    ([("bogus", "1")], "bogus"),
    ([("limit", "1"), ("limit", "2")], "limit"),
    ([("limit", "0")], "limit"), ([("limit", "1001")], "limit"), ([("limit", "x")], "limit"),
    ([("limit", "٥")], "limit"), ([("limit", " 5")], "limit"), ([("limit", "-1")], "limit"),
    ([("sort", "nope")], "sort"), ([("sort", "level:up")], "sort"),
    ([("sort", "level,level:desc")], "sort"), ([("sort", "")], "sort"), ([("sort", "id")], "sort"),
    ([("sort", " level")], "sort"),
    ([("level", "LOUD")], "level"), ([("level", "5")], "level"), ([("level", "51")], "level"),
    ([("since", "yesterday")], "since"), ([("until", "2026-13-01")], "until"),
    ([("since", "2026-12-02T00:00:00Z"), ("until", "2026-12-01T00:00:00Z")], "until"),
    ([("marker", "not-an-id!")], "marker"), ([("marker", "ab\n")], "marker"),
    ([("marker", "a" * 37)], "marker"),
    ([("oid", str(i)) for i in range(101)], "oid"), ([("oname", "x" * 256)], "oname"),
])
def test_a_bad_parameter_is_named(params, field):
    with pytest.raises(InvalidQuery) as caught:
        parse_query(params)
    assert caught.value.field == field


def test_parameters_as_understood():
    query = parse_query([("level", "error"), ("level", "20"), ("level", "ERROR"), ("oid", "a"),
                         ("oid", "b"), ("since", "2026-12-01T07:00:00+01:00"),
                         ("sort", "level:desc,oname"), ("limit", "7"), ("marker", "abc-1")])
    assert query.filters == {"level": ("40", "20"), "oid": ("a", "b")}
    assert query.since == datetime(2026, 12, 1, 6, 0)  # naive UTC, as stored
    assert query.sort == (("level", True), ("oname", False))
    assert query.order[-1] == ("id", False)  # the tiebreak, ascending as Senlin's
    assert (query.limit, query.marker) == (7, "abc-1")
    default = parse_query([])
    assert default.order == (("timestamp", True), ("id", False)) and default.limit == 100


# -- statements, per dialect ------------------------------------------------------------------------


def sql(statement: Any, dialect: Dialect) -> str:
    return " ".join(str(statement.compile(dialect=dialect)).split())


@pytest.mark.parametrize("name", DIALECTS)
def test_statements_compile_for_each_dialect(name):
    dialect = DIALECTS[name]
    query = parse_query([("cluster_id", "c1"), ("level", "ERROR"), ("level", "WARNING"),
                         ("sort", "oname,timestamp:desc")])
    after = {"oname": None, "timestamp": datetime(2026, 1, 1), "id": "x"}
    text = sql(page_statement(query, dialect, after), dialect)
    assert "event.cluster_id = " in text and "event.level IN (" in text
    # the order, the id tiebreak, and NULLs sorting first (PostgreSQL must be told)
    nulls = " NULLS FIRST" if name == "postgresql" else ""
    assert f"ORDER BY event.oname ASC{nulls}, event.timestamp DESC, event.id ASC LIMIT" in text
    assert "event.oname IS NOT NULL" in text  # after a NULL oname: any non-NULL one
    assert "event.oname IS NULL AND" in text  # ... or the same NULL and a later timestamp
    first_page = sql(page_statement(parse_query([]), dialect), dialect)
    assert "WHERE" not in first_page and "ORDER BY event.timestamp DESC, event.id ASC" in first_page


@pytest.mark.parametrize("name", DIALECTS)
def test_a_keyset_on_timestamp_is_also_a_plain_range(name):
    dialect = DIALECTS[name]
    after = {"timestamp": datetime(2026, 1, 1), "id": "x"}
    text = sql(page_statement(parse_query([("oid", "n1")]), dialect, after), dialect)
    assert "event.timestamp <= " in text  # what the planners turn into an index range


@pytest.mark.parametrize("name", DIALECTS)
def test_a_short_id_is_a_prefix_match(name):
    text = sql(prefix_statement("0123abcd", DIALECTS[name]), DIALECTS[name])
    assert "event.id LIKE " in text and "LIMIT" in text
    # A range only where the collation is binary: SQLite.
    assert ("event.id >= " in text) is (name == "sqlite")


# -- against a real table -------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DatabaseDispatcher]:
    dispatcher = DatabaseDispatcher("database", DatabaseOptions(url=f"sqlite:///{tmp_path}/ev.db"))
    await dispatcher.start()
    assert isinstance(dispatcher, EventStore)
    try:
        yield dispatcher
    finally:
        await dispatcher.close()


def mixed_records(count: int, seed: int = 1) -> list[Record]:
    """Events with many ties and NULLs: few names, few timestamps, some without an entity."""
    rng = random.Random(seed)
    start = datetime(2026, 12, 1)
    made = []
    for _ in range(count):
        body = record(level=rng.choice(list(LEVEL_NUMBER)),
                      timestamp=(start + timedelta(seconds=rng.randrange(20))).isoformat() + "Z")
        if rng.random() < 0.2:
            body["action"] = {"action": "CLUSTER_CREATE"}  # no entity: oid, oname ... NULL
        else:
            body["action"]["entity"] = {"type": rng.choice(["CLUSTER", "NODE"]),
                                        "id": f"o{rng.randrange(5)}",
                                        "name": rng.choice(["a", "b", "c"]),
                                        "cluster_id": rng.choice([None, "", "c1"])}
        made.append(Record.model_validate(body))
    return made


def expected_order(events: list[dict[str, Any]], keys: list[tuple[str, bool]]) -> list[str]:
    """Sorted as the API promises: NULL smallest, ties broken by id ascending."""
    def value(event: dict[str, Any], key: str) -> Any:
        found = event[key]
        return LEVEL_NUMBER[found] if key == "level" else found

    ordered = sorted(events, key=lambda e: e["id"])
    for key, desc in reversed(keys):
        ordered.sort(key=lambda e, k=key: (value(e, k) is not None, value(e, k) or ""),
                     reverse=desc)
    return [e["id"] for e in ordered]


async def every_page(store: EventStore, params: list[tuple[str, str]], limit: int) -> list[str]:
    seen: list[str] = []
    while True:
        marker = [("marker", seen[-1])] if seen else []
        page = await list_events(store, parse_query([*params, *marker, ("limit", str(limit))]))
        seen += [event["id"] for event in page]
        if len(page) < limit:
            return seen


@pytest.mark.parametrize("sort", ["timestamp:desc", "timestamp", "oname,level:desc",
                                  "cluster_id:desc,oname:desc", "level,otype,oid:desc",
                                  "status,action,timestamp:desc"])
async def test_keyset_pages_follow_the_order_through_ties_and_nulls(store, sort):
    await store.dump_batch(mixed_records(300))
    everything = await list_events(store, parse_query([("limit", "1000")]))
    keys = parse_query([("sort", sort)]).sort
    expected = expected_order(everything, list(keys))
    assert await every_page(store, [("sort", sort)], limit=7) == expected
    assert [e["id"] for e in await list_events(store, parse_query([("sort", sort),
                                                                    ("limit", "1000")]))] == expected


async def test_filters_select_what_they_name(store):
    await store.dump_batch(mixed_records(300))
    everything = await list_events(store, parse_query([("limit", "1000")]))

    async def ids(*params: tuple[str, str]) -> set[str]:
        return {e["id"] for e in await list_events(store, parse_query([*params, ("limit", "1000")]))}

    assert await ids(("level", "error"), ("level", "50")) == \
        {e["id"] for e in everything if e["level"] in ("ERROR", "CRITICAL")}
    assert await ids(("oid", "o1"), ("oid", "o2"), ("oname", "a")) == \
        {e["id"] for e in everything if e["oid"] in ("o1", "o2") and e["oname"] == "a"}
    assert await ids(("cluster_id", "")) == {e["id"] for e in everything if e["cluster_id"] == ""}
    since, until = "2026-12-01T00:00:05Z", "2026-12-01T00:00:09Z"
    assert await ids(("since", since), ("until", until)) == {
        e["id"] for e in everything
        if datetime.fromisoformat(since) <= datetime.fromisoformat(e["timestamp"])
        < datetime.fromisoformat(until)}
    assert await ids(("project", "nobody")) == set()


async def test_rows_are_shown_as_senlin_shows_them(store):
    body = record(level=40, extra={"k": [1]}, timestamp="2026-12-01T06:00:00.5+00:00")
    await store.dump_batch([Record.model_validate(body)])
    (event,) = await list_events(store, parse_query([]))
    assert event == {
        "id": event["id"], "timestamp": "2026-12-01T06:00:00.500000Z", "oid": "c-1",
        "oname": "web", "otype": "CLUSTER", "cluster_id": "c-1", "level": "ERROR",
        "user": "user-1", "project": "project-1", "action": "CLUSTER_SCALE_OUT", "status": "end",
        "status_reason": "Cluster scaled out", "meta_data": {"k": [1]},
    }


async def test_ids_whole_short_unknown_and_ambiguous(store):
    ids = ["0123abcd-0000-4000-8000-000000000001", "0123abcd-0000-4000-8000-000000000002",
           "89abcdef-0000-4000-8000-000000000003"]
    await store.dump_batch([Record.model_validate(record(id=i)) for i in ids])
    assert (await get_event(store, ids[0]))["id"] == ids[0]
    assert (await get_event(store, "89ABCDEF"))["id"] == ids[2]  # any case, as Senlin's
    assert (await get_event(store, "89abcdef-0000-4"))["id"] == ids[2]
    with pytest.raises(AmbiguousEventId):
        await get_event(store, "0123abcd")
    with pytest.raises(EventNotFound):
        await get_event(store, "fedcba98")
    with pytest.raises(EventNotFound):
        await get_event(store, "fedcba98-0000-4000-8000-000000000003")
    for bad in ("0123abc", "0123abcd%", "0123abcd_", "0123abcd\n", "x" * 40):
        with pytest.raises(InvalidQuery):
            await get_event(store, bad)
    with pytest.raises(InvalidQuery) as caught:  # a marker must exist
        await list_events(store, parse_query([("marker", "fedcba98")]))
    assert caught.value.field == "marker"


async def test_a_store_that_is_not_started_is_unavailable(tmp_path):
    stopped = DatabaseDispatcher("database", DatabaseOptions(url=f"sqlite:///{tmp_path}/x.db"))
    with pytest.raises(StoreUnavailable):
        await list_events(stopped, parse_query([]))


# -- indexes ----------------------------------------------------------------------------------------


def plan(db: sqlite3.Connection, statement: Any) -> str:
    dialect = sqlite.dialect()
    text = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    return "; ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {text}"))


def test_the_usual_queries_use_an_index_on_100k_rows(tmp_path):
    rng = random.Random(3)
    start = datetime(2026, 1, 1)
    with sqlite3.connect(tmp_path / "big.db") as db:
        for statement in ddl(sqlite.dialect()):
            db.execute(statement)
        db.executemany("INSERT INTO event VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", (
            (f"{i:08x}-0000-4000-8000-000000000000", str(start + timedelta(seconds=i)),
             f"n{rng.randrange(2000)}", "node", "NODE", f"c{rng.randrange(100)}",
             rng.choice(["20", "30", "40"]), "u", "p", "NODE_CHECK", "end", "", "{}")
            for i in range(100_000)))
        after = {"timestamp": start + timedelta(seconds=50_000), "id": "x"}
        plans = {
            "newest": plan(db, page_statement(parse_query([]), sqlite.dialect())),
            "oid": plan(db, page_statement(parse_query([("oid", "n1")]), sqlite.dialect())),
            "cluster": plan(db, page_statement(parse_query([("cluster_id", "c1"), ("level", "40")]),
                                               sqlite.dialect())),
            "cluster, page 2": plan(db, page_statement(parse_query([("cluster_id", "c1")]),
                                                       sqlite.dialect(), after)),
            "oldest": plan(db, page_statement(parse_query([("sort", "timestamp")]),
                                              sqlite.dialect(), after)),
            "short id": plan(db, prefix_statement("0000abcd", sqlite.dialect())),
        }
    assert plans["newest"].startswith("SCAN event USING INDEX ix_event_timestamp")
    assert plans["oid"].startswith("SEARCH event USING INDEX ix_event_oid_timestamp (oid=?)")
    assert plans["cluster"].startswith(
        "SEARCH event USING INDEX ix_event_cluster_id_timestamp (cluster_id=?)")
    assert plans["cluster, page 2"].startswith(
        "SEARCH event USING INDEX ix_event_cluster_id_timestamp (cluster_id=? AND timestamp<?)")
    assert plans["oldest"].startswith("SEARCH event USING INDEX ix_event_timestamp (timestamp>?)")
    assert plans["short id"].startswith(
        "SEARCH event USING INDEX sqlite_autoindex_event_1 (id>? AND id<?)")
    for name, found in plans.items():  # never a sort of every matching row
        assert "USE TEMP B-TREE FOR ORDER BY" not in found, (name, found)
