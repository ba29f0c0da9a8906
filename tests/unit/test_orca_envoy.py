"""The load report our backends send is one Envoy accepts (tests/envoy_orca.py: a port of
Envoy's parser), and the balancer reads it, and the older spelling, the same way."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.load import Counters, LoadMeter, format_report
from backends.middleware import LoadReportWSGI
from balancer.balancing.load_report import parse_load_report
from balancer.balancing.weights import WeightPolicy, report_weight
from tests.envoy_orca import OrcaError, parse_orca_headers

H = "endpoint-load-metrics"


# The port against Envoy's own cases (test/common/orca/orca_parser_test.cc; its text prefix is
# "TEXT " followed by a space, so the body starts with one).
@pytest.mark.parametrize(("value", "error"), [
    ("TEXT  cpu_utilization:\"0.7\"",
     "unable to parse custom backend load metric value(cpu_utilization): \"0.7\""),
    ("TEXT  cpu_utilization:nan", "custom backend load metric value(cpu_utilization) cannot be "
                                  "NaN."),
    ("TEXT  cpu_utilization:inf", "custom backend load metric value(cpu_utilization) cannot be "
                                  "infinity."),
    ("TEXT  cpu_utilization:0.7,cpu_utilization:0.8",
     "endpoint-load-metrics contains duplicate metric: cpu_utilization"),
    ("TEXT  cpu_utilization:0.7,unsupported_metric:0.8",
     "unsupported metric name: unsupported_metric"),
    ("TEXT  named_metrics.foo:123,named_metrics.duplicate:123,named_metrics.duplicate:0.2",
     "endpoint-load-metrics contains duplicate metric: named_metrics.duplicate"),
    ("TEXT  named_metrics.:123", "named metric key is empty."),
    ("TEXT  not-a-list-of-key-value-pairs", "metric values cannot be empty strings"),
    ("BAD random-value", "unsupported ORCA header format: BAD"),
    ("", "unsupported ORCA header format: "),
])
def test_the_port_gives_envoys_errors_for_envoys_cases(value: str, error: str) -> None:
    with pytest.raises(OrcaError) as info:
        parse_orca_headers([(H, value)])
    assert str(info.value) == error


def test_the_port_reads_envoys_example() -> None:
    report = parse_orca_headers([(H, "TEXT  cpu_utilization:0.7,application_utilization:0.8,"
                                     "mem_utilization:0.9,rps_fractional:1000,eps:2,"
                                     "named_metrics.foo:123,named_metrics.bar:0.2")])
    assert report == {"cpu_utilization": 0.7, "application_utilization": 0.8,
                      "mem_utilization": 0.9, "rps_fractional": 1000, "eps": 2,
                      "named_metrics": {"foo": 123, "bar": 0.2}}


OLD = ("TEXT cpu_utilization=0.42, rps_fractional=118.0, eps=0.0, named_metrics.inflight=3, "
       "named_metrics.queue=0, named_metrics.workers=4, request_cost.cpu_ms=12.5, "
       "request_cost.wall_ms=40.1")
NEW = ("TEXT cpu_utilization:0.42, rps_fractional:118, eps:0, named_metrics.inflight:3, "
       "named_metrics.queue:0, named_metrics.workers:4, named_metrics.cost_cpu_ms:12.5, "
       "named_metrics.cost_wall_ms:40.1")


def test_envoy_rejected_the_old_spelling_and_accepts_the_new() -> None:
    with pytest.raises(OrcaError):
        parse_orca_headers([(H, OLD)])
    with pytest.raises(OrcaError, match=r"unsupported metric name: request_cost\.cpu_ms"):
        parse_orca_headers([(H, OLD.replace("=", ":"))])
    assert parse_orca_headers([(H, NEW)])["named_metrics"] == {
        "inflight": 3, "queue": 0, "workers": 4, "cost_cpu_ms": 12.5, "cost_wall_ms": 40.1}


def test_the_balancer_reads_both_spellings_alike() -> None:
    assert parse_load_report(OLD) == parse_load_report(NEW) != None  # noqa: E711
    report = parse_load_report(NEW)
    assert report is not None and report.named == {"inflight": 3, "queue": 0, "workers": 4}
    assert (report.cpu_ms, report.wall_ms) == (12.5, 40.1)


def test_the_header_a_backend_emits_is_accepted_by_envoy() -> None:
    meter = LoadMeter(Counters(), workers=6, queue_depth=lambda: 2)
    meter.cpu_utilization, meter.rps, meter.eps = 0.375, 41.5, 1.5
    value = meter.end(meter.begin(), 200)
    report = parse_orca_headers([(H, value)])
    assert (report["cpu_utilization"], report["rps_fractional"], report["eps"]) == (0.375, 41.5,
                                                                                     1.5)
    named = report["named_metrics"]
    assert isinstance(named, dict)
    assert set(named) == {"inflight", "queue", "workers", "cost_cpu_ms", "cost_wall_ms",
                          "cost_io_ms"}


def test_the_header_the_wsgi_middleware_sends_is_accepted_by_envoy() -> None:
    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
        return [b"ok"]

    sent: list[list[tuple[str, str]]] = []
    wrapped = LoadReportWSGI(app, meter=LoadMeter(Counters(), workers=2))
    body = wrapped({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"},
                   lambda status, headers, exc_info=None: sent.append(headers))
    assert b"".join(body) == b"ok"
    report = parse_orca_headers(sent[0])
    named = report["named_metrics"]
    assert isinstance(named, dict) and "cost_cpu_ms" in named and "cost_wall_ms" in named


FIGURE = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True).filter(
    lambda name: not name.startswith("cost_"))  # a load figure named cost_* would be a cost
NUMBER = st.floats(min_value=0, max_value=1e9, allow_nan=False)


@given(st.dictionaries(st.sampled_from(["cpu_utilization", "application_utilization", "rps",
                                        "eps", "mem_utilization"]) | FIGURE, NUMBER, max_size=8),
       st.dictionaries(FIGURE, NUMBER, max_size=4))
def test_any_report_we_format_envoy_accepts_and_the_balancer_reads_back(
        load: dict[str, float], cost: dict[str, float]) -> None:
    value = format_report(load, cost)
    envoy = parse_orca_headers([(H, value)])
    named = envoy["named_metrics"]
    assert isinstance(named, dict)
    assert {k for k in named if k.startswith("cost_")} >= {f"cost_{k}" for k in cost}
    ours = parse_load_report(value)
    assert ours is not None
    for name, figure in cost.items():
        assert math.isclose(ours.cost[name], figure, abs_tol=0.0005)
        assert math.isclose(named[f"cost_{name}"], figure, abs_tol=0.0005)


def test_application_utilization_is_preferred_when_sent() -> None:
    both = parse_load_report("TEXT application_utilization:0.2, cpu_utilization:0.9, "
                             "rps_fractional:100")
    cpu_only = parse_load_report("TEXT application_utilization:0, cpu_utilization:0.9, "
                                 "rps_fractional:100")
    assert both is not None and cpu_only is not None
    assert (both.utilization, cpu_only.utilization) == (0.2, 0.9)
    weight_policy = WeightPolicy()
    assert report_weight(both, weight_policy) == pytest.approx(100 / 0.2)
    assert report_weight(cpu_only, weight_policy) == pytest.approx(100 / 0.9)
