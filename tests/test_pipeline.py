"""The worker with a pipelined backend (``submit``): in flight, the settled prefix, retries."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from dispatchd import EventBackend, Record, Unavailable
from dispatchd import spool as spool_module
from dispatchd.spool import Spool
from dispatchd.workers import PIPELINE_SPAN, Policy, Worker

from .support.backends import Pipe, put
from .support.daemon import eventually
from .support.records import record

FAST = Policy(min_level=20, backoff_initial=0.001, backoff_max=0.002, max_attempts=3, timeout=5.0)


async def started(spool: Spool, backend: EventBackend, policy: Policy = FAST) -> Worker:
    await spool.ensure_cursor(backend.name)
    worker = Worker(backend.name, backend, spool, policy)
    worker.start()
    return worker


def cursor_moves(spool: Spool) -> list[int]:
    """Every position the worker commits its cursor to, from now on."""
    moves: list[int] = []
    move = spool.move_cursor_soon

    def recording(name: str, seq: int) -> asyncio.Future[None]:
        moves.append(seq)
        return move(name, seq)

    spool.move_cursor_soon = recording  # type: ignore[method-assign]
    return moves


async def test_the_cursor_moves_over_the_settled_prefix_only(spool):
    backend = Pipe()
    await spool.ensure_cursor("p")
    records = await put(spool, *(record(level=level) for level in
                                 ("INFO", "DEBUG", "INFO", "INFO", "DEBUG", "INFO", "INFO")))
    moves = cursor_moves(spool)
    worker = await started(spool, backend)
    wanted = [r.id for r in records if r.level >= 20]
    await eventually(lambda: len(backend.futures) == 5)
    assert backend.submitted == [wanted]  # one submit, without waiting for any outcome
    for id_ in wanted[1:]:  # all but the first are delivered
        backend.settle(id_)
    [late] = await put(spool, record())  # wakes the worker: it settles what it can, submits
    await eventually(lambda: late.id in backend.futures)
    assert moves == [] and worker.stats.delivered == 0  # nothing passed the unsettled head
    backend.settle(late.id)
    backend.settle(wanted[0])
    assert await worker.wait_for_cursor(8, timeout=5)
    await worker.stop(grace=1)
    # One move, over all eight (the skipped DEBUG rows ride along with the records around them).
    assert moves == [8] and spool.cursors["p"] == 8
    assert worker.stats.delivered == 6 and worker.stats.skipped == 2


async def test_a_failed_record_is_retried_alone_and_the_rest_keep_their_order(spool):
    backend = Pipe()
    await spool.ensure_cursor("p")
    records = await put(spool, *(record() for _ in range(5)))
    ids = [r.id for r in records]
    moves = cursor_moves(spool)
    worker = await started(spool, backend)
    await eventually(lambda: len(backend.futures) == 5)
    for id_ in ids:
        backend.settle(id_, RuntimeError("nacked") if id_ == ids[2] else None)
    await eventually(lambda: len(backend.submitted) == 2)
    assert backend.submitted == [ids, [ids[2]]]  # just what failed, nothing delivered twice
    assert moves == [2] and worker.stats.failed == 1  # the prefix before it is passed
    backend.settle(ids[2])
    assert await worker.wait_for_cursor(5, timeout=5)
    await worker.stop(grace=1)
    assert backend.delivered == [*ids[:2], *ids[3:], ids[2]] and moves == [2, 5]
    assert worker.stats.delivered == 5 and worker.stats.last_error == "RuntimeError: nacked"


async def test_a_record_failing_every_attempt_is_dead_lettered_and_the_rest_delivered(spool):
    backend = Pipe(auto=True)
    await spool.ensure_cursor("p")
    records = await put(spool, *(record() for _ in range(6)))
    poison = records[3].id
    backend.plan[poison] = [ValueError("bad")] * 10
    worker = await started(spool, backend)
    assert await worker.wait_for_cursor(6, timeout=10)
    await worker.stop(grace=1)
    assert backend.delivered == [r.id for r in records if r.id != poison]
    assert [ids for ids in backend.submitted if poison in ids] == [
        [r.id for r in records], [poison], [poison]]  # max_attempts = 3, then given up
    [letter] = await spool.dead_letters("p")
    assert letter.row.seq == 4 and letter.attempts == 3 and letter.error == "ValueError: bad"
    assert (worker.stats.delivered, worker.stats.dead_lettered) == (5, 1)


async def test_an_outage_resubmits_what_was_in_flight_without_spending_attempts(spool):
    backend = Pipe(auto=True)
    await spool.ensure_cursor("p")
    records = await put(spool, *(record() for _ in range(4)))
    outages = FAST.max_attempts * 3  # far more rounds than attempts would allow
    for r in records[1:]:
        backend.plan[r.id] = [Unavailable("connection lost")] * outages
    worker = await started(spool, backend)
    assert await worker.wait_for_cursor(4, timeout=10)
    await worker.stop(grace=1)
    assert backend.delivered == [r.id for r in records]  # in order: the first, then the rest
    assert backend.submitted[1:] == [[r.id for r in records[1:]]] * outages
    assert worker.stats.dead_lettered == 0 and worker.stats.failed == outages
    assert worker.stats.last_error == "unavailable: connection lost"


async def test_a_submit_that_raises_fails_its_records_which_are_retried(spool):
    class Flaky(Pipe):
        calls = 0

        async def submit(self, events: list[Record]) -> list[asyncio.Future[None]]:
            self.calls += 1
            if self.calls == 1:
                raise OSError("cannot build the messages")
            if self.calls == 2:
                return []  # a plugin bug: no future for its records
            return await super().submit(events)

    backend = Flaky(auto=True)
    await spool.ensure_cursor("p")
    records = await put(spool, record(), record())
    worker = await started(spool, backend)
    assert await worker.wait_for_cursor(2, timeout=10)
    await worker.stop(grace=1)
    assert backend.delivered == [r.id for r in records] and worker.stats.failed == 2
    assert "submit() gave 0 futures for 2 records" in (worker.stats.last_error or "")


async def test_a_future_that_never_settles_times_out_and_is_retried(spool):
    backend = Pipe(auto=True)
    await spool.ensure_cursor("p")
    [r] = await put(spool, record())
    backend.plan[r.id] = ["hang"]
    policy = Policy(min_level=20, backoff_initial=0.001, backoff_max=0.002, timeout=0.05)
    worker = await started(spool, backend, policy)
    assert await worker.wait_for_cursor(1, timeout=10)
    await worker.stop(grace=1)
    assert backend.delivered == [r.id] and backend.submitted == [[r.id], [r.id]]
    assert worker.stats.last_error == "timed out after 0.05s"


async def test_each_submit_of_a_record_gets_the_whole_timeout(spool):
    """Retries took longer than the timeout in all; the last submit is not cut short by that."""
    backend = Pipe(auto=True)
    await spool.ensure_cursor("p")
    [r] = await put(spool, record())
    backend.plan[r.id] = [ValueError("no"), ValueError("no"), ValueError("no"), 0.3]
    policy = Policy(min_level=20, backoff_initial=0.5, backoff_max=0.5, max_attempts=4,
                    timeout=1.0)
    worker = await started(spool, backend, policy)
    assert await worker.wait_for_cursor(1, timeout=20)
    await worker.stop(grace=1)
    assert backend.delivered == [r.id] and worker.stats.last_error == "ValueError: no"


async def test_what_is_held_past_the_cursor_is_bounded(spool):
    class Watched(Pipe):
        worker: Worker
        held: list[int] = []  # at each submit: seqs between the cursor and the newest handed over

        async def submit(self, events: list[Record]) -> list[asyncio.Future[None]]:
            self.held.append(seqs[events[-1].id] - self.worker.cursor)
            return await super().submit(events)

    backend = Watched()
    policy = Policy(min_level=20, batch_size=2, timeout=30)
    await spool.ensure_cursor("p")
    records = await put(spool, *(record() for _ in range(20)))
    seqs = {r.id: seq for seq, r in enumerate(records, start=1)}
    span = PIPELINE_SPAN * policy.batch_size
    backend.worker = await started(spool, backend, policy)
    await eventually(lambda: len(backend.futures) == span)
    for r in records[1:span]:  # everything but the head settles: it holds the rest back
        backend.settle(r.id)
    backend.settle(records[0].id)  # the head: the cursor moves, and the rest flows
    for r in records[span:]:
        await eventually(lambda r=r: r.id in backend.futures)
        backend.settle(r.id)
    assert await backend.worker.wait_for_cursor(20, timeout=5)
    await backend.worker.stop(grace=1)
    assert max(backend.held) == span
    assert backend.delivered == [r.id for r in [*records[1:span], records[0], *records[span:]]]


async def test_stop_lets_what_is_in_flight_settle_and_commits_it(spool):
    backend = Pipe()
    await spool.ensure_cursor("p")
    records = await put(spool, record(), record(), record())
    worker = await started(spool, backend)
    await eventually(lambda: len(backend.futures) == 3)
    stopping = asyncio.create_task(worker.stop(grace=5))
    await eventually(lambda: worker._stopping.is_set())
    for r in records:
        backend.settle(r.id)
    await stopping
    assert spool.cursors["p"] == 3 and worker.state == "stopped"


async def test_stop_at_the_grace_limit_keeps_the_settled_prefix(spool):
    backend = Pipe()
    await spool.ensure_cursor("p")
    records = await put(spool, record(), record(), record())
    worker = await started(spool, backend)
    await eventually(lambda: len(backend.futures) == 3)
    backend.settle(records[0].id)
    backend.settle(records[2].id)  # settled, but behind one that is not: it comes again
    await worker.wait_for_cursor(1, timeout=5)
    await worker.stop(grace=0.1)
    assert spool.cursors["p"] == 1


async def test_a_drain_delivers_up_to_its_seq_through_the_pipeline_then_ends(spool):
    backend = Pipe(auto=True)
    await spool.ensure_cursor("p")
    records = await put(spool, *(record() for _ in range(5)))
    worker = await started(spool, backend)
    assert await worker.drain(3, timeout=5)
    assert worker._task is not None and worker._task.done()
    assert backend.delivered[:3] == [r.id for r in records[:3]] and spool.cursors["p"] >= 3


def test_submit_must_be_async():
    with pytest.raises(TypeError, match="Plain.submit must be async def"):
        class Plain(EventBackend):
            def submit(self, events: list[Record]) -> Any:  # type: ignore[override]
                return []

    assert Pipe.has_pipeline() and not EventBackend.has_pipeline()


def spin(seconds: float) -> None:
    """Keep the loop's thread busy, as validating requests or building messages does."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_a_busy_loop_and_a_deep_backlog_share_the_loop(spool, monkeypatch):
    """Sixteen tasks that always have work stand for ingest at full speed (a request each per
    loop iteration); the worker has a deep backlog, and each record costs its submit 40 us.
    Handing over a fill per iteration would give it 4 ms in every 20; turns give it about half.
    The backlog stays in memory, so the loop is all that is shared."""
    per_record, step, steps = 40e-6, 1e-3, 300
    monkeypatch.setattr(spool_module, "RECENT", 20_000)
    monkeypatch.setattr(spool_module, "RECENT_BYTES", 1 << 30)

    class Costly(Pipe):
        async def submit(self, events: list[Record]) -> list[asyncio.Future[None]]:
            spin(per_record * len(events))
            return await super().submit(events)

    await spool.ensure_cursor("p")
    records = await put(spool, *(record() for _ in range(10_000)))
    backend = Costly(auto=True)
    taken = 0

    async def request() -> None:
        nonlocal taken
        while taken < steps:
            spin(step)
            taken += 1
            await asyncio.sleep(0)

    worker = await started(spool, backend, Policy(min_level=20, timeout=30))
    await eventually(lambda: backend.delivered)  # under way
    base = len(backend.delivered)
    await asyncio.gather(*(request() for _ in range(16)))
    delivered = len(backend.delivered) - base
    await worker.stop(grace=1)
    assert delivered < len(records) - base  # it had work the whole time
    share = delivered * per_record / (delivered * per_record + steps * step)
    assert 0.3 < share < 0.7, f"the worker had {share:.0%} of the loop"
