"""aiosqlite against one dedicated thread with plain sqlite3, for the spool's commit pattern.

    taskset -c 0 python bench/sqlite_threads.py [--seconds 5] [--rows 1]

Each commit is what the spool does per group commit: BEGIN, insert ``--rows`` rows, update the
head in ``meta``, COMMIT. aiosqlite hands every statement to its thread and back; the dedicated
thread takes the whole commit in one hand-off. Prints commits/s for both, the ratio, and writes
nothing: docs/performance.md quotes it.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiosqlite

SCHEMA = """
CREATE TABLE spool (seq INTEGER PRIMARY KEY, level INTEGER NOT NULL, body TEXT NOT NULL,
                    target TEXT);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
BODY = '{"level":20,"action":{"action":"NODE_CREATE"}}' * 10
INSERT = "INSERT INTO spool (seq, level, body, target) VALUES (?, 20, ?, NULL)"
HEAD = "INSERT OR REPLACE INTO meta (key, value) VALUES ('head', ?)"


def _pragmas(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")


async def with_aiosqlite(path: Path, seconds: float, rows: int) -> float:
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.executescript(SCHEMA)
        seq, commits, started = 0, 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            batch = [(seq + i + 1, BODY) for i in range(rows)]
            seq += rows
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany(INSERT, batch)
            await db.execute(HEAD, (seq,))
            await db.execute("COMMIT")
            commits += 1
        return commits / (time.perf_counter() - started)


async def with_thread(path: Path, seconds: float, rows: int) -> float:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as thread:
        db = await loop.run_in_executor(
            thread, lambda: sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        )

        def setup() -> None:
            _pragmas(db)
            db.executescript(SCHEMA)

        def commit(batch: list[tuple[int, str]], head: int) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(INSERT, batch)
            db.execute(HEAD, (head,))
            db.execute("COMMIT")

        await loop.run_in_executor(thread, setup)
        seq, commits, started = 0, 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            batch = [(seq + i + 1, BODY) for i in range(rows)]
            seq += rows
            await loop.run_in_executor(thread, commit, batch, seq)
            commits += 1
        rate = commits / (time.perf_counter() - started)
        await loop.run_in_executor(thread, db.close)
        return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rows", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a = asyncio.run(with_aiosqlite(Path(tmp) / "a.db", args.seconds, args.rows))
        t = asyncio.run(with_thread(Path(tmp) / "t.db", args.seconds, args.rows))
    print(f"commits/s of {args.rows} row(s): aiosqlite {a:,.0f}, dedicated thread {t:,.0f}, "
          f"ratio {t / a:.2f}")


if __name__ == "__main__":
    main()
