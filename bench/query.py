"""Query latency of the event API on a large table: p50/p99 of typical ``GET /v1/events`` queries.

    .venv/bin/python bench/query.py [--rows 1000000] [--url sqlite:///path] [--runs 200] [--keep]

Fills Senlin's ``event`` table through the ``database`` dispatcher itself (its row encoder and
upsert, 1000 rows a batch) with a Senlin-like population: 200 clusters of 20 nodes each, a fifth
of the events on clusters and the rest on nodes, 80 % INFO, 15 % WARNING, 5 % ERROR, one event
every 2.6 s (a month for 1M rows). Then times each query through the query API's own code path
(``event_query.list_events`` / ``get_event`` on the dispatcher's read connection; HTTP not
included) and writes p50/p99 to bench/results/query.md. ``--url`` takes any URL the dispatcher
accepts, so the same run measures PostgreSQL or MariaDB; a table that already holds ``--rows``
rows is reused as it is (``--keep`` keeps a temp SQLite file for that).
"""

from __future__ import annotations

import argparse
import asyncio
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

from sqlalchemy import func, select

from dispatchd import Record
from dispatchd.dispatchers.database import DatabaseDispatcher, DatabaseOptions
from dispatchd.event_query import EVENT, EventQuery, get_event, list_events, page_statement, parse_query
from dispatchd.models import new_id

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "query.md"
CLUSTERS, NODES = 200, 20
START = datetime(2026, 1, 1)
STEP = timedelta(seconds=2.6)
BATCH = 1000
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
    for first in range(have, rows, BATCH):
        await store.dump_batch([record(i, rng) for i in range(first, min(rows, first + BATCH))])
        if first % 100_000 == 0:
            print(f"  {first:,} rows", file=sys.stderr, flush=True)
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
    results["GET /v1/events/{short id}"] = await timed(
        runs, lambda: get_event(store, rng.choice(ids)[:8]))
    return results


def plans(path: Path) -> list[str]:
    """SQLite's plan of each statement shape, to see which index it takes."""
    from sqlalchemy.dialects import sqlite

    dialect = sqlite.dialect()
    shapes = {
        "newest 100": parse_query([]),
        "cluster_id=X": parse_query([("cluster_id", cluster(1))]),
        "oid=X": parse_query([("oid", node(1, 1))]),
        "cluster_id=X, level=ERROR": parse_query([("cluster_id", cluster(1)), ("level", "40")]),
    }
    lines = []
    with sqlite3.connect(path) as db:
        for name, query in shapes.items():
            compiled = page_statement(query, dialect).compile(
                dialect=dialect, compile_kwargs={"literal_binds": True})
            steps = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {compiled}")]
            lines.append(f"| {name} | {'; '.join(steps)} |")
    return lines


def report(rows: int, url: str, fill_s: float, results: dict[str, list[float]],
           plan: list[str]) -> str:
    out = [f"# Query latency, {rows:,} rows — {datetime.now().isoformat(timespec='seconds')}", "",
           f"Store `{url.split('@')[-1]}`; {platform.node()}, Python {platform.python_version()}, "
           f"SQLite {sqlite3.sqlite_version}."
           + (f" Filled in {fill_s:.0f} s." if fill_s else " Table reused."), "",
           "| query | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|"]
    for name, times in results.items():
        times.sort()
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        out.append(f"| {name} | {statistics.median(times):.2f} | {p99:.2f} | {times[-1]:.2f} |")
    if plan:
        out += ["", "SQLite's plans (`EXPLAIN QUERY PLAN`):", "", "| query | plan |", "|---|---|",
                *plan]
    return "\n".join(out) + "\n"


async def run(args: argparse.Namespace) -> int:
    tmp = None
    url = args.url
    if url is None:
        tmp = Path(tempfile.mkdtemp(prefix="dispatchd-query-"))
        url = f"sqlite:///{tmp}/events.db"
    store = DatabaseDispatcher("database", DatabaseOptions(url=url))
    await store.start()
    try:
        print(f"filling {url} to {args.rows:,} rows", file=sys.stderr)
        fill_s = await fill(store, args.rows)
        results = await measure(store, args.rows, args.runs)
    finally:
        await store.close()
    plan = plans(Path(url.removeprefix("sqlite:///"))) if url.startswith("sqlite:///") else []
    text = report(args.rows, url, fill_s, results, plan)
    print(text)
    if args.write:
        RESULTS.write_text(text)
    if tmp is not None and not args.keep:
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()
    elif tmp is not None:
        print(f"kept {url}", file=sys.stderr)
    first_pages = [results[k] for k in results if "newest 100" in k and "=X" in k]
    worst = max(sorted(t)[min(len(t) - 1, int(len(t) * 0.99))] for t in first_pages)
    return 0 if worst <= TARGET_P99_MS else 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--url", help="the database dispatcher's url (default: a temp SQLite file)")
    parser.add_argument("--runs", type=int, default=200, help="timed calls per query")
    parser.add_argument("--keep", action="store_true", help="keep the temp SQLite file")
    parser.add_argument("--no-write", dest="write", action="store_false",
                        help=f"do not write {RESULTS.relative_to(ROOT)}")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
