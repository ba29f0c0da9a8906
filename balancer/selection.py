"""Choosing a backend within a pool.

Pure: selectors hold only their own counters and take the candidate list as an argument.
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


class LeastRequest:
    """Power of two choices: draw two backends (in proportion to their weights, without
    replacement) and take the one with fewer requests in flight; a tie goes to the first
    drawn, so with nothing in flight the picks follow the weights exactly. With equal
    weights this is plain least-request P2C; weights come from `balancer.weights`."""

    __slots__ = ("_rng",)

    def __init__(self, rng: RandomSource) -> None:
        self._rng = rng

    def __repr__(self) -> str:
        return "<LeastRequest p2c>"

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
