"""The batch path stage by stage, in µs of CPU per record: 100-record batches, in process.

    python bench/path.py [--batches 300] [--table-rows 200000]

Each stage runs on its own, as it does in the daemon, so that the stages of two commits can be
compared one by one: run it with ``PYTHONPATH=<other checkout>/src`` for the other. Pin it to one
core (``taskset -c 0``) as the daemon is: the spool's and the database's SQLite threads then share
that core, and their CPU time is counted with the loop's (``time.process_time``). The HTTP stage
is not here: it is bench/stages.py's "read" row in a real server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from baselines import sample

from dispatchd.constants import JSON
from dispatchd.decode import decode_records
from dispatchd.dispatchers.database import DatabaseDispatcher, DatabaseOptions, row_of
from dispatchd.models import Record
from dispatchd.spool import Spool

BATCH = 100


def per_record(fn: Callable[[], object], batches: int, repeat: int = 5) -> float:
    """The best of ``repeat`` timings of ``batches`` calls, in µs of CPU per record."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(batches):
            fn()
        best = min(best, time.process_time() - started)
    return best / batches / BATCH * 1e6


def encoder() -> Callable[[Record], str]:
    """What ingest hands the spool for each record, in the tree being measured."""
    try:
        from dispatchd.models import spool_json
    except ImportError:  # before issue 13
        return lambda record: record.model_dump_json(exclude_none=True)
    return spool_json


async def spool_stages(tmp: Path, records: list[Record], batches: int) -> dict[str, float]:
    """Appending a request's records (commit included), then reading them back from the file."""
    encode = encoder()
    rows = [(r.level, encode(r)) for r in records]
    together = {"together": True} if "together" in Spool.append.__code__.co_varnames else {}
    spool = Spool(tmp / "spool.db", max_events=10_000_000)
    await spool.open()
    try:
        await spool.ensure_cursor("database")
        started = time.process_time()
        for _ in range(batches):
            await spool.append(rows, records, **together)
        write = (time.process_time() - started) / batches / BATCH * 1e6
    finally:
        await spool.close()
    spool = Spool(tmp / "spool.db", max_events=10_000_000)  # reopened: nothing in memory
    await spool.open()
    try:
        started, after, read = time.process_time(), 0, []
        while batch := await spool.read(after, 500):
            read += batch
            after = batch[-1].seq
        took = (time.process_time() - started) / len(read) * 1e6
    finally:
        await spool.close()
    bodies = [row.body for row in read[:BATCH]]
    decode = per_record(lambda: [Record.model_validate_json(b) for b in bodies], 50)
    return {"spool write (commit included)": write, "spool read from the file": took,
            "worker decode (rows read from the file)": decode}


async def insert_stage(tmp: Path, records: list[Record], table_rows: int) -> dict[str, float]:
    """The database dispatcher's 500-record transactions into a table that already holds
    ``table_rows`` rows, with fresh uuid4 ids as records sent without one get."""
    from dispatchd.models import new_id

    backend = DatabaseDispatcher("database", DatabaseOptions(url=f"sqlite:///{tmp}/events.db"))
    await backend.start()
    try:
        template = records * 5

        def fresh() -> list[Record]:
            return [r.model_copy(update={"id": new_id()}) for r in template]

        for _ in range(table_rows // len(template)):
            await backend.dump_batch(fresh())
        batches = [fresh() for _ in range(40)]
        cpu, wall = time.process_time(), time.perf_counter()
        for batch in batches:
            await backend.dump_batch(batch)
        count = len(batches) * len(template)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await backend.close()
    rows = per_record(lambda: [row_of(r) for r in records], 100)
    return {"row building": rows, "SQLite insert (row building included)": cpu / count * 1e6,
            "SQLite insert, wall time": wall / count * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--table-rows", type=int, default=200_000)
    args = parser.parse_args()
    gc.freeze()  # as the daemon runs (service.run)
    gc.set_threshold(50_000, 20, 100)
    body = json.dumps([sample(i) for i in range(BATCH)]).encode()
    records = decode_records(body, JSON, 1000)
    encode = encoder()
    figures = {
        "validation": per_record(lambda: decode_records(body, JSON, 1000), args.batches),
        "serialisation": per_record(lambda: [encode(r) for r in records], args.batches),
    }
    with tempfile.TemporaryDirectory(prefix="bench-path-") as name:
        figures |= asyncio.run(spool_stages(Path(name), records, args.batches))
        figures |= asyncio.run(insert_stage(Path(name), records, args.table_rows))
    source = Path(sys.modules["dispatchd"].__file__ or "").parent
    print(json.dumps({"source": str(source), "pid": os.getpid(), **{
        k: round(v, 2) for k, v in figures.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
