"""One immutable snapshot of what the balancer serves with: config, pools, selectors.

Pure. A reload builds a whole new Runtime and swaps one reference; requests in flight keep
the snapshot they started with. State that must outlive a reload (connections, later
health and learned costs) is keyed by backend address outside the snapshot. DNS discovery
changing a name's addresses builds a new Runtime too (`rediscovered`): same config and
generation, the pools' backends being the fixed ones plus every discovered address.
"""

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from balancer.balancing.classify import Classifier, Decision
from balancer.balancing.health import BackendHealth, available, may_eject
from balancer.balancing.latency import predicted_service
from balancer.balancing.selection import LeastLatency, PowerOfTwoChoices, RandomSource, RoundRobin
from balancer.balancing.weights import (
    BackendStats,
    WeightPolicy,
    effective_weights,
    ramp_progress,
    slow_start_factor,
)
from balancer.config.addresses import Address
from balancer.config.model import Config, PoolConfig
from balancer.config.routing import CLASSES, RequestClass


class BackendView(Protocol):
    """What the runtime may ask of the live backends (the I/O shell's BackendTable)."""

    def inflight(self, address: Address) -> int: ...
    def stats(self, address: Address) -> BackendStats: ...
    def health(self, address: Address) -> BackendHealth: ...


Discovered = Mapping[str, tuple[Address, ...]]  # `name:port` -> its addresses (resolved)


@dataclass(slots=True)
class Pool:
    """The backends of one pool (fixed, then discovered) and how to choose among them."""

    config: PoolConfig
    least_request: PowerOfTwoChoices
    least_latency: LeastLatency
    discovered: Discovered = field(default_factory=dict)
    selector: RoundRobin = field(default_factory=RoundRobin)
    static_weight: dict[Address, float] = field(default_factory=dict)
    backends: tuple[Address, ...] = ()
    unresolved: tuple[str, ...] = ()  # discovered names with no address yet

    def __post_init__(self) -> None:
        weights = {address: self.config.weight_of(i)
                   for i, address in enumerate(self.config.backends)}
        unresolved = []
        for target in self.config.discover:
            addresses = self.discovered.get(target.key)
            if not addresses:
                unresolved.append(target.key)
                continue
            for address in addresses:
                weights.setdefault(address, target.weight)  # a fixed entry keeps its weight
        self.static_weight = weights
        self.backends = tuple(weights)
        self.unresolved = tuple(unresolved)

    @property
    def name(self) -> str:
        return self.config.name

    def __repr__(self) -> str:
        return f"<Pool {self.name} [{len(self.backends)} backends]>"


