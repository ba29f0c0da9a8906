"""One immutable snapshot of what the balancer serves with: config, pools, selectors.

Pure. A reload builds a whole new Runtime and swaps one reference; requests in flight keep
the snapshot they started with. State that must outlive a reload (connections, later
health and learned costs) is keyed by backend address outside the snapshot.
"""

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from balancer.addresses import Address
from balancer.classify import Classifier
from balancer.config import Config, PoolConfig
from balancer.routing_config import CLASSES, RequestClass
from balancer.selection import RoundRobin


@dataclass(slots=True)
class Pool:
    """The backends of one pool and how to choose among them."""

    config: PoolConfig
    selector: RoundRobin = field(default_factory=RoundRobin)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def backends(self) -> tuple[Address, ...]:
        return self.config.backends

    def __repr__(self) -> str:
        return f"<Pool {self.name} [{len(self.backends)} backends]>"


class Runtime:
    """Config plus the objects built from it, for one config generation."""

    def __init__(self, config: Config, generation: int) -> None:
        self.config = config
        self.generation = generation
        self.pools = {pool.name: Pool(pool) for pool in config.pools}
        self.default_pool = self.pools[config.default_pool.name]
        self.routing = config.routing
        self.classifier = Classifier(config.routing) if config.routing is not None else None
        self.explain = bool(config.routing and config.routing.explain)
        self._class_pools: dict[RequestClass | None, Pool] = {None: self.default_pool}
        if config.routing is not None:
            for request_class in CLASSES:
                pool_name = config.routing.pool_for(request_class)
                self._class_pools[request_class] = self.pools[pool_name]
        self._trusted = config.trusted_proxies
        self._trust_cache: dict[str, bool] = {}

    def __repr__(self) -> str:
        return (f"<Runtime generation={self.generation} digest={self.config.digest} "
                f"pools={list(self.pools)}>")

    def is_trusted(self, client_ip: str) -> bool:
        """Whether a client's own X-Forwarded-* headers are believed (trusted_proxies)."""
        if not self._trusted:
            return False
        known = self._trust_cache.get(client_ip)
        if known is None:
            try:
                ip = ipaddress.ip_address(client_ip)
                known = any(ip in network for network in self._trusted)
            except ValueError:
                known = False
            if len(self._trust_cache) < 4096:
                self._trust_cache[client_ip] = known
        return known

    def pool_for(self, request_class: RequestClass | None) -> Pool:
        return self._class_pools.get(request_class, self.default_pool)

    def choose(self, pool: Pool, inflight: Callable[[Address], int]) -> tuple[Pool, Address, bool]:
        """(pool, backend, spilled): the pool's next backend under its in-flight cap; when
        every one is at its cap, the first `spill_to` pool that has room; else the pool's
        next backend anyway (it queues there)."""
        address = pool.selector.select_below(pool.backends, inflight, pool.config.inflight_cap)
        if address is not None:
            return pool, address, False
        for name in pool.config.spill_to:
            other = self.pools[name]
            address = other.selector.select_below(other.backends, inflight,
                                                  other.config.inflight_cap)
            if address is not None:
                return other, address, True
        return pool, pool.selector.select(pool.backends), False

    def addresses(self) -> set[Address]:
        return {address for pool in self.pools.values() for address in pool.backends}
