"""The durable spool: SQLite in WAL mode, one group-committing writer, one cursor per dispatcher.

Every write (appends, cursor moves, dead letters) goes through one writer task that takes all the
operations waiting, applies them in one transaction and then answers them all. Records get
consecutive sequence numbers, so the backlog is ``head - floor`` without counting rows, and rows
at or below every cursor (the floor) are deleted by the commits that follow, a bounded step each,
so that no single commit needs more than a fraction of the reserve. The records of one request
share a row (their bodies one per line, the row keyed by the last seq): a row costs SQLite about
1.7 us beyond its bytes, so a 100-record batch's insert takes 1.3 us per record instead of 3. The
last ``RECENT`` committed records stay in memory, decoded, so a worker that keeps up with ingest
takes them from there instead of reading and decoding them again.

Safety: ``open`` takes the spool's lock file first (one daemon per spool, ``dispatchd.lock``), and
ingest stops while the free space (the filesystem's, plus the pages SQLite can reuse inside the
file, less what the WAL still adds to it) is under ``reserve_bytes``, so that cursor moves, dead
letters and compaction always fit. The WAL is kept to a quarter of the reserve.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpoolFull, SpoolLowSpace, SpoolUnavailable
from .lock import SpoolLock
from .sqlite import Connection, in_transaction

log = logging.getLogger(__name__)

RECENT = 4096  # committed records kept in memory, decoded (~5 KB each), for workers that keep up
# ... and at most this much body text: with large records the count alone let the window grow to
# most of a gigabyte (100 KB records), outside every other memory bound.
RECENT_BYTES = 16 * 1024 * 1024
LAZY_CURSORS = 0.1  # seconds a worker's cursor move may wait to ride along with an append
LOW_SPACE_POLL = 1.0  # seconds between free-space checks while under the reserve
# Measuring the free space costs ~15 us of the writer's thread: a commit measures it only when
# this long has passed, or a sixteenth of the reserve was appended, since the last measurement
# (every commit within that of the reserve, or under it), so ingest never overshoots it.
MEASURE_INTERVAL = 0.05
WAL_PAGES = 1000  # SQLite's auto-checkpoint default; fewer when a quarter of the reserve is less
MIN_WAL_PAGES = 64
COMPACT_BYTES = 16 * 1024 * 1024  # rows deleted per commit, at most; a quarter of the reserve if less
MIN_COMPACT_BYTES = 256 * 1024
CHECKPOINT_BUSY_MS = 100  # how long a low-space checkpoint waits for a read in progress
DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB: what moves a spool file aside

SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq    INTEGER PRIMARY KEY,  -- of the row's last record
    level  INTEGER NOT NULL,  -- the highest of its records'
    body   TEXT NOT NULL,  -- the records' JSON, one per line
    target TEXT,  -- NULL: every dispatcher; a name: that one only (a dead-letter replay)
    accepted REAL,  -- epoch seconds of the commit that stored it; NULL in older files
    count  INTEGER  -- records in the row, seq - count + 1 .. seq; NULL (older files): one
);
CREATE TABLE IF NOT EXISTS cursor (
    name TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letter (
    rowid      INTEGER PRIMARY KEY,
    dispatcher TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    body       TEXT NOT NULL,
    error      TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    failed_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letter_dispatcher ON dead_letter (dispatcher, rowid);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


# Not frozen, though never changed once made (workers share rows): a frozen dataclass's __init__
# costs 0.9 us against 0.2, and one is made per record ingested or read from the file.
@dataclass(slots=True, unsafe_hash=True)
class Row:
    """One spooled record: its sequence number, level, JSON body, (for replays) target and
    when it was accepted (epoch seconds).

    ``decoded`` is what ingest validated the body into, while the row is in memory; rows read
    from disk have ``None`` there.
    """

    seq: int
    level: int
    body: str
    target: str | None = None
    accepted: float | None = None
    decoded: Any = field(default=None, compare=False, repr=False)

    def is_for(self, dispatcher: str) -> bool:
        return self.target is None or self.target == dispatcher


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record a dispatcher gave up on, with the error of its last attempt."""

    dispatcher: str
    row: Row
    error: str
    attempts: int
    id: int = 0  # its row in the dead-letter table, once stored
    failed_at: float = 0.0


