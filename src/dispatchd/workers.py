"""One worker per enabled dispatcher: read its cursor, filter, deliver with retries, dead-letter.

Every call into plugin code goes through ``Worker._call`` (timeout, sync-in-thread), and every
failure is classified by ``pipeline.failure_of`` and logged and counted by ``Worker._failed``, so
a plugin's failure never leaves its worker. Every ``start`` call is followed by one ``close``
call, however it ended. Log records carry the dispatcher's name as ``extra={"dispatcher": name}``.

A backend with ``submit`` is pipelined: the worker keeps records in flight through it (up to
``PIPELINE_SPAN`` batches past the cursor), moves the cursor over the settled prefix, and retries
just the records that failed. It fills in slices of ``PIPELINE_FILL`` records and takes turns with
the rest of the loop (``pipeline.Turn``). Every other backend gets stop-and-wait calls of
``dump_batch`` or ``dump``, one batch at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from .backend import EventBackend, Reported
from .config import Config
from .constants import CAUSE_DERIVED
from .errors import Unavailable
from .models import Record
from .pipeline import Failure, Ledger, Slot, Turn, failed_future, failure_of, outcome
from .registry import Overrides
from .spool import DeadLetter, Row, Spool

log = logging.getLogger(__name__)

# A pipelined worker holds at most this many batches between its cursor and the newest record
# handed over. The sink's own window bounds what is in flight; this bounds what a record that
# failed mid-window can hold behind it while the records after it settle.
PIPELINE_SPAN = 4
# Records a pipelined worker hands over at once (it reads a batch, then hands it over in these):
# small enough that a turn on the loop is cut at about a millisecond or two of publishing.
PIPELINE_FILL = 100

State = Literal["starting", "running", "retrying", "failed", "draining", "stopped"]


@dataclass(frozen=True)
class Policy:
    """How a worker filters and retries; rebuilt from the config on reload."""

    min_level: int = 20
    exclude_derived: bool = True
    batch_size: int = 500
    max_attempts: int = 10
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    timeout: float = 30.0

    @classmethod
    def of(cls, config: Config, overrides: Overrides | None = None) -> Policy:
        """``[dispatch]`` with a dispatcher's own overrides (``registry.overrides``) on top."""
        own = overrides or Overrides()
        d = config.dispatch
        return cls(
            min_level=d.level if own.level is None else own.level,
            exclude_derived=d.exclude_derived_actions,
            batch_size=d.batch_size,
            max_attempts=d.max_attempts if own.max_attempts is None else own.max_attempts,
            backoff_initial=d.backoff_initial,
            backoff_max=d.backoff_max,
            timeout=d.timeout if own.timeout is None else own.timeout,
        )

    def wants(self, record: Record) -> bool:
        """Senlin's ``_dump`` filters: the priority watermark and ``exclude_derived_actions``."""
        if record.level < self.min_level:
            return False
        # Only plain derived actions are noise; "Derived Action with Lifecycle Hook" is kept.
        return not (self.exclude_derived and record.action.cause == CAUSE_DERIVED)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter for the wait after failed attempt ``attempt``."""
        delay: float = min(self.backoff_max, self.backoff_initial * 2.0 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait before the next try: the sink's ``retry_after`` if it gave one, else backoff.

        ``retry_after`` is capped at ``backoff_max``: the operator's bound on any wait holds.
        """
        if retry_after is None:
            return self.backoff(attempt)
        return min(max(retry_after, 0.0), self.backoff_max)


class _Stop(Exception):
    """Raised inside a batch when a stop request cuts a backoff short."""


@dataclass
class Stats:
    delivered: int = 0
    skipped: int = 0
    failed: int = 0
    dead_lettered: int = 0
    last_error: str | None = None


