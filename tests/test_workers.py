from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from dispatchd import Action, EventBackend, Record, Unavailable
from dispatchd.config import parse
from dispatchd.registry import Overrides, overrides
from dispatchd.spool import Spool
from dispatchd.workers import Policy, Worker

from .support.backends import Collect, put
from .support.daemon import eventually
from .support.records import record

FAST = Policy(min_level=10, backoff_initial=0.001, backoff_max=0.002, max_attempts=3, timeout=1.0)


class BatchCollect(Collect):
    batches: list[int]

    async def dump_batch(self, events: list[Record]) -> None:
        self.batches = [*getattr(self, "batches", []), len(events)]
        if any(e.id in self.poison for e in events):
            raise ValueError("poison in batch")
        self.got.extend(e.id for e in events)


async def drain(spool: Spool, backend: EventBackend, policy: Policy = FAST) -> Worker:
    await spool.ensure_cursor(backend.name)
    worker = Worker(backend.name, backend, spool, policy)
    await worker.run(until_idle=True)
    return worker


async def test_delivers_in_order_and_advances_the_cursor(spool):
    backend = Collect()
    await spool.ensure_cursor("c")
    records = await put(spool, *(record() for _ in range(7)))
    worker = await drain(spool, backend, Policy(min_level=10, batch_size=3))
    assert backend.got == [r.id for r in records]
    assert spool.cursors["c"] == 7 and worker.stats.delivered == 7
    assert spool.backlog == 0  # compacted


async def test_level_filter_and_a_dispatchers_own_level(spool):
    await spool.ensure_cursor("c")
    records = await put(spool, record(level="DEBUG"), record(level="INFO"), record(level="ERROR"))
    backend = Collect()
    worker = await drain(spool, backend, Policy(min_level=20))
    assert backend.got == [records[1].id, records[2].id] and worker.stats.skipped == 1
    assert spool.cursors["c"] == 3  # skipped records are passed, not held


def test_a_dispatchers_overrides_replace_the_global_values():
    cfg = parse('[dispatch]\nlevel = "DEBUG"\ntimeout = 7\nmax_attempts = 5\n'
                '[dispatchers.c]\nlevel = "ERROR"\ntimeout = 0.5\n')
    glob = Policy.of(cfg)
    assert (glob.min_level, glob.timeout, glob.max_attempts) == (10, 7.0, 5)
    own = Policy.of(cfg, overrides(cfg, "c"))
    assert (own.min_level, own.timeout, own.max_attempts) == (40, 0.5, 5)
    assert Policy.of(cfg, Overrides(max_attempts=2)).max_attempts == 2


@pytest.mark.parametrize(
    ("cause", "exclude", "delivered"),
    [
        ("Derived Action", True, False),
        ("Derived Action with Lifecycle Hook", True, True),
        ("RPC Request", True, True),
        ("Derived Action", False, True),
    ],
)
async def test_derived_action_filter_is_senlins(spool, cause, exclude, delivered):
    await spool.ensure_cursor("c")
    body = record()
    body["action"] = {**body["action"], "cause": cause}
    await put(spool, body)
    backend = Collect()
    await drain(spool, backend, Policy(min_level=10, exclude_derived=exclude))
    assert bool(backend.got) is delivered


async def test_transient_failures_are_retried(spool):
    await spool.ensure_cursor("c")
    records = await put(spool, record(), record())
    backend = Collect()
    backend.fail_times = 2  # succeeds on the third attempt
    worker = await drain(spool, backend)
    assert backend.got == [r.id for r in records]
    assert worker.stats.failed == 2 and worker.stats.dead_lettered == 0
    assert worker.stats.last_error == "ConnectionError: down"


async def test_a_poison_record_is_dead_lettered_and_the_rest_delivered(spool):
    await spool.ensure_cursor("c")
    records = await put(spool, record(), record(), record())
    backend = Collect()
    backend.poison = {records[1].id}
    worker = await drain(spool, backend)
    assert backend.got == [records[0].id, records[2].id]
    assert worker.stats.dead_lettered == 1 and worker.stats.failed == FAST.max_attempts
    [letter] = await spool.dead_letters("c")
    assert letter.attempts == FAST.max_attempts and "poison" in letter.error
    assert Record.model_validate_json(letter.row.body).id == records[1].id
    assert spool.cursors["c"] == 3


