"""Weights: fake clock, no I/O (the draws that use them: test_selection.py)."""

import itertools

import pytest

from balancer.balancing.load_report import LoadReport
from balancer.balancing.weights import (
    BackendStats,
    WeightPolicy,
    effective_weights,
    report_weight,
    slow_start_factor,
)

B = WeightPolicy()


def report(rps: float, utilisation: float, eps: float = 0.0) -> LoadReport:
    return LoadReport(cpu_utilization=utilisation, rps=rps, eps=eps)


def settled(now: float = 100.0) -> BackendStats:
    return BackendStats(now - 1000)  # long past slow start


def test_report_weight_is_rps_over_utilisation_with_an_error_penalty() -> None:
    assert report_weight(report(100, 0.5), B) == pytest.approx(200)
    assert report_weight(report(100, 0.5, eps=10), B) == pytest.approx(100 / (0.5 + 0.1 * 10))
    assert report_weight(report(0, 0.5), B) is None  # an idle backend cannot tell
    assert report_weight(LoadReport(rps=5.0), B) is None


def test_a_slow_backend_gets_a_quarter_of_the_weight() -> None:
    fast, slow = settled(), settled()
    fast.observe_report(report(100, 0.2), 100.0, B)
    slow.observe_report(report(100, 0.8), 100.0, B)  # 4x the CPU for the same rate
    weights = effective_weights([fast, slow], [1.0, 1.0], 100.5, B)
    assert weights[0] / weights[1] == pytest.approx(4.0)


def test_stale_reports_are_ignored() -> None:
    fast, slow = settled(), settled()
    fast.observe_report(report(100, 0.2), 100.0, B)
    slow.observe_report(report(100, 0.8), 100.0, B)
    later = 100.0 + B.report_ttl + 0.1
    assert effective_weights([fast, slow], [1.0, 1.0], later, B) == [1.0, 1.0]


def test_slow_start_ramps_a_new_backend_up() -> None:
    assert slow_start_factor(0.0, B) == pytest.approx(B.slow_start_floor)
    assert slow_start_factor(B.slow_start / 2, B) == pytest.approx(
        B.slow_start_floor + (1 - B.slow_start_floor) / 2)
    assert slow_start_factor(B.slow_start, B) == 1.0
    old, new = settled(), BackendStats(100.0)
    weights = effective_weights([old, new], [1.0, 1.0], 100.0 + B.slow_start / 2, B)
    assert weights[1] / weights[0] == pytest.approx(0.55)


def test_the_exploration_floor_keeps_every_backend_in_play() -> None:
    good, bad = settled(), settled()
    good.observe_report(report(1000, 0.01), 100.0, B)
    bad.observe_report(report(1, 1.0), 100.0, B)  # one terrible report
    weights = effective_weights([good, bad], [1.0, 1.0], 100.0, B)
    assert weights[1] == pytest.approx(weights[0] * B.min_share)


def test_fast_failures_are_penalised_and_forgiven() -> None:
    healthy, failing = settled(), settled()
    for _ in range(20):
        failing.observe_outcome(True, B)
        healthy.observe_outcome(False, B)
    weights = effective_weights([healthy, failing], [1.0, 1.0], 100.0, B)
    assert weights[1] < weights[0] / 5
    for _ in range(60):
        failing.observe_outcome(False, B)
    weights = effective_weights([healthy, failing], [1.0, 1.0], 100.0, B)
    assert weights[1] > weights[0] * 0.8


def test_damping_approaches_a_step_without_overshoot() -> None:
    stats = settled()
    stats.observe_report(report(100, 0.25), 0.0, B)    # weight 400
    seen = []
    for step in range(1, 30):
        stats.observe_report(report(100, 1.0), float(step), B)  # load steps up: target 100
        seen.append(stats.report_weight)
    assert seen[0] == pytest.approx(400 + B.damping * (100 - 400))  # one damped step: 310
    assert all(w is not None and w >= 100 for w in seen)           # never below the target
    assert all(a >= b for a, b in itertools.pairwise(seen))        # monotone, no bounce
    assert seen[-1] == pytest.approx(100, rel=0.01)


def test_static_weights_multiply_in() -> None:
    weights = effective_weights([settled(), settled()], [3.0, 1.0], 100.0, B)
    assert weights == [3.0, 1.0]


# -- weights: exact figures ------------------------------------------------------------------------

def test_fresh_reports_scale_static_weights_by_their_share_of_the_mean() -> None:
    now = 100.0
    a, b, stale = settled(), settled(), settled()
    a.observe_report(report(300, 1.0), now - B.report_ttl, B)  # exactly at the ttl: fresh
    b.observe_report(report(100, 1.0), now, B)
    stale.observe_report(report(900, 1.0), now - B.report_ttl - 0.01, B)
    weights = effective_weights([a, b, stale], [2.0, 1.0, 1.0], now, B)
    assert weights == pytest.approx([2.0 * 300 / 200, 1.0 * 100 / 200, 1.0])


def test_without_fresh_reports_the_static_weights_stand() -> None:
    assert effective_weights([settled(), settled()], [3.0, 1.0], 100.0, B) == [3.0, 1.0]
    with pytest.raises(ValueError):
        effective_weights([settled()], [1.0, 2.0], 100.0, B)  # one weight per backend


def test_the_error_penalty_divides_exactly() -> None:
    stats = settled()
    stats.observe_outcome(True, B)
    assert stats.error_rate == pytest.approx(0.1)
    assert effective_weights([stats, settled()], [1.0, 1.0], 100.0, B)[0] == pytest.approx(0.5)


def test_a_report_step_is_clamped_to_half_or_double() -> None:
    undamped = WeightPolicy(damping=1.0)
    stats = settled()
    stats.observe_report(report(100, 1.0), 0.0, undamped)
    assert stats.report_weight == 100
    stats.observe_report(report(1000, 1.0), 1.0, undamped)
    assert stats.report_weight == 200
    stats.observe_report(report(1, 1.0), 2.0, undamped)
    assert stats.report_weight == 100
    last = report(1, 1.0)
    stats.observe_report(last, 3.0, undamped)
    assert stats.report is last and stats.report_at == 3.0


def test_a_new_backend_has_no_report_and_a_restart_forgets_reports_and_ramps_again() -> None:
    stats = BackendStats(0.0)
    assert stats.report is None and stats.report_weight is None
    assert repr(stats) == "<BackendStats report_weight=none error_rate=0.000>"
    stats.observe_report(report(100, 0.5), 50.0, B)
    assert repr(stats) == "<BackendStats report_weight=200 error_rate=0.000>"
    stats.restart(60.0)
    assert stats.added_at == 60.0 and stats.report_weight is None
    assert stats.report_at == float("-inf")
    other = settled(60.0)
    other.observe_report(report(100, 0.5), 60.0, B)
    weights = effective_weights([stats, other], [1.0, 1.0], 60.0, B)
    assert weights == pytest.approx([B.slow_start_floor, 1.0])


def test_slow_start_edges() -> None:
    off = WeightPolicy(slow_start=0.0)
    assert slow_start_factor(-1.0, off) == 1.0  # off, even for a clock that went back
    one = WeightPolicy(slow_start=1.0, slow_start_floor=0.2)
    assert slow_start_factor(0.5, one) == pytest.approx(0.6)
    assert slow_start_factor(-1.0, one) == pytest.approx(0.2)
