"""The health loops: active checks, and the end of passive ejections.

I/O shell. Two tasks while the balancer runs, each reading the current runtime each round:
- active checks: `GET health.check_path` to every backend every `check_interval` (off at 0).
  Each check opens a fresh connection (TCP or unix socket), so a check never takes a pooled
  keep-alive connection from a request, and passes on a 200 within `check_timeout`. The
  verdicts go through `BackendHealth.observe_check` (pure);
- ejection expiry: every EXPIRY_POLL seconds, `BackendHealth.poll` (pure) brings back the
  backends whose ejection time is over.
Neither logs nor counts: their transitions go to the backend table's `HealthEvents`, the one
place that does (health_events.py).
"""

import asyncio
import contextlib
from collections.abc import Callable

from balancer.balancing.runtime import Runtime
from balancer.config.addresses import Address
from balancer.upstream.backends import BackendTable
from balancer.upstream.health_events import CHECKS, EXPIRY

EXPIRY_POLL = 0.25  # seconds: how late at most an ejected backend comes back


async def check(address: Address, path: str, timeout: float) -> bool:
    """One health check: True for a 200 within the timeout."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            if address.kind == "unix":
                reader, writer = await asyncio.open_unix_connection(address.path)
            else:
                reader, writer = await asyncio.open_connection(address.host, address.port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {address.key}\r\n"
                         "User-Agent: echonext-balancer-health\r\nConnection: close\r\n\r\n"
                         .encode("latin-1"))
            status_line = await reader.readline()
        return status_line.split(b" ", 2)[1:2] == [b"200"]
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class HealthMonitor:
    """Runs the checks and the expiry loop while the balancer runs."""

    def __init__(self, runtime: Callable[[], Runtime], backend_table: BackendTable) -> None:
        self._runtime = runtime
        self.backend_table = backend_table
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()), loop.create_task(self._expire())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _run(self) -> None:
        while True:
            policy = self._runtime().health
            if policy.check_interval <= 0:
                await asyncio.sleep(1.0)  # off; a reload may turn it on
                continue
            await self.check_all()
            await asyncio.sleep(policy.check_interval)

    async def check_all(self) -> None:
        runtime = self._runtime()
        policy = runtime.health
        addresses = sorted(runtime.addresses(), key=lambda a: a.key)
        results = await asyncio.gather(
            *(check(a, policy.check_path, policy.check_timeout) for a in addresses))
        events = self.backend_table.health_events
        now = self.backend_table.loop.time()
        for address, ok in zip(addresses, results, strict=True):
            health = self.backend_table.health(address)
            events.on_transition(address, health.observe_check(ok, policy), CHECKS, health,
                                 policy, now)

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_POLL)
            self.restore_expired(self.backend_table.loop.time())

    def restore_expired(self, now: float) -> None:
        """Bring back the backends whose ejection is over at `now` (with slow start)."""
        policy = self._runtime().health
        events = self.backend_table.health_events
        for address, health in self.backend_table.healths():
            events.on_transition(address, health.poll(now), EXPIRY, health, policy, now)