class Runtime:
    """Config plus the objects built from it, for one config generation."""

    def __init__(self, config: Config, generation: int, rng: RandomSource,
                 weight_policy: WeightPolicy | None = None, discovered: Discovered | None = None
                 ) -> None:
        self.config = config
        self.generation = generation
        self.weight_policy = weight_policy or WeightPolicy()
        self.health = config.health
        self._rng = rng
        self.discovered: Discovered = dict(discovered or {})
        self.pools = {pool.name: Pool(pool, PowerOfTwoChoices(rng),
                                      LeastLatency(rng, self.weight_policy.probes,
                                                   self.weight_policy.latency_tolerance),
                                      self.discovered)
                      for pool in config.pools}
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

    def rediscovered(self, discovered: Discovered) -> "Runtime":
        """The same config and generation with discovered names' new addresses."""
        return Runtime(self.config, self.generation, self._rng, self.weight_policy, discovered)

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

    def pool_for_decision(self, decision: Decision | None) -> Pool:
        """The rule's own pool if it names one, else its class's pool."""
        if decision is None:
            return self.default_pool
        if decision.pool is not None:
            return self.pools.get(decision.pool, self.default_pool)
        return self._class_pools.get(decision.request_class, self.default_pool)

    def choose(
        self, pool: Pool, view: BackendView, now: float, exclude: Sequence[Address] = (),
        over_cap: bool = True, request_class: str | None = None,
    ) -> tuple[Pool, Address, bool] | None:
        """(pool, backend, spilled): a backend of the pool under its in-flight cap, by the
        pool's policy, among those not ejected and not in `exclude` (backends a retry has
        already tried); when every one is at its cap, one of the first `spill_to` pool with
        room; else (with `over_cap`) a backend of the pool anyway: it queues there.
        None: nothing left to try, or (without `over_cap`) nothing has room.
        `request_class` picks the latency estimates least_latency compares."""
        address = self._pick(pool, view, now, pool.config.inflight_cap, exclude, request_class)
        if address is not None:
            return pool, address, False
        for name in pool.config.spill_to:
            other = self.pools[name]
            address = self._pick(other, view, now, other.config.inflight_cap, exclude,
                                 request_class)
            if address is not None:
                return other, address, True
        if not over_cap:
            return None
        address = self._pick(pool, view, now, None, exclude, request_class)
        return (pool, address, False) if address is not None else None

    def _pick(self, pool: Pool, view: BackendView, now: float, cap: int | None,
              exclude: Sequence[Address], request_class: str | None = None) -> Address | None:
        backends: Sequence[Address] = pool.backends
        if exclude:
            backends = [a for a in backends if a not in exclude]
            if not backends:
                return None
        backends = available(backends, view.health, now)
        inflight = view.inflight
        if pool.config.policy == "round_robin":
            if cap is None:
                return pool.selector.select(backends)
            return pool.selector.select_below(backends, inflight, cap)
        if len(backends) == 1:
            return backends[0] if cap is None or inflight(backends[0]) < cap else None
        candidates = [a for a in backends if cap is None or inflight(a) < cap]
        if not candidates:
            return None
        if pool.config.policy == "least_request":  # in flight only: every weight equal
            return pool.least_request.select(candidates, [1.0] * len(candidates), inflight)
        static = pool.static_weight
        if pool.config.policy == "least_latency":
            return self._least_latency(pool, view, now, candidates, cap is None, request_class)
        weights = effective_weights([view.stats(a) for a in candidates],
                                    [static[a] for a in candidates], now, self.weight_policy)
        return pool.least_request.select(candidates, weights, inflight)

    def _least_latency(self, pool: Pool, view: BackendView, now: float,
                       candidates: Sequence[Address], hot: bool,
                       request_class: str | None) -> Address:
        weight_policy = self.weight_policy
        stats = [view.stats(a) for a in candidates]
        static = pool.static_weight
        # slow start once, as the chance to stay a probe (in the weights too, it would
        # square: a restarted backend drawn last and kept rarely, ~1% at first)
        weights = effective_weights(stats, [static[a] for a in candidates], now, weight_policy,
                                    reports=False, slow_start=False)
        ramp = [slow_start_factor(now - s.added_at, weight_policy) for s in stats]
        most = max(ramp)  # relative: backends that all started together ramp up as one
        scale = [factor / most for factor in ramp]
        rif = [s.rif.rif(view.inflight(a), now, weight_policy.rif_ttl)
               for s, a in zip(stats, candidates, strict=True)]
        # a backend ramping up behind the others is not judged by its latency yet: its first
        # responses were a cold process's, and with the few it gets (slow start) its
        # estimate would take seconds to come down; relative, so that backends that all
        # started together (a balancer's first seconds) are judged from the start
        progress = [ramp_progress(now - s.added_at, weight_policy) for s in stats]
        ahead = max(progress)
        trust = [1.0 if p >= ahead - 0.05 else 0.0 for p in progress]
        service = predicted_service([s.latency for s in stats], request_class, now,
                                    weight_policy.latency_idle, trust)
        return pool.least_latency.select(candidates, weights, rif, service, scale, hot)

    def weights(self, pool: Pool, view: BackendView, now: float) -> list[float]:
        """The effective weight of each backend of the pool (for metrics and status)."""
        if not pool.backends:  # discovered names not resolved yet
            return []
        return effective_weights([view.stats(a) for a in pool.backends],
                                 [pool.static_weight[a] for a in pool.backends],
                                 now, self.weight_policy,
                                 reports=pool.config.policy != "least_latency")

    def may_eject(self, pool: Pool, view: BackendView, now: float) -> bool:
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
