from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dispatchd import spool as spool_module
from dispatchd.errors import SpoolFull, SpoolLocked, SpoolLowSpace, SpoolUnavailable
from dispatchd.lock import Holder, SpoolLock, lock_path, read_holder
from dispatchd.spool import DeadLetter, Row, Spool

from .support.daemon import eventually
from .support.fs import small_filesystem


@pytest.fixture
async def spool(tmp_path):
    s = Spool(tmp_path / "spool.db", max_events=100)
    await s.open()
    yield s
    await s.close()


def rows(n: int, level: int = 20) -> list[tuple[int, str]]:
    return [(level, f'{{"n": {i}}}') for i in range(n)]


async def test_wal_mode_and_sync_setting(tmp_path):
    s = Spool(tmp_path / "s.db", sync="full")
    await s.open()
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    await s.close()


async def test_group_commit_takes_every_waiting_append_in_one_transaction(spool):
    await spool.ensure_cursor("d")
    before = spool.commits
    results = await asyncio.gather(*(spool.append(rows(2)) for _ in range(20)))
    assert spool.commits - before <= 2  # the first may be taken alone, the rest wait together
    seqs = [seq for result in results for seq in result]
    assert seqs == list(range(1, 41))  # consecutive, in request order
    assert [r.seq for r in await spool.read(0, 100)] == seqs


async def test_append_commits_before_returning(spool, tmp_path):
    await spool.ensure_cursor("d")
    await spool.append(rows(3))
    with sqlite3.connect(tmp_path / "spool.db") as db:  # another connection sees it at once
        assert db.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 3


async def test_a_new_cursor_starts_at_the_head(spool):
    await spool.ensure_cursor("old")
    await spool.append(rows(5))
    assert await spool.ensure_cursor("new") == 5
    assert await spool.ensure_cursor("old") == 0


async def test_rows_every_cursor_passed_are_deleted(spool, tmp_path):
    await spool.ensure_cursor("a")
    await spool.ensure_cursor("b")
    await spool.append(rows(10))
    await spool.move_cursor("a", 8)
    assert spool.floor == 0 and spool.backlog == 10
    await spool.move_cursor("b", 4)
    assert spool.floor == 4 and spool.backlog == 6
    assert [r.seq for r in await spool.read(0, 100)] == list(range(5, 11))
    await spool.drop_cursor("b")
    assert spool.floor == 8
    with sqlite3.connect(tmp_path / "spool.db") as db:
        assert db.execute("SELECT MIN(seq), COUNT(*) FROM spool").fetchone() == (9, 2)


async def test_without_cursors_nothing_is_kept(spool):
    await spool.append(rows(3))
    assert spool.backlog == 0 and await spool.read(0, 10) == []


async def test_bound_rejects_whole_requests_beyond_max_events(spool):
    await spool.ensure_cursor("d")
    await spool.append(rows(90))
    with pytest.raises(SpoolFull):
        await spool.append(rows(11))
    await spool.append(rows(10))
    assert spool.is_full()
    await spool.move_cursor("d", 50)
    assert not spool.is_full() and spool.room() == 50


async def test_state_survives_reopen(tmp_path):
    s = Spool(tmp_path / "s.db")
    await s.open()
    await s.ensure_cursor("a")
    await s.append(rows(5))
    await s.move_cursor("a", 5)  # everything compacted away; head must still be 5
    await s.ensure_cursor("b")
    await s.append(rows(2))
    await s.close()
    s = Spool(tmp_path / "s.db")
    await s.open()
    assert (s.head, s.floor, s.cursors) == (7, 5, {"a": 5, "b": 5})
    assert [r.seq for r in await s.read(5, 10)] == [6, 7]
    assert (await s.append(rows(1))) == [8]
    await s.close()


