"""What each route costs, learned from the backends' load reports, and the class it earns.

Pure (the caller passes `now`). Per route template (`GET /user/{n}?fields`), exponentially
weighted moving averages of the CPU milliseconds a request holds and of the milliseconds it
spends blocked on I/O. Off-CPU time is not I/O: a backend under contention makes a request
wait for the GIL or a core, which hurts others as much as the CPU itself. So the backends
report `named_metrics.cost_io_ms` (see backends/load.py); for an older backend that reports only
CPU and wall time, `wall - cpu` is used only from requests it served with nothing else in
flight (the uncontended figure), never otherwise. Rules this module keeps:
- A route that burns CPU is never `io`: `io` needs most of the time spent waiting, at least
  IO_MIN_MS of waiting, and CPU under a quarter of the CPU threshold.
- Towards isolation in one report: a single request whose CPU alone reaches a heavier class
  (heavy_cpu; or light_cpu for an `io` route) moves the route there at once, and it decides
  from then on. Back towards a lighter class only with confidence: the averages must point
  there for `min_samples` reports in a row. Both sides of every threshold have the
  `hysteresis` margin, so a route near a threshold does not flap.
- Confidence is stability of the class (`min_samples` reports since the class last changed
  or was put in question), not a spread of a tiny figure. A route decides once it has been
  stable once (or escalated): it keeps deciding with its current class while its cost changes.
- `cpu_threshold: auto` (the default): heavy is AUTO_FACTOR times the CPU of a cheap route
  of the traffic (the first quartile of the known routes' CPU, each route one vote), never
  under AUTO_FLOOR_MS nor over AUTO_CEILING_MS (see README for the floor).
- Bounded, and not flushed by hostile traffic: a new template waits in a small probation
  table until it is stable; only then does it enter the main table (`max_routes`, least
  recently used evicted), so a spray of distinct paths churns probation only. A path that has
  shown SPRAY_VARIANTS sets of query keys learns every further set as one `?*` template.
"""

from collections import OrderedDict
from dataclasses import dataclass

from balancer.balancing.load_report import LoadReport
from balancer.config.routing import Learning, RequestClass

RANK: dict[RequestClass, int] = {"io": 0, "light_cpu": 1, "heavy_cpu": 2}
AUTO_FLOOR_MS = 10.0       # measured: bench/results/threshold.md
AUTO_CEILING_MS = 100.0
AUTO_FACTOR = 10.0
AUTO_QUANTILE = 0.25
AUTO_EVERY = 128           # reports between two computations of the auto threshold
AUTO_MIN_REPORTS = 20      # reports before the traffic may raise the threshold above the floor
IO_MIN_MS = 1.0            # waits shorter than this make no route io
IO_CPU_SHARE = 0.25        # io needs CPU under this share of the CPU threshold
MAX_COST_MS = 600_000.0    # figures a backend reports are clamped to this
SPRAY_VARIANTS = 8         # query-key sets per path before further ones are learned as one
PROBATION = 64             # templates not yet stable that are remembered


@dataclass(slots=True)
class RouteCost:
    template: str
    cpu_ms: float = 0.0
    io_ms: float = 0.0
    samples: int = 0
    last_seen: float = 0.0
    learned_class: RequestClass = "light_cpu"
    stable: int = 0         # reports since the class last changed or was put in question
    pending: int = 0        # reports in a row whose averages point to a lighter class
    settled: bool = False   # the learned class decides (stable once, or escalated)

    @property
    def io_share(self) -> float:
        """Share of the request's own time (CPU + I/O, not contention) spent on I/O."""
        total = self.cpu_ms + self.io_ms
        return self.io_ms / total if total > 0 else 0.0


