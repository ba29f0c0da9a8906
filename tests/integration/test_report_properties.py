"""Property tests (hypothesis): a backend's load report is trusted for cost and weight only,
within bounds. Whatever a backend sends in `endpoint-load-metrics` (NaN, negative, huge
numbers, thousands of named metrics, a megabyte of text), the parser never raises, every
figure it lets through is finite and bounded, and the weights built from it never starve
the honest backends of the pool (each keeps at least the exploration floor)."""

import asyncio
import math
from collections import Counter
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from balancer.balancing.load_report import (
    MAX_REPORT_CHARS,
    MAX_VALUE,
    LoadReport,
    parse_load_report,
)
from balancer.balancing.weights import BackendStats, WeightPolicy, effective_weights, report_weight
from tests.fakes import read_request_head
from tests.helpers import one_pool_config

KEYS = st.sampled_from([
    "cpu_utilization", "rps_fractional", "eps", "named_metrics.inflight",
    "named_metrics.queue", "named_metrics.workers", "request_cost.cpu_ms",
    "request_cost.wall_ms", "request_cost.io_ms", "x", "named_metrics.", ""])
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e308", "1e309", "-0", "-1", "1e-320",
                     "0x10", "1_000", " 5 ", "", "==", "9" * 400]),
    st.integers(-(10**30), 10**30),
)
ITEM = st.tuples(KEYS, NUMBERS).map(lambda kv: f"{kv[0]}={kv[1]}")
REPORTS = st.one_of(
    st.lists(ITEM, max_size=12).map(lambda items: "TEXT " + ", ".join(items)),
    st.text(max_size=200),
    st.binary(max_size=200),
)
HONEST = parse_load_report("TEXT cpu_utilization=0.5, rps_fractional=100.0, eps=0.0")


def check_bounded(report: LoadReport) -> None:
    figures = [report.cpu_utilization, report.rps, report.eps,
               *report.named.values(), *report.cost.values()]
    for figure in figures:
        if figure is not None:
            assert math.isfinite(figure) and 0.0 <= figure <= MAX_VALUE, figure


def check_weights(report: LoadReport) -> None:
    """A pool of one liar and two honest backends: finite weights, nobody below the floor."""
    weight_policy = WeightPolicy(slow_start=0.0)
    assert HONEST is not None
    stats = [BackendStats(0.0), BackendStats(0.0), BackendStats(0.0)]
    for _ in range(5):  # damping lets a lie grow by x2 per report: send a few
        stats[0].observe_report(report, 1.0, weight_policy)
        stats[1].observe_report(HONEST, 1.0, weight_policy)
        stats[2].observe_report(HONEST, 1.0, weight_policy)
    weight = report_weight(report, weight_policy)
    assert weight is None or (math.isfinite(weight) and weight > 0)
    weights = effective_weights(stats, [1.0, 1.0, 1.0], 1.5, weight_policy)
    assert all(math.isfinite(w) and w > 0 for w in weights), weights
    floor = max(weights) * weight_policy.min_share
    assert min(weights) >= floor * (1 - 1e-9), weights


@given(REPORTS)
@example("TEXT rps_fractional=1e308, cpu_utilization=0")  # an infinite weight: NaN weights
@example("TEXT rps_fractional=1e300, cpu_utilization=1e-300")
def test_any_report_parses_to_bounded_figures_or_none(value: str | bytes) -> None:
    report = parse_load_report(value)
    if report is not None:
        check_bounded(report)
        check_weights(report)


@given(st.lists(ITEM, min_size=1, max_size=12))
def test_a_lying_report_cannot_starve_the_honest_backends(items: list[str]) -> None:
    report = parse_load_report("TEXT " + ", ".join(items))
    if report is not None:
        check_bounded(report)
        check_weights(report)


def test_huge_reports_are_ignored_not_parsed() -> None:
    """A megabyte of header, or 10,000 named metrics: not a load report (and cheap to say so)."""
    many = "TEXT " + ", ".join(f"named_metrics.m{i}=1" for i in range(10_000))
    megabyte = "TEXT cpu_utilization=0.1, " + "x" * 1_000_000
    assert len(many) > MAX_REPORT_CHARS
    assert parse_load_report(many) is None
    assert parse_load_report(megabyte) is None
    assert parse_load_report(megabyte.encode()) is None
    assert parse_load_report(f"TEXT rps_fractional={MAX_VALUE * 10}") is None
    assert parse_load_report("TEXT rps_fractional=1e308, cpu_utilization=0") is None
    report = parse_load_report("TEXT cpu_utilization=0.42, rps_fractional=118.0, eps=0.0, "
                               "named_metrics.inflight=3, request_cost.cpu_ms=12.5")
    assert report is not None and report.rps == 118.0 and report.cpu_ms == 12.5


LIES = [
    "TEXT cpu_utilization=nan, rps_fractional=1e308, request_cost.cpu_ms=-5",
    "TEXT cpu_utilization=0, rps_fractional=1e308, eps=0",
    "TEXT " + ", ".join(f"named_metrics.m{i}=1" for i in range(10_000)),
    "TEXT cpu_utilization=0.1, " + "x" * 1_000_000,
]


async def test_lying_backends_cannot_crash_the_balancer_or_starve_the_pool(
    raw_backend_factory: Any, backend_factory: Any, balancer_factory: Any, session: Any,
) -> None:
    """Through a real balancer: a backend whose every response carries a lie (NaN, huge
    figures, 10,000 named metrics, a 1 MB header) beside an honest one. Every request is
    answered, the honest backend keeps its share, and the balancer keeps serving."""
    lie_index = [0]

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request_head(reader)
            lie = LIES[lie_index[0] % len(LIES)]
            lie_index[0] += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Backend: liar\r\n"
                         b"endpoint-load-metrics: " + lie.encode() + b"\r\n\r\nlie\n")
            await writer.drain()

    lying = await raw_backend_factory(liar)
    honest = await backend_factory(
        "honest", report="TEXT cpu_utilization=0.5, rps_fractional=100.0, eps=0.0")
    # the policy whose weights come from reports: what a lie aims at (least_latency, the
    # default, reads no report, so the faster raw liar would win nearly every pick there)
    running = await balancer_factory(one_pool_config(lying.url, honest.url).replace(
        "    backends:", "    policy: weighted_least_request\n    backends:"))
    served: Counter[str] = Counter()
    for _ in range(80):
        async with session.get(running.url + "/x") as resp:
            await resp.read()
            served[resp.headers.get("X-Backend", str(resp.status))] += 1
    assert served["honest"] >= 80 * 0.05, served  # never below the exploration floor
    assert sum(served.values()) == 80
    async with session.get(running.admin_url + "/status") as resp:
        assert resp.status == 200
        backends = (await resp.json())["pools"][0]["backends"]
    for backend in backends:
        assert math.isfinite(backend["weight"]) and backend["weight"] > 0, backends