async def test_dead_letters_and_retire(spool):
    await spool.ensure_cursor("a")
    await spool.ensure_cursor("b")
    await spool.append(rows(4))
    row = (await spool.read(0, 1))[0]
    await spool.dead_letter([DeadLetter("a", row, "boom", 3)])
    assert await spool.retire_cursor("b", "disabled") == 4
    assert "b" not in spool.cursors
    assert await spool.dead_letter_counts() == {"a": 1, "b": 4}
    letters = await spool.dead_letters("b")
    assert [d.row.seq for d in letters] == [1, 2, 3, 4] and letters[0].error == "disabled"
    [stored] = await spool.dead_letters("a")
    assert (stored.dispatcher, stored.row, stored.error, stored.attempts) == (
        "a", Row(1, 0, row.body), "boom", 3
    )
    assert stored.id > 0 and stored.failed_at > 0


async def test_listeners_are_woken_by_appends(spool):
    await spool.ensure_cursor("d")
    event = spool.listen()
    await spool.move_cursor("d", 0)
    assert not event.is_set()
    await spool.append(rows(1))
    assert event.is_set()


async def test_a_failed_commit_answers_unavailable_and_keeps_state(spool, tmp_path):
    await spool.ensure_cursor("d")
    await spool.append(rows(2))
    with sqlite3.connect(tmp_path / "spool.db") as db:  # a seq collision makes the insert fail
        db.execute("INSERT INTO spool (seq, level, body) VALUES (3, 20, '{}')")
    with pytest.raises(SpoolUnavailable):
        await spool.append(rows(1))
    assert spool.head == 2 and spool.backlog == 2


async def test_append_after_close_is_refused(tmp_path):
    s = Spool(tmp_path / "s.db")
    await s.open()
    await s.close()
    with pytest.raises(SpoolUnavailable):
        await s.append(rows(1))


async def test_replay_targets_one_dispatcher_and_empties_its_dead_letters(spool):
    await spool.ensure_cursor("a")
    await spool.ensure_cursor("b")
    await spool.append(rows(2))
    first = (await spool.read(0, 1))[0]
    await spool.dead_letter([DeadLetter("a", first, "boom", 3)])
    letters = await spool.dead_letters("a")
    assert await spool.replay("a", letters, [20]) == 1
    replayed = (await spool.read(2, 10))
    assert [(r.seq, r.target, r.body) for r in replayed] == [(3, "a", first.body)]
    assert replayed[0].is_for("a") and not replayed[0].is_for("b")
    assert await spool.dead_letter_counts() == {}


async def test_purge_and_paging(spool):
    await spool.ensure_cursor("a")
    await spool.append(rows(5))
    batch = await spool.read(0, 5)
    await spool.dead_letter([DeadLetter("a", r, "x", 1) for r in batch])
    await spool.dead_letter([DeadLetter("b", batch[0], "x", 1)])
    page = await spool.dead_letters("a", limit=2)
    assert [d.row.seq for d in page] == [1, 2]
    assert [d.row.seq for d in await spool.dead_letters("a", after=page[-1].id)] == [3, 4, 5]
    assert await spool.purge_dead_letters("a") == 5
    assert await spool.dead_letter_counts() == {"b": 1}


async def test_a_spool_from_before_replays_is_migrated(tmp_path):
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("CREATE TABLE spool (seq INTEGER PRIMARY KEY, level INTEGER NOT NULL,"
                   " body TEXT NOT NULL)")
        db.execute("INSERT INTO spool VALUES (1, 20, '{}')")
    s = Spool(tmp_path / "old.db")
    await s.open()
    await s.ensure_cursor("a")
    assert [(r.seq, r.target) for r in await s.read(0, 10)] == []  # new cursor starts at head
    assert s.head == 1
    await s.append(rows(1))
    assert [(r.seq, r.target) for r in await s.read(0, 10)] == [(2, None)]  # 1 compacted
    await s.close()