class CostModel:
    """Learned costs of route templates; `cpu_threshold_ms=None` is `auto`."""

    def __init__(self, learning: Learning, *, cpu_threshold_ms: float | None,
                 io_threshold: float) -> None:
        self._routes: OrderedDict[str, RouteCost] = OrderedDict()
        self._probation: OrderedDict[str, RouteCost] = OrderedDict()
        self._variants: OrderedDict[str, int] = OrderedDict()
        self.evictions = 0
        self._reports = 0
        self.configure(learning, cpu_threshold_ms=cpu_threshold_ms, io_threshold=io_threshold)

    def __repr__(self) -> str:
        confident = sum(1 for r in self.routes() if self.is_confident(r))
        return (f"<CostModel {len(self)} routes ({confident} confident), "
                f"cpu_threshold {self.threshold_ms:g} ms>")

    def __len__(self) -> int:
        return len(self._routes) + len(self._probation)

    @property
    def auto(self) -> bool:
        return self.configured_threshold_ms is None

    def configure(self, learning: Learning, *, cpu_threshold_ms: float | None,
                  io_threshold: float) -> None:
        """New settings from a reload; what was learned is kept (and re-classified when the
        thresholds changed)."""
        changed = (getattr(self, "configured_threshold_ms", -1.0) != cpu_threshold_ms
                   or getattr(self, "io_threshold", -1.0) != io_threshold)
        self.learning = learning
        self.configured_threshold_ms = cpu_threshold_ms
        self.threshold_ms = cpu_threshold_ms if cpu_threshold_ms is not None else AUTO_FLOOR_MS
        self.io_threshold = io_threshold
        while len(self._routes) > learning.max_routes:
            self._routes.popitem(last=False)
            self.evictions += 1
        if self.auto:
            self._update_auto_threshold()
        if changed:
            for route in self.routes():
                route.learned_class = self._class_of(route.cpu_ms, route.io_ms, None)
                route.pending = 0

    def observe(self, template: str, cpu_ms: float, wall_ms: float, now: float, *,
                io_ms: float | None = None, inflight: float | None = None) -> RouteCost:
        """Fold one report (of a 2xx/3xx answer) into the route's averages and class.
        `io_ms` None: an older backend; `wall - cpu` counts only when `inflight` <= 1."""
        cpu_ms = min(max(cpu_ms, 0.0), MAX_COST_MS)
        wall_ms = min(max(wall_ms, 0.0), MAX_COST_MS)
        if io_ms is None and (inflight is None or inflight <= 1):
            io_ms = wall_ms - cpu_ms
        if io_ms is not None:
            io_ms = min(max(io_ms, 0.0), wall_ms if wall_ms > 0 else MAX_COST_MS)
        route = self._entry(template)
        if route.samples == 0:
            route.cpu_ms, route.io_ms = cpu_ms, io_ms or 0.0
            route.learned_class = self._class_of(cpu_ms, route.io_ms, None)
            route.stable, route.settled = 1, route.learned_class == "heavy_cpu"
        else:
            alpha = self.learning.alpha
            route.cpu_ms += alpha * (cpu_ms - route.cpu_ms)
            if io_ms is not None:
                route.io_ms += alpha * (io_ms - route.io_ms)
            self._reclassify(route, cpu_ms)
        route.samples += 1
        route.last_seen = now
        if route.stable >= self.learning.min_samples:
            route.settled = True
        if route.settled and route.template in self._probation:  # (a folded `?*` route too)
            self._promote(route)
        self._reports += 1
        if self.auto and self._reports % AUTO_EVERY == 0:
            self._update_auto_threshold()
        return route

    def observe_report(self, template: str, report: LoadReport, now: float) -> RouteCost | None:
        """`observe` with a backend's parsed report; None if it carries no request cost."""
        cpu_ms = report.cpu_ms
        if cpu_ms is None or report.wall_ms is None:
            return None
        return self.observe(template, cpu_ms, report.wall_ms, now, io_ms=report.io_ms,
                            inflight=report.inflight)

    def lookup(self, template: str) -> RouteCost | None:
        route = self._routes.get(template) or self._probation.get(template)
        if route is None and "?" in template:
            base = template.partition("?")[0]
            if self._variants.get(base, 0) >= SPRAY_VARIANTS:
                folded = base + "?*"
                route = self._routes.get(folded) or self._probation.get(folded)
        return route

    def decides(self, route: RouteCost) -> bool:
        """Whether the learned class may decide (stable once, or escalated to heavy_cpu)."""
        return route.settled

    def is_confident(self, route: RouteCost) -> bool:
        return route.stable >= self.learning.min_samples

    def confidence(self, route: RouteCost) -> float:
        """0..1: how much of `min_samples` the class has been stable for (for /status)."""
        return min(1.0, route.stable / self.learning.min_samples)

    def routes(self) -> list[RouteCost]:
        return [*self._routes.values(), *self._probation.values()]

    # -- internals ---------------------------------------------------------------------------

    def _entry(self, template: str) -> RouteCost:
        route = self._routes.get(template)
        if route is not None:
            self._routes.move_to_end(template)
            return route
        route = self._probation.get(template)
        if route is not None:
            self._probation.move_to_end(template)
            return route
        base, query, _ = template.partition("?")
        if query:
            variants = self._variants.get(base, 0)
            if variants >= SPRAY_VARIANTS:
                folded = base + "?*"
                return self._routes.get(folded) or self._probation.get(folded) or self._admit(
                    folded)
            self._variants[base] = variants + 1
            self._variants.move_to_end(base)
            while len(self._variants) > 4 * self.learning.max_routes:
                self._variants.popitem(last=False)
        return self._admit(template)

    def _admit(self, template: str) -> RouteCost:
        route = self._probation[template] = RouteCost(template)
        while len(self._probation) > min(PROBATION, self.learning.max_routes):
            self._probation.popitem(last=False)
        return route

    def _promote(self, route: RouteCost) -> None:
        del self._probation[route.template]
        self._routes[route.template] = route
        while len(self._routes) > self.learning.max_routes:
            self._routes.popitem(last=False)
            self.evictions += 1

    def _reclassify(self, route: RouteCost, sample_cpu_ms: float) -> None:
        current = route.learned_class
        target = self._class_of(route.cpu_ms, route.io_ms, current)
        escalate = self._escalation(sample_cpu_ms, current)
        if escalate is not None and RANK[escalate] > RANK[target]:
            target = escalate
        if RANK[target] > RANK[current]:      # towards isolation: at once
            route.learned_class, route.pending, route.stable = target, 0, 0
            route.settled = route.settled or target == "heavy_cpu"
        elif RANK[target] < RANK[current] and escalate is None:   # back: only with confidence
            route.pending += 1
            route.stable = 0
            if route.pending >= self.learning.min_samples:
                route.learned_class, route.pending = target, 0
        else:
            route.pending = 0
            route.stable += 1

    def _escalation(self, cpu_ms: float, current: RequestClass) -> RequestClass | None:
        """The heavier class one request's CPU alone puts its route in, if any."""
        up = 1 + self.learning.hysteresis
        if current != "heavy_cpu" and cpu_ms >= self.threshold_ms * up:
            return "heavy_cpu"
        if current == "io" and cpu_ms >= self.threshold_ms * IO_CPU_SHARE * up:
            return "light_cpu"
        if current == "heavy_cpu" and cpu_ms >= self.threshold_ms * (1 - self.learning.hysteresis):
            return "heavy_cpu"  # a request still heavy: a de-escalation in progress restarts
        return None

    def _class_of(self, cpu_ms: float, io_ms: float, current: RequestClass | None) -> RequestClass:
        margin = self.learning.hysteresis if current is not None else 0.0
        threshold = self.threshold_ms
        heavy_at = threshold * (1 - margin) if current == "heavy_cpu" else threshold * (1 + margin)
        if cpu_ms >= heavy_at:
            return "heavy_cpu"
        stay = current == "io"
        io_margin = margin * min(self.io_threshold, 1 - self.io_threshold)
        io_at = self.io_threshold - io_margin if stay else self.io_threshold + io_margin
        cpu_cap = threshold * IO_CPU_SHARE * ((1 + margin) if stay else (1 - margin))
        io_min = IO_MIN_MS * ((1 - margin) if stay else (1 + margin))
        total = cpu_ms + io_ms
        share = io_ms / total if total > 0 else 0.0
        if share >= io_at and cpu_ms < cpu_cap and io_ms >= io_min:
            return "io"
        return "light_cpu"

    def _update_auto_threshold(self) -> None:
        """AUTO_FACTOR x the AUTO_QUANTILE of the known routes' CPU (each route one vote, so
        a burst of one route's traffic does not move it), clamped."""
        threshold = AUTO_FLOOR_MS
        if self._reports >= AUTO_MIN_REPORTS and len(self):
            costs = sorted(route.cpu_ms for route in self.routes())
            cheap = costs[int(AUTO_QUANTILE * (len(costs) - 1))]
            threshold = min(AUTO_CEILING_MS, max(AUTO_FLOOR_MS, AUTO_FACTOR * cheap))
        self.threshold_ms = threshold