async def test_batch_failure_falls_back_to_one_by_one(spool):
    await spool.ensure_cursor("c")
    records = await put(spool, *(record() for _ in range(4)))
    backend = BatchCollect()
    backend.poison = {records[2].id}
    worker = await drain(spool, backend)
    assert backend.got == [records[0].id, records[1].id, records[3].id]
    assert backend.batches[0] == 4 and set(backend.batches[1:]) == {1}
    assert worker.stats.dead_lettered == 1


async def test_backoff_grows_and_is_capped():
    policy = Policy(backoff_initial=1.0, backoff_max=5.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (10, 5.0)]:
        delays = [policy.backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jitter


async def test_a_hanging_call_is_cut_off_by_the_timeout(spool):
    class Hang(EventBackend):
        async def dump(self, level: int, action: Action, **kwargs: Any) -> None:
            await asyncio.sleep(3600)

    await spool.ensure_cursor("h")
    await put(spool, record())
    worker = await drain(spool, Hang("h"), Policy(min_level=10, timeout=0.05, max_attempts=2,
                                                  backoff_initial=0.001, backoff_max=0.001))
    assert worker.stats.dead_lettered == 1 and "timed out" in (worker.stats.last_error or "")


async def test_plain_dump_runs_in_a_thread(spool):
    seen: list[bool] = []

    class Plain(EventBackend):
        def dump(self, level: int, action: Action, **kwargs: Any) -> None:
            seen.append(threading.current_thread() is not threading.main_thread())

    await spool.ensure_cursor("p")
    await put(spool, record())
    await drain(spool, Plain("p"))
    assert seen == [True]


async def test_failing_start_is_reported_and_retried(spool):
    class LateStart(Collect):
        starts = 0

        async def start(self) -> None:
            self.starts += 1
            if self.starts < 3:
                raise ConnectionRefusedError("not yet")

    await spool.ensure_cursor("c")
    await put(spool, record())
    backend = LateStart()
    worker = await drain(spool, backend)
    assert backend.starts == 3 and len(backend.got) == 1
    assert "start failed: ConnectionRefusedError" in (worker.stats.last_error or "")


async def test_stop_waits_for_the_batch_in_hand_and_commits_the_cursor(spool):
    entered, release = asyncio.Event(), asyncio.Event()

    class Gate(Collect):
        async def dump(self, level: int, action: Action, **kwargs: Any) -> None:
            entered.set()
            await release.wait()
            self.got.append(kwargs["id"])

    await spool.ensure_cursor("c")
    await put(spool, record(), record())
    backend = Gate()
    worker = Worker("c", backend, spool, FAST)
    worker.start()
    await asyncio.wait_for(entered.wait(), 5)  # the batch is in hand
    stopping = asyncio.create_task(worker.stop(grace=5))
    await asyncio.sleep(0.05)  # not a wait for an event: a window in which stop must not return
    assert not stopping.done()
    release.set()
    await stopping
    assert len(backend.got) == 2 and spool.cursors["c"] == 2 and worker.state == "stopped"


async def test_cancel_at_the_grace_limit_keeps_what_was_delivered(spool):
    stuck = asyncio.Event()

    class Stuck(Collect):
        async def dump(self, level: int, action: Action, **kwargs: Any) -> None:
            if self.got:
                stuck.set()
                await asyncio.sleep(3600)
            self.got.append(kwargs["id"])

    await spool.ensure_cursor("c")
    await put(spool, record(), record(), record())
    worker = Worker("c", Stuck(), spool, FAST)
    worker.start()
    await asyncio.wait_for(stuck.wait(), 5)  # the first delivered, the second hanging
    await worker.stop(grace=0.1)
    assert spool.cursors["c"] == 1  # the first was delivered; the other two come again


async def test_new_commits_wake_an_idle_worker(spool):
    backend = Collect()
    await spool.ensure_cursor("c")
    worker = Worker("c", backend, spool, FAST)
    worker.start()
    await eventually(lambda: worker.state == "running")  # started, found nothing: idle
    [r] = await put(spool, record())
    await eventually(lambda: backend.got, timeout=5)
    assert backend.got == [r.id]
    await worker.stop(grace=1)


@pytest.mark.parametrize("batch", [False, True])
async def test_an_outage_spends_no_attempts(spool, batch):
    class Outage(BatchCollect if batch else Collect):  # type: ignore[misc]
        down = FAST.max_attempts * 3  # longer than the attempts would allow

        async def dump(self, level: int, action: Action, **kwargs: Any) -> None:
            self._check()
            await super().dump(level, action, **kwargs)

        async def dump_batch(self, events: list[Record]) -> None:
            self._check()
            self.got.extend(e.id for e in events)

        def _check(self) -> None:
            if self.down:
                self.down -= 1
                raise Unavailable("broker unreachable")

    if not batch:
        del Outage.dump_batch
    await spool.ensure_cursor("c")
    records = await put(spool, record(), record(), record())
    worker = await drain(spool, Outage())
    assert worker.stats.dead_lettered == 0 and worker.stats.failed == FAST.max_attempts * 3
    assert Outage.has_batch() is batch
    assert set(worker.backend.got) == {r.id for r in records}  # type: ignore[attr-defined]
    assert worker.stats.last_error == "unavailable: broker unreachable"


class Keep(EventBackend):
    def __init__(self, name: str, options: Any = None) -> None:
        super().__init__(name, options)
        self.got: list[Record] = []

    async def dump_batch(self, events: list[Record]) -> None:
        self.got.extend(events)


class Mutating(Keep):
    mutates_records = True


async def test_workers_share_ingested_records_unless_the_plugin_mutates_them(spool):
    records = [Record.model_validate(record()) for _ in range(3)]
    keep, mutating = Keep("keep"), Mutating("mutating")
    workers = [Worker("keep", keep, spool, FAST), Worker("mutating", mutating, spool, FAST)]
    for worker in workers:
        await spool.ensure_cursor(worker.name)
    await spool.append([(r.level, r.model_dump_json()) for r in records], records)
    for worker in workers:
        await worker.run(until_idle=True)
    # Read from memory, not decoded again: the very objects ingest validated.
    assert all(got is sent for got, sent in zip(keep.got, records, strict=True))
    # A plugin that changes records gets equal copies of its own.
    assert mutating.got == records
    assert not any(got is sent for got, sent in zip(mutating.got, records, strict=True))


# -- close follows every start, however it ended ---------------------------------------------------


class Paired(Collect):
    """Records start and close calls; ``start_plan`` says what each start does in turn."""

    def __init__(self, *start_plan: str) -> None:
        super().__init__()
        self.calls_made: list[str] = []
        self.start_plan = list(start_plan)
        self.closed = asyncio.Event()

    async def start(self) -> None:
        self.calls_made.append("start")
        step = self.start_plan.pop(0) if self.start_plan else "ok"
        if step == "raise":
            raise ConnectionRefusedError("not yet")
        if step == "hang":
            await asyncio.sleep(3600)

    async def close(self) -> None:
        self.calls_made.append("close")
        self.closed.set()


async def test_close_follows_each_failed_or_timed_out_start_before_the_next(spool):
    await spool.ensure_cursor("c")
    await put(spool, record())
    backend = Paired("raise", "hang", "ok")
    worker = await drain(spool, backend, Policy(min_level=10, timeout=0.05, backoff_initial=0.001,
                                                backoff_max=0.002))
    assert backend.calls_made == ["start", "close", "start", "close", "start", "close"]
    assert len(backend.got) == 1
    assert worker.stats.last_error == "start failed: timed out after 0.05s"


async def test_close_follows_a_start_cut_off_by_a_stop(spool):
    backend = Paired("hang")
    await spool.ensure_cursor("c")
    worker = Worker("c", backend, spool, FAST)
    worker.start()
    await eventually(lambda: backend.calls_made == ["start"])
    await worker.stop(grace=0.05)
    assert backend.calls_made == ["start", "close"] and worker.state == "stopped"


async def test_close_follows_a_start_cut_off_by_a_cancellation_alone(spool):
    backend = Paired("hang")
    await spool.ensure_cursor("c")
    worker = Worker("c", backend, spool, FAST)
    worker.start()
    await eventually(lambda: backend.calls_made == ["start"])
    worker.cancel()  # no stop(): the worker's own task still closes what it started
    await asyncio.wait_for(backend.closed.wait(), 5)
    assert backend.calls_made == ["start", "close"]


async def test_close_is_called_once_after_a_run_and_a_stop(spool):
    backend = Paired()
    await spool.ensure_cursor("c")
    await put(spool, record())
    worker = await drain(spool, backend)
    await worker.stop(grace=1)
    assert backend.calls_made == ["start", "close"]


async def test_a_failing_close_is_logged_and_the_worker_stops(spool, caplog):
    class BadClose(Collect):
        async def close(self) -> None:
            raise OSError("cannot flush")

    await spool.ensure_cursor("c")
    await put(spool, record())
    worker = await drain(spool, BadClose())
    await worker.stop(grace=1)
    assert "close failed: cannot flush" in caplog.text and worker.state == "stopped"


# -- Unavailable(retry_after=...) ----------------------------------------------------------------


def test_retry_after_replaces_the_backoff_capped_at_backoff_max():
    policy = Policy(backoff_initial=1.0, backoff_max=5.0)
    assert policy.wait(1, retry_after=3.0) == 3.0
    assert policy.wait(1, retry_after=60.0) == 5.0
    assert policy.wait(1, retry_after=-1.0) == 0.0
    assert 0.5 <= policy.wait(1) <= 1.0


class Busy(Collect):
    """Unavailable with ``retry_after`` for the first ``busy`` calls, noting when each came."""

    def __init__(self, busy: int, retry_after: float) -> None:
        super().__init__()
        self.busy, self.retry_after = busy, retry_after
        self.times: list[float] = []

    async def dump(self, level: int, action: Action, **kwargs: Any) -> None:
        self.times.append(asyncio.get_running_loop().time())
        if self.busy:
            self.busy -= 1
            raise Unavailable("rate limited", retry_after=self.retry_after)
        self.got.append(kwargs["id"])


async def test_the_worker_waits_retry_after_instead_of_its_backoff(spool):
    await spool.ensure_cursor("c")
    await put(spool, record())
    backend = Busy(busy=2, retry_after=0.15)
    policy = Policy(min_level=10, backoff_initial=0.001, backoff_max=10.0)
    worker = await drain(spool, backend, policy)
    gaps = [b - a for a, b in zip(backend.times, backend.times[1:], strict=False)]
    assert len(backend.got) == 1 and len(gaps) == 2
    assert all(gap >= 0.14 for gap in gaps), gaps  # the backoff alone would be ~1 ms
    assert worker.stats.dead_lettered == 0


async def test_a_retry_after_longer_than_backoff_max_is_capped(spool):
    await spool.ensure_cursor("c")
    await put(spool, record())
    backend = Busy(busy=2, retry_after=3600.0)
    await asyncio.wait_for(drain(spool, backend, FAST), 10)  # capped at 2 ms, not an hour
    assert len(backend.got) == 1


# -- logs name the dispatcher as structured data ----------------------------------------------------


async def test_worker_logs_carry_the_dispatcher_name(spool, caplog):
    await spool.ensure_cursor("c")
    records = await put(spool, record())
    backend = Collect()
    backend.poison = {records[0].id}
    with caplog.at_level(logging.INFO, logger="dispatchd.workers"):
        await drain(spool, backend)
    mine = [r for r in caplog.records if r.name == "dispatchd.workers"]
    assert mine and all(getattr(r, "dispatcher", None) == "c" for r in mine)
    assert any("dead-lettered" in r.getMessage() for r in mine)


async def test_a_failing_report_is_contained_and_shown(spool, caplog):
    class Broken(Collect):
        def report(self) -> dict[str, int]:
            raise KeyError("oops")

    worker = Worker("c", Broken(), spool, FAST)
    assert worker.report() == {"report_failed": "KeyError: 'oops'"}
    assert "report() failed" in caplog.text
