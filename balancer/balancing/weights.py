"""Backend weights from what the balancer sees and what backends report.

Pure (`now` is passed in). Per backend a `BackendStats` keeps:
- the weight its load reports suggest, in the spirit of Envoy's client-side weighted round
  robin: rps / (utilisation + error share x penalty), damped (an exponential step towards
  each new value, at most x2 or /2 per report) so a step in reported load cannot make the
  weights overshoot or oscillate; a report older than `report_ttl` is ignored;
- a moving average of fast failures (5xx, 429, connection errors), which divides its weight;
- when it joined (or came back), for slow start;
- for least_latency, its latency and requests-in-flight estimates (`balancer.balancing.latency`).
`effective_weights` combines them with the static weights of the config and mean-normalised
report weights, and applies an exploration floor (`min_share` of the largest weight), so one
bad report can never starve a healthy backend.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from balancer.balancing.latency import LatencyEstimate, RifEstimate
from balancer.balancing.load_report import LoadReport


@dataclass(frozen=True, slots=True)
class WeightPolicy:
    """The constants of weights and of least_latency; not configurable: every Runtime uses
    the defaults (tests build their own to vary one)."""

    report_ttl: float = 3.0        # seconds a load report stays valid
    slow_start: float = 10.0       # seconds over which a new backend ramps up to full weight
    slow_start_floor: float = 0.1  # share of its weight a new backend starts with
    min_share: float = 0.05        # exploration floor: share of the largest weight
    error_penalty: float = 10.0    # weight / (1 + penalty x recent error rate)
    damping: float = 0.3           # step towards each new report weight
    error_alpha: float = 0.1       # moving-average weight of each outcome in the error rate
    # least_latency (balancer.balancing.latency): probes drawn per pick, predicted latencies within
    # what share of the lowest tie, how the service estimate moves up and down per response,
    # how fast an unused one fades to the pool's best, how long a reported RIF counts
    probes: int = 3
    latency_tolerance: float = 0.2
    latency_rise: float = 0.5
    latency_fall: float = 0.1
    latency_idle: float = 2.0
    rif_ttl: float = 1.0


class BackendStats:
    """What the balancer knows about one backend; carried over reloads by address."""

    __slots__ = ("added_at", "error_rate", "latency", "report", "report_at", "report_weight",
                 "rif")

    def __init__(self, now: float) -> None:
        self.added_at = now
        self.report_weight: float | None = None
        self.report: LoadReport | None = None
        self.report_at = float("-inf")
        self.error_rate = 0.0
        self.latency = LatencyEstimate()
        self.rif = RifEstimate()

    def __repr__(self) -> str:
        weight = "none" if self.report_weight is None else f"{self.report_weight:.3g}"
        return f"<BackendStats report_weight={weight} error_rate={self.error_rate:.3f}>"

    def observe_report(self, report: LoadReport, now: float, weight_policy: WeightPolicy,
                       own_inflight: int | None = None) -> None:
        """A load report; `own_inflight`: the balancer's own count for the backend then."""
        self.report = report
        if own_inflight is not None:
            self.rif.observe(report, own_inflight, now)
        target = report_weight(report, weight_policy)
        if target is None:
            return
        self.report_at = now
        current = self.report_weight
        if current is None:
            self.report_weight = target
            return
        stepped = current + weight_policy.damping * (target - current)
        self.report_weight = min(max(stepped, current / 2), current * 2)

    def observe_outcome(self, failed: bool, weight_policy: WeightPolicy) -> None:
        self.error_rate += weight_policy.error_alpha * ((1.0 if failed else 0.0) - self.error_rate)

    def observe_latency(self, seconds: float, status: int, own_inflight: int,
                        request_class: str | None, now: float, weight_policy: WeightPolicy) -> None:
        """A response head came `seconds` after the request was sent, with `own_inflight`
        requests (this one included) in flight to the backend; failures give no sample."""
        if status >= 500 or status == 429:
            return
        policy = weight_policy
        self.latency.observe(seconds, self.rif.rif(own_inflight - 1, now, policy.rif_ttl),
                             request_class, now, policy.latency_rise, policy.latency_fall)

    def restart(self, now: float) -> None:
        """The backend came back (restored, or re-added): ramp up again, forget old reports,
        latencies and errors (slow start is the caution now; an error rate kept from the
        outage would hold it at the exploration floor with nothing to decay it)."""
        self.added_at = now
        self.error_rate = 0.0
        self.report_weight = None
        self.report_at = float("-inf")
        self.latency = LatencyEstimate()
        self.rif = RifEstimate()


def report_weight(report: LoadReport, weight_policy: WeightPolicy) -> float | None:
    """rps / (utilisation + eps/rps x penalty); None when the report cannot tell."""
    rps, utilisation = report.rps, report.utilization
    if not rps or utilisation is None:
        return None
    error_share = (report.eps or 0.0) / rps
    return rps / max(utilisation + error_share * weight_policy.error_penalty, 0.01)


def effective_weights(
    stats: Sequence[BackendStats],
    static: Sequence[float],
    now: float,
    weight_policy: WeightPolicy,
    reports: bool = True,
    slow_start: bool = True,
) -> list[float]:
    """One weight per backend, for selection; never zero. Without `reports`, the load
    reports' CPU-based weights are left out (static, slow start and error rate only);
    without `slow_start`, the ramp too (least_latency applies it on its own)."""
    fresh = [s.report_weight for s in stats
             if s.report_weight is not None and now - s.report_at <= weight_policy.report_ttl]
    mean = sum(fresh) / len(fresh) if fresh else 1.0
    weights = []
    for stat, base in zip(stats, static, strict=True):
        weight = base
        if reports and stat.report_weight is not None \
                and now - stat.report_at <= weight_policy.report_ttl:
            weight *= stat.report_weight / mean
        if slow_start:
            weight *= slow_start_factor(now - stat.added_at, weight_policy)
        weight /= 1.0 + weight_policy.error_penalty * stat.error_rate
        weights.append(weight)
    floor = max(weights) * weight_policy.min_share
    return [max(weight, floor) for weight in weights]


def slow_start_factor(age: float, weight_policy: WeightPolicy) -> float:
    if weight_policy.slow_start <= 0 or age >= weight_policy.slow_start:
        return 1.0
    ramp = max(age, 0.0) / weight_policy.slow_start
    return weight_policy.slow_start_floor + (1.0 - weight_policy.slow_start_floor) * ramp


def ramp_progress(age: float, weight_policy: WeightPolicy) -> float:
    """How far through slow start a backend is: 0 when it (re)joined, 1 once ramped up."""
    if weight_policy.slow_start <= 0 or age >= weight_policy.slow_start:
        return 1.0
    return max(age, 0.0) / weight_policy.slow_start
