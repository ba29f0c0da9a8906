"""Waiting for room: a bounded queue of waiters with deadlines, oldest woken first.

I/O shell (futures and timers). Used twice: a pool's requests waiting for a backend under its
in-flight cap (QueueFull / QueueTimeout: 503 with Retry-After), and a backend's `Connections`
waiting for room under `max_connections` (PoolExhausted: 503).
"""

import asyncio
import collections
from collections.abc import Callable

from balancer.http.errors import ProxyError, QueueFull, QueueTimeout


class WaitQueue:
    """Waiters woken one at a time, oldest first; each gives up at its deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 timeout_error: Callable[[], ProxyError] = QueueTimeout) -> None:
        self.loop = loop
        self._timeout_error = timeout_error
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def __repr__(self) -> str:
        return f"<WaitQueue {len(self._waiters)} waiting>"

    def __len__(self) -> int:
        return len(self._waiters)

    async def wait(self, deadline: float, limit: int | None = None) -> None:
        """Until woken or the deadline (timeout_error); QueueFull past `limit` waiters."""
        if limit is not None and len(self._waiters) >= limit:
            raise QueueFull(f"{len(self._waiters)} requests already waiting")
        if self.loop.time() >= deadline:
            raise self._timeout_error()
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append(waiter)
        timer = self.loop.call_at(deadline, self._expire, waiter)
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

    def fail_all(self, error: ProxyError) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(error)

    def _expire(self, waiter: "asyncio.Future[None]") -> None:
        if not waiter.done():
            waiter.set_exception(self._timeout_error())
