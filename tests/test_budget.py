"""ByteBudget: bytes in flight bounded, first come first served, bounded waits, no leaks."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from dispatchd.budget import ByteBudget
from dispatchd.errors import Busy


async def settle() -> None:
    """Let every runnable task take its turn (no timer involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def holding(budget: ByteBudget, size: int, admitted: list[int], release: asyncio.Event) -> None:
    async with budget.hold(size):
        admitted.append(size)
        await release.wait()


def start(
    budget: ByteBudget, size: int, admitted: list[int]
) -> tuple[asyncio.Task[None], asyncio.Event]:
    release = asyncio.Event()
    return asyncio.create_task(holding(budget, size, admitted, release)), release


async def test_admits_within_the_limit_and_releases_after_the_block() -> None:
    budget = ByteBudget(100, wait=1.0)
    async with budget.hold(60):
        async with budget.hold(40):
            assert (budget.held, budget.holders, budget.waiting) == (100, 2, 0)
        assert budget.held == 60
    assert (budget.held, budget.holders, budget.waiting) == (0, 0, 0)


async def test_an_error_in_the_block_releases_the_bytes() -> None:
    budget = ByteBudget(100, wait=1.0)
    with pytest.raises(RuntimeError):
        async with budget.hold(70):
            raise RuntimeError("handler failed")
    assert (budget.held, budget.holders) == (0, 0)


async def test_waiters_are_admitted_in_arrival_order_without_barging() -> None:
    budget = ByteBudget(100, wait=5.0)
    admitted: list[int] = []
    first, release_first = start(budget, 60, admitted)
    await settle()
    big, release_big = start(budget, 50, admitted)  # does not fit beside 60
    await settle()
    small, release_small = start(budget, 10, admitted)  # would fit, but arrived after 50
    await settle()
    assert admitted == [60] and budget.waiting == 2

    release_first.set()
    await settle()
    assert admitted == [60, 50, 10]  # both fit now, in order
    assert (budget.held, budget.waiting) == (60, 0)
    release_big.set()
    release_small.set()
    await asyncio.gather(first, big, small)
    assert (budget.held, budget.holders) == (0, 0)


async def test_one_release_admits_every_waiter_that_fits() -> None:
    budget = ByteBudget(100, wait=5.0)
    admitted: list[int] = []
    first, release_first = start(budget, 100, admitted)
    await settle()
    others = [start(budget, 30, admitted) for _ in range(4)]
    await settle()
    assert budget.waiting == 4
    release_first.set()
    await settle()
    assert admitted == [100, 30, 30, 30] and budget.waiting == 1 and budget.held == 90
    for _, release in others:
        release.set()
    await asyncio.gather(first, *(task for task, _ in others))
    assert admitted == [100, 30, 30, 30, 30] and budget.held == 0


async def test_a_request_larger_than_the_limit_is_admitted_alone() -> None:
    budget = ByteBudget(100, wait=5.0)
    admitted: list[int] = []
    async with budget.hold(500):  # nothing held: admitted at once
        assert budget.held == 500
        small, release_small = start(budget, 1, admitted)
        await settle()
        assert admitted == [] and budget.waiting == 1  # nothing beside it
    await settle()
    assert admitted == [1]
    release_small.set()
    await small

    holder, release_holder = start(budget, 10, admitted)
    await settle()
    huge, release_huge = start(budget, 500, admitted)
    await settle()
    assert budget.waiting == 1  # waits until nothing else is held
    release_holder.set()
    await settle()
    assert admitted[-1] == 500 and budget.held == 500
    release_huge.set()
    await asyncio.gather(holder, huge)
    assert budget.held == 0


async def test_a_wait_that_runs_out_raises_busy_and_leaves_nothing_behind() -> None:
    budget = ByteBudget(100, wait=0.05)
    admitted: list[int] = []
    async with budget.hold(100):
        with pytest.raises(Busy, match="max_inflight_bytes"):
            async with budget.hold(1):
                admitted.append(1)
        assert (budget.held, budget.holders, budget.waiting) == (100, 1, 0)
    assert admitted == [] and budget.held == 0
    async with budget.hold(100):  # the queue is not wedged
        assert budget.held == 100


async def test_a_head_that_gives_up_lets_the_smaller_ones_behind_it_in() -> None:
    budget = ByteBudget(100, wait=5.0)
    admitted: list[int] = []
    first, release_first = start(budget, 60, admitted)
    await settle()
    big = asyncio.create_task(holding(budget, 80, admitted, asyncio.Event()))
    await settle()
    small, release_small = start(budget, 30, admitted)
    await settle()
    assert admitted == [60] and budget.waiting == 2

    big.cancel()
    await settle()
    assert big.cancelled()
    assert admitted == [60, 30] and (budget.held, budget.waiting) == (90, 0)
    release_first.set()
    release_small.set()
    await asyncio.gather(first, small)
    assert (budget.held, budget.holders, budget.waiting) == (0, 0, 0)


async def test_cancelled_waiters_leak_nothing() -> None:
    budget = ByteBudget(100, wait=5.0)
    admitted: list[int] = []
    first, release_first = start(budget, 100, admitted)
    await settle()
    waiters = [asyncio.create_task(holding(budget, 40, admitted, asyncio.Event())) for _ in range(10)]
    await settle()
    assert budget.waiting == 10
    for task in waiters:
        task.cancel()
    await settle()
    assert budget.waiting == 0 and budget.held == 100
    release_first.set()
    await first
    assert (budget.held, budget.holders, budget.waiting) == (0, 0, 0)
    assert admitted == [100]
    async with budget.hold(100):
        pass


async def test_cancelled_in_the_turn_it_was_admitted_hands_the_bytes_on() -> None:
    budget = ByteBudget(100, wait=5.0)
    admitted: list[int] = []
    first, release_first = start(budget, 100, admitted)
    await settle()
    racer = asyncio.create_task(holding(budget, 100, admitted, asyncio.Event()))
    await settle()
    after, release_after = start(budget, 100, admitted)
    await settle()

    release_first.set()
    await asyncio.sleep(0)  # first leaves its block and grants racer, which has not resumed yet
    racer.cancel()
    await settle()
    assert racer.cancelled()
    assert admitted == [100, 100]  # first, then after: racer never ran its block
    assert (budget.held, budget.holders, budget.waiting) == (100, 1, 0)
    release_after.set()
    await asyncio.gather(first, after)
    assert (budget.held, budget.holders) == (0, 0)


async def test_cancelled_while_holding_releases() -> None:
    budget = ByteBudget(100, wait=5.0)
    task = asyncio.create_task(holding(budget, 70, [], asyncio.Event()))
    await settle()
    assert budget.held == 70
    task.cancel()
    await settle()
    assert (budget.held, budget.holders) == (0, 0)


async def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        ByteBudget(0, wait=1.0)
    with pytest.raises(ValueError):
        ByteBudget(10, wait=-1.0)
    budget = ByteBudget(10, wait=1.0)
    with pytest.raises(ValueError):
        async with budget.hold(-1):
            pass
    assert budget.held == 0


def test_the_module_does_not_import_aiohttp() -> None:
    code = "import sys, dispatchd.budget; assert 'aiohttp' not in sys.modules, 'aiohttp imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
