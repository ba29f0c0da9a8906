"""The snapshot a request is served with: config, pools (each with its selector), classifier.

Pure. A reload builds a whole new Runtime and swaps one reference; requests in flight keep
the snapshot they started with. The snapshot is immutable but for two things that are not
configuration: each pool's selector state (a round-robin turn) and a cache of which client
addresses are trusted proxies; neither outlives the Runtime (the random source the drawing
policies use is the caller's, shared by successive Runtimes). State that must outlive a
reload is kept outside the snapshot: connections, backend stats and health by backend
address, learned costs by route. DNS discovery changing a name's addresses builds a new Runtime too
(`rediscovered`): same config and generation, the pools' backends being the fixed ones plus
every discovered address. Choosing a backend is `balancer.balancing.selection`'s job;
`choose` here only hands it the snapshot's pool.
"""

import ipaddress

from balancer.balancing.classify import Classifier, Decision
from balancer.balancing.discovery import Discovered
from balancer.balancing.health import may_eject
from balancer.balancing.selection.algorithms import RandomSource
from balancer.balancing.selection.choose import choose
from balancer.balancing.selection.pool import Pool
from balancer.balancing.selection.selectors import BackendView, selector_for
from balancer.balancing.weights import WeightPolicy, effective_weights
from balancer.config.addresses import Address
from balancer.config.model import Config, PoolConfig
from balancer.config.routing import CLASSES, RequestClass


class Runtime:
    """Config plus the objects built from it, for one config generation."""

    def __init__(self, config: Config, generation: int, rng: RandomSource,
                 discovered: Discovered | None = None) -> None:
        self.config = config
        self.generation = generation
        self.weight_policy = WeightPolicy()  # the defaults: not configurable
        self.health = config.health
        self._rng = rng
        self.pools = {pool.name: Pool(pool, selector_for(pool.policy, rng, self.weight_policy),
                                      discovered)
                      for pool in config.pools}
        for pool in self.pools.values():
            pool.spill = tuple(self.pools[name] for name in pool.config.spill_to)
        self.default_pool = self.pools[config.default_pool.name]
        self.classifier = Classifier(config.routing) if config.routing is not None else None
        self.explain = bool(config.routing and config.routing.explain)
        self._class_pools: dict[RequestClass | None, Pool] = {None: self.default_pool}
        if config.routing is not None:
            for request_class in CLASSES:
                pool_name = config.routing.pool_for(request_class)
                self._class_pools[request_class] = self.pools[pool_name]
        self._trusted = config.trusted_proxies
        self._trust_cache: dict[str, bool] = {}  # client ip -> trusted, at most 4096 entries

    def __repr__(self) -> str:
        return (f"<Runtime generation={self.generation} digest={self.config.digest} "
                f"pools={list(self.pools)}>")

    def rediscovered(self, discovered: Discovered) -> "Runtime":
        """The same config and generation with discovered names' new addresses."""
        return Runtime(self.config, self.generation, self._rng, discovered)

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

    def pool_for_decision(self, decision: Decision | None) -> Pool:
        """The rule's own pool if it names one, else its class's pool."""
        if decision is None:
            return self.default_pool
        if decision.pool is not None:
            return self.pools.get(decision.pool, self.default_pool)
        return self._class_pools.get(decision.request_class, self.default_pool)

    # (pool, backend, spilled) for a request to `pool`, a pool of this snapshot, or None:
    # `balancer.balancing.selection.choose.choose`, which says how (bound here, not wrapped:
    # one call less on every request)
    choose = staticmethod(choose)

    def weights(self, pool: Pool, view: BackendView, now: float) -> list[float]:
        """The effective weight of each backend of the pool (for metrics and status)."""
        if not pool.backends:  # discovered names not resolved yet
            return []
        return effective_weights([view.stats(a) for a in pool.backends],
                                 [pool.static_weight[a] for a in pool.backends],
                                 now, self.weight_policy,
                                 reports=pool.selector.reports_in_weights)

    def may_eject(self, pool: Pool, view: BackendView, now: float) -> bool:
        """Whether one more backend of the pool may be ejected (`max_ejected_share`)."""
        return may_eject([view.health(a) for a in pool.backends], now, self.health)

    def addresses(self) -> set[Address]:
        return {address for pool in self.pools.values() for address in pool.backends}

    def backend_pools(self) -> dict[Address, PoolConfig]:
        """Every backend with the config of (the first) pool it is in: its connection limits."""
        wanted: dict[Address, PoolConfig] = {}
        for pool in self.pools.values():
            for address in pool.backends:
                wanted.setdefault(address, pool.config)
        return wanted
