"""The message dispatcher's pipeline through a real worker and spool, against the real RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from dispatchd.dispatchers.message import MessageDispatcher, MessageOptions
from dispatchd.spool import Spool
from dispatchd.workers import Policy, Worker

from .support.amqp import RABBIT_URL, TcpProxy, bound_queue, require_service
from .support.backends import put
from .support.records import record

QUICK = Policy(min_level=10, batch_size=100, backoff_initial=0.01, backoff_max=0.05, timeout=10)


@pytest.fixture
async def spool(tmp_path):
    s = Spool(tmp_path / "spool.db")
    await s.open()
    await s.ensure_cursor("message")
    yield s
    await s.close()


def in_order_per_key(got: list[aio_pika.abc.AbstractIncomingMessage], ids: list[str]) -> None:
    """Every id arrived, and their first arrivals keep the spool's order, per routing key too."""
    seen = [m.message_id for m in got]
    assert set(ids) <= set(seen), f"{len(set(ids) - set(seen))} ids never arrived"
    assert list(dict.fromkeys(seen)) == ids
    key = {m.message_id: m.routing_key for m in got}
    for routing_key in set(key.values()):
        first = [i for i in dict.fromkeys(seen) if key[i] == routing_key]
        assert first == [i for i in ids if key[i] == routing_key]


async def test_a_full_window_publishes_in_order_on_one_connection(spool):
    async with bound_queue() as bound:
        dispatcher = MessageDispatcher("message", MessageOptions(
            exchange=bound.exchange, routing_key="{priority}", max_unconfirmed=50))
        records = await put(spool, *(record(level=("INFO", "WARNING")[i % 3 == 0])
                                     for i in range(1000)))
        worker = Worker("message", dispatcher, spool, QUICK)
        await worker.run(until_idle=True)  # closes the dispatcher when it is done
        got = await bound.drain(1000)
    in_order_per_key(got, [r.id for r in records])
    report = dispatcher.report()
    assert len(got) == 1000 and report["unconfirmed_peak"] == 50  # the window filled, and held
    assert (report["connects"], report["stalls"], worker.stats.failed) == (1, 0, 0)
    assert spool.cursors["message"] == 1000


@contextlib.asynccontextmanager
async def split_exchange() -> AsyncIterator[tuple[str, aio_pika.abc.AbstractQueue]]:
    """An exchange whose "info" messages go to a queue, and whose "error" messages the broker
    nacks: their queue is full (length 0) and rejects publishes."""
    require_service("RabbitMQ", "127.0.0.1", 5672)
    name = f"dispatchd-test-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(RABBIT_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC)
        ok = await channel.declare_queue("", exclusive=True)
        await ok.bind(exchange, "info")
        full = await channel.declare_queue(
            "", exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
        await full.bind(exchange, "error")
        yield name, ok
        await exchange.delete()
    finally:
        await connection.close()


async def test_a_nack_mid_window_retries_just_what_was_nacked(spool):
    async with split_exchange() as (exchange, ok):
        dispatcher = MessageDispatcher("message", MessageOptions(
            exchange=exchange, routing_key="{priority}", max_unconfirmed=100))
        levels = ["ERROR" if i in (10, 11, 40) else "INFO" for i in range(60)]
        records = await put(spool, *(record(level=level) for level in levels))
        policy = Policy(min_level=10, backoff_initial=0.01, backoff_max=0.02, max_attempts=2)
        worker = Worker("message", dispatcher, spool, policy)
        await worker.run(until_idle=True)
        got = []
        while (message := await ok.get(no_ack=True, fail=False)) is not None:
            got.append(message.message_id)
    infos = [r.id for r in records if r.level == 20]
    assert got == infos  # each exactly once, in order: a nack re-sent nothing else
    letters = await spool.dead_letters("message")
    assert [(d.row.seq, d.attempts) for d in letters] == [(11, 2), (12, 2), (41, 2)]
    assert {d.error for d in letters} == {"RuntimeError: the broker nacked the message"}
    assert (worker.stats.delivered, spool.cursors["message"]) == (57, 60)
    assert dispatcher.report()["connects"] == 1  # a nack is the broker's answer, not an outage


async def test_a_cut_with_a_full_window_loses_nothing_and_keeps_first_arrivals_in_order(spool):
    async with bound_queue() as bound:
        proxy = TcpProxy()
        await proxy.start()
        dispatcher = MessageDispatcher("message", MessageOptions(
            url=proxy.url, exchange=bound.exchange, routing_key="{priority}",
            max_unconfirmed=200, connect_timeout=2))
        records = await put(spool, *(record(level=("INFO", "ERROR")[i % 4 == 0])
                                     for i in range(1000)))
        worker = Worker("message", dispatcher, spool, QUICK)
        try:
            await eventually_confirmed(worker, 300)  # a part goes through first
            proxy.flowing.clear()  # the rest waits in the window: no confirm comes back
            await eventually(lambda: dispatcher.report()["unconfirmed"] == 200)
            await proxy.cut()
            await eventually(lambda: worker.state == "retrying")
            proxy.flowing.set()
            await proxy.restore()
            assert await worker.wait_for_cursor(1000, timeout=60)
        finally:
            await worker.stop(grace=5)
            await proxy.close()
        got = await bound.drain({r.id for r in records})
    in_order_per_key(got, [r.id for r in records])
    assert dispatcher.report()["connects"] == 2 and worker.stats.dead_lettered == 0
    assert (worker.stats.last_error or "").startswith("unavailable:")


async def test_a_busy_loop_does_not_look_like_a_stalled_broker(spool):
    """Confirms come late on a loop that spends 20 ms per turn elsewhere, but they come."""
    done = asyncio.Event()

    async def busy() -> None:
        while not done.is_set():
            end = time.perf_counter() + 0.02
            while time.perf_counter() < end:
                pass
            await asyncio.sleep(0)

    async with bound_queue() as bound:
        dispatcher = MessageDispatcher("message", MessageOptions(
            exchange=bound.exchange, confirm_timeout=1.0))
        records = await put(spool, *(record() for _ in range(2000)))
        worker = Worker("message", dispatcher, spool, QUICK)
        burner = asyncio.create_task(busy())
        try:
            await worker.run(until_idle=True)
        finally:
            done.set()
            await burner
        got = await bound.drain(2000)
    in_order_per_key(got, [r.id for r in records])
    report = dispatcher.report()
    assert (report["stalls"], report["connects"], worker.stats.failed) == (0, 1, 0)


async def eventually_confirmed(worker: Worker, seq: int) -> None:
    if worker._task is None:
        worker.start()
    assert await worker.wait_for_cursor(seq, timeout=30)


async def eventually(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_aiormqs_limits_are_lifted_on_the_publishing_channel():
    """dispatchers/confirms.py works around aiormq through its internals: an aiormq that moved
    them would publish slowly, silently. Here it shows."""
    async with bound_queue() as bound:
        dispatcher = MessageDispatcher("message", MessageOptions(exchange=bound.exchange))
        try:
            channel = (await dispatcher._connect())._channel
            assert channel.connection.write_queue.maxsize == 0 and channel.frames.maxsize == 0
            assert "_on_confirm_frame" in vars(channel)
        finally:
            await dispatcher.close()
