"""One selector per `policy`: how a pool picks among its usable backends.

Pure (`now` is passed in). `selector_for` builds a pool's selector once, when the Runtime is
built (HAProxy wires its `lb_*.c` callbacks once per backend section; pingora gives each
pool one `BackendSelection`); a pick then calls it without looking at the policy's name.
A selector gets the backends left after exclusion and health (`choose.py` does those, the
same for every policy) and applies the in-flight cap its own way: round robin skips a full
backend and keeps its turn; the drawing policies draw among those with room. It reads the
live backends through a `BackendView` and draws with the rules of `algorithms.py`.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Protocol, assert_never

from balancer.balancing.health import BackendHealth
from balancer.balancing.latency import predicted_service
from balancer.balancing.selection.algorithms import (
    LeastLatency,
    PowerOfTwoChoices,
    RandomSource,
    RoundRobin,
)
from balancer.balancing.weights import (
    BackendStats,
    WeightPolicy,
    effective_weights,
    ramp_progress,
    slow_start_factor,
)
from balancer.config.addresses import Address
from balancer.config.model import Policy


class BackendView(Protocol):
    """What selection may ask of the live backends (the I/O shell's BackendTable)."""

    def inflight(self, address: Address) -> int: ...
    def stats(self, address: Address) -> BackendStats: ...
    def health(self, address: Address) -> BackendHealth: ...


class Selector(Protocol):
    """A pool's policy, with its own state (a turn, a random source)."""

    # whether the pool's weights as shown (metrics, status) include the load reports'
    reports_in_weights: bool

    def pick(self, backends: Sequence[Address], static: Mapping[Address, float],
             view: BackendView, now: float, cap: int | None,
             request_class: str | None) -> Address | None:
        """One of `backends` (usable, not excluded) with fewer than `cap` requests in flight
        (any, with no cap); None when none has room. `static`: the config's weights."""
        ...


def selector_for(policy: Policy, rng: RandomSource, weight_policy: WeightPolicy) -> Selector:
    """The selector of a pool with this policy; `rng` is shared by the whole Runtime."""
    match policy:
        case "round_robin":
            return RoundRobinSelector()
        case "least_request":
            return LeastRequestSelector(rng)
        case "weighted_least_request":
            return WeightedLeastRequestSelector(rng, weight_policy)
        case "least_latency":
            return LeastLatencySelector(rng, weight_policy)
    assert_never(policy)


class RoundRobinSelector:
    """round_robin: each backend in turn; one at the cap is skipped and the turn goes on
    after the backend picked."""

    __slots__ = ("turn",)
    reports_in_weights = True

    def __init__(self) -> None:
        self.turn = RoundRobin()

    def __repr__(self) -> str:
        return f"<RoundRobinSelector {self.turn!r}>"

    def pick(self, backends: Sequence[Address], static: Mapping[Address, float],
             view: BackendView, now: float, cap: int | None,
             request_class: str | None) -> Address | None:
        if cap is None:
            return self.turn.select(backends)
        return self.turn.select_below(backends, view.inflight, cap)


class _Drawing(ABC):
    """The drawing policies' common part: only backends with room are drawn from; a lone
    backend is taken without a draw (and without reading its stats)."""

    __slots__ = ()
    reports_in_weights = True

    def pick(self, backends: Sequence[Address], static: Mapping[Address, float],
             view: BackendView, now: float, cap: int | None,
             request_class: str | None) -> Address | None:
        inflight = view.inflight
        if len(backends) == 1:
            return backends[0] if cap is None or inflight(backends[0]) < cap else None
        candidates = [a for a in backends if cap is None or inflight(a) < cap]
        if not candidates:
            return None
        return self.draw(candidates, static, view, now, cap is None, request_class)

    @abstractmethod
    def draw(self, candidates: Sequence[Address], static: Mapping[Address, float],
             view: BackendView, now: float, hot: bool, request_class: str | None) -> Address:
        """One of `candidates` (at least one); `hot`: every backend of the pool is at its cap."""


class LeastRequestSelector(_Drawing):
    """least_request: power of two choices on requests in flight only, every weight equal."""

    __slots__ = ("p2c",)

    def __init__(self, rng: RandomSource) -> None:
        self.p2c = PowerOfTwoChoices(rng)

    def __repr__(self) -> str:
        return "<LeastRequestSelector>"

    def draw(self, candidates: Sequence[Address], static: Mapping[Address, float],
             view: BackendView, now: float, hot: bool, request_class: str | None) -> Address:
        return self.p2c.select(candidates, [1.0] * len(candidates), view.inflight)


class WeightedLeastRequestSelector(_Drawing):
    """weighted_least_request: power of two choices, drawn by the effective weights (static
    x load reports x slow start / errors, `balancer.balancing.weights`)."""

    __slots__ = ("p2c", "weight_policy")

    def __init__(self, rng: RandomSource, weight_policy: WeightPolicy) -> None:
        self.p2c = PowerOfTwoChoices(rng)
        self.weight_policy = weight_policy

    def __repr__(self) -> str:
        return "<WeightedLeastRequestSelector>"

    def draw(self, candidates: Sequence[Address], static: Mapping[Address, float],
             view: BackendView, now: float, hot: bool, request_class: str | None) -> Address:
        weights = effective_weights([view.stats(a) for a in candidates],
                                    [static[a] for a in candidates], now, self.weight_policy)
        return self.p2c.select(candidates, weights, view.inflight)


class LeastLatencySelector(_Drawing):
    """least_latency: the lowest predicted latency among a few weighted probes
    (`algorithms.LeastLatency`); load reports count as requests in flight, not as weights."""

    __slots__ = ("least_latency", "weight_policy")
    reports_in_weights = False

    def __init__(self, rng: RandomSource, weight_policy: WeightPolicy) -> None:
        self.least_latency = LeastLatency(rng, weight_policy.probes,
                                          weight_policy.latency_tolerance)
        self.weight_policy = weight_policy

    def __repr__(self) -> str:
        return f"<LeastLatencySelector {self.least_latency!r}>"

    def draw(self, candidates: Sequence[Address], static: Mapping[Address, float],
             view: BackendView, now: float, hot: bool, request_class: str | None) -> Address:
        weight_policy = self.weight_policy
        stats = [view.stats(a) for a in candidates]
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
        return self.least_latency.select(candidates, weights, rif, service, scale, hot)
