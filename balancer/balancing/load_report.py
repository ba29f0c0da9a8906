"""Load reports from backends: the ORCA text format in `endpoint-load-metrics`.

`TEXT cpu_utilization:0.42, rps_fractional:118.0, named_metrics.cost_cpu_ms:12.5, ...` is the
form Envoy parses (source/common/orca/orca_parser.cc: `key:value` items, top-level keys
application_utilization, cpu_utilization, mem_utilization, eps, rps_fractional, and
`named_metrics.*`; any other key rejects the whole report). A request's cost travels as
`named_metrics.cost_<figure>` (cost_cpu_ms, cost_wall_ms, ...). For a transition this parser
also reads the older spelling our backends sent, `key=value` items and `request_cost.<figure>`.
Utilisation is application_utilization when a backend sends one above 0, else cpu_utilization,
as Envoy's client-side weighted round robin chooses.

Pure. `parse_load_report` never raises: a malformed report is None (and ignored), so a
misbehaving backend can at worst not be heard, never break a request. Also None: a report
over 4096 characters or 64 items, or with a figure that is negative, NaN or over 1e9, so
the weights built from reports stay finite
(tests/integration/test_report_properties.py). Known fields become
attributes; `named_metrics.*` keep their names in `named`, costs (`named_metrics.cost_*` and
`request_cost.*`) theirs without the prefix in `cost`.
"""

import re
from dataclasses import dataclass, field

# A backend is trusted for cost and weight only, within bounds: a longer header, more items
# or a larger number is not a load report (a report that lies cannot overflow a weight).
MAX_REPORT_CHARS = 4096
MAX_ITEMS = 64
MAX_VALUE = 1e9
NAMED = "named_metrics."
COST = "named_metrics.cost_"
OLD_COST = "request_cost."  # before Envoy could read our reports; still accepted
_ITEM = re.compile(r"([^:=]*)[:=](.*)", re.S)


@dataclass(frozen=True, slots=True)
class LoadReport:
    cpu_utilization: float | None = None
    application_utilization: float | None = None
    rps: float | None = None
    eps: float | None = None
    named: dict[str, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)

    @property
    def utilization(self) -> float | None:
        """What weights divide by: application_utilization when above 0, else cpu's."""
        if self.application_utilization:
            return self.application_utilization
        return self.cpu_utilization

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
    """`TEXT cpu_utilization:0.42, rps_fractional:118.0, ...` → LoadReport, or None."""
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
        match = _ITEM.fullmatch(item.strip())
        if match is None:
            if item.strip():
                return None
            continue
        key, raw = match.group(1).strip(), match.group(2)
        try:
            number = float(raw)
        except ValueError:
            return None
        if not 0.0 <= number <= MAX_VALUE:  # also NaN and the infinities
            return None
        if key.startswith(COST):
            cost[key[len(COST):]] = number
        elif key.startswith(NAMED):
            named[key[len(NAMED):]] = number
        elif key.startswith(OLD_COST):
            cost[key[len(OLD_COST):]] = number
        else:
            top[key] = number
    return LoadReport(
        cpu_utilization=top.get("cpu_utilization"),
        application_utilization=top.get("application_utilization"),
        rps=top.get("rps_fractional"),
        eps=top.get("eps"),
        named=named,
        cost=cost,
    )
