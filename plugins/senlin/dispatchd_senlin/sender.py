"""A bounded queue of encoded records and the one background thread that POSTs it to dispatchd.

``put`` never touches the network: it appends under a lock no one holds across I/O, or drops.
The locks, the condition and the thread come from ``threading`` when they are created, so in a
process eventlet has monkey-patched (senlin-engine) they are green, and real threads otherwise.
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time
from typing import Any, NamedTuple

from oslo_log import log as logging

from dispatchd_senlin.client import Answer, Client

LOG = logging.getLogger(__name__)
COUNTERS = ("queued", "sent", "dropped_queue_full", "dropped_rejected", "dropped_error", "retries")
DROP_LOG_INTERVAL = 10.0  # seconds between two "queue full" lines, however many drops between
TOO_MANY = "422 too_many_records"  # over server.max_batch; a 413 is over server.max_body_bytes


class Settings(NamedTuple):
    max_queue: int = 10000
    batch_size: int = 100
    flush_timeout: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


class Sender:
    """Holds up to ``max_queue`` records; one thread sends them in batches, retrying until
    dispatchd answers 2xx (sent) or a 4xx that is not about load (dropped, counted)."""

    _running: bool  # a sender thread is started and has not returned
    _closing: bool

    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._said: set[str] = set()  # kinds of rejection and error already logged in full
        self._unlogged_drops = 0
        self._next_drop_log = 0.0
        self._pid = -1
        self._start_over()

    # -- the engine's side ---------------------------------------------------------------------

    def put(self, encoded: bytes) -> bool:
        """Queue one encoded record, or drop it if the queue is full; never waits on I/O."""
        if self._pid != os.getpid():
            self._start_over()
        start = False
        with self._cond:
            if len(self._items) >= self.settings.max_queue:
                self._counts["dropped_queue_full"] += 1
                self._unlogged_drops += 1
                queued = False
            else:
                self._items.append(encoded)
                self._counts["queued"] += 1
                self._cond.notify()
                start = not self._running
                self._running = True
                queued = True
        if start:
            self._start_thread()
        if not queued:
            self._log_drops()
        return queued

    def count_error(self, exc: BaseException) -> None:
        """A record the bridge itself could not build or encode: counted, logged once per type."""
        with self._cond:
            self._counts["dropped_error"] += 1
        self._say_once(f"error {type(exc).__name__}",
                       "dispatchd bridge: cannot build an event, dropped: %r", exc)

    def stats(self) -> dict[str, int]:
        """The counters, plus ``pending`` (queued now) and ``in_flight`` (taken, not settled)."""
        with self._cond:
            return dict(self._counts, pending=len(self._items), in_flight=self._in_flight)

    def close(self) -> dict[str, int]:
        """At exit: let the thread send for up to ``flush_timeout`` seconds, then report."""
        if self._pid != os.getpid():
            self._start_over()  # a forked child: the parent's records are the parent's to send
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + self.settings.flush_timeout
            self._cond.notify_all()
            while self._running and (self._items or self._in_flight):
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        stats = self.stats()
        unsent = stats["pending"] + stats["in_flight"]
        if unsent:
            LOG.warning("dispatchd bridge: %d event(s) not sent at exit (%d queued, %d in flight, "
                        "flush_timeout %ss); counters: %s", unsent, stats["pending"],
                        stats["in_flight"], self.settings.flush_timeout, _counters(stats))
        else:
            LOG.info("dispatchd bridge: every queued event sent at exit; counters: %s",
                     _counters(stats))
        return stats

    def _start_over(self) -> None:
        # Fresh primitives in a forked child: a lock held at fork() time would never be released.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._items: collections.deque[bytes] = collections.deque()
        self._in_flight = 0
        self._running = False
        self._closing = False
        self._deadline = 0.0
        if self._pid != -1:
            self._counts = dict.fromkeys(COUNTERS, 0)
        self._pid = os.getpid()

    def _start_thread(self) -> None:
        # Outside the lock: a green thread starting may run before start() returns.
        try:
            threading.Thread(target=self._run, name="dispatchd-sender", daemon=True).start()
        except RuntimeError:  # e.g. "can't start new thread": the next put tries again
            with self._cond:
                self._running = False
            LOG.exception("dispatchd bridge: cannot start the sender thread")

    def _log_drops(self) -> None:
        now = time.monotonic()
        with self._cond:
            if now < self._next_drop_log:
                return
            self._next_drop_log = now + DROP_LOG_INTERVAL
            dropped, self._unlogged_drops = self._unlogged_drops, 0
            total = self._counts["dropped_queue_full"]
        LOG.warning("dispatchd bridge: queue full (max_queue %d), %d event(s) dropped since the "
                    "last report, %d in all; is dispatchd at %s reachable?",
                    self.settings.max_queue, dropped, total, self.client.url)

    # -- the sender thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if not self._items or self._past_deadline():
                    # Past the flush timeout, what is left is reported as unsent by close().
                    self._running = False
                    self._cond.notify_all()
                    return
                size = min(self.settings.batch_size, len(self._items))
                batch = [self._items.popleft() for _ in range(size)]
                self._in_flight = size
            try:
                self._deliver(batch)
            except Exception:  # a bug here must not stop the sending for good
                LOG.exception("dispatchd bridge: sender error, %d event(s) dropped",
                              self._in_flight)
                self._settle("dropped_error", self._in_flight)

    def _deliver(self, batch: list[bytes]) -> None:
        """Send ``batch``, split when too large, until every record is sent or dropped."""
        parts: collections.deque[list[bytes]] = collections.deque([batch])
        backoff = self.settings.backoff_initial
        failing = False
        while parts:
            part = parts.popleft()
            answer = self.client.post(part)
            if answer.retryable:
                if not failing:
                    failing = True
                    LOG.warning("dispatchd bridge: dispatchd at %s unavailable (%s); retrying "
                                "with backoff, %d event(s) waiting", self.client.url,
                                answer.describe(), self.stats()["pending"] + self._in_flight)
                self._count("retries")
                delay = answer.retry_after
                if delay is None:
                    delay = backoff * random.uniform(0.5, 1.0)  # jitter: engines back off apart
                    backoff = min(backoff * 2, self.settings.backoff_max)
                parts.appendleft(part)
                if not self._sleep(delay):
                    return  # the flush timeout is over
                continue
            if failing:
                failing = False
                LOG.info("dispatchd bridge: dispatchd at %s answers again", self.client.url)
            backoff = self.settings.backoff_initial
            if answer.accepted:
                self._settle("sent", len(part))
            elif (answer.status == 413 or answer.kind() == TOO_MANY) and len(part) > 1:
                half = len(part) // 2
                parts.extendleft([part[half:], part[:half]])  # in order, the first half first
            else:
                self._reject(part, answer, parts)

    def _reject(self, part: list[bytes], answer: Answer, parts: collections.deque[list[bytes]]) -> None:
        """Drop what dispatchd refuses; on a 422 naming records, only those, and resend the rest."""
        bad = _invalid_indexes(answer, len(part)) if answer.kind() == "422 validation_failed" else set()
        if bad and len(bad) < len(part):
            parts.appendleft([r for i, r in enumerate(part) if i not in bad])
            self._settle("dropped_rejected", len(bad))
        else:
            self._settle("dropped_rejected", len(part))
        self._say_once(answer.kind(), "dispatchd bridge: dispatchd rejected %d event(s), dropped "
                       "(logged once per kind, counted in dropped_rejected): %s",
                       len(bad) or len(part), answer.describe())

    def _settle(self, counter: str, records: int) -> None:
        """``records`` taken from the queue are sent or dropped: counted, no longer in flight."""
        with self._cond:
            self._counts[counter] += records
            self._in_flight -= records
            self._cond.notify_all()

    def _count(self, counter: str) -> None:
        with self._cond:
            self._counts[counter] += 1

    def _past_deadline(self) -> bool:
        return self._closing and time.monotonic() >= self._deadline

    def _sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds, cut short by the flush deadline; False once that is past."""
        end = time.monotonic() + delay
        with self._cond:
            closing = self._closing
            while True:
                if self._closing and not closing:
                    break  # the exit flush began: try again now rather than after a long backoff
                limit = min(end, self._deadline) if self._closing else end
                remaining = limit - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return not self._past_deadline()

    def _say_once(self, kind: str, message: str, *args: Any) -> None:
        if kind in self._said:
            LOG.debug(message, *args)
        else:
            self._said.add(kind)
            LOG.error(message, *args)


def _invalid_indexes(answer: Answer, size: int) -> set[int]:
    details = answer.problem().get("details") or []
    return {d["index"] for d in details
            if isinstance(d, dict) and isinstance(d.get("index"), int) and 0 <= d["index"] < size}


def _counters(stats: dict[str, int]) -> str:
    return ", ".join(f"{key}={stats[key]}" for key in COUNTERS)