@dataclass
class _Batch:
    """Operations taken together by the writer; applied in one transaction."""

    appends: list[Row] = field(default_factory=list)  # one per record, kept in memory
    stored: list[_Stored] = field(default_factory=list)  # the spool rows they make
    bytes: int = 0  # of body text appended
    purges: list[tuple[str, int]] = field(default_factory=list)  # dead letters: name, up to rowid
    cursors: dict[str, int] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)
    dead: list[DeadLetter] = field(default_factory=list)
    retired: list[tuple[str, int, int, str]] = field(default_factory=list)  # name, after, upto, why
    head: int = 0
    floor: int = 0
    compact_to: int = 0  # rows up to this seq are deleted; at most the floor
    now: float = 0.0


AT_HEAD = -1  # a cursor value meaning "the head as of this commit"


# (seq, level, body, target, accepted, count): one spool row, as inserted.
_Stored = tuple[int, int, str, "str | None", "float | None", "int | None"]


@dataclass(eq=False)  # compared by identity: the signals below are particular instances
class _Op:
    rows: Sequence[tuple[int, str]] = ()
    decoded: Sequence[Any] = ()  # parallel to rows, or empty
    together: bool = False  # the rows share one spool row
    target: str | None = None
    purge: tuple[str, int] | None = None
    cursor: tuple[str, int] | None = None
    drop: str | None = None
    retire: tuple[str, int] | None = None  # reason and last seq owed; ``drop`` names the dispatcher
    dead: list[DeadLetter] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    done: asyncio.Future[None] | None = None


_WAKE = _Op()  # queued by the lazy-cursor timer: commit what is pending even with no appends
_REFRESH = _Op()  # queued by the low-space timer: measure the free space again
_COMPACT = _Op()  # queued after a commit that left rows below the floor: delete the next step
_SIGNALS = (_WAKE, _REFRESH, _COMPACT)


