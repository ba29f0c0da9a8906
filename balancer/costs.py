"""What each route costs, learned from the backends' load reports.

Pure (the caller passes `now`). Per route template (`GET /user/{n}?fields`), an exponentially
weighted moving average of the CPU milliseconds a request uses and of the share of its wall
time spent waiting, with the variance of the CPU figure. Rules this module keeps:
- Bounded: at most `max_routes` templates; the least recently used is evicted.
- A cost decides only once confident: at least `min_samples` samples and a coefficient of
  variation under `max_cv`.
- Hysteresis: a route's class changes only when its cost crosses a threshold by the margin
  `hysteresis` (relative), so a route near a threshold does not flap between pools.
- A step change in cost is followed within a few samples: with alpha = 0.2, a route that
  goes from 5 ms to 300 ms of CPU is heavy after 3 reports (threshold 100 ms, margin 20 %).
"""

import math
from collections import OrderedDict
from dataclasses import dataclass

from balancer.routing_config import Learning, RequestClass


@dataclass(slots=True)
class RouteCost:
    template: str
    cpu_ms: float = 0.0
    io_share: float = 0.0
    cpu_var: float = 0.0
    samples: int = 0
    last_seen: float = 0.0
    learned_class: RequestClass = "light_cpu"

    @property
    def cpu_cv(self) -> float:
        """Coefficient of variation of the CPU cost (a floor of 1 ms keeps tiny costs sane)."""
        return math.sqrt(self.cpu_var) / max(self.cpu_ms, 1.0)


class CostModel:
    """Learned costs of up to `max_routes` route templates."""

    def __init__(self, learning: Learning, *, cpu_threshold_ms: float, io_threshold: float) -> None:
        self.learning = learning
        self.cpu_threshold_ms = cpu_threshold_ms
        self.io_threshold = io_threshold
        self._routes: OrderedDict[str, RouteCost] = OrderedDict()
        self.evictions = 0

    def __repr__(self) -> str:
        confident = sum(1 for r in self._routes.values() if self.is_confident(r))
        return f"<CostModel {len(self._routes)} routes ({confident} confident)>"

    def __len__(self) -> int:
        return len(self._routes)

    def configure(self, learning: Learning, *, cpu_threshold_ms: float,
                  io_threshold: float) -> None:
        """New settings from a reload; what was learned is kept (and re-classified)."""
        self.learning = learning
        self.cpu_threshold_ms = cpu_threshold_ms
        self.io_threshold = io_threshold
        while len(self._routes) > learning.max_routes:
            self._routes.popitem(last=False)
            self.evictions += 1
        for route in self._routes.values():
            route.learned_class = self._class_of(route.cpu_ms, route.io_share, None)

    def observe(self, template: str, cpu_ms: float, wall_ms: float, now: float) -> RouteCost:
        """Fold one report into the route's averages; returns the updated entry."""
        route = self._routes.get(template)
        if route is None:
            route = self._routes[template] = RouteCost(template)
            if len(self._routes) > self.learning.max_routes:
                self._routes.popitem(last=False)
                self.evictions += 1
        else:
            self._routes.move_to_end(template)
        io_share = max(0.0, wall_ms - cpu_ms) / wall_ms if wall_ms > 0 else 0.0
        if route.samples == 0:
            route.cpu_ms, route.io_share, route.cpu_var = cpu_ms, io_share, 0.0
            route.learned_class = self._class_of(cpu_ms, io_share, None)
        else:
            alpha = self.learning.alpha
            diff = cpu_ms - route.cpu_ms
            route.cpu_ms += alpha * diff
            route.cpu_var = (1 - alpha) * (route.cpu_var + alpha * diff * diff)
            route.io_share += alpha * (io_share - route.io_share)
            route.learned_class = self._class_of(route.cpu_ms, route.io_share,
                                                 route.learned_class)
        route.samples += 1
        route.last_seen = now
        return route

    def lookup(self, template: str) -> RouteCost | None:
        return self._routes.get(template)

    def is_confident(self, route: RouteCost) -> bool:
        return route.samples >= self.learning.min_samples and route.cpu_cv <= self.learning.max_cv

    def confidence(self, route: RouteCost) -> float:
        """0..1: grows with samples, shrinks with variance (for people, in /status)."""
        return min(1.0, route.samples / self.learning.min_samples) / (1.0 + route.cpu_cv)

    def routes(self) -> list[RouteCost]:
        return list(self._routes.values())

    def _class_of(self, cpu_ms: float, io_share: float,
                  current: RequestClass | None) -> RequestClass:
        margin = self.learning.hysteresis if current is not None else 0.0
        threshold = self.cpu_threshold_ms
        heavy_at = threshold * (1 - margin) if current == "heavy_cpu" else threshold * (1 + margin)
        if cpu_ms >= heavy_at:
            return "heavy_cpu"
        io_margin = margin * min(self.io_threshold, 1 - self.io_threshold)
        io_at = self.io_threshold - io_margin if current == "io" else self.io_threshold + io_margin
        return "io" if io_share >= io_at else "light_cpu"
