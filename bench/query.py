"""Query latency of the event API on a large table: p50/p99 of typical ``GET /v1/events`` queries.

    .venv/bin/python bench/query.py [--rows 1000000] [--stores sqlite,postgresql,mysql]
                                    [--url URL] [--runs 200] [--keep] [--json PATH]

Fills Senlin's ``event`` table through the ``database`` dispatcher itself (its row encoder and
its store's multi-row upsert, 2000 rows a batch) with a Senlin-like population: 200 clusters of
20 nodes each, a fifth of the events on clusters and the rest on nodes, 80 % INFO, 15 % WARNING,
5 % ERROR, one event every 2.6 s (a month for 1M rows). Then times each query through the query
API's own code path (``event_query.list_events`` / ``get_event`` on the dispatcher's read
connections; HTTP not included), shows each statement's plan (``EXPLAIN QUERY PLAN`` on SQLite,
``EXPLAIN`` on PostgreSQL and MariaDB) and writes it all to bench/results/query.md.

``--stores`` runs each store on a table of its own: a temp SQLite file, a fresh database on this
machine's PostgreSQL and MariaDB (dropped afterwards). After the fill a server's table is
``ANALYZE``d, as its autovacuum (PostgreSQL) or InnoDB's statistics would do soon after.
``--url`` measures one given database instead; a table there that already holds ``--rows`` rows
is reused as it is (``--keep`` keeps the temp SQLite file for that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlserver
from sqlalchemy import func, select
from sqlalchemy.sql import Select

from dispatchd import Record
from dispatchd.dispatchers.database import DatabaseDispatcher, DatabaseOptions
from dispatchd.dispatchers.store import compile_query
from dispatchd.errors import AmbiguousEventId
from dispatchd.event_query import (
    EVENT,
    EventQuery,
    get_event,
    id_statement,
    list_events,
    page_statement,
    parse_query,
    prefix_statement,
)
from dispatchd.models import new_id

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "query.md"
CLUSTERS, NODES = 200, 20
START = datetime(2026, 1, 1)
STEP = timedelta(seconds=2.6)
BATCH = 2000
STORES = ("sqlite", "postgresql", "mysql")
TARGET_P99_MS = 20.0  # issue 14: filtered first page on 1M rows


def cluster(i: int) -> str:
    return f"c{i:07d}-0000-4000-8000-000000000000"


def node(c: int, n: int) -> str:
    return f"n{c:04d}{n:03d}-0000-4000-8000-000000000000"


def record(i: int, rng: random.Random) -> Record:
    c = rng.randrange(CLUSTERS)
    roll = rng.random()
    level = "INFO" if roll < 0.8 else "WARNING" if roll < 0.95 else "ERROR"
    if rng.random() < 0.2:
        entity = {"type": "CLUSTER", "id": cluster(c), "name": f"cluster-{c}", "status": "ACTIVE"}
        action = rng.choice(["CLUSTER_SCALE_OUT", "CLUSTER_SCALE_IN", "CLUSTER_CHECK"])
    else:
        n = rng.randrange(NODES)
        entity = {"type": "NODE", "id": node(c, n), "name": f"node-{c}-{n}",
                  "cluster_id": cluster(c), "status": "ACTIVE"}
        action = rng.choice(["NODE_CREATE", "NODE_DELETE", "NODE_CHECK", "NODE_RECOVER"])
    return Record.model_validate({
        "id": new_id(), "timestamp": (START + STEP * i).isoformat() + "Z", "level": level,
        "phase": rng.choice(["start", "end"]), "reason": "bench",
        "action": {"action": action, "project": f"p{c % 10}", "user": "u", "entity": entity},
    })


async def fill(store: DatabaseDispatcher, rows: int) -> float:
    """Bring the table to ``rows`` rows; seconds spent (0 when it was already there)."""
    have = (await store.fetch(select(func.count().label("n")).select_from(EVENT)))[0]["n"]
    if have >= rows:
        return 0.0
    rng = random.Random(14)
    began = time.perf_counter()
    writing: asyncio.Future[None] | None = None
    for first in range(have, rows, BATCH):
        # The next batch is made while the database writes the last one.
        batch = [record(i, rng) for i in range(first, min(rows, first + BATCH))]
        if writing is not None:
            await writing
        writing = asyncio.ensure_future(store.dump_batch(batch))
        if first % 100_000 == 0:
            print(f"  {first:,} rows", file=sys.stderr, flush=True)
    if writing is not None:
        await writing
    return time.perf_counter() - began


def queries(rng: random.Random) -> dict[str, Callable[[], list[tuple[str, str]]]]:
    """Each kind of query's parameters, a fresh random instance per call."""

    def some_cluster() -> str:
        return cluster(rng.randrange(CLUSTERS))

    def some_node() -> str:
        return node(rng.randrange(CLUSTERS), rng.randrange(NODES))

    def some_hour() -> list[tuple[str, str]]:
        since = START + timedelta(hours=rng.randrange(24 * 30))
        return [("since", since.isoformat()), ("until", (since + timedelta(hours=1)).isoformat())]

    return {
        "newest 100, no filter": lambda: [],
        "cluster_id=X, newest 100": lambda: [("cluster_id", some_cluster())],
        "oid=X (node), newest 100": lambda: [("oid", some_node())],
        "cluster_id=X & level=ERROR, newest 100": lambda: [("cluster_id", some_cluster()),
                                                            ("level", "ERROR")],
        "one hour (since/until)": some_hour,
        "cluster_id=X, oldest first": lambda: [("cluster_id", some_cluster()),
                                               ("sort", "timestamp:asc")],
        "project=X, newest 100": lambda: [("project", f"p{rng.randrange(10)}")],
    }


