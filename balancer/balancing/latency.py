"""What predicts a backend's latency: its requests in flight (RIF) and how long it takes.

Pure (`now` is passed in). The `least_latency` policy
(`balancer.balancing.selection.selectors.LeastLatencySelector`) ranks backends by predicted
latency = service estimate x (RIF + 1) / weight, where:

- RIF is the balancer's own count of requests in flight to the backend plus what the
  backend's last fresh load report showed beyond it (`named_metrics.inflight`, which our
  backends count with their queue, minus the balancer's own count when the report came):
  requests from other balancers or worker processes that this one cannot see. A report
  older than `rif_ttl` is ignored.
- the service estimate is a moving average of latency / (RIF + 1) per response, i.e. the
  latency the backend gives one unit of load, so a backend is not blamed twice for queueing
  (once in its latency, again in its RIF). It rises fast (`latency_rise`: a backend that
  turns slow is seen within a few responses) and falls slowly (`latency_fall`), per request
  class and overall; an estimate with no new response fades towards the pool's best over
  `latency_idle` seconds, so a backend that was slow is tried again once in a while.
Failed responses (5xx, 429) give no sample: a backend that fails fast must not look fast
(its error rate lowers its weight instead).
"""

import math
from collections.abc import Sequence

from balancer.balancing.load_report import LoadReport


class LatencyEstimate:
    """One backend's service estimate (seconds per unit of load), overall and per class."""

    __slots__ = ("at", "overall", "per_class")

    def __init__(self) -> None:
        self.overall: float | None = None
        self.per_class: dict[str, float] = {}
        self.at = float("-inf")

    def __repr__(self) -> str:
        overall = "none" if self.overall is None else f"{self.overall * 1000:.2f}ms"
        return f"<LatencyEstimate {overall} classes={len(self.per_class)}>"

    def observe(self, seconds: float, rif: float, request_class: str | None, now: float,
                rise: float, fall: float) -> None:
        """A response came `seconds` after its request was sent, with `rif` other requests
        in flight to the backend."""
        sample = max(seconds, 0.0) / (max(rif, 0.0) + 1.0)
        self.overall = _step(self.overall, sample, rise, fall)
        if request_class is not None:
            self.per_class[request_class] = _step(self.per_class.get(request_class), sample,
                                                  rise, fall)
        self.at = now

    def get(self, request_class: str | None) -> float | None:
        if request_class is not None:
            known = self.per_class.get(request_class)
            if known is not None:
                return known
        return self.overall


def _step(current: float | None, sample: float, rise: float, fall: float) -> float:
    if current is None:
        return sample
    return current + (rise if sample > current else fall) * (sample - current)


class RifEstimate:
    """What a backend's reports show in flight beyond this balancer's own requests."""

    __slots__ = ("at", "excess")

    def __init__(self) -> None:
        self.excess = 0.0
        self.at = float("-inf")

    def __repr__(self) -> str:
        return f"<RifEstimate excess={self.excess:g}>"

    def observe(self, report: LoadReport, own: int, now: float) -> None:
        reported = report.inflight
        if reported is None:
            return
        self.excess = max(reported - own, 0.0)
        self.at = now

    def rif(self, own: int, now: float, ttl: float) -> float:
        return own + self.excess if now - self.at <= ttl else float(own)


def predicted_service(estimates: Sequence[LatencyEstimate], request_class: str | None,
                      now: float, idle: float,
                      trust: Sequence[float] | None = None) -> list[float]:
    """Each backend's service estimate for a request of `request_class`, comparable across
    the list: per class when every backend has one, else overall; an unknown one is the
    best known (1.0 when none is: selection then goes by RIF and weight alone); each fades
    towards the best with the time since its last response. `trust` (0 to 1 per backend,
    default 1) counts only that share of an estimate's distance from the best: a backend
    in slow start has answered as a cold process (its first responses took 5-10x longer
    in the bench), and that must not keep it out once it is warm."""
    values = [e.per_class.get(request_class) if request_class is not None else None
              for e in estimates]
    if any(v is None for v in values):
        values = [e.overall for e in estimates]
    known = [v for v in values if v is not None]
    if not known:
        return [1.0] * len(values)
    best = min(known)
    result = []
    for estimate, value in zip(estimates, values, strict=True):
        if value is None:
            result.append(best)
            continue
        age = now - estimate.at
        if idle > 0 and age > 0:
            value = best + (value - best) * math.exp(-age / idle)
        if trust is not None:
            value = best + (value - best) * trust[len(result)]
        result.append(value)
    return result