async def test_recent_records_are_read_from_memory_older_ones_from_disk(spool, monkeypatch):
    monkeypatch.setattr(spool_module, "RECENT", 4)
    fresh = Spool(spool.path.with_name("recent.db"))
    await fresh.open()
    try:
        await fresh.ensure_cursor("a")
        await fresh.append([(20, f'{{"n": {i}}}') for i in range(6)], [f"decoded {i}" for i in range(6)])
        # Only the last four are still in memory; what came before is read from the file.
        assert [(r.seq, r.decoded) for r in await fresh.read(2, 10)] == [
            (3, "decoded 2"), (4, "decoded 3"), (5, "decoded 4"), (6, "decoded 5")]
        assert [(r.seq, r.decoded) for r in await fresh.read(0, 3)] == [
            (1, None), (2, None), (3, None)]
        assert [r.body for r in await fresh.read(4, 1)] == ['{"n": 4}']
        assert await fresh.read(6, 10) == []
    finally:
        await fresh.close()


async def test_a_cursor_move_soon_is_committed_with_the_next_group(spool, tmp_path):
    await spool.ensure_cursor("a")
    await spool.append([(20, "{}")] * 3)
    done = spool.move_cursor_soon("a", 2)
    assert not done.done()
    await done
    with sqlite3.connect(tmp_path / "spool.db") as db:
        assert db.execute("SELECT seq FROM cursor WHERE name = 'a'").fetchone() == (2,)
    await spool.close()
    with pytest.raises(SpoolUnavailable):
        await spool.move_cursor_soon("a", 3)


async def test_lazy_cursor_moves_ride_along_with_the_next_append(spool):
    await spool.ensure_cursor("a")
    await spool.append([(20, "{}")] * 3)
    commits = spool.commits
    done = spool.move_cursor_soon("a", 2)
    await asyncio.sleep(0)  # a loop turn in which a commit of its own would start: none may
    assert spool.commits == commits  # no commit of its own ...
    await spool.append([(20, "{}")])
    assert spool.commits == commits + 1  # ... it went with the append's
    assert done.done() and spool.cursors["a"] == 2


# -- one daemon per spool: the lock ------------------------------------------------------------------


def test_the_lock_conflicts_between_two_open_file_descriptions(tmp_path):
    spool_path = tmp_path / "spool.db"
    held = SpoolLock.acquire(spool_path)
    try:
        with pytest.raises(SpoolLocked) as caught:
            SpoolLock.acquire(spool_path)  # same process, its own open(): flock says no
        assert str(spool_path) in str(caught.value) and f"pid {os.getpid()}" in str(caught.value)
        assert lock_path(spool_path) == tmp_path / "spool.db.lock"
        assert json.loads(lock_path(spool_path).read_text()) == {
            "pid": os.getpid(), "spool": str(spool_path), "url": None}
    finally:
        held.release()
    SpoolLock.acquire(spool_path).release()  # free again once released
    assert not lock_path(spool_path).exists()


async def test_a_locked_spool_is_neither_read_nor_created(tmp_path):
    held = SpoolLock.acquire(tmp_path / "spool.db")
    try:
        with pytest.raises(SpoolLocked, match="in use by another dispatchd"):
            await Spool(tmp_path / "spool.db").open()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["spool.db.lock"]
    finally:
        held.release()


async def test_a_second_spool_on_the_same_file_changes_nothing(spool, tmp_path):
    await spool.ensure_cursor("jsonfile")
    await spool.append(rows(3))
    before = _contents(tmp_path / "spool.db")
    other = Spool(tmp_path / "spool.db")
    with pytest.raises(SpoolLocked):
        await other.open()
    assert not other.is_open and other.lock is None
    assert _contents(tmp_path / "spool.db") == before
    assert spool.lock is not None and spool.lock.held  # the first one still holds it


async def test_the_lock_is_held_while_open_and_released_on_close(tmp_path):
    s = Spool(tmp_path / "deep" / "dir" / "spool.db")  # the directory is created
    await s.open()
    assert s.lock is not None and read_holder(s.path) == Holder(os.getpid(), None, str(s.path))
    s.lock.publish("http://127.0.0.1:8080")
    assert read_holder(s.path) == Holder(os.getpid(), "http://127.0.0.1:8080", str(s.path))
    await s.close()
    assert s.lock is None and read_holder(s.path) is None
    again = Spool(s.path)
    await again.open()
    await again.close()