class Spool:
    """The on-disk buffer between ingest and the dispatch workers."""

    def __init__(
        self, path: str | Path, sync: str = "normal", max_events: int = 1_000_000,
        reserve_bytes: int = 0,
    ) -> None:
        self.path = Path(path)
        self.sync = sync
        self.max_events = max_events
        self.reserve_bytes = reserve_bytes  # 0: never refuse for lack of space
        self.lock: SpoolLock | None = None  # held from open to close; the shell publishes its URL
        self.free_bytes: int | None = None  # as of the last commit or check; None: unknown
        self.low_space = False  # free_bytes < reserve_bytes: appends are refused
        self._page_size = 4096
        self._row_bytes = 1.0  # stored bytes per row, on average: sizes the compaction steps
        self._measured_at = 0.0  # monotonic time of the last measurement
        self._unmeasured = 0  # bytes appended since then
        self._space_timer: asyncio.TimerHandle | None = None
        self.head = 0  # last committed seq
        self.floor = 0  # every seq <= floor is owed to no one, and never read again
        self._compacted = 0  # every seq <= this is deleted
        self.cursors: dict[str, int] = {}
        self._queued = 0  # records appended but not yet committed
        self._writer_db: Connection | None = None
        self._reader_db: Connection | None = None
        self._recent: deque[Row] = deque()
        self._recent_bytes = 0
        self._ops: asyncio.Queue[_Op | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._listeners: set[asyncio.Event] = set()
        self._lazy: dict[str, int] = {}  # cursor moves waiting for the next commit
        self._lazy_waiters: list[asyncio.Future[None]] = []
        self._lazy_timer: asyncio.TimerHandle | None = None
        self.commits = 0
        self.quarantined: list[Path] = []  # unreadable spool files moved aside at open

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Lock, open (or create) the file, restore head, floor and cursors, start the writer.

        The lock comes first: ``SpoolLocked`` if another process has the spool, and then nothing
        was read or changed. A damaged file (garbage, truncated) is moved aside and a fresh spool
        started, so a damaged disk means a loud error and a metric, not a daemon that
        crash-loops; any other failure is ``SpoolUnavailable`` and releases the lock.
        """
        self.lock = SpoolLock.acquire(self.path)
        try:
            await self._open_or_quarantine()
        except BaseException as exc:
            await self._close_connections()
            self.lock.release()
            self.lock = None
            if isinstance(exc, sqlite3.Error | OSError):
                raise SpoolUnavailable(f"cannot open spool {self.path}: {exc}") from exc
            raise
        self._writer = asyncio.create_task(self._write_loop(), name="spool-writer")
        self._poll_while_low()
        if self._compacted < self.floor:  # what the last run had not deleted yet
            self._ops.put_nowait(_COMPACT)

    async def _open_or_quarantine(self) -> None:
        try:
            await self._open_files()
        except sqlite3.DatabaseError as exc:
            if _error_code(exc) not in DAMAGED:
                raise
            await self._close_connections()
            moved = self._quarantine()
            log.error("spool %s is unreadable (%s); moved it aside to %s and started a fresh "
                      "spool: what it held was not delivered", self.path, exc, moved)
            await self._open_files()

    async def _open_files(self) -> None:
        self._recent.clear()
        self._recent_bytes = 0
        self._writer_db = await Connection.open(self.path, self.sync)
        reserve = self.reserve_bytes
        self._page_size = await self._writer_db.run(lambda db: _prepare(db, reserve))
        self._reader_db = await Connection.open(self.path, self.sync)
        await self._restore()
        self._take_measure(await self._writer_db.run(self._measure))

    def _quarantine(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                source.rename(f"{target}{suffix}")
        self.quarantined.append(target)
        return target

    async def _close_connections(self) -> None:
        for db in (self._reader_db, self._writer_db):
            if db is not None:
                await db.close()
        self._reader_db = self._writer_db = None

    async def _restore(self) -> None:
        assert self._writer_db is not None
        low, high, self.cursors, meta = await self._writer_db.run(_stored_state)
        # head survives compaction through meta; rows and cursors can only agree with it or lag.
        self.head = max([meta or 0, high or 0, *self.cursors.values()])
        self._compacted = (low - 1) if low is not None else self.head
        # No cursor at all means no dispatcher is owed anything: everything may go.
        self.floor = max(self._compacted, min(self.cursors.values(), default=self.head))

    async def close(self) -> None:
        """Apply every queued operation, stop the writer, close both connections, then unlock."""
        try:
            if self._writer is not None:
                await self._ops.put(None)
                await self._writer
                self._writer = None
            await self._close_connections()
        finally:
            if self._space_timer is not None:
                self._space_timer.cancel()
                self._space_timer = None
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    # -- public operations -------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    @property
    def backlog(self) -> int:
        """Records stored, committed or queued, that some cursor has not passed."""
        return self.head - self.floor + self._queued

    def is_full(self) -> bool:
        return self.backlog >= self.max_events

    def room(self) -> int:
        return max(0, self.max_events - self.backlog)

    async def append(
        self, records: Sequence[tuple[int, str]], decoded: Sequence[Any] = (),
        together: bool = False,
    ) -> list[int]:
        """Durably store ``(level, body)`` records; return their seqs once committed.

        ``decoded``, if given, holds what each body decodes to, for workers that keep up;
        ``together``: in one spool row (a body with a newline in it gets a row of its own).
        """
        if self._writer is None:
            raise SpoolUnavailable("the spool is closed")
        self._check_space()
        if len(records) > self.room():
            raise SpoolFull(f"the spool holds {self.backlog} of {self.max_events} events")
        self._queued += len(records)
        op = _Op(rows=records, decoded=decoded, together=together)
        try:
            await self._submit(op)
        finally:
            self._queued -= len(records)
        return op.seqs

    async def move_cursor(self, name: str, seq: int) -> None:
        """Record that ``name`` has everything up to ``seq``; commits before returning."""
        await self._submit(_Op(cursor=(name, seq)))

    def move_cursor_soon(self, name: str, seq: int) -> asyncio.Future[None]:
        """Move a cursor with the next commit, without waiting for it; the future says when.

        The move does not cause a commit of its own unless no append comes within
        ``LAZY_CURSORS`` seconds: under load, cursor moves ride along with the appends' commits.
        A crash before that commit only means those records are delivered again.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        # A failed commit is logged by the writer; nobody need look at this future's error.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        if self._writer is None:
            done.set_exception(SpoolUnavailable("the spool is closed"))
            return done
        self._lazy[name] = seq
        self._lazy_waiters.append(done)
        if self._lazy_timer is None:
            self._lazy_timer = loop.call_later(LAZY_CURSORS, self._ops.put_nowait, _WAKE)
        return done

    async def ensure_cursor(self, name: str) -> int:
        """The cursor of ``name``, created at the head (new events only) if it has none."""
        if name not in self.cursors:
            await self._submit(_Op(cursor=(name, AT_HEAD)))
        return self.cursors[name]

    async def drop_cursor(self, name: str) -> None:
        """Forget a dispatcher's cursor, letting compaction pass it."""
        if name in self.cursors:
            await self._submit(_Op(drop=name))

    async def retire_cursor(self, name: str, reason: str, upto: int | None = None) -> int:
        """Move what ``name`` is owed (up to seq ``upto``, default the head) to its dead letters,
        then drop its cursor. Returns how many records were moved."""
        if name not in self.cursors:
            return 0
        upto = self.head if upto is None else upto
        owed = max(0, upto - self.cursors[name])
        await self._submit(_Op(drop=name, retire=(reason, upto)))
        return owed

    async def dead_letter(self, letters: list[DeadLetter]) -> None:
        await self._submit(_Op(dead=letters))

    async def read(self, after: int, limit: int) -> list[Row]:
        """Committed records with ``seq > after``, oldest first."""
        if after >= self.head:
            return []
        after = max(after, self.floor)  # rows at or below the floor are deleted
        recent = self._recent
        if recent and recent[0].seq <= after + 1:
            # Indexing, not islice: islice walks from the left end, and readers are near the right.
            start = after + 1 - recent[0].seq
            return [recent[i] for i in range(start, min(start + limit, len(recent)))]
        assert self._reader_db is not None
        return await self._reader_db.run(lambda db: _read_rows(db, after, limit))

    async def oldest_accepted(self, after: int) -> float | None:
        """When the first stored record with ``seq > after`` was accepted; ``None``: none is
        stored (or it came from a file too old to say)."""
        after = max(after, self.floor)  # rows at or below the floor are owed to no one
        if after >= self.head:
            return None
        recent = self._recent
        if recent and recent[0].seq <= after + 1:
            return recent[after + 1 - recent[0].seq].accepted
        sql = "SELECT accepted FROM spool WHERE seq > ? ORDER BY seq LIMIT 1"
        found = await self._query(sql, (after,))
        return found[0][0] if found else None

    async def _query(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        assert self._reader_db is not None
        return await self._reader_db.run(lambda db: db.execute(sql, args).fetchall())

    async def dead_letters(
        self, dispatcher: str | None = None, after: int = 0, limit: int = 1_000_000
    ) -> list[DeadLetter]:
        """Stored dead letters, oldest first; ``after`` is a ``DeadLetter.id`` to page from."""
        sql = "SELECT rowid, dispatcher, seq, body, error, attempts, failed_at FROM dead_letter"
        sql += " WHERE rowid > ?" + (" AND dispatcher = ?" if dispatcher is not None else "")
        args: tuple[object, ...] = (after, dispatcher) if dispatcher is not None else (after,)
        return [
            DeadLetter(d, Row(seq, 0, body), error, attempts, rowid, failed_at)
            for rowid, d, seq, body, error, attempts, failed_at
            in await self._query(sql + " ORDER BY rowid LIMIT ?", (*args, limit))
        ]

    async def replay(self, dispatcher: str, letters: list[DeadLetter], levels: list[int]) -> int:
        """Put ``letters`` back in the spool for ``dispatcher`` only, and out of the dead letters."""
        if not letters:
            return 0
        self._check_space()
        if len(letters) > self.room():
            raise SpoolFull(f"the spool has room for {self.room()} of {len(letters)} records")
        rows = [(level, letter.row.body) for level, letter in zip(levels, letters, strict=True)]
        last = max(letter.id for letter in letters)
        await self._submit(_Op(rows=rows, target=dispatcher, purge=(dispatcher, last)))
        return len(letters)

    async def purge_dead_letters(self, dispatcher: str) -> int:
        """Delete every stored dead letter of ``dispatcher``; returns how many."""
        counts = await self.dead_letter_counts()
        await self._submit(_Op(purge=(dispatcher, 2**62)))
        return counts.get(dispatcher, 0)

    async def dead_lettered_between(self, first: int, last: int) -> dict[str, int]:
        """How many of the records with seqs ``first..last`` each dispatcher dead-lettered."""
        sql = ("SELECT dispatcher, COUNT(*) FROM dead_letter WHERE seq BETWEEN ? AND ?"
               " GROUP BY dispatcher")
        return dict(await self._query(sql, (first, last)))

    async def dead_letter_counts(self) -> dict[str, int]:
        sql = "SELECT dispatcher, COUNT(*) FROM dead_letter GROUP BY dispatcher"
        return dict(await self._query(sql, ()))

    def _check_space(self) -> None:
        if self.low_space:
            raise SpoolLowSpace(
                f"spool {self.path}: {self.free_bytes} bytes free, less than spool.reserve_bytes "
                f"({self.reserve_bytes}); new events are refused until space returns"
            )

    def listen(self) -> asyncio.Event:
        """An event set after every commit that stored new records."""
        event = asyncio.Event()
        self._listeners.add(event)
        return event

    def unlisten(self, event: asyncio.Event) -> None:
        self._listeners.discard(event)

    # -- the writer ----------------------------------------------------------------------------

    async def _submit(self, op: _Op) -> None:
        op.done = asyncio.get_running_loop().create_future()
        self._ops.put_nowait(op)  # unbounded: appends are bounded by max_events before this
        await op.done

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            ops: list[_Op] = []
            first = await self._ops.get()
            stopping = first is None
            if first is not None:
                ops.append(first)
                # One turn of the loop first: requests already read but not yet validated add
                # their records to this commit instead of waiting for the next one.
                await asyncio.sleep(0)
            while not self._ops.empty():
                op = self._ops.get_nowait()
                stopping = stopping or op is None
                if op is not None:
                    ops.append(op)
            refresh = any(op is _REFRESH for op in ops)
            ops = self._take_lazy() + [op for op in ops if op not in _SIGNALS]
            if ops or self._compacted < self.floor:
                await self._commit(ops)
            elif refresh:
                await self._refresh()

    def _take_lazy(self) -> list[_Op]:
        """The pending lazy cursor moves as operations, the last one answering all waiters."""
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        if not self._lazy:
            return []
        ops = [_Op(cursor=item) for item in self._lazy.items()]
        waiters, self._lazy, self._lazy_waiters = self._lazy_waiters, {}, []
        ops[-1].done = _gather(waiters)
        return ops

    async def _commit(self, ops: list[_Op]) -> None:
        batch = self._plan(ops)
        started = time.perf_counter()
        measure = self._measure_due(batch)
        try:
            space = await self._apply(batch, measure)
        except Exception as exc:  # sqlite3 and OS errors alike: rolled back; the callers hear why
            log.error("spool commit of %d operations failed: %s", len(ops), exc)
            for op in ops:
                _settle(op, SpoolUnavailable(f"spool commit failed: {exc}"))
            return
        self._after_commit(batch)
        if measure:
            self._take_measure(space)
        if self._compacted < self.floor:  # the next step, after what is waiting now
            self._ops.put_nowait(_COMPACT)
        self.commits += 1
        log.debug("spool commit: %d ops in %.1f ms", len(ops), (time.perf_counter() - started) * 1e3)
        for op in ops:
            _settle(op, None)
        if batch.appends:
            for event in self._listeners:
                event.set()

    def _plan(self, ops: list[_Op]) -> _Batch:
        """Fold queued operations, in order, into one batch; seqs are given here."""
        batch = _Batch(now=time.time())
        seq = self.head
        for op in ops:
            if op.rows:
                decoded = op.decoded or itertools.repeat(None)
                target, now = op.target, batch.now
                rows = [Row(number, level, body, target, now, record) for number, (level, body), record
                        in zip(itertools.count(seq + 1), op.rows, decoded, strict=False)]
                seq += len(rows)
                op.seqs = [row.seq for row in rows]
                batch.appends += rows
                batch.stored += _stored(rows, op.together)
            if op.purge is not None:
                batch.purges.append(op.purge)
            if op.cursor is not None:
                name, at = op.cursor
                batch.cursors[name] = seq if at == AT_HEAD else at
                batch.dropped.discard(name)
            if op.drop is not None:
                if op.retire is not None and op.drop in self.cursors:
                    reason, upto = op.retire
                    batch.retired.append((op.drop, self.cursors[op.drop], upto, reason))
                batch.dropped.add(op.drop)
                batch.cursors.pop(op.drop, None)
            batch.dead.extend(op.dead)
        # The bodies' length, one len() per row: a shared row's text less its newlines.
        batch.bytes = sum(len(body) - (count or 1) + 1 for _, _, body, _, _, count in batch.stored)
        cursors = {**self.cursors, **batch.cursors}
        for name in batch.dropped:
            cursors.pop(name, None)
        batch.head = seq
        # No cursor at all means no dispatcher is owed anything: everything may go.
        batch.floor = max(self.floor, min(cursors.values(), default=seq))
        batch.compact_to = self._compact_step(batch.floor)
        return batch

    def _compact_step(self, floor: int) -> int:
        """How far this commit deletes: up to ``floor``, rows of about ``COMPACT_BYTES`` at most
        (a quarter of the reserve if less), so a commit that frees space never needs much."""
        budget = COMPACT_BYTES if not self.reserve_bytes else \
            max(MIN_COMPACT_BYTES, min(COMPACT_BYTES, self.reserve_bytes // 4))
        rows = max(1, int(budget / self._row_bytes))
        return min(floor, self._compacted + rows)

    def _measure_due(self, batch: _Batch) -> bool:
        """Whether this commit measures the free space (see ``MEASURE_INTERVAL``)."""
        self._unmeasured += batch.bytes
        now = time.monotonic()
        step = max(64 * 1024, self.reserve_bytes // 16) if self.reserve_bytes else 1024 * 1024
        near = self.free_bytes is None or self.free_bytes - self._unmeasured < self.reserve_bytes + step
        if near or self._unmeasured >= step or now - self._measured_at >= MEASURE_INTERVAL:
            self._unmeasured, self._measured_at = 0, now
            return True
        return False

    async def _apply(self, batch: _Batch, measure: bool = True) -> _Space | None:
        """Commit ``batch`` and, if ``measure``, the space after it, in one hand-off to the thread."""
        assert self._writer_db is not None
        head, compacted = self.head, self._compacted

        def write(db: sqlite3.Connection) -> tuple[int, int] | None:
            _write(db, batch, head, compacted)
            # Inside the transaction: a fraction of the cost of starting one.
            return _pages(db) if measure else None

        def work(db: sqlite3.Connection) -> tuple[Exception | None, _Space | None]:
            try:
                pages = in_transaction(db, write)
            except Exception as exc:  # measured all the same: a full disk shows as such
                return exc, self._measure(db)
            return None, self._measure(db, pages) if measure else None

        error, space = await self._writer_db.run(work)
        if error is not None:
            self._take_measure(space)
            raise error
        return space

    async def _refresh(self) -> None:
        assert self._writer_db is not None
        self._take_measure(await self._writer_db.run(self._measure))  # _measure never raises

    def _measure(self, db: sqlite3.Connection, pages: tuple[int, int] | None = None) -> _Space | None:
        """The spool's space (see ``_Space.of``; ``pages`` as ``_pages`` gives them, if read
        already); ``None`` if it cannot be measured.

        Under the reserve the WAL is checkpointed and truncated, then measured again: the space
        it holds comes back. Runs on the writer's thread; never raises.
        """
        try:
            pages = pages or _pages(db)
            space = _Space.of(pages, self.path, self._page_size)
        except (OSError, sqlite3.Error) as exc:
            log.warning("spool %s: cannot measure the free space: %s", self.path, exc)
            return None
        if not self.reserve_bytes or space.free >= self.reserve_bytes:
            return space
        try:
            _checkpoint(db)  # moves pages from the WAL into the file: their number is the same
            return _Space.of(pages, self.path, self._page_size)
        except (OSError, sqlite3.Error) as exc:  # the first figure stands
            log.debug("spool %s: low-space checkpoint failed: %s", self.path, exc)
            return space

    def _take_measure(self, space: _Space | None) -> None:
        """Follow a measurement: say when ingest stops or resumes, poll while low."""
        self.free_bytes = None if space is None else space.free
        if space is not None:
            self._row_bytes = max(1.0, space.used / max(1, self.head - self._compacted))
        low = self.low_space if self.free_bytes is None else self.free_bytes < self.reserve_bytes
        if low != self.low_space:
            self.low_space = low
            if low:
                log.warning("spool %s: %s bytes free, less than spool.reserve_bytes (%d): "
                            "refusing new events until space returns", self.path,
                            self.free_bytes, self.reserve_bytes)
            else:
                log.info("spool %s: %s bytes free again: accepting new events", self.path,
                         self.free_bytes)
        self._poll_while_low()

    def _poll_while_low(self) -> None:
        if self.low_space and self._space_timer is None and self._writer is not None:
            self._space_timer = asyncio.get_running_loop().call_later(
                LOW_SPACE_POLL, self._poll_space)

    def _remember(self, rows: list[Row], size: int) -> None:
        """Keep the newest rows in memory, within ``RECENT`` rows and ``RECENT_BYTES`` of body
        (``size``: the body text of ``rows``)."""
        recent = self._recent
        recent.extend(rows)
        self._recent_bytes += size
        for _ in range(len(recent) - RECENT):
            self._recent_bytes -= len(recent.popleft().body)
        while self._recent_bytes > RECENT_BYTES and len(recent) > 1:
            self._recent_bytes -= len(recent.popleft().body)

    def _poll_space(self) -> None:
        self._space_timer = None
        self._ops.put_nowait(_REFRESH)

    def _after_commit(self, batch: _Batch) -> None:
        self.head = batch.head
        self.floor = batch.floor
        self._compacted = batch.compact_to
        self._remember(batch.appends, batch.bytes)
        self.cursors.update(batch.cursors)
        for name in batch.dropped:
            self.cursors.pop(name, None)


# -- what runs on the connections' threads ---------------------------------------------------------


def _prepare(db: sqlite3.Connection, reserve: int) -> int:
    """Create or migrate the tables, bound the WAL's size; returns the page size."""
    page_size: int = db.execute("PRAGMA page_size").fetchone()[0]
    # Between checkpoints: SQLite's default, or a quarter of the reserve if that is less.
    wal_pages = max(MIN_WAL_PAGES, min(WAL_PAGES, reserve // 4 // page_size)) if reserve \
        else WAL_PAGES
    # The WAL keeps the size of its largest burst unless told otherwise: cut back to about one
    # checkpoint's worth each time the log restarts, the space comes back to the filesystem.
    db.execute(f"PRAGMA wal_autocheckpoint = {wal_pages}")
    db.execute(f"PRAGMA journal_size_limit = {wal_pages * (page_size + 24)}")
    # Builds with SECURE_DELETE (Debian's) zero every freed page, which writes a compaction's
    # whole size to the WAL again: on a nearly full disk, the commit that frees space fails.
    db.execute("PRAGMA secure_delete = FAST")
    db.executescript(SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(spool)")}
    if "target" not in columns:  # spool files from 0.1.0 before replays existed
        db.execute("ALTER TABLE spool ADD COLUMN target TEXT")
    if "accepted" not in columns:  # spool files from before lag was reported
        db.execute("ALTER TABLE spool ADD COLUMN accepted REAL")
    if "count" not in columns:  # spool files from before a request's records shared a row
        db.execute("ALTER TABLE spool ADD COLUMN count INTEGER")
    return page_size


@dataclass(frozen=True, slots=True)
class _Space:
    free: int  # bytes the spool can still use
    used: int  # bytes the database's pages in use take

    @classmethod
    def of(cls, counts: tuple[int, int], path: Path, page_size: int) -> _Space:
        """Free: the filesystem's free bytes, plus the pages SQLite reuses inside the file (a
        compacted spool does not shrink it), minus what the file still grows by when the WAL's
        new pages are checkpointed into it. ``counts``: pages in all, pages free."""
        pages, free_pages = counts
        fs = os.statvfs(path.parent)
        growth = max(0, pages * page_size - path.stat().st_size)
        free = int(fs.f_bavail * fs.f_frsize + free_pages * page_size - growth)
        return cls(max(0, free), (pages - free_pages) * page_size)


def _pages(db: sqlite3.Connection) -> tuple[int, int]:
    """The database's pages: in all, and free for reuse."""
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    (free_pages,) = db.execute("PRAGMA freelist_count").fetchone()
    return int(pages), int(free_pages)


def _checkpoint(db: sqlite3.Connection) -> None:
    """Copy the WAL into the database and cut it to nothing, waiting only briefly for readers."""
    (busy,) = db.execute("PRAGMA busy_timeout").fetchone()
    db.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}")
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(busy)}")


def _error_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None  # the primary code, sans extension


def _stored_state(db: sqlite3.Connection) -> tuple[int | None, int | None, dict[str, int], int | None]:
    """Lowest and highest stored seq, the cursors, and the head recorded in meta."""
    (high,) = db.execute("SELECT MAX(seq) FROM spool").fetchone()
    # A row is keyed by its last seq: the lowest seq stored is the first of the lowest row's.
    lowest = db.execute("SELECT seq, count FROM spool ORDER BY seq LIMIT 1").fetchone()
    low = None if lowest is None else lowest[0] - (lowest[1] or 1) + 1
    cursors = dict(db.execute("SELECT name, seq FROM cursor").fetchall())
    meta = db.execute("SELECT value FROM meta WHERE key = 'head'").fetchone()
    return low, high, cursors, meta[0] if meta else None


def _stored(rows: list[Row], together: bool) -> list[_Stored]:
    """The spool rows for ``rows`` (of one append): one, if together and the bodies have no
    newline (ours never do: JSON escapes it), else one each."""
    if together and len(rows) > 1:
        text = "\n".join([row.body for row in rows])
        if text.count("\n") == len(rows) - 1:
            last = rows[-1]
            return [(last.seq, max([row.level for row in rows]), text, last.target, last.accepted,
                     len(rows))]
    return [(r.seq, r.level, r.body, r.target, r.accepted, None) for r in rows]


def _split(seq: int, level: int, body: str, target: str | None, accepted: float | None,
           count: int | None) -> list[Row]:
    """The records of one spool row, in seq order (the level of each is the row's)."""
    if count is None or count <= 1:
        return [Row(seq, level, body, target, accepted)]
    bodies = body.split("\n", count - 1)
    # A row that lost lines (it cannot, short of damage) still gives every seq it covers: an
    # empty body, which the worker dead-letters as undecodable, rather than a silent gap.
    bodies += [""] * (count - len(bodies))
    first = seq - count + 1
    return [Row(first + i, level, text, target, accepted) for i, text in enumerate(bodies)]


ROWS_AFTER = "SELECT seq, level, body, target, accepted, count FROM spool WHERE seq > ? ORDER BY seq"


def _read_rows(db: sqlite3.Connection, after: int, limit: int) -> list[Row]:
    """Up to ``limit`` records with ``seq > after``, oldest first; reads only the rows needed."""
    found: list[Row] = []
    for stored in db.execute(ROWS_AFTER, (after,)):
        found.extend(row for row in _split(*stored) if row.seq > after)
        if len(found) >= limit:
            break
    return found[:limit]


def _retire(db: sqlite3.Connection, name: str, after: int, upto: int, reason: str,
            now: float) -> None:
    """Copy the records ``after < seq <= upto`` to ``name``'s dead letters, in seq order."""
    sql = ("INSERT INTO dead_letter (dispatcher, seq, body, error, attempts, failed_at)"
           " VALUES (?, ?, ?, ?, 0, ?)")
    letters: list[tuple[str, int, str, str, float]] = []
    for stored in db.execute(ROWS_AFTER, (after,)):  # read as far as needed, no further
        rows = _split(*stored)
        if rows[0].seq > upto:
            break
        letters += [(name, r.seq, r.body, reason, now) for r in rows if after < r.seq <= upto]
        if len(letters) >= 1000:  # a large backlog moves in steps, not all in memory at once
            db.executemany(sql, letters)
            letters = []
    db.executemany(sql, letters)


def _write(db: sqlite3.Connection, batch: _Batch, head: int, compacted: int) -> None:
    """Everything one group commit changes, from the spool's ``head`` and the seq it had
    deleted up to before it."""
    for name, after, upto, reason in batch.retired:
        _retire(db, name, after, min(upto, head), reason, batch.now)
    if batch.stored:
        db.executemany(
            "INSERT INTO spool (seq, level, body, target, accepted, count)"
            " VALUES (?, ?, ?, ?, ?, ?)", batch.stored,
        )
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('head', ?)", (batch.head,))
    if batch.purges:
        db.executemany("DELETE FROM dead_letter WHERE dispatcher = ? AND rowid <= ?", batch.purges)
    if batch.dead:
        db.executemany(
            "INSERT INTO dead_letter (dispatcher, seq, body, error, attempts, failed_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(d.dispatcher, d.row.seq, d.row.body, d.error, d.attempts, batch.now)
             for d in batch.dead],
        )
    if batch.cursors:
        db.executemany("INSERT OR REPLACE INTO cursor (name, seq) VALUES (?, ?)",
                       batch.cursors.items())
    if batch.dropped:
        db.executemany("DELETE FROM cursor WHERE name = ?", [(n,) for n in batch.dropped])
    if batch.compact_to > compacted:
        db.execute("DELETE FROM spool WHERE seq <= ?", (batch.compact_to,))


def _gather(waiters: list[asyncio.Future[None]]) -> asyncio.Future[None]:
    """One future that, when settled, settles every waiter the same way."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settle(_: asyncio.Future[None]) -> None:
        error = done.exception() if not done.cancelled() else SpoolUnavailable("cancelled")
        for waiter in waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    done.add_done_callback(settle)
    return done


def _settle(op: _Op, error: Exception | None) -> None:
    if op.done is None or op.done.done():
        return
    if error is None:
        op.done.set_result(None)
    else:
        op.done.set_exception(error)
