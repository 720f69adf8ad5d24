from __future__ import annotations

import asyncio
import sqlite3

import pytest

from dispatchd import spool as spool_module
from dispatchd.errors import SpoolFull, SpoolUnavailable
from dispatchd.spool import DeadLetter, Row, Spool


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
    await asyncio.sleep(0)
    assert spool.commits == commits  # no commit of its own ...
    await spool.append([(20, "{}")])
    assert spool.commits == commits + 1  # ... it went with the append's
    assert done.done() and spool.cursors["a"] == 2
