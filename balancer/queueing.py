"""Requests waiting for a backend of their pool to have room (the pool's queue).

I/O shell (futures and timers). Bounded: past `max_queue` waiters a request is refused at
once (QueueFull); a waiter gives up at its deadline (QueueTimeout); both are 503 with
Retry-After. A request that finishes with a backend of the pool wakes the oldest waiter.
"""

import asyncio
import collections

from balancer.failures import QueueFull, QueueTimeout


class PoolQueue:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def __repr__(self) -> str:
        return f"<PoolQueue {len(self._waiters)} waiting>"

    def __len__(self) -> int:
        return len(self._waiters)

    async def wait(self, max_queue: int, deadline: float) -> None:
        """Until woken (a backend may have room) or the deadline (QueueTimeout)."""
        if len(self._waiters) >= max_queue:
            raise QueueFull(f"{len(self._waiters)} requests already waiting")
        if self.loop.time() >= deadline:
            raise QueueTimeout()
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append(waiter)
        timer = self.loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def _expire(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_exception(QueueTimeout())
