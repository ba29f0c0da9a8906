"""The drawing rules: round robin, power of two choices, least latency, over a candidate list.

Pure: each holds only its own counter or random source and takes the candidates (and what it
compares them by) as arguments; it knows nothing of backends, pools or health. The policy
selectors of `balancer.balancing.selection.selectors` gather those arguments from the live
backends and call these.
"""

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")


class RoundRobin:
    """Each backend in turn."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def __repr__(self) -> str:
        return f"<RoundRobin next={self._next}>"

    def select(self, candidates: Sequence[T]) -> T:
        if not candidates:
            raise LookupError("no candidates")
        index = self._next % len(candidates)
        self._next = index + 1
        return candidates[index]

    def select_below(self, candidates: Sequence[T], load: Callable[[T], int], cap: int) -> T | None:
        """The next candidate in turn whose load is under `cap`; None when none is."""
        count = len(candidates)
        for offset in range(count):
            index = (self._next + offset) % count
            if load(candidates[index]) < cap:
                self._next = index + 1
                return candidates[index]
        return None


class RandomSource(Protocol):
    def random(self) -> float: ...


class PowerOfTwoChoices:
    """Power of two choices: draw two backends (in proportion to their weights, without
    replacement) and take the one with fewer requests in flight; a tie goes to the first
    drawn, so with nothing in flight the picks follow the weights exactly. With equal
    weights this is plain least-request P2C; weights come from `balancer.balancing.weights`."""

    __slots__ = ("_rng",)

    def __init__(self, rng: RandomSource) -> None:
        self._rng = rng

    def __repr__(self) -> str:
        return "<PowerOfTwoChoices p2c>"

    def select(self, candidates: Sequence[T], weights: Sequence[float],
               inflight: Callable[[T], int]) -> T:
        count = len(candidates)
        if count == 1:
            return candidates[0]
        total = sum(weights)
        first = self._draw(weights, total, skip=-1)
        second = self._draw(weights, total - weights[first], skip=first)
        a, b = candidates[first], candidates[second]
        return b if inflight(b) < inflight(a) else a

    def _draw(self, weights: Sequence[float], total: float, skip: int) -> int:
        point = self._rng.random() * total
        last = -1
        for index, weight in enumerate(weights):
            if index == skip:
                continue
            last = index
            point -= weight
            if point < 0:
                return index
        return last  # rounding at the very end


class LeastLatency:
    """Lowest predicted latency among a few probes, after Prequal's hot-cold rule.

    Draw `probes` backends in proportion to their weights (without replacement; with a pool
    that small, all of them in a weighted random order). Among them, unless every backend is
    hot (at its in-flight cap), take the lowest service estimate x (RIF + 1): the latency a
    request can expect there, as nginx's least_time and Finagle's peak-EWMA rank backends;
    when all are hot, latency estimates say little and the fewest in flight wins, as in
    Prequal. `scale` is what slow start leaves of a backend's weight (1.0: all of it): a
    drawn backend stays a probe with that probability, so its share ramps up at any load
    (in the cost it would get nothing at low load until the ramp is nearly over). Errors
    lower the weight, i.e. the chances in a draw and in a tie (in the cost they would
    starve a backend that failed once at low load: nothing would ever try it again). Costs
    within `tolerance` of the lowest are a tie (measured latencies are never exactly equal,
    and the noise in them must not send all traffic to one of equal backends); a tie goes
    to the first drawn, so ties follow the weights.
    Estimates come from `balancer.balancing.latency`; weights from `balancer.balancing.weights`."""

    __slots__ = ("_probes", "_rng", "_tolerance")

    def __init__(self, rng: RandomSource, probes: int = 3, tolerance: float = 0.2) -> None:
        self._rng = rng
        self._probes = max(probes, 1)
        self._tolerance = tolerance

    def __repr__(self) -> str:
        return f"<LeastLatency probes={self._probes}>"

    def select(self, candidates: Sequence[T], weights: Sequence[float], rif: Sequence[float],
               service: Sequence[float], scale: Sequence[float] | None = None,
               hot: bool = False) -> T:
        count = len(candidates)
        if count == 1:
            return candidates[0]
        drawn = weighted_sample(self._rng, weights, min(self._probes, count))
        if scale is not None:  # a backend in slow start is probed only `scale` of the time
            kept = [i for i in drawn if scale[i] >= 1.0 or self._rng.random() < scale[i]]
            drawn = kept or drawn[:1]
        costs = []
        for index in drawn:
            load = rif[index] + 1.0
            costs.append(load if hot else service[index] * load)
        good_enough = min(costs) * (1.0 + self._tolerance)
        for index, cost in zip(drawn, costs, strict=True):
            if cost <= good_enough:
                return candidates[index]
        raise AssertionError("unreachable: the cheapest is good enough")


def weighted_sample(rng: RandomSource, weights: Sequence[float], count: int) -> list[int]:
    """`count` distinct indices, each draw in proportion to the weights left."""
    left = list(range(len(weights)))
    total = sum(weights)
    drawn: list[int] = []
    while left and len(drawn) < count:
        point = rng.random() * total
        position = len(left) - 1  # rounding at the very end
        for at, index in enumerate(left):
            point -= weights[index]
            if point < 0:
                position = at
                break
        index = left.pop(position)
        total -= weights[index]
        drawn.append(index)
    return drawn