class Worker:
    """Delivers one dispatcher's share of the spool, from its own cursor, in batches."""

    def __init__(
        self, name: str, backend: EventBackend, spool: Spool, policy: Policy
    ) -> None:
        self.name = name
        self.log = logging.LoggerAdapter(log, {"dispatcher": name})
        self.backend = backend
        self.spool = spool
        self.policy = policy
        self.state: State = "starting"
        self.stats = Stats()
        self.cursor = 0
        self._done = 0  # last seq handled (delivered, skipped or dead-lettered) in this batch
        self._stopping = asyncio.Event()
        self._wake = spool.listen()
        self._task: asyncio.Task[None] | None = None
        self._close_owed = False  # start() was called and its close() has not run yet
        self._until: int | None = None  # draining: stop once the cursor reaches this seq
        self._moved = asyncio.Event()  # set (and replaced) each time the cursor advances
        self._saving: asyncio.Future[None] | None = None  # the last cursor move not yet committed
        # Pipelined delivery only: what is in flight, how far it was read, the outage streak,
        # and the head's future being waited for with its deadline.
        self._ledger = Ledger()
        self._read_to = 0
        self._unread: list[Row] = []  # read (up to _read_to), not yet handed over
        self._outages = 0
        self._watched: tuple[asyncio.Future[None], float] | None = None

    # -- lifecycle -------------------------------------------------------------------------


    def report(self) -> dict[str, Reported]:
        """The backend's own facts for status; a failing ``report()`` is logged, not raised."""
        try:
            return {str(key): value for key, value in self.backend.report().items()}
        except Exception as exc:  # a plugin's bug must not break status for everyone
            self.log.warning("report() failed: %s: %s", type(exc).__name__, exc)
            return {"report_failed": f"{type(exc).__name__}: {exc}"}

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"worker:{self.name}")
        self._task.add_done_callback(self._exited)

    def _exited(self, task: asyncio.Task[None]) -> None:
        # A bug in the worker itself must be loud, not a silently dead dispatcher.
        if not task.cancelled() and task.exception() is not None:
            self.state = "failed"
            self.stats.last_error = f"worker crashed: {task.exception()!r}"
            self.log.error("dispatcher %s: worker crashed", self.name, exc_info=task.exception())

    async def drain(self, upto: int, timeout: float) -> bool:
        """Deliver up to seq ``upto``, then stop; ``False`` if ``timeout`` ran out first."""
        self._until = upto
        self.state = "draining"
        self._wake.set()
        if self._task is None:
            return self.cursor >= upto
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        return bool(done) and self.cursor >= upto

    async def wait_for_cursor(self, seq: int, timeout: float) -> bool:
        """Wait until this dispatcher has handled every record up to ``seq``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.cursor < seq:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), remaining)
        return True

    def _advance(self, seq: int) -> None:
        self.cursor = seq
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    def cancel(self) -> None:
        """Abandon the batch in hand now; what was delivered is still committed."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()

    async def stop(self, grace: float) -> None:
        """Finish the batch in hand (up to ``grace`` seconds), commit the cursor, close."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=grace)
            if not done:
                self.log.warning("dispatcher %s: still busy after %.1fs, cancelling", self.name,
                                 grace)
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self.spool.unlisten(self._wake)
        await self._close_backend()
        self.state = "stopped"

    async def run(self, until_idle: bool = False) -> None:
        """Deliver until stopped; with ``until_idle``, return once the cursor reaches the head.

        The backend is closed on the way out, however the run ends (stop, cancellation, crash).
        """
        try:
            if not await self._start_backend():
                return
            self._advance(await self.spool.ensure_cursor(self.name))
            self._recovered()
            await self._deliver_until(until_idle)
        finally:
            await self._close_backend()

    async def _deliver_until(self, until_idle: bool) -> None:
        try:
            await self._loop(until_idle)
        finally:
            # Shielded: a cancellation at shutdown must not lose the record of what was delivered.
            # A failed commit was logged by the spool; those records will come again.
            if self._saving is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._saving)

    async def _loop(self, until_idle: bool) -> None:
        try:
            if self.backend.has_pipeline():
                await self._pipeline(until_idle)
            else:
                await self._batches(until_idle)
        except _Stop:
            return  # a stop cut a backoff short; the cursor keeps what was done

    async def _batches(self, until_idle: bool) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            if self._until is not None and self.cursor >= self._until:
                return
            rows = await self._read(self.cursor)
            if rows:
                await self._process(rows)
            elif until_idle:
                return
            else:
                await self._wake.wait()

    async def _read(self, after: int) -> list[Row]:
        rows = await self.spool.read(after, self.policy.batch_size)
        if self._until is not None:
            rows = [row for row in rows if row.seq <= self._until]
        return rows

    # -- one batch ---------------------------------------------------------------------------

    async def _process(self, rows: list[Row]) -> None:
        self._done = self.cursor
        try:
            wanted = await self._decode(rows)
            if wanted:
                await self._deliver(wanted)
            self._done = rows[-1].seq
        finally:
            # Not awaited: the next batch need not wait for this commit. A crash before it
            # only means these records are delivered again (at least once, as promised).
            if self._done > self.cursor:
                self._saving = self.spool.move_cursor_soon(self.name, self._done)
                self._advance(self._done)

    async def _decode(self, rows: list[Row]) -> list[tuple[Row, Record]]:
        wanted, bad = [], []
        for row in rows:
            if not row.is_for(self.name):
                continue  # a replay of another dispatcher's dead letters
            try:
                record = self._record(row)
            except ValidationError as exc:
                bad.append(DeadLetter(self.name, row, f"undecodable spool record: {exc}", 0))
                continue
            if self.policy.wants(record):
                wanted.append((row, record))
            else:
                self.stats.skipped += 1
        if bad:
            await self._dead_letter(bad)
        return wanted

    def _record(self, row: Row) -> Record:
        """The row's record: the one ingest decoded if it is still in memory, unless the plugin
        mutates records, in which case it gets its own."""
        # Not isinstance: pydantic's metaclass is an ABCMeta, whose check cost 2 % of the daemon's
        # CPU under batch load. Ingest decodes to Record itself; anything else is decoded again.
        if type(row.decoded) is Record and not self.backend.mutates_records:
            return row.decoded
        return Record.model_validate_json(row.body)

    async def _deliver(self, items: list[tuple[Row, Record]]) -> None:
        if self.backend.has_batch() and len(items) > 1:
            records = [record for _, record in items]
            outages = 0
            while (failure := await self._attempt(self.backend.dump_batch, records)) is not None:
                if not failure.outage:
                    break
                outages += 1
                await self._pause(outages, failure.retry_after)
            else:
                self.stats.delivered += len(items)
                self._recovered()
                return
            # One bad record must not hold back the rest: retry them one by one.
            await self._pause(1)
            for row, record in items:
                await self._deliver_one(row, record, first_attempt=2)
            return
        for row, record in items:
            await self._deliver_one(row, record, first_attempt=1)

    async def _deliver_one(self, row: Row, record: Record, first_attempt: int) -> None:
        attempt, outages = first_attempt, 0
        while (failure := await self._attempt(self._single_call(), record)) is not None:
            if failure.outage:
                outages += 1
                await self._pause(outages, failure.retry_after)
                continue
            if attempt >= self.policy.max_attempts:
                await self._dead_letter([DeadLetter(self.name, row, failure.error, attempt)])
                self._done = row.seq
                return
            await self._pause(attempt)
            attempt += 1
        self.stats.delivered += 1
        self._recovered()
        self._done = row.seq

    def _recovered(self) -> None:
        self.state = "draining" if self._until is not None else "running"

    def _single_call(self) -> Callable[[Record], Any]:
        backend = self.backend
        if backend.has_batch():
            return lambda record: backend.dump_batch([record])
        return lambda record: backend.dump(record.level, record.action, **record.dump_kwargs())

    async def _attempt(self, fn: Callable[..., Any], *args: Any) -> Failure | None:
        """Call the plugin once; ``None`` if it returned, else why not (logged, counted)."""
        try:
            await self._call(fn, *args)
            return None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the worker boundary: whatever a plugin raises stays here
            self.log.debug("dispatcher %s traceback", self.name, exc_info=True)
            failure = failure_of(exc, self.policy.timeout)
        self._failed(failure)
        return failure

    def _failed(self, failure: Failure, records: int = 1) -> None:
        self.stats.failed += 1
        self.stats.last_error = failure.error
        self.state = "retrying"
        of = f" ({records} records)" if records > 1 else ""
        self.log.error("dispatcher %s: delivery failed%s: %s", self.name, of, failure.error)

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        # asyncio.timeout, not wait_for: the call runs in this task instead of a new one per batch.
        async with asyncio.timeout(self.policy.timeout):
            if inspect.iscoroutinefunction(fn):
                result = await fn(*args, **kwargs)
            else:
                result = await asyncio.to_thread(fn, *args, **kwargs)
            if inspect.isawaitable(result):  # a lambda or classmethod handing back a coroutine
                result = await result
        return result

    async def _pause(self, attempt: int, retry_after: float | None = None) -> None:
        """Back off before the next attempt; a stop request cuts the wait short."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.policy.wait(attempt, retry_after))
        if self._stopping.is_set():
            raise _Stop  # leave the batch; the cursor keeps what was done

    async def _dead_letter(self, letters: list[DeadLetter]) -> None:
        await self.spool.dead_letter(letters)
        self.stats.dead_lettered += len(letters)
        for letter in letters:
            self.log.error(
                "dispatcher %s: dead-lettered seq %d after %d attempts: %s",
                self.name, letter.row.seq, letter.attempts, letter.error,
            )

    # -- pipelined delivery: a backend with submit() -------------------------------------------

    async def _pipeline(self, until_idle: bool) -> None:
        """Keep records in flight through ``submit``; the cursor follows the settled prefix."""
        self._read_to, self._unread = self.cursor, []
        turn = Turn()
        while True:
            self._wake.clear()
            await self._settle()
            if self._pipeline_finished():
                return
            if await self._fill():
                if turn.over():
                    await turn.pass_on()
                continue
            if until_idle and not self._ledger:
                return
            await self._await_progress()

    def _pipeline_finished(self) -> bool:
        if self._until is not None and self.cursor >= self._until:
            return True
        # Stopping: nothing new is handed over; what is in flight settles (within the grace).
        return self._stopping.is_set() and not self._ledger

    async def _fill(self) -> bool:
        """Hand the next batch over; ``False`` if there is none, or no room past the cursor."""
        if self._stopping.is_set() or len(self._ledger) >= PIPELINE_SPAN * self.policy.batch_size:
            return False
        rows = await self._next_rows()
        if not rows:
            return False
        wanted = await self._decode(rows)
        # Each slot carries the cursor over the rows up to the next wanted one, which need none.
        ends = [row.seq - 1 for row, _ in wanted[1:]] + [rows[-1].seq]
        self._pass_over(wanted[0][0].seq - 1 if wanted else rows[-1].seq)
        futures = await self._submit([record for _, record in wanted])
        for (row, record), future, upto in zip(wanted, futures, ends, strict=True):
            self._ledger.add(Slot(row, record, future, upto))
        return True

    async def _next_rows(self) -> list[Row]:
        """The next ``PIPELINE_FILL`` rows. Read a batch at a time: a read from the file waits a
        loop iteration for its thread, and a fill per iteration is too small a turn."""
        if not self._unread:
            self._unread = await self._read(self._read_to)
            if self._unread:
                self._read_to = self._unread[-1].seq
        rows, self._unread = self._unread[:PIPELINE_FILL], self._unread[PIPELINE_FILL:]
        return rows

    def _pass_over(self, seq: int) -> None:
        if seq > self.cursor and not self._ledger.pass_over(seq):
            self._commit(seq)

    async def _submit(self, records: list[Record]) -> list[asyncio.Future[None]]:
        """The backend's futures for ``records``; if ``submit`` fails, failed ones of our own."""
        if not records:
            return []
        try:
            futures = list(await self._call(self.backend.submit, records))
            if len(futures) != len(records):
                raise RuntimeError(f"submit() gave {len(futures)} futures for {len(records)}"
                                   " records")
            return futures
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the worker boundary, as in _attempt
            self.log.debug("dispatcher %s traceback", self.name, exc_info=True)
            return [failed_future(exc)] * len(records)

    async def _settle(self) -> None:
        """Move the cursor over the settled prefix; recover from a failed head first."""
        while True:
            count, upto = self._ledger.pop_settled()
            if count:
                self.stats.delivered += count
                self._outages = 0
                self._recovered()
            if upto is not None:
                self._commit(upto)
            head = self._ledger.head
            if head is None or not head.future.done():
                return
            await self._recover()

    def _commit(self, seq: int) -> None:
        # Not awaited: the cursor's commit rides along with the spool's next one.
        self._saving = self.spool.move_cursor_soon(self.name, seq)
        self._advance(seq)

    async def _await_progress(self) -> None:
        """Until the head settles or new rows come; a head that does not settle in time fails.

        The deadline runs from when the worker began waiting for this head (this submit of
        it), not from its submit: what counts is whether the sink moves, not how busy the loop
        was meanwhile.
        """
        head = self._ledger.head
        if head is None:
            await self._wake.wait()
            return
        if self._watched is None or self._watched[0] is not head.future:
            self._watched = (head.future, asyncio.get_running_loop().time() + self.policy.timeout)
        head.future.add_done_callback(self._poke)
        try:
            async with asyncio.timeout_at(self._watched[1]):
                await self._wake.wait()
        except TimeoutError:
            self._time_out()
        finally:
            head.future.remove_done_callback(self._poke)

    def _poke(self, _: object) -> None:
        self._wake.set()

    def _time_out(self) -> None:
        for slot in self._ledger.unsettled():
            if not slot.future.done():
                slot.future.cancel()
                slot.future = failed_future(TimeoutError())

    async def _recover(self) -> None:
        """The head failed: let the rest settle, then retry just what was not delivered."""
        waiting = self._ledger.waiting()
        if waiting:  # what has not settled within the timeout timed out
            await asyncio.wait(waiting, timeout=self.policy.timeout)
        self._time_out()
        failed = [(slot, self._why(slot)) for slot in self._ledger.unsettled()]
        self._failed(failed[0][1], len(failed))
        for slot, failure in failed:
            slot.attempts += not failure.outage
        await self._dead_letter_exhausted(failed)
        retry = [(slot, failure) for slot, failure in failed if not slot.dead]
        if retry:
            await self._pause_before_retry(retry)
            futures = await self._submit([slot.record for slot, _ in retry])
            for (slot, _), future in zip(retry, futures, strict=True):
                slot.future = future

    def _why(self, slot: Slot) -> Failure:
        failure = outcome(slot.future, self.policy.timeout)
        assert failure is not None  # unsettled and done: not delivered
        return failure

    async def _dead_letter_exhausted(self, failed: list[tuple[Slot, Failure]]) -> None:
        letters = []
        for slot, failure in failed:
            if slot.attempts >= self.policy.max_attempts:
                letters.append(DeadLetter(self.name, slot.row, failure.error, slot.attempts))
                slot.dead = True
        if letters:
            await self._dead_letter(letters)

    async def _pause_before_retry(self, retry: list[tuple[Slot, Failure]]) -> None:
        """A refusal backs off by its attempts; outages alone by the outage streak."""
        refused = [slot.attempts for slot, failure in retry if not failure.outage]
        if refused:
            await self._pause(max(refused))
            return
        self._outages += 1
        waits = [f.retry_after for _, f in retry if f.retry_after is not None]
        await self._pause(self._outages, max(waits) if waits else None)

    # -- backend start and close ------------------------------------------------------------

    async def _start_backend(self) -> bool:
        """Start the backend, retrying with backoff; ``False`` if stopped first.

        Each attempt owes a ``close``: a failed one is closed here before the next; the last
        (started, or cut off by a cancellation) is closed when ``run`` ends.
        """
        attempt = 1
        while not self._stopping.is_set():
            self._close_owed = True
            retry_after = None
            try:
                await self._call(self.backend.start)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a plugin failing to start is reported, then retried
                retry_after = exc.retry_after if isinstance(exc, Unavailable) else None
                self._start_failed(exc)
            await self._close_backend()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.policy.wait(attempt, retry_after))
            attempt += 1
        return False

    def _start_failed(self, exc: Exception) -> None:
        self.state = "failed"
        if isinstance(exc, TimeoutError):
            self.stats.last_error = f"start failed: timed out after {self.policy.timeout:g}s"
        else:
            self.stats.last_error = f"start failed: {type(exc).__name__}: {exc}"
        self.log.error("dispatcher %s: %s", self.name, self.stats.last_error)
        self.log.debug("dispatcher %s traceback", self.name, exc_info=True)

    async def _close_backend(self) -> None:
        if not self._close_owed:
            return
        self._close_owed = False
        try:
            await self._call(self.backend.close)
        except Exception as exc:  # closing is best effort; what was delivered is already recorded
            self.log.error("dispatcher %s: close failed: %s", self.name, exc)
