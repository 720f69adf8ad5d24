"""The event query: parameters, the selects for each dialect, keyset pages over a real table on
each store (SQLite, and fresh databases on this machine's PostgreSQL and MariaDB, through the
``database`` dispatcher's read connections), the same answers from all three, and the indexes
each database takes on 100k rows."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import uuid
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
from dispatchd.dispatchers.store import compile_query
from dispatchd.errors import AmbiguousEventId, EventNotFound, InvalidQuery, StoreUnavailable
from dispatchd.event_query import (
    EVENT,
    get_event,
    id_range,
    list_events,
    page_statement,
    parse_query,
    prefix_statement,
)
from dispatchd.event_store import EventStore

from .support.records import record
from .support.sql import ServerDb, fresh_database, insert_rows

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
def test_a_short_id_is_a_prefix_match_within_a_range_of_the_primary_key(name):
    text = sql(prefix_statement("0123abcd", DIALECTS[name]), DIALECTS[name])
    assert "event.id LIKE " in text and "LIMIT" in text
    assert "event.id >= " in text and "event.id < " in text  # what every planner takes


@pytest.mark.parametrize(("prefix", "bounds"), [
    ("0123abcd", ("0123abcd", "0123abce")),
    ("0123abc9", ("0123abc9", "0123abca")),  # 9 → a, not ':'
    ("0123abff", ("0123abff", "0123ac")),  # carried
    ("0123abcd-00", ("0123abcd", "0123abce")),  # only the hex digits: '-' sorts apart in locales
    ("ffffffff-1", ("ffffffff", "")),  # no upper bound
    ("-0123abcd", ("", "")),  # matches no uuid; LIKE alone decides
])
def test_the_id_range_holds_every_id_with_the_prefix(prefix, bounds):
    assert id_range(prefix) == bounds


# -- against a real table -------------------------------------------------------------------------


STORES = ("sqlite", "postgresql", "mysql")


@contextlib.asynccontextmanager
async def started_store(kind: str, tmp_path: Path) -> AsyncIterator[DatabaseDispatcher]:
    """A started ``database`` dispatcher on an empty table: a SQLite file, or a fresh database."""
    async with contextlib.AsyncExitStack() as stack:
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path}/ev-{uuid.uuid4().hex[:6]}.db"
        else:
            url = (await stack.enter_async_context(fresh_database(kind))).url()
        dispatcher = DatabaseDispatcher("database", DatabaseOptions(url=url))
        await dispatcher.start()
        stack.push_async_callback(dispatcher.close)
        assert isinstance(dispatcher, EventStore)
        yield dispatcher


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest,
                tmp_path: Path) -> AsyncIterator[DatabaseDispatcher]:
    async with started_store(request.param, tmp_path) as dispatcher:
        yield dispatcher


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
    # Senlin's DATETIME on MySQL has no fraction: MariaDB drops it, as for Senlin's own rows.
    fraction = "000000" if store.dialect.name == "mysql" else "500000"
    assert event == {
        "id": event["id"], "timestamp": f"2026-12-01T06:00:00.{fraction}Z", "oid": "c-1",
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


# The same questions to every store, the same answers: filters, level names, orders with ties and
# NULLs, keyset pages, short ids. Timestamps are whole seconds (MySQL's DATETIME keeps no more).
SAME_QUERIES: list[list[tuple[str, str]]] = [
    [], [("limit", "1000")], [("level", "error"), ("level", "CRITICAL")], [("level", "20")],
    [("oid", "o1"), ("oid", "o3")], [("oname", "b"), ("otype", "NODE")], [("cluster_id", "")],
    [("cluster_id", "c1"), ("sort", "timestamp:asc")], [("action", "CLUSTER_CREATE")],
    [("since", "2026-12-01T00:00:04Z"), ("until", "2026-12-01T00:00:11Z")],
    [("project", "project-1"), ("sort", "level:desc,oname"), ("limit", "50")],
    [("sort", "cluster_id:desc,oname:desc,oid"), ("limit", "1000")],
    [("sort", "status,action,timestamp:desc"), ("limit", "1000")],
]
PAGED_SORTS = ["timestamp:desc", "oname,level:desc", "cluster_id,otype:desc", "oid:desc,timestamp"]


async def answers(store: EventStore, ids: list[str]) -> list[Any]:
    said: list[Any] = [await list_events(store, parse_query(params)) for params in SAME_QUERIES]
    said += [await every_page(store, [("sort", sort)], limit=9) for sort in PAGED_SORTS]
    said += [await every_page(store, [("cluster_id", "c1")], limit=4)]
    for ident in [*ids[:20], *(i[:8] for i in ids[:20]), "01234567", "0123abcd", "0123abcd-1"]:
        try:
            said.append(await get_event(store, ident))
        except (AmbiguousEventId, EventNotFound) as exc:
            said.append(type(exc).__name__)
    return said


async def test_every_store_gives_the_same_answers(tmp_path):
    made = mixed_records(400, seed=5)
    # Ids that share their first 8 characters: an ambiguous prefix, and one that is not.
    made += [Record.model_validate(record(id=ident, timestamp="2026-12-01T00:00:03Z"))
             for ident in ("0123abcd-0000-4000-8000-000000000000",
                           "0123abcd-0000-4000-8000-000000000001",
                           "01234567-0000-4000-8000-000000000009")]
    ids = [r.id for r in made]
    said = {}
    for kind in STORES:
        async with started_store(kind, tmp_path) as one:
            await one.dump_batch(made)
            said[kind] = await answers(one, ids)
    assert said["postgresql"] == said["sqlite"]
    assert said["mysql"] == said["sqlite"]
    assert "AmbiguousEventId" in said["sqlite"] and "EventNotFound" in said["sqlite"]


async def test_a_store_that_is_not_started_is_unavailable(tmp_path):
    stopped = DatabaseDispatcher("database", DatabaseOptions(url=f"sqlite:///{tmp_path}/x.db"))
    with pytest.raises(StoreUnavailable):
        await list_events(stopped, parse_query([]))


# -- indexes ----------------------------------------------------------------------------------------


def plan(db: sqlite3.Connection, statement: Any) -> str:
    dialect = sqlite.dialect()
    text = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    return "; ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {text}"))


def checks_before_reading_the_row(db: sqlite3.Connection, statement: Any) -> bool:
    """Whether SQLite's program compares a value after its deferred seek before it reads any
    column of the table: a filter checked on the index entry, the row fetched only if it passes."""
    dialect = sqlite.dialect()
    text = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    (root,) = db.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'event'").fetchone()
    ops = [(op[1], op[2], op[3]) for op in db.execute(f"EXPLAIN {text}")]
    table = next(p1 for code, p1, p2 in ops if code == "OpenRead" and p2 == root)
    after = [(code, p1) for code, p1, _ in ops[[code for code, _, _ in ops].index("DeferredSeek"):]]
    first = next(code for code, p1 in after if code in ("Eq", "Ne") or
                 (code == "Column" and p1 == table))
    return first != "Column"


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
    with sqlite3.connect(tmp_path / "big.db") as db:  # the level is read off the index entry
        assert checks_before_reading_the_row(db, page_statement(
            parse_query([("cluster_id", "c1"), ("level", "40")]), sqlite.dialect()))


def big_table(count: int, start: datetime) -> list[tuple[Any, ...]]:
    """``count`` rows of 2,000 nodes in 100 clusters, one a second, random uuid-like ids."""
    rng = random.Random(3)
    return [(f"{rng.getrandbits(32):08x}-0000-4000-8000-{i:012x}", start + timedelta(seconds=i),
             f"n{rng.randrange(2000)}", "node", "NODE", f"c{rng.randrange(100)}",
             rng.choice(["20", "30", "40"]), "u", "p", "NODE_CHECK", "end", "", "{}")
            for i in range(count)]


async def server_plan(db: ServerDb, dialect: Dialect, statement: Any) -> list[str]:
    """PostgreSQL's plan lines, or MariaDB's row per table as ``type key extra``."""
    query = compile_query(statement, dialect)
    if db.dialect == "postgresql":
        return [str(row[0]) for row in await db.query(f"EXPLAIN (COSTS OFF) {query.sql}",
                                                      *query.params)]
    rows = await db.query(f"EXPLAIN {query.sql}", *query.params)
    # id, select_type, table, type, possible_keys, key, key_len, ref, rows, Extra
    return [f"{row[3]} {row[5]} {row[9] or ''}" for row in rows]


async def mysql_index_condition(db: ServerDb, dialect: Dialect, statement: Any) -> str:
    """What MariaDB checks on the index entries before fetching a row ("" on PostgreSQL)."""
    if db.dialect != "mysql":
        return ""
    query = compile_query(statement, dialect)
    (row,) = await db.query(f"EXPLAIN FORMAT=JSON {query.sql}", *query.params)
    (table,) = [step["table"] for step in json.loads(row[0])["query_block"]["nested_loop"]]
    return str(table.get("index_condition", ""))


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
async def test_the_usual_queries_use_an_index_on_100k_rows_on_the_servers(kind, tmp_path):
    start = datetime(2026, 1, 1)
    rows = big_table(100_000, start)
    async with fresh_database(kind) as db:
        backend = DatabaseDispatcher("database", DatabaseOptions(url=db.url()))
        await backend.start()  # creates the table and dispatchd's indexes
        try:
            dialect = backend.dialect
            await insert_rows(db, "event", COLUMNS, rows)
            after = {"timestamp": start + timedelta(seconds=50_000), "id": rows[50_000][0]}
            statements = {
                "oid": page_statement(parse_query([("oid", "n1")]), dialect),
                "cluster": page_statement(parse_query([("cluster_id", "c1")]), dialect),
                "cluster, level": page_statement(
                    parse_query([("cluster_id", "c1"), ("level", "40")]), dialect),
                "cluster, page 2": page_statement(parse_query([("cluster_id", "c1")]), dialect,
                                                  after),
                "short id": prefix_statement(rows[7][0][:8], dialect),
            }
            plans = {name: await server_plan(db, dialect, s) for name, s in statements.items()}
            level_condition = await mysql_index_condition(db, dialect, statements["cluster, level"])
            found = await get_event(backend, rows[7][0][:8])  # the range finds what LIKE finds
            assert found["id"] == rows[7][0]
        finally:
            await backend.close()
    index = {"oid": "ix_event_oid_timestamp", "cluster": "ix_event_cluster_id_timestamp",
             "cluster, level": "ix_event_cluster_id_timestamp",
             "cluster, page 2": "ix_event_cluster_id_timestamp",
             "short id": "event_pkey" if kind == "postgresql" else "PRIMARY"}
    for name, lines in plans.items():
        text = "\n".join(lines)
        if kind == "postgresql":
            assert f" using {index[name]} " in text or f" on {index[name]}\n" in text + "\n", \
                (name, text)
            assert "Seq Scan" not in text, (name, text)
            if name.startswith("cluster"):
                # An index range in the query's order (newest first, as the index keeps it), and
                # at most an incremental sort of equal timestamps by id, never a sort of the
                # cluster's rows.
                assert f"Index Scan using {index[name]} " in text, (name, text)
                assert not any(line.strip().removeprefix("->").strip() == "Sort"
                               for line in lines), (name, text)
            # A node's few rows (50 here) are found by the index, then sorted: cheaper than
            # reading the index backwards, says the planner.
            if name == "cluster, level":
                # Checked on the index entries, so only ERROR rows are fetched from the table.
                assert any("Index Cond" in line and "level" in line for line in lines), text
                assert not any("Filter" in line and "level" in line for line in lines), text
        else:
            (line,) = lines
            kind_of_access, key, _extra = line.split(" ", 2)
            assert key == index[name], (name, line)
            assert kind_of_access in ("ref", "range"), (name, line)  # never ALL: a full scan
            # InnoDB's index is (cluster_id, timestamp DESC, id): the query's order exactly,
            # so no sort ("Using filesort") of the cluster's rows.
            assert "filesort" not in line, (name, line)
    if kind == "mysql":
        assert "`level`" in level_condition, level_condition  # checked on the index entries
