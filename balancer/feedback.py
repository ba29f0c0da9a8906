"""Load reports from backends: the ORCA text format in `endpoint-load-metrics`.

Pure. `parse_load_report` never raises: a malformed report is None (and ignored), so a
misbehaving backend can at worst not be heard, never break a request. Also None: a report
over 4096 characters or 64 items, or with a figure that is negative, NaN or over 1e9, so
the weights built from reports stay finite (tests/test_report_properties.py). Known fields become
attributes; `named_metrics.*` and `request_cost.*` keep their names in `named` and `cost`.
"""

from dataclasses import dataclass, field

# A backend is trusted for cost and weight only, within bounds: a longer header, more items
# or a larger number is not a load report (a report that lies cannot overflow a weight).
MAX_REPORT_CHARS = 4096
MAX_ITEMS = 64
MAX_VALUE = 1e9


@dataclass(frozen=True, slots=True)
class LoadReport:
    cpu_utilization: float | None = None
    rps: float | None = None
    eps: float | None = None
    named: dict[str, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)

    @property
    def inflight(self) -> float | None:
        return self.named.get("inflight")

    @property
    def queue(self) -> float | None:
        return self.named.get("queue")

    @property
    def workers(self) -> float | None:
        return self.named.get("workers")

    @property
    def cpu_ms(self) -> float | None:
        return self.cost.get("cpu_ms")

    @property
    def wall_ms(self) -> float | None:
        return self.cost.get("wall_ms")

    @property
    def io_ms(self) -> float | None:
        """Time blocked on I/O (not on CPU, the GIL or a core); absent from older backends."""
        return self.cost.get("io_ms")


def parse_load_report(value: bytes | str) -> LoadReport | None:
    """`TEXT cpu_utilization=0.42, rps_fractional=118.0, ...` → LoadReport, or None."""
    if len(value) > MAX_REPORT_CHARS:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    kind, _, body = text.strip().partition(" ")
    if kind != "TEXT" or body.count(",") >= MAX_ITEMS:
        return None
    top: dict[str, float] = {}
    named: dict[str, float] = {}
    cost: dict[str, float] = {}
    for item in body.split(","):
        key, sep, raw = item.strip().partition("=")
        if not sep:
            if item.strip():
                return None
            continue
        try:
            number = float(raw)
        except ValueError:
            return None
        if not 0.0 <= number <= MAX_VALUE:  # also NaN and the infinities
            return None
        if key.startswith("named_metrics."):
            named[key[len("named_metrics."):]] = number
        elif key.startswith("request_cost."):
            cost[key[len("request_cost."):]] = number
        else:
            top[key] = number
    return LoadReport(
        cpu_utilization=top.get("cpu_utilization"),
        rps=top.get("rps_fractional"),
        eps=top.get("eps"),
        named=named,
        cost=cost,
    )
