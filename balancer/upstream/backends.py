"""The backends the balancer knows, by address: their connections, stats and health,
kept across reloads.

I/O shell: owns each backend's `Connections` (connections.py), its `BackendStats` (weights,
errors, latency) and `BackendHealth`, the `HealthEvents` that acts on its health
transitions, and a periodic sweep that closes idle connections past their expiry. Rules:
- A reload (or DNS discovery) calls `configure` with the wanted addresses: kept backends
  carry over with their warm connections, stats and health, and take the new limits; the
  connections of removed ones are retired (their requests in flight finish, then they
  close) and their stats and health are dropped.
- A retired backend is not recorded again: a request chosen on an older runtime still gets
  connections and stats, but they are not kept.
"""

import asyncio
import contextlib
from collections.abc import Callable, Mapping

from balancer.balancing.health import BackendHealth
from balancer.balancing.weights import BackendStats
from balancer.config.addresses import Address
from balancer.config.model import PoolConfig, Timeouts
from balancer.metrics import Metrics
from balancer.upstream.connections import Connections
from balancer.upstream.health_events import HealthEvents


class BackendTable:
    """Per backend address: a Connections, BackendStats and BackendHealth."""

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: Metrics,
                 on_connect: Callable[[Address, float], None] | None = None) -> None:
        self.loop = loop
        self.health_events = HealthEvents(metrics, self.stats)
        self._on_connect = on_connect
        self._conns: dict[Address, Connections] = {}
        self._stats: dict[Address, BackendStats] = {}
        self._health: dict[Address, BackendHealth] = {}
        self._retired: set[Address] = set()  # left the config: not recorded any more
        self._sweeper: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<BackendTable {len(self._conns)} backends>"

    def get(self, address: Address, pool: PoolConfig, timeouts: Timeouts) -> Connections:
        conns = self._conns.get(address)
        if conns is None:
            conns = self._conns[address] = Connections(
                self.loop,
                address,
                max_connections=pool.max_connections,
                max_idle=pool.max_idle,
                idle_timeout=timeouts.upstream_idle,
                connect_timeout=timeouts.connect,
                max_tunnels=pool.max_tunnels,
            )
            if self._on_connect is not None:
                callback = self._on_connect
                conns.on_connect = lambda seconds: callback(address, seconds)
            if address in self._retired:  # chosen on a runtime from before its retirement:
                del self._conns[address]  # this request's connection closes when released
                conns.retire()
        return conns

    def configure(self, wanted: Mapping[Address, PoolConfig], timeouts: Timeouts) -> None:
        """Apply new limits to kept backends and retire the connections of those no longer listed
        (their requests in flight finish; what they report afterwards is not kept). Called
        by a reload and by DNS discovery when a name's addresses change."""
        self._retired = (self._retired | set(self._conns) | set(self._stats)) - set(wanted)
        for address in self._retired:
            self._stats.pop(address, None)
            self._health.pop(address, None)
        for address in list(self._conns):
            conns = self._conns[address]
            if address not in wanted:
                del self._conns[address]
                conns.retire()
                continue
            conns.max_connections = wanted[address].max_connections
            conns.max_idle = wanted[address].max_idle
            conns.max_tunnels = wanted[address].max_tunnels
            conns.idle_timeout = timeouts.upstream_idle
            conns.connect_timeout = timeouts.connect

    def stats(self, address: Address) -> BackendStats:
        """What is known of a backend (weights, errors), kept across reloads."""
        stats = self._stats.get(address)
        if stats is None:
            stats = BackendStats(self.loop.time())
            if address not in self._retired:
                self._stats[address] = stats
        return stats

    def health(self, address: Address) -> BackendHealth:
        """A backend's passive and active health, kept across reloads."""
        health = self._health.get(address)
        if health is None:
            health = BackendHealth()
            if address not in self._retired:
                self._health[address] = health
        return health

    def healths(self) -> list[tuple[Address, BackendHealth]]:
        """Every recorded backend's health (for the ejection-expiry loop)."""
        return list(self._health.items())

    def inflight(self, address: Address) -> int:
        conns = self._conns.get(address)
        return conns.inflight if conns is not None else 0

    def connections(self) -> dict[Address, Connections]:
        return dict(self._conns)

    def start(self, interval: float = 5.0) -> None:
        """Sweep idle connections past their expiry every `interval` seconds."""
        self._sweeper = self.loop.create_task(self._sweep(interval))

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for conns in self._conns.values():
            conns.close()
        self._conns.clear()

    async def _sweep(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for conns in list(self._conns.values()):
                conns.sweep()
