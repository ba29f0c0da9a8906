"""Load reports: the ORCA text parser, and a round trip that keeps emitter and parser in step."""

import time

import pytest

from backends.load import Counters, LoadMeter
from balancer.balancing.load_report import parse_load_report

SAMPLE = ("TEXT cpu_utilization=0.42, rps_fractional=118.0, eps=0.0, named_metrics.inflight=3, "
          "named_metrics.queue=0, named_metrics.workers=4, request_cost.cpu_ms=12.5, "
          "request_cost.wall_ms=40.1")


def test_parses_the_documented_example() -> None:
    report = parse_load_report(SAMPLE.encode())
    assert report is not None
    assert report.cpu_utilization == 0.42 and report.rps == 118.0 and report.eps == 0.0
    assert (report.inflight, report.queue, report.workers) == (3, 0, 4)
    assert (report.cpu_ms, report.wall_ms) == (12.5, 40.1)


@pytest.mark.parametrize("bad", [
    "", "JSON {}", "TEXT cpu_utilization=high", "TEXT cpu_utilization", "TEXT eps=-1",
    "TEXT eps=nan", "TEXT eps=inf", "TEXT eps=-inf", "TEXT named_metrics.a=b=1",
])
def test_malformed_reports_are_ignored_not_raised(bad: str) -> None:
    assert parse_load_report(bad) is None


def test_empty_items_are_skipped_and_bytes_are_latin_1() -> None:
    report = parse_load_report(b"TEXT cpu_utilization=0.5, , rps_fractional=10,")
    assert report is not None and (report.cpu_utilization, report.rps) == (0.5, 10)
    odd = parse_load_report("TEXT named_metrics.\u00e9=1".encode("latin-1"))
    assert odd is not None and odd.named == {"\u00e9": 1}


def test_unknown_fields_are_kept_and_missing_ones_are_none() -> None:
    report = parse_load_report("TEXT named_metrics.gpu=0.5, mem_utilization=0.3")
    assert report is not None
    assert report.named == {"gpu": 0.5} and report.cpu_utilization is None


def test_round_trip_from_the_backend_emitter() -> None:
    meter = LoadMeter(Counters(), workers=6, queue_depth=lambda: 2)
    meter.cpu_utilization, meter.rps, meter.eps = 0.375, 41.5, 1.5
    started = meter.begin()
    deadline = time.thread_time() + 0.005
    while time.thread_time() < deadline:
        pass
    report = parse_load_report(meter.end(started, 200))
    assert report is not None
    assert (report.cpu_utilization, report.rps, report.eps) == (0.375, 41.5, 1.5)
    assert (report.inflight, report.queue, report.workers) == (3, 2, 6)  # 1 in the app + 2 queued
    assert report.cpu_ms is not None and 4.5 <= report.cpu_ms <= 50
    assert report.wall_ms is not None and report.wall_ms >= report.cpu_ms * 0.9
    assert report.io_ms is not None and 0 <= report.io_ms <= report.wall_ms  # burning: ~0
    assert meter.counters.snapshot() == (0, 1, 0)
