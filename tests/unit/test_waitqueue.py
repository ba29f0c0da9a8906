"""`WaitQueue` on a hand-driven clock (tests/unit/fake_io.py): oldest first, each waiter gives
up at its deadline, a bound on how many wait."""

import asyncio
from collections.abc import Callable
from typing import cast

import pytest

from balancer.http.errors import PoolExhausted, ProxyError, QueueFull, QueueTimeout
from balancer.upstream.waitqueue import WaitQueue
from tests.unit.fake_io import FakeLoop, settle


def queue_on(loop: FakeLoop, timeout_error: Callable[[], ProxyError] = QueueTimeout) -> WaitQueue:
    return WaitQueue(cast(asyncio.AbstractEventLoop, loop), timeout_error)


async def waiting(queue: WaitQueue, deadline: float, limit: int | None = None
                  ) -> "asyncio.Task[None]":
    task = asyncio.ensure_future(queue.wait(deadline, limit))
    await settle()
    return task


async def test_waiters_are_woken_one_at_a_time_oldest_first() -> None:
    loop = FakeLoop()
    queue = queue_on(loop)
    first, second, third = [await waiting(queue, loop.now + 10) for _ in range(3)]
    queue.wake_one()
    await settle()
    assert [t.done() for t in (first, second, third)] == [True, False, False]
    queue.wake_one()
    await settle()
    assert [t.done() for t in (first, second, third)] == [True, True, False]
    assert len(queue) == 1
    queue.wake_one()
    await settle()
    assert third.done() and len(queue) == 0 and loop.pending() == []


async def test_a_waiter_gives_up_at_its_deadline_and_leaves_the_queue() -> None:
    loop = FakeLoop()
    queue = queue_on(loop)
    task = await waiting(queue, loop.now + 2.0)
    loop.advance(1.9)
    await settle()
    assert not task.done()
    loop.advance(0.1)
    with pytest.raises(QueueTimeout):
        await asyncio.wait_for(task, 5)
    assert len(queue) == 0


async def test_a_deadline_already_past_fails_at_once_with_the_queue_s_own_error() -> None:
    loop = FakeLoop()
    queue = queue_on(loop, timeout_error=PoolExhausted)
    with pytest.raises(PoolExhausted):
        await queue.wait(loop.now)
    assert len(queue) == 0


async def test_past_the_limit_a_waiter_is_refused_not_queued() -> None:
    loop = FakeLoop()
    queue = queue_on(loop)
    tasks = [await waiting(queue, loop.now + 10, limit=2) for _ in range(2)]
    with pytest.raises(QueueFull, match="2 requests already waiting"):
        await queue.wait(loop.now + 10, limit=2)
    assert len(queue) == 2
    queue.fail_all(QueueTimeout())
    for task in tasks:
        with pytest.raises(QueueTimeout):
            await task


async def test_a_wake_skips_a_waiter_whose_deadline_just_passed() -> None:
    loop = FakeLoop()
    queue = queue_on(loop)
    late = await waiting(queue, loop.now + 1.0)
    on_time = await waiting(queue, loop.now + 10.0)
    loop.advance(1.0)  # the first expired; its task has not run yet, it is still queued
    queue.wake_one()  # the room goes to the next, not to the one that gave up
    await settle()
    assert on_time.done() and on_time.exception() is None
    with pytest.raises(QueueTimeout):
        await late


async def test_a_cancelled_waiter_leaves_the_queue_and_its_timer() -> None:
    loop = FakeLoop()
    queue = queue_on(loop)
    task = await waiting(queue, loop.now + 10.0)
    task.cancel()
    await settle()
    assert len(queue) == 0 and loop.pending() == []