async def timed(runs: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    await call()  # warm the cache and the statement compiler
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        await call()
        times.append((time.perf_counter() - began) * 1000)
    return times


async def measure(store: DatabaseDispatcher, rows: int, runs: int) -> dict[str, list[float]]:
    rng = random.Random(7)
    results: dict[str, list[float]] = {}
    for name, params in queries(rng).items():
        results[name] = await timed(runs, lambda p=params: list_events(store, parse_query(p())))

    # Page 2 and page 20 of a cluster: the marker row first, then the keyset page.
    pages = rows // CLUSTERS // 100  # a cluster's pages of 100
    for depth in sorted({2, min(20, pages)} - {0, 1}):
        markers: list[EventQuery] = []
        for _ in range(20):
            query = parse_query([("cluster_id", cluster(rng.randrange(CLUSTERS)))])
            for _ in range(depth - 1):
                page = await list_events(store, query)
                query = parse_query([("cluster_id", query.filters["cluster_id"][0]),
                                     ("marker", page[-1]["id"])])
            markers.append(query)
        results[f"cluster_id=X, page {depth} (marker)"] = await timed(
            runs, lambda m=markers: list_events(store, rng.choice(m)))  # type: ignore[misc]

    ids = [row["id"] for row in await list_events(store, parse_query([("limit", "1000")]))]
    async def short_id() -> None:
        # Among 1M uuid4s some 8-character prefixes are shared: a 409 is an answer too.
        with contextlib.suppress(AmbiguousEventId):
            await get_event(store, rng.choice(ids)[:8])

    results["GET /v1/events/{short id}"] = await timed(runs, short_id)
    return results


async def plans(store: DatabaseDispatcher, url: str) -> list[tuple[str, str]]:
    """Each statement shape's plan, as the store's database makes it: which index it takes."""
    dialect = store.dialect
    marker = (await store.fetch(id_statement(
        (await list_events(store, parse_query([("cluster_id", cluster(1))])))[-1]["id"])))[0]
    some_id = (await list_events(store, parse_query([])))[0]["id"]
    shapes: dict[str, Select[Any]] = {
        "newest 100": page_statement(parse_query([]), dialect),
        "cluster_id=X": page_statement(parse_query([("cluster_id", cluster(1))]), dialect),
        "oid=X": page_statement(parse_query([("oid", node(1, 1))]), dialect),
        "cluster_id=X, level=ERROR": page_statement(
            parse_query([("cluster_id", cluster(1)), ("level", "40")]), dialect),
        "cluster_id=X, page 2 (after the marker)": page_statement(
            parse_query([("cluster_id", cluster(1))]), dialect, marker),
        "one hour (since/until)": page_statement(parse_query(
            [("since", "2026-01-10T00:00:00"), ("until", "2026-01-10T01:00:00")]), dialect),
        "project=X": page_statement(parse_query([("project", "p1")]), dialect),
        "short id (8 characters)": prefix_statement(some_id[:8], dialect),
    }
    found = []
    for name, statement in shapes.items():
        query = compile_query(statement, dialect)
        found.append((name, await explain(url, dialect.name, query.sql, query.params)))
    return found


async def explain(url: str, dialect: str, sql: str, params: tuple[Any, ...]) -> str:
    """One line per plan: SQLite's steps, PostgreSQL's nodes, MariaDB's row per table."""
    if dialect == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return "; ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    if dialect == "postgresql":
        rows = await sqlserver.query(url, f"EXPLAIN (COSTS OFF) {sql}", params)
        return "; ".join(" ".join(str(row[0]).split()) for row in rows)
    rows = await sqlserver.query(url, f"EXPLAIN {sql}", params)
    # id, select_type, table, type, possible_keys, key, key_len, ref, rows, Extra
    return "; ".join(f"type={r[3]} key={r[5]} rows~{r[8]} {r[9] or ''}".strip() for r in rows)


def p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def section(url: str, label: str, version: str, fill_s: float,
            results: dict[str, list[float]], plan: list[tuple[str, str]]) -> str:
    out = [f"## {label}", "",
           f"Store `{url.split('@')[-1]}`, {version}."
           + (f" Filled in {fill_s:.0f} s." if fill_s else " Table reused."), "",
           "| query | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|"]
    for name, times in results.items():
        out.append(f"| {name} | {statistics.median(times):.2f} | {p99(times):.2f} | "
                   f"{max(times):.2f} |")
    if plan:
        out += ["", f"{label}'s plans:", "", "| query | plan |", "|---|---|",
                *(f"| {name} | {steps.replace('|', '/')} |" for name, steps in plan)]
    return "\n".join(out) + "\n"


async def measure_store(args: argparse.Namespace, url: str,
                        dialect: str) -> tuple[str, dict[str, list[float]]]:
    label = sqlserver.LABELS[dialect]
    version = f"SQLite {sqlite3.sqlite_version}" if dialect == "sqlite" else \
        await server_version(dialect)
    store = DatabaseDispatcher("database", DatabaseOptions(url=url))
    await store.start()
    try:
        print(f"filling {url.split('@')[-1]} to {args.rows:,} rows", file=sys.stderr)
        fill_s = await fill(store, args.rows)
        if fill_s and dialect != "sqlite":
            await sqlserver.query(url, "ANALYZE event" if dialect == "postgresql" else
                                  "ANALYZE TABLE event")
        results = await measure(store, args.rows, args.runs)
        plan = await plans(store, url)
    finally:
        await store.close()
    return section(url, label, version, fill_s, results, plan), results


async def measure_target(args: argparse.Namespace,
                         target: str) -> tuple[str, str, dict[str, list[float]]]:
    """(dialect, report section, times) for a url, or for a fresh table of a store."""
    if "://" in target:
        dialect = DatabaseOptions(url=target).store_url.dialect
        return (dialect, *await measure_store(args, target, dialect))
    if target != "sqlite":
        async with sqlserver.fresh(target, "dispatchd_query") as url:
            return (target, *await measure_store(args, url, target))
    tmp = Path(tempfile.mkdtemp(prefix="dispatchd-query-"))
    url = f"sqlite:///{tmp}/events.db"
    try:
        return ("sqlite", *await measure_store(args, url, "sqlite"))
    finally:
        if args.keep:
            print(f"kept {url}", file=sys.stderr)
        else:
            for leftover in tmp.iterdir():
                leftover.unlink()
            tmp.rmdir()


async def run(args: argparse.Namespace) -> int:
    texts: list[str] = []
    summary: dict[str, dict[str, tuple[float, float]]] = {}
    worst = 0.0
    for target in [args.url] if args.url else args.stores.split(","):
        dialect, text, results = await measure_target(args, target)
        texts.append(text)
        summary[dialect] = {name: (statistics.median(t), p99(t)) for name, t in results.items()}
        first_pages = [t for name, t in results.items() if "newest 100" in name and "=X" in name]
        worst = max([worst, *(p99(t) for t in first_pages)])
    header = (f"# Query latency, {args.rows:,} rows — {datetime.now().isoformat(timespec='seconds')}"
              f"\n\n{platform.node()}, Python {platform.python_version()}; {args.runs} timed calls "
              "per query, through the query code on the dispatcher's read connection(s), HTTP "
              "not included. Target: a filtered first page (`=X, newest 100`) within "
              f"{TARGET_P99_MS:g} ms p99.\n")
    text = "\n".join([header, *texts])
    print(text)
    if args.write:
        RESULTS.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(summary))
    return 0 if worst <= TARGET_P99_MS else 3


async def server_version(dialect: str) -> str:
    rows = await sqlserver.admin(dialect, "SELECT version()")
    text = str(rows[0][0]).split(" on ")[0]
    return text if dialect == "postgresql" else f"MariaDB {text}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stores", default="sqlite",
                        help="comma-separated: sqlite (a temp file), postgresql, mysql (fresh "
                             "databases on this machine's servers); default %(default)s")
    parser.add_argument("--url", help="one given database instead of --stores (its table is "
                                      "filled up to --rows, or reused)")
    parser.add_argument("--runs", type=int, default=200, help="timed calls per query")
    parser.add_argument("--keep", action="store_true", help="keep the temp SQLite file")
    parser.add_argument("--json", type=Path, help="also write p50/p99 per store and query here")
    parser.add_argument("--no-write", dest="write", action="store_false",
                        help=f"do not write {RESULTS.relative_to(ROOT)}")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
