"""The last 15 minutes: a ring of per-second points for the status page's charts.

Pure core, thin shell. `Snapshot` is a copy of counters that exist anyway (requests and
latency histograms per pool, backends' in-flight and weights, queues, spills, ejections,
learned route costs, reloads); `History.add(snapshot)` turns two consecutive snapshots into
one point (rates, p50/p99 from the histogram deltas) and the events between them (reloads,
ejections, route class changes). No clock, no I/O: the server's sampler task takes a
snapshot every `INTERVAL` seconds (`take_snapshot`, the only function here that reads live
counters, those it is handed) and the request path pays nothing. Bounded: `CAPACITY` points,
`EVENTS` events, at most `ROUTES` routes per point; pools and backends are bounded by the
config.
"""

import collections
from collections.abc import Iterable, Mapping, Sized
from dataclasses import dataclass, field
from typing import Any

from balancer.balancing.costs import CostModel
from balancer.balancing.runtime import Runtime
from balancer.balancing.selection.selectors import BackendView
from balancer.metrics import BUCKETS, Metrics
from balancer.ops.reloads import ReloadOutcome

INTERVAL = 1.0
CAPACITY = 900  # 15 minutes of 1 s points
EVENTS = 256
ROUTES = 12     # the most sampled learned routes charted


@dataclass(frozen=True, slots=True)
class BackendSample:
    pool: str
    address: str
    inflight: int
    cap: int
    weight: float
    state: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Counters at one instant (wall clock `at`): cumulative ones are turned into rates."""

    at: float
    requests: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (pool, 2xx): n
    latency: Mapping[str, tuple[int, ...]] = field(default_factory=dict)   # pool: buckets
    backends: tuple[BackendSample, ...] = ()
    queues: Mapping[str, int] = field(default_factory=dict)
    spills: Mapping[str, int] = field(default_factory=dict)       # cumulative, per pool
    ejections: Mapping[str, int] = field(default_factory=dict)    # cumulative, per backend
    routes: Mapping[str, tuple[float, str]] = field(default_factory=dict)  # (cpu_ms, class)
    threshold_ms: float = 0.0
    reloads: tuple[tuple[float, bool, int], ...] = ()  # (at, ok, generation)


def quantile(buckets: Iterable[int], q: float) -> float | None:
    """The q-quantile (seconds) of a histogram's bucket counts (BUCKETS' bounds, then +Inf),
    interpolated linearly inside its bucket; None when empty."""
    counts = list(buckets)
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for bound, count in zip((*BUCKETS, BUCKETS[-1]), counts, strict=True):
        if count > 0 and seen + count >= rank:
            return lower + (bound - lower) * max(0.0, rank - seen) / count
        seen += count
        lower = bound
    return BUCKETS[-1]


def _rate(now: int, before: int, seconds: float) -> float:
    return round(max(0, now - before) / seconds, 3)


def point(prev: Snapshot, cur: Snapshot) -> dict[str, Any]:
    """One chart point from two consecutive snapshots (JSON-ready)."""
    seconds = max(cur.at - prev.at, 1e-3)
    rps: dict[str, dict[str, float]] = {}
    for (pool, status_class), count in cur.requests.items():
        rate = _rate(count, prev.requests.get((pool, status_class), 0), seconds)
        rps.setdefault(pool, {})[status_class] = rate
    p50: dict[str, float | None] = {}
    p99: dict[str, float | None] = {}
    for pool, counts in cur.latency.items():
        before = prev.latency.get(pool, (0,) * len(counts))
        delta = [max(0, a - b) for a, b in zip(counts, before, strict=True)]
        p50[pool] = _ms(quantile(delta, 0.5))
        p99[pool] = _ms(quantile(delta, 0.99))
    return {
        "t": round(cur.at, 3),
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "backends": {b.address: {"pool": b.pool, "inflight": b.inflight, "cap": b.cap,
                                 "weight": round(b.weight, 4), "state": b.state}
                     for b in cur.backends},
        "queue": dict(cur.queues),
        "spill": {pool: _rate(n, prev.spills.get(pool, 0), seconds)
                  for pool, n in cur.spills.items()},
        "routes": {route: {"cpu_ms": round(cpu, 3), "class": cls}
                   for route, (cpu, cls) in cur.routes.items()},
        "threshold_ms": cur.threshold_ms,
    }


def events(prev: Snapshot, cur: Snapshot) -> list[dict[str, Any]]:
    """What happened between two snapshots: reloads, ejections, route class changes."""
    found: list[dict[str, Any]] = []
    last = max((at for at, _, _ in prev.reloads), default=float("-inf"))
    for at, ok, generation in cur.reloads:
        if at > last:
            found.append({"t": round(at, 3), "kind": "reload", "ok": ok,
                          "text": f"reload {'to generation' if ok else 'refused at'} "
                                  f"{generation}"})
    for backend, count in cur.ejections.items():
        if count > prev.ejections.get(backend, 0):
            found.append({"t": round(cur.at, 3), "kind": "ejection", "backend": backend,
                          "text": f"{backend} ejected"})
    for route, (_, cls) in cur.routes.items():
        before = prev.routes.get(route)
        if before is not None and before[1] != cls:
            found.append({"t": round(cur.at, 3), "kind": "class", "route": route,
                          "from": before[1], "to": cls, "text": f"{route}: {before[1]} → {cls}"})
    return found


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class History:
    """The ring: `add` a snapshot every interval; `document` is what /status/history serves."""

    def __init__(self, capacity: int = CAPACITY, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.points: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS)
        self._last: Snapshot | None = None

    def __repr__(self) -> str:
        return (f"<History {len(self.points)}/{self.points.maxlen} points, "
                f"{len(self.events)} events>")

    def add(self, snapshot: Snapshot) -> None:
        prev = self._last
        self._last = snapshot
        if prev is None:
            return
        self.events.extend(events(prev, snapshot))
        self.points.append(point(prev, snapshot))

    def document(self, since: float | None = None) -> dict[str, Any]:
        """The points after `since` (wall clock seconds), or all of them; every event (there
        are few, and a reload's time may precede the point that first shows it)."""
        after = float("-inf") if since is None else since
        return {"interval_s": self.interval, "capacity": self.points.maxlen,
                "points": [p for p in self.points if p["t"] > after],
                "events": list(self.events)}


# -- the shell: read the live counters ------------------------------------------------------------

def take_snapshot(at: float, metrics: Metrics, runtime: Runtime, backends: BackendView,
                  now: float, queues: Mapping[str, Sized], costs: CostModel,
                  reloads: Iterable[ReloadOutcome]) -> Snapshot:
    """A copy of the counters `History` needs (a few dictionary walks, once a second). `at`:
    the wall clock; `now`: the backends' clock (ejections are measured on it); `queues`: the
    proxy's wait queues by pool."""
    requests: dict[tuple[str, str], int] = collections.defaultdict(int)
    for (pool_name, _, status_class), count in list(metrics.requests.items()):
        requests[(pool_name, status_class)] += count
    latency: dict[str, list[int]] = {}
    for (pool_name, _), histogram in list(metrics.latency.items()):
        counts = latency.setdefault(pool_name, [0] * len(histogram.counts))
        for i, count in enumerate(histogram.counts):
            counts[i] += count
    routes = sorted(costs.routes(), key=lambda r: -r.samples)[:ROUTES]
    return Snapshot(
        at=at, requests=dict(requests),
        latency={name: tuple(counts) for name, counts in latency.items()},
        backends=_backend_samples(runtime, backends, now),
        queues={name: len(queues[name]) if name in queues else 0 for name in runtime.pools},
        spills=dict(metrics.spills), ejections=dict(metrics.ejections),
        routes={r.template: (r.cpu_ms, r.learned_class) for r in routes},
        threshold_ms=costs.threshold_ms,
        reloads=tuple((r.at, r.ok, r.generation) for r in reloads))


def _backend_samples(runtime: Runtime, backends: BackendView,
                     now: float) -> tuple[BackendSample, ...]:
    samples = []
    for pool in runtime.pools.values():
        weights = runtime.weights(pool, backends, now)
        for address, weight in zip(pool.backends, weights, strict=True):
            health = backends.health(address)
            state = "down" if health.down else "ejected" if health.is_ejected(now) else "up"
            samples.append(BackendSample(pool.name, address.key, backends.inflight(address),
                                         pool.config.inflight_cap, weight, state))
    return tuple(samples)