async def test_a_failed_open_releases_the_lock_and_moves_nothing_aside(tmp_path):
    (tmp_path / "spool.db").mkdir()  # SQLite cannot open a directory: not a damaged file
    s = Spool(tmp_path / "spool.db")
    with pytest.raises(SpoolUnavailable, match="cannot open spool"):
        await s.open()
    assert s.lock is None and not s.quarantined
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spool.db"]
    SpoolLock.acquire(tmp_path / "spool.db").release()


def test_an_unwritable_spool_directory_is_unavailable_not_locked(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SpoolUnavailable, match="cannot lock spool"):
        SpoolLock.acquire(tmp_path / "file" / "spool.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_read_holder_ignores_a_dead_holder_and_garbage(tmp_path):
    spool_path = tmp_path / "spool.db"
    assert read_holder(spool_path) is None
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(done.stdout)
    lock_path(spool_path).write_text(json.dumps({"pid": dead, "spool": str(spool_path), "url": None}))
    assert read_holder(spool_path) is None  # killed -9: the file stayed, its process did not
    lock_path(spool_path).write_text("{not json")
    assert read_holder(spool_path) is None
    lock = SpoolLock.acquire(spool_path)  # a stale file is no obstacle: only flock counts
    try:
        holder = read_holder(spool_path)
        assert holder is not None and holder.pid == os.getpid()
    finally:
        lock.release()


def _contents(path: Path) -> list[tuple[Any, ...]]:
    """Every table's rows, read through a read-only connection (the WAL's content included)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return [(t, *db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()) for t in sorted(tables)]


# -- the disk reserve ------------------------------------------------------------------------------


async def test_free_space_is_measured_even_without_a_reserve(spool):
    assert spool.reserve_bytes == 0 and isinstance(spool.free_bytes, int) and spool.free_bytes > 0
    assert not spool.low_space


async def test_under_the_reserve_only_new_records_are_refused(spool):
    await spool.ensure_cursor("a")
    await spool.ensure_cursor("b")
    await spool.append(rows(6))
    [first] = await spool.read(0, 1)
    await spool.dead_letter([DeadLetter("a", first, "boom", 3)])
    spool.reserve_bytes = 2**62  # more than any disk: the next commit finds the spool low
    await spool.move_cursor("a", 1)
    assert spool.low_space and spool.free_bytes is not None and spool.free_bytes < 2**62
    with pytest.raises(SpoolLowSpace) as caught:
        await spool.append(rows(1))
    message = str(caught.value)
    assert str(spool.path) in message and str(spool.free_bytes) in message and str(2**62) in message
    with pytest.raises(SpoolLowSpace):
        await spool.replay("a", await spool.dead_letters("a"), [20])
    # What frees space or records progress is never refused.
    await spool.move_cursor("a", 6)
    await spool.dead_letter([DeadLetter("b", first, "boom", 3)])
    await spool.drop_cursor("b")
    assert spool.backlog == 0 and spool.cursors == {"a": 6}
    assert await spool.dead_letter_counts() == {"a": 1, "b": 1}
    await eventually(lambda: _count(spool.path, "spool") == 0)  # compacted, too
    assert spool.head == 6


async def test_ingest_resumes_by_itself_when_space_returns(spool):
    await spool.ensure_cursor("a")
    spool.reserve_bytes = 2**62
    await spool.move_cursor("a", 0)
    assert spool.low_space
    spool.reserve_bytes = 1  # as if space came back: no commit needed to notice it
    commits = spool.commits
    started = time.monotonic()
    await eventually(lambda: not spool.low_space, timeout=5)
    assert time.monotonic() - started < 2.5 and spool.commits == commits  # a check, not a commit
    assert await spool.append(rows(1)) == [1]


async def test_a_real_small_disk_stops_ingest_at_the_reserve_and_recovers(tmp_path):
    with small_filesystem(tmp_path / "fs", "8m") as fs:
        s = Spool(fs / "spool.db", reserve_bytes=2_000_000)
        await s.open()
        try:
            await s.ensure_cursor("d")
            # Space taken by someone else, then given back: no restart, no commit needed.
            ballast = fs / "ballast"
            ballast.write_bytes(b"\0" * (_fs_free(fs) - 1_000_000))

            async def low_after_a_commit() -> bool:  # measured within MEASURE_INTERVAL
                await s.move_cursor("d", 0)
                return s.low_space

            await eventually(low_after_a_commit, timeout=2)
            with pytest.raises(SpoolLowSpace):
                await s.append(rows(1))
            ballast.unlink()
            await eventually(lambda: not s.low_space, timeout=5)
            # Filled by the spool itself: stopped at the reserve, with room left to drain.
            body = '{"x": "' + "y" * 1000 + '"}'
            accepted = 0
            with pytest.raises(SpoolLowSpace):
                for _ in range(1000):
                    accepted += len(await s.append([(20, body)] * 50))
            assert 1000 < accepted < 8_000_000 // 1000
            assert s.free_bytes is not None and s.free_bytes < 2_000_000
            assert _fs_free(fs) > 1_000_000  # stopped at the reserve, not at a full disk
            # Everything that frees space still commits, then ingest comes back by itself.
            [first] = await s.read(0, 1)
            await s.dead_letter([DeadLetter("d", first, "boom", 3)])
            await s.move_cursor("d", s.head)
            await eventually(lambda: not s.low_space and _count(s.path, "spool") == 0, timeout=10)
            accepted_again = 0
            for _ in range(2 * accepted // 50):  # as much again as fits, twice over, as it drains
                accepted_again += len(await s.append([(20, body)] * 50))
                await s.move_cursor("d", s.head)
            assert accepted_again >= 2 * accepted - 50
        finally:
            await s.close()


async def test_the_wal_does_not_keep_a_bursts_size(tmp_path):
    s = Spool(tmp_path / "spool.db", reserve_bytes=2_000_000)
    await s.open()
    try:
        await s.ensure_cursor("d")
        wal = Path(f"{s.path}-wal")
        body = '{"x": "' + "y" * 1000 + '"}'
        await s.append([(20, body)] * 3000)  # one transaction: the WAL holds all of it
        burst = wal.stat().st_size
        assert burst > 3_000_000
        await s.move_cursor("d", s.head)
        for _ in range(5):
            await s.append([(20, body)])
            await s.move_cursor("d", s.head)
        # Cut back to about a quarter of the reserve once the log restarts.
        limit = 2_000_000 // 4 // 4096 * (4096 + 24)
        await eventually(lambda: wal.stat().st_size <= limit)
    finally:
        await s.close()


async def test_compaction_goes_in_bounded_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "COMPACT_BYTES", 1)
    monkeypatch.setattr(spool_module, "MIN_COMPACT_BYTES", 1)  # one row per commit
    s = Spool(tmp_path / "spool.db")
    await s.open()
    await s.ensure_cursor("d")
    await s.append(rows(10))
    commits = s.commits
    await s.move_cursor("d", 10)
    assert s.backlog == 0 and await s.read(0, 10) == [] and await s.oldest_accepted(0) is None
    await eventually(lambda: _count(s.path, "spool") == 0)
    assert s.commits - commits >= 10  # each step its own commit, driven by the writer itself
    await s.append(rows(4))
    await s.move_cursor("d", 14)
    await s.close()  # with rows still below the floor
    s = Spool(tmp_path / "spool.db")
    await s.open()
    try:
        assert (s.head, s.floor, s.backlog) == (14, 14, 0) and await s.read(0, 10) == []
        await eventually(lambda: _count(s.path, "spool") == 0)
    finally:
        await s.close()


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        count: int = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    return count


def _fs_free(path: Path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


# -- lag: when each record was accepted -------------------------------------------------------------


async def test_each_record_keeps_when_it_was_accepted(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "RECENT", 2)
    s = Spool(tmp_path / "spool.db")
    await s.open()
    await s.ensure_cursor("d")
    before = time.time()
    await s.append(rows(3))
    after = time.time()
    await s.append(rows(1))
    assert await s.oldest_accepted(4) is None  # nothing after the head
    from_disk = await s.oldest_accepted(0)  # seq 1 is no longer in memory
    in_memory = await s.oldest_accepted(2)
    assert from_disk is not None and before <= from_disk <= after and in_memory == from_disk
    assert [r.accepted for r in await s.read(0, 4)][:3] == [from_disk] * 3
    newest = await s.oldest_accepted(3)
    assert newest is not None and newest >= from_disk
    await s.close()
    s = Spool(tmp_path / "spool.db")
    await s.open()
    try:
        assert await s.oldest_accepted(1) == from_disk
    finally:
        await s.close()


async def test_records_from_before_accept_times_have_none(tmp_path):
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("CREATE TABLE spool (seq INTEGER PRIMARY KEY, level INTEGER NOT NULL,"
                   " body TEXT NOT NULL, target TEXT)")
        db.execute("INSERT INTO spool VALUES (1, 20, '{}', NULL)")
        db.execute("CREATE TABLE cursor (name TEXT PRIMARY KEY, seq INTEGER NOT NULL)")
        db.execute("INSERT INTO cursor VALUES ('d', 0)")
    s = Spool(tmp_path / "old.db")
    await s.open()
    try:
        assert [(r.seq, r.accepted) for r in await s.read(0, 10)] == [(1, None)]
        assert await s.oldest_accepted(0) is None
        await s.append(rows(1))
        assert await s.oldest_accepted(1) is not None
    finally:
        await s.close()


# -- a request's records in one row --------------------------------------------------------------


async def reopened(path: Path) -> Spool:
    """The spool at ``path`` opened afresh: nothing in memory, every read from the file."""
    s = Spool(path)
    await s.open()
    return s


def stored_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT seq, level, count FROM spool ORDER BY seq").fetchall()


async def test_records_appended_together_share_one_row_and_are_read_back_one_by_one(tmp_path):
    s = await reopened(tmp_path / "s.db")
    await s.ensure_cursor("a")
    assert await s.append(rows(3, level=30) + rows(1, level=40), together=True) == [1, 2, 3, 4]
    assert await s.append(rows(1), together=True) == [5]
    await s.close()
    assert stored_rows(tmp_path / "s.db") == [(4, 40, 4), (5, 20, None)]
    s = await reopened(tmp_path / "s.db")
    try:
        read = await s.read(0, 10)
        assert [(r.seq, r.body, r.decoded) for r in read] == [
            (1, '{"n": 0}', None), (2, '{"n": 1}', None), (3, '{"n": 2}', None),
            (4, '{"n": 0}', None), (5, '{"n": 0}', None)]
        # From the middle of a row, and a limit that ends inside one.
        assert [r.seq for r in await s.read(1, 2)] == [2, 3]
        assert [r.seq for r in await s.read(3, 1)] == [4]
        assert await s.oldest_accepted(2) == read[2].accepted
    finally:
        await s.close()


async def test_a_body_with_a_newline_gets_a_row_of_its_own(tmp_path):
    s = await reopened(tmp_path / "s.db")
    await s.ensure_cursor("a")
    await s.append([(20, '{"a": 1}'), (20, '{"b":\n2}')], together=True)
    await s.close()
    assert stored_rows(tmp_path / "s.db") == [(1, 20, None), (2, 20, None)]
    s = await reopened(tmp_path / "s.db")
    try:
        assert [r.body for r in await s.read(0, 10)] == ['{"a": 1}', '{"b":\n2}']
    finally:
        await s.close()


async def test_a_row_is_kept_while_a_cursor_is_inside_it_across_a_restart(tmp_path):
    s = await reopened(tmp_path / "s.db")
    await s.ensure_cursor("a")
    await s.append(rows(4), together=True)
    await s.append(rows(4), together=True)
    await s.move_cursor("a", 6)  # inside the second row: the first goes, the second stays
    await s.append(rows(1))
    await s.close()
    assert [seq for seq, _, _ in stored_rows(tmp_path / "s.db")] == [8, 9]
    s = await reopened(tmp_path / "s.db")
    try:
        assert (s.head, s.floor, s.backlog) == (9, 6, 3)
        assert [(r.seq, r.body) for r in await s.read(6, 10)] == [
            (7, '{"n": 2}'), (8, '{"n": 3}'), (9, '{"n": 0}')]
        await s.move_cursor("a", 9)
        await eventually(lambda: stored_rows(tmp_path / "s.db") == [])
    finally:
        await s.close()


async def test_retiring_a_cursor_inside_a_row_dead_letters_only_what_it_was_owed(tmp_path):
    s = await reopened(tmp_path / "s.db")
    try:
        await s.ensure_cursor("a")
        await s.ensure_cursor("b")
        await s.append(rows(3), together=True)
        await s.append(rows(3), together=True)
        await s.move_cursor("b", 2)
        assert await s.retire_cursor("b", "disabled", upto=5) == 3
        letters = await s.dead_letters("b")
        assert [(d.row.seq, d.row.body, d.error) for d in letters] == [
            (3, '{"n": 2}', "disabled"), (4, '{"n": 0}', "disabled"), (5, '{"n": 1}', "disabled")]
    finally:
        await s.close()


async def test_a_row_that_lost_lines_still_gives_every_seq(tmp_path):
    s = await reopened(tmp_path / "s.db")
    await s.ensure_cursor("a")
    await s.append(rows(3), together=True)
    await s.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("""UPDATE spool SET body = '{"n": 0}' WHERE seq = 3""")
    s = await reopened(tmp_path / "s.db")
    try:  # the worker dead-letters the empty ones as undecodable: nothing vanishes unseen
        assert [(r.seq, r.body) for r in await s.read(0, 10)] == [(1, '{"n": 0}'), (2, ""), (3, "")]
    finally:
        await s.close()


async def test_a_spool_with_one_row_per_record_is_migrated_and_read(tmp_path):
    with sqlite3.connect(tmp_path / "old.db") as db:  # as dispatchd wrote it before count
        db.executescript("""
            CREATE TABLE spool (seq INTEGER PRIMARY KEY, level INTEGER NOT NULL,
                                body TEXT NOT NULL, target TEXT, accepted REAL);
            CREATE TABLE cursor (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
            INSERT INTO spool VALUES (1, 20, '{"n": 1}', NULL, 1.5), (2, 30, '{"n": 2}', NULL, 2.5),
                                     (3, 20, '{"n": 3}', 'a', 3.5);
            INSERT INTO cursor VALUES ('a', 1);
        """)
    s = await reopened(tmp_path / "old.db")
    try:
        assert (s.head, s.floor) == (3, 1)
        assert [(r.seq, r.level, r.body, r.target) for r in await s.read(1, 10)] == [
            (2, 30, '{"n": 2}', None), (3, 20, '{"n": 3}', "a")]
        assert await s.append(rows(2), together=True) == [4, 5]
        assert [r.seq for r in await s.read(1, 10)] == [2, 3, 4, 5]
    finally:
        await s.close()


async def test_the_memory_window_counts_the_bodies_of_shared_rows_exactly(spool, monkeypatch):
    monkeypatch.setattr(spool_module, "RECENT", 10)
    monkeypatch.setattr(spool_module, "RECENT_BYTES", 100)
    await spool.move_cursor("a", 0)
    for n in (3, 4, 1, 5, 2):
        await spool.append(rows(n), together=True)
        window = list(spool._recent)
        assert spool._recent_bytes == sum(len(r.body) for r in window) <= 100
        assert [r.seq for r in window] == list(range(spool.head - len(window) + 1, spool.head + 1))
