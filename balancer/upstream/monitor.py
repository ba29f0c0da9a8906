"""Active health checks: `GET health.check_path` to every backend every `check_interval`.

I/O shell. Each check opens a fresh connection (TCP or unix socket), so a check never takes
a pooled keep-alive connection from a request, and passes on a 200 within `check_timeout`.
The verdicts go through `BackendHealth.observe_check` (pure); this module logs transitions,
counts them, and restarts slow start for a backend that comes back.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable

from balancer.balancing.health import EJECTED, RESTORED
from balancer.balancing.runtime import Runtime
from balancer.config.addresses import Address
from balancer.metrics import Metrics
from balancer.upstream.backends import BackendTable

log = logging.getLogger("balancer.health")


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
    """Runs the checks while the balancer runs; reads the current runtime each round."""

    def __init__(self, runtime: Callable[[], Runtime], backend_table: BackendTable,
                 metrics: Metrics) -> None:
        self._runtime = runtime
        self.backend_table = backend_table
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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
        for address, ok in zip(addresses, results, strict=True):
            transition = self.backend_table.health(address).observe_check(ok, policy)
            if transition is EJECTED:
                self.metrics.ejections[address.key] += 1
                log.warning("backend %s down: %d health checks failed", address, policy.fall)
            elif transition is RESTORED:
                self.backend_table.stats(address).restart(self.backend_table.loop.time())
                log.info("backend %s up: %d health checks passed", address, policy.rise)
