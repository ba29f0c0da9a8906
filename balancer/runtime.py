"""One immutable snapshot of what the balancer serves with: config, pools, selectors.

Pure. A reload builds a whole new Runtime and swaps one reference; requests in flight keep
the snapshot they started with. State that must outlive a reload (connections, later
health and learned costs) is keyed by backend address outside the snapshot.
"""

import ipaddress
from dataclasses import dataclass, field

from balancer.addresses import Address
from balancer.config import Config, PoolConfig
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

    def addresses(self) -> set[Address]:
        return {address for pool in self.pools.values() for address in pool.backends}
