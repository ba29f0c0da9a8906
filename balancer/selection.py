"""Choosing a backend within a pool.

Pure: selectors hold only their own counters and take the candidate list as an argument.
"""

from collections.abc import Callable, Sequence
from typing import TypeVar

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
