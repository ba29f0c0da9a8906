"""A reload's outcome, and the record of the last few: shared by the single process
(`balancer.ops.server`) and the supervisor, which each say what reloading means for them.

Rules: one reload at a time (SIGHUP, a watched file and POST /reload queue behind each other);
every outcome is timed and kept, the last `KEPT` of them (what `/status` lists and the history
charts mark); `/status` and POST /reload serialise an outcome only through `as_dict`/`answer`.
"""

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

KEPT = 20  # outcomes `/status` lists


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    ok: bool
    generation: int
    digest: str
    errors: tuple[str, ...] = ()
    at: float = 0.0        # wall clock when it ended
    seconds: float = 0.0   # how long reading, checking and swapping took

    def as_dict(self) -> dict[str, Any]:
        """As `/status` lists it under `reloads`."""
        return {"ok": self.ok, "generation": self.generation, "digest": self.digest,
                "at": self.at, "ms": round(self.seconds * 1000, 3), "errors": list(self.errors)}

    def answer(self) -> dict[str, Any]:
        """POST /reload's JSON body (without the timing)."""
        return {"ok": self.ok, "generation": self.generation, "digest": self.digest,
                "errors": list(self.errors)}


class Reloads:
    """Runs reloads one at a time, times them and keeps the last `KEPT` outcomes."""

    def __init__(self, kept: int = KEPT) -> None:
        self.recent: deque[ReloadOutcome] = deque(maxlen=kept)
        self._lock = asyncio.Lock()

    def __iter__(self) -> Iterator[ReloadOutcome]:
        return iter(self.recent)

    def __len__(self) -> int:
        return len(self.recent)

    async def run(self, attempt: Callable[[], Awaitable[ReloadOutcome]]) -> ReloadOutcome:
        """`attempt` once no other reload runs; its outcome stamped with when it ended and
        how long it took, and kept."""
        async with self._lock:
            started = time.perf_counter()
            outcome = await attempt()
            outcome = replace(outcome, at=time.time(),
                              seconds=round(time.perf_counter() - started, 6))
            self.recent.append(outcome)
            return outcome
