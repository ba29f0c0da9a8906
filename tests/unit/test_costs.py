"""Learned costs with a fake clock: what decides a class, escalation in one report and
de-escalation with confidence, the auto threshold, stability as confidence, bounds."""

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balancer.balancing.costs import AUTO_FLOOR_MS, SPRAY_VARIANTS, CostModel
from balancer.balancing.load_report import parse_load_report
from balancer.config.routing import Learning


def model(threshold: float | None = 100, **learning: float) -> CostModel:
    return CostModel(Learning(**learning), cpu_threshold_ms=threshold, io_threshold=0.5)  # type: ignore[arg-type]


# -- item 1: what decides ----------------------------------------------------------------------

def test_a_gil_bound_route_on_a_contended_backend_is_never_io() -> None:
    """50 ms of CPU, 2 s of wall (waiting for the GIL), ~0 ms of I/O as the backend reports."""
    costs = model()
    for i in range(50):
        route = costs.observe("POST /cpu", cpu_ms=50, wall_ms=2000 + i, now=i, io_ms=0.4)
        assert route.learned_class == "light_cpu"
    assert route.io_share < 0.05 and costs.is_confident(route)


def test_an_old_backend_without_io_ms_is_believed_only_when_it_served_nothing_else() -> None:
    costs = model()
    for i in range(30):  # contended: wall - cpu is GIL wait, not I/O; ignored
        route = costs.observe("POST /cpu", cpu_ms=20, wall_ms=900, now=i, inflight=8)
    assert route.learned_class == "light_cpu" and route.io_ms == 0
    for i in range(30):  # alone in flight: wall - cpu is I/O
        route = costs.observe("GET /db", cpu_ms=1, wall_ms=21, now=i, inflight=1)
    assert route.learned_class == "io"


def test_a_route_that_burns_cpu_is_never_io_even_when_it_also_waits_a_lot() -> None:
    costs = model()  # 30 ms of CPU (over a quarter of the threshold) and 500 ms of real I/O
    for i in range(30):
        route = costs.observe("GET /mixed", cpu_ms=30, wall_ms=530, now=i, io_ms=500)
    assert route.learned_class == "light_cpu"


def test_tiny_waits_make_no_route_io() -> None:
    costs = model()
    for i in range(30):
        route = costs.observe("GET /json", cpu_ms=0.05, wall_ms=0.2, now=i, io_ms=0.15)
    assert route.learned_class == "light_cpu" and costs.is_confident(route)


def test_reports_are_parsed_with_io_ms_and_bounded() -> None:
    costs = model()
    report = parse_load_report("TEXT request_cost.cpu_ms=1e9, request_cost.wall_ms=1e9, "
                               "request_cost.io_ms=1e9")
    assert report is not None and report.io_ms == 1e9
    route = costs.observe_report("GET /x", report, 0.0)
    assert route is not None and route.cpu_ms <= 600_000 and route.io_ms <= 600_000
    assert costs.observe_report("GET /x", parse_load_report("TEXT rps_fractional=1"), 1.0) is None  # type: ignore[arg-type]


# -- item 2: defaults that work with no rules ----------------------------------------------------

def mix(costs: CostModel, requests: int, seed: int = 1) -> None:
    """45 % tiny JSON, 45 % 20 ms I/O wait, 10 % ~50 ms GIL-bound CPU, with jitter."""
    rng = random.Random(seed)
    for i in range(requests):
        pick = rng.random()
        if pick < 0.45:
            costs.observe("GET /json", rng.uniform(0.1, 0.6), 1.0, i, io_ms=rng.uniform(0, 0.3))
        elif pick < 0.9:
            cpu = rng.uniform(0.3, 2.0)  # a 1 ms figure that varies a lot: CV irrelevant now
            costs.observe("GET /db", cpu, cpu + 25, i, io_ms=rng.uniform(19, 24))
        else:
            costs.observe("POST /cpu", rng.uniform(45, 60), rng.uniform(60, 3000), i,
                          io_ms=rng.uniform(0, 1))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_with_no_threshold_written_the_mix_is_isolated_as_an_expert_would(seed: int) -> None:
    costs = model(threshold=None)
    mix(costs, 400, seed)
    classes = {r.template: r.learned_class for r in costs.routes()}
    assert classes == {"GET /json": "light_cpu", "GET /db": "io", "POST /cpu": "heavy_cpu"}
    assert all(costs.is_confident(r) and costs.decides(r) for r in costs.routes())
    assert costs.threshold_ms == AUTO_FLOOR_MS


def test_a_burst_of_heavy_traffic_alone_does_not_raise_the_auto_threshold() -> None:
    costs = model(threshold=None)
    mix(costs, 400)
    for i in range(400):  # the cheap routes pause; only the heavy one is served
        route = costs.observe("POST /cpu", cpu_ms=55, wall_ms=60, now=1000 + i, io_ms=0)
        assert route.learned_class == "heavy_cpu"
    assert costs.threshold_ms == AUTO_FLOOR_MS


def test_auto_threshold_rises_when_every_request_is_expensive() -> None:
    costs = model(threshold=None)
    for i in range(200):
        costs.observe(f"GET /r{i % 4}", cpu_ms=40 + (i % 4), wall_ms=45, now=i, io_ms=0)
    assert costs.threshold_ms == 100  # 10 x 40 ms, capped: nothing is singled out as heavy
    assert {r.learned_class for r in costs.routes()} == {"light_cpu"}


def test_a_jittery_one_millisecond_route_becomes_confident() -> None:
    costs = model()
    rng = random.Random(7)
    for i in range(8):
        route = costs.observe("GET /db/query", rng.choice([0.2, 1.0, 3.0]), 22, i, io_ms=20)
    assert route.learned_class == "io" and costs.is_confident(route) and costs.decides(route)


# -- item 3: cold start and changes --------------------------------------------------------------

def test_one_heavy_report_isolates_a_new_route_at_once() -> None:
    costs = model(threshold=None)
    route = costs.observe("POST /new", cpu_ms=50, wall_ms=400, now=0, io_ms=0)
    assert route.learned_class == "heavy_cpu" and costs.decides(route)


def test_a_cheap_route_that_becomes_heavy_is_isolated_by_its_first_heavy_report() -> None:
    costs = model()
    now = 0.0
    for _ in range(20):
        now += 1
        route = costs.observe("GET /report", cpu_ms=5, wall_ms=6, now=now, io_ms=0)
    assert route.learned_class == "light_cpu" and costs.is_confident(route)
    route = costs.observe("GET /report", cpu_ms=300, wall_ms=310, now=now + 1, io_ms=0)
    assert route.learned_class == "heavy_cpu" and costs.decides(route)


def test_moving_back_to_a_lighter_class_takes_min_samples_reports_in_a_row() -> None:
    costs = model(min_samples=5)
    for i in range(10):
        route = costs.observe("GET /r", cpu_ms=300, wall_ms=300, now=i, io_ms=0)
    classes = []
    for i in range(40):
        route = costs.observe("GET /r", cpu_ms=2, wall_ms=2, now=100 + i, io_ms=0)
        classes.append(route.learned_class)
        assert costs.decides(route)  # never a fall back to the default while it changes
    first_light = classes.index("light_cpu")
    assert first_light >= 5 and all(c == "light_cpu" for c in classes[first_light:])


def test_a_heavy_report_while_moving_back_keeps_the_route_heavy() -> None:
    costs = model(min_samples=5)
    for i in range(10):
        costs.observe("GET /r", cpu_ms=300, wall_ms=300, now=i, io_ms=0)
    for i in range(60):
        cpu = 300 if i % 4 == 3 else 2   # one heavy request in four: it stays isolated
        route = costs.observe("GET /r", cpu_ms=cpu, wall_ms=cpu, now=20 + i, io_ms=0)
        assert route.learned_class == "heavy_cpu"


def test_an_io_route_that_starts_burning_cpu_leaves_io_with_one_report() -> None:
    costs = model(threshold=None)
    for i in range(10):
        route = costs.observe("GET /db", cpu_ms=1, wall_ms=21, now=i, io_ms=20)
    assert route.learned_class == "io"
    route = costs.observe("GET /db", cpu_ms=5, wall_ms=25, now=11, io_ms=20)
    assert route.learned_class == "light_cpu"


def test_a_route_near_the_threshold_does_not_flap() -> None:
    """Blocks of four at 90 and 112 ms move the average across 100 ms again and again, but
    never past the 20 % margin (80 / 120 ms): with hysteresis the class never changes (without
    it, it changes on nearly every block)."""
    costs = model()
    classes, averages = [], []
    for i in range(200):
        cpu = 90 if (i // 4) % 2 == 0 else 112
        route = costs.observe("GET /edge", cpu_ms=cpu, wall_ms=cpu + 1, now=i, io_ms=0)
        classes.append(route.learned_class)
        averages.append(route.cpu_ms)
    assert min(averages[8:]) < 100 < max(averages)  # the average does cross the threshold
    changes = sum(1 for a, b in itertools.pairwise(classes) if a != b)
    assert classes[0] == "light_cpu" and changes == 0, f"{changes} class changes"


def test_a_route_that_crosses_the_margin_does_change_class() -> None:
    """The other side of hysteresis: one report past threshold x (1 + margin) isolates the
    route at once, and it changes back only below threshold x (1 - margin)."""
    costs = model()
    route = costs.observe("GET /edge", cpu_ms=90, wall_ms=91, now=0, io_ms=0)
    for i in range(1, 30):
        route = costs.observe("GET /edge", cpu_ms=130, wall_ms=131, now=i, io_ms=0)
        if route.learned_class == "heavy_cpu":
            break
    assert route.learned_class == "heavy_cpu" and i == 1
    for i in range(30, 60):
        route = costs.observe("GET /edge", cpu_ms=60, wall_ms=61, now=i, io_ms=0)
        assert route.learned_class == "heavy_cpu" or route.cpu_ms < 80
        if route.learned_class != "heavy_cpu":
            break
    assert route.learned_class == "light_cpu" and route.cpu_ms < 80


def test_a_new_light_or_io_route_decides_only_once_stable() -> None:
    costs = model(min_samples=5)
    for i in range(4):
        route = costs.observe("GET /db", cpu_ms=1, wall_ms=21, now=i, io_ms=20)
        assert not costs.decides(route) and not costs.is_confident(route)
    route = costs.observe("GET /db", cpu_ms=1, wall_ms=21, now=5, io_ms=20)
    assert costs.decides(route) and costs.is_confident(route) and costs.confidence(route) == 1.0


# -- bounds: hostile traffic cannot flush what was learned (issue 11 item 7) ----------------------

def settle(costs: CostModel, names: list[str]) -> None:
    for i in range(10):
        for name in names:
            costs.observe(name, cpu_ms=300 if "heavy" in name else 1, wall_ms=21, now=i, io_ms=20)


def test_a_spray_of_query_keys_neither_flushes_learned_costs_nor_fills_the_table() -> None:
    costs = model(max_routes=50)
    known = [f"GET /known{i}" for i in range(40)] + ["POST /heavy"]
    settle(costs, known)
    for i in range(1000):
        costs.observe(f"GET /search?k{i}", cpu_ms=1, wall_ms=2, now=100 + i, io_ms=0)
    assert all(costs.lookup(name) is not None for name in known)
    assert costs.lookup("POST /heavy").learned_class == "heavy_cpu"  # type: ignore[union-attr]
    sprayed = [r for r in costs.routes() if r.template.startswith("GET /search")]
    assert len(sprayed) == SPRAY_VARIANTS + 1  # the first sets, then `?*`
    assert costs.lookup("GET /search?new") is costs.lookup("GET /search?*")


def test_a_spray_of_distinct_paths_churns_probation_only() -> None:
    costs = model(max_routes=50)
    known = [f"GET /known{i}" for i in range(40)]
    settle(costs, known)
    for i in range(5000):
        costs.observe(f"GET /p{i}", cpu_ms=1, wall_ms=2, now=100 + i, io_ms=0)
    assert all(costs.lookup(name) is not None for name in known)
    assert len(costs) <= 50 + 64 and costs.evictions == 0


def test_the_main_table_is_bounded_least_recently_used_first() -> None:
    costs = model(max_routes=3, min_samples=1)
    for i, name in enumerate(["a", "b", "c"]):
        costs.observe(f"GET /{name}", 1, 2, now=i, io_ms=0)
    costs.observe("GET /a", 1, 2, now=4, io_ms=0)       # a is now the most recent
    costs.observe("GET /d", 1, 2, now=5, io_ms=0)       # evicts b, the least recently used
    assert {r.template for r in costs.routes()} == {"GET /a", "GET /c", "GET /d"}
    assert costs.evictions == 1 and len(costs) == 3


def test_reconfigure_keeps_what_was_learned_and_applies_new_thresholds() -> None:
    costs = model()
    for i in range(6):
        costs.observe("GET /x", cpu_ms=60, wall_ms=61, now=i, io_ms=0)
    assert costs.lookup("GET /x").learned_class == "light_cpu"  # type: ignore[union-attr]
    costs.configure(Learning(), cpu_threshold_ms=50, io_threshold=0.5)
    assert costs.lookup("GET /x").learned_class == "heavy_cpu"  # type: ignore[union-attr]


# -- properties --------------------------------------------------------------------------------

REPORTS = st.lists(st.tuples(st.floats(0, 1e7), st.floats(0, 1e7),
                             st.one_of(st.none(), st.floats(0, 1e7)),
                             st.one_of(st.none(), st.floats(0, 64))), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(threshold=st.one_of(st.none(), st.floats(1, 1000)), reports=REPORTS)
def test_a_route_whose_every_request_burns_cpu_is_never_io(
    threshold: float | None, reports: list[tuple[float, float, float | None, float | None]],
) -> None:
    """Whatever the wall and I/O figures a backend reports (any contention, any lie)."""
    costs = model(threshold=threshold)
    floor = (threshold or 100) * 0.25 * 1.2  # a quarter of the threshold, over the margin
    for now, (cpu, wall, io, inflight) in enumerate(reports):
        route = costs.observe("GET /r", max(cpu, floor), wall, float(now), io_ms=io,
                              inflight=inflight)
        assert route.learned_class != "io"
        assert 0 <= route.cpu_ms <= 600_000 and 0 <= route.io_ms <= 600_000


# -- mutation testing, after merging round 3 (bench/results/mutation.md) ---------------------
# Each test below pins one boundary or counter a surviving mutant of costs.py changed.

def test_class_boundaries_on_each_side_of_every_threshold_with_and_without_a_class() -> None:
    """threshold 100 ms, io_threshold 0.6, hysteresis 0.2: heavy at 100 (new route), 120
    (from light), 80 (staying heavy); io at share 0.6 / 0.68 / 0.52, CPU under 25 / 20 / 30 ms,
    waits of at least 1 / 1.2 / 0.8 ms (new route / from light / staying io)."""
    costs = CostModel(Learning(), cpu_threshold_ms=100, io_threshold=0.6)
    cases = [
        (None, 100.0, 0.0, "heavy_cpu"), (None, 99.9, 0.0, "light_cpu"),
        ("light_cpu", 119.9, 0.0, "light_cpu"), ("light_cpu", 120.0, 0.0, "heavy_cpu"),
        ("heavy_cpu", 80.0, 0.0, "heavy_cpu"), ("heavy_cpu", 79.9, 0.0, "light_cpu"),
        ("io", 119.9, 0.0, "light_cpu"),
        # the io share
        (None, 4.0, 6.0, "io"), (None, 4.1, 5.9, "light_cpu"),
        ("light_cpu", 4.5, 5.5, "light_cpu"), ("light_cpu", 3.0, 7.0, "io"),
        ("io", 4.5, 5.5, "io"), ("io", 4.9, 5.1, "light_cpu"),
        (None, 10.0, 2.0, "light_cpu"),
        # the CPU cap of io
        (None, 24.9, 1000.0, "io"), (None, 25.0, 1000.0, "light_cpu"),
        ("light_cpu", 19.9, 1000.0, "io"), ("light_cpu", 22.0, 1000.0, "light_cpu"),
        ("io", 27.0, 1000.0, "io"), ("io", 40.0, 1000.0, "light_cpu"),
        # the shortest wait that makes io
        (None, 0.0, 1.0, "io"), (None, 0.0, 0.99, "light_cpu"),
        ("light_cpu", 0.01, 1.1, "light_cpu"), ("light_cpu", 0.01, 1.5, "io"),
        ("io", 0.0, 0.9, "io"), ("io", 0.0, 0.79, "light_cpu"),
        (None, 0.0, 0.0, "light_cpu"),
    ]
    for current, cpu, io, expected in cases:
        assert costs._class_of(cpu, io, current) == expected, (current, cpu, io)  # type: ignore[arg-type]


def test_the_io_share_boundary_is_inclusive() -> None:
    costs = CostModel(Learning(), cpu_threshold_ms=100, io_threshold=0.5)
    assert costs._class_of(5.0, 5.0, None) == "io"


def test_one_request_escalates_at_exactly_the_margin() -> None:
    costs = model()  # threshold 100, hysteresis 0.2
    assert costs._escalation(120.0, "light_cpu") == "heavy_cpu"
    assert costs._escalation(119.9, "light_cpu") is None
    assert costs._escalation(30.0, "io") == "light_cpu"
    assert costs._escalation(25.0, "io") is None
    assert costs._escalation(120.0, "io") == "heavy_cpu"
    assert costs._escalation(80.0, "heavy_cpu") == "heavy_cpu"
    assert costs._escalation(85.0, "heavy_cpu") == "heavy_cpu"
    assert costs._escalation(79.9, "heavy_cpu") is None


def instant(threshold: float | None = 100, **learning: float) -> CostModel:
    """alpha 1: the averages are the last report, so each count below is exact."""
    return model(threshold, alpha=1.0, **learning)


def reports_until(costs: CostModel, template: str, cls: str, cpu: float, io: float,
                  start: float) -> int:
    for n in range(1, 50):
        route = costs.observe(template, cpu_ms=cpu, wall_ms=cpu + io, now=start + n, io_ms=io)
        if route.learned_class == cls:
            return n
    raise AssertionError(f"never {cls}")


def test_escalation_starts_the_count_back_and_the_confidence_from_zero() -> None:
    costs = instant(min_samples=5)
    for i in range(2):
        route = costs.observe("GET /r", cpu_ms=10, wall_ms=10, now=i, io_ms=0)
    assert not costs.decides(route)
    route = costs.observe("GET /r", cpu_ms=200, wall_ms=200, now=3, io_ms=0)
    assert route.learned_class == "heavy_cpu" and costs.decides(route)
    assert costs.confidence(route) == 0.0
    for i in range(4):
        route = costs.observe("GET /r", cpu_ms=200, wall_ms=200, now=4 + i, io_ms=0)
    assert not costs.is_confident(route)
    route = costs.observe("GET /r", cpu_ms=200, wall_ms=200, now=9, io_ms=0)
    assert costs.is_confident(route) and costs.confidence(route) == 1.0
    # steady: then back to light after exactly min_samples light reports in a row
    assert reports_until(costs, "GET /r", "light_cpu", 10, 0, 10) == 5


def test_moving_back_counts_exactly_min_samples_and_confidence_waits_for_it() -> None:
    costs = instant(min_samples=5)
    costs.observe("GET /r", cpu_ms=10, wall_ms=10, now=0, io_ms=0)
    costs.observe("GET /r", cpu_ms=200, wall_ms=200, now=1, io_ms=0)  # escalated
    for i in range(4):
        route = costs.observe("GET /r", cpu_ms=10, wall_ms=10, now=2 + i, io_ms=0)
        assert route.learned_class == "heavy_cpu" and costs.confidence(route) == 0.0
    route = costs.observe("GET /r", cpu_ms=10, wall_ms=10, now=6, io_ms=0)
    assert route.learned_class == "light_cpu"
    # and further down, light to io, counts from zero again
    assert reports_until(costs, "GET /r", "io", 0.1, 50, 10) == 5


def test_escalating_from_io_to_light_does_not_make_a_route_decide() -> None:
    costs = instant(min_samples=5)
    route = costs.observe("GET /db", cpu_ms=0.1, wall_ms=50, now=0, io_ms=50)
    assert route.learned_class == "io" and not costs.decides(route)
    route = costs.observe("GET /db", cpu_ms=40, wall_ms=90, now=1, io_ms=50)
    assert route.learned_class == "light_cpu" and not costs.decides(route)


def test_a_reload_with_the_same_thresholds_changes_no_class_and_no_count() -> None:
    costs = instant(min_samples=5)
    costs.observe("GET /r", cpu_ms=200, wall_ms=200, now=0, io_ms=0)
    route = costs.observe("GET /r", cpu_ms=90, wall_ms=90, now=1, io_ms=0)  # in the band
    costs.observe("GET /light", cpu_ms=10, wall_ms=10, now=1, io_ms=0)
    assert route.learned_class == "heavy_cpu"
    for _ in range(2):
        costs.configure(costs.learning, cpu_threshold_ms=100, io_threshold=0.5)
    assert route.learned_class == "heavy_cpu"  # reclassified afresh it would be light
    for i in range(2):
        costs.observe("GET /r", cpu_ms=10, wall_ms=10, now=2 + i, io_ms=0)
    costs.configure(costs.learning, cpu_threshold_ms=100, io_threshold=0.5)
    assert reports_until(costs, "GET /r", "light_cpu", 10, 0, 10) == 3  # the count was kept


def test_a_reload_with_new_thresholds_reclassifies_and_restarts_the_counts() -> None:
    costs = instant(min_samples=5)
    route = costs.observe("GET /r", cpu_ms=10, wall_ms=10, now=0, io_ms=0)
    costs.configure(costs.learning, cpu_threshold_ms=100, io_threshold=0.4)
    assert route.learned_class == "light_cpu"
    assert reports_until(costs, "GET /r", "io", 0.1, 50, 10) == 5
    heavy = costs.observe("GET /h", cpu_ms=200, wall_ms=200, now=20, io_ms=0)
    costs.configure(costs.learning, cpu_threshold_ms=300, io_threshold=0.4)
    assert heavy.learned_class == "light_cpu"


def test_shrinking_max_routes_on_a_reload_evicts_the_least_recent_and_counts_them() -> None:
    costs = model()
    for i in range(4):  # heavy at once: settled, so in the main table
        costs.observe(f"GET /h{i}", cpu_ms=300, wall_ms=300, now=i, io_ms=0)
    costs.configure(Learning(max_routes=4), cpu_threshold_ms=100, io_threshold=0.5)
    assert len(costs) == 4 and costs.evictions == 0
    costs.configure(Learning(max_routes=2), cpu_threshold_ms=100, io_threshold=0.5)
    assert len(costs) == 2 and costs.evictions == 2
    assert costs.lookup("GET /h0") is None and costs.lookup("GET /h3") is not None
    for i in range(4, 6):
        costs.observe(f"GET /h{i}", cpu_ms=300, wall_ms=300, now=i, io_ms=0)
    assert costs.evictions == 4 and costs.lookup("GET /h5") is not None


def test_reported_figures_are_clamped_at_zero_and_wall_time_bounds_the_wait() -> None:
    costs = model()
    route = costs.observe("GET /a", cpu_ms=0.5, wall_ms=0.9, now=7.5)
    assert route.cpu_ms == 0.5 and route.io_ms == pytest.approx(0.4)
    assert route.samples == 1 and route.last_seen == 7.5
    route = costs.observe("GET /b", cpu_ms=1, wall_ms=21, now=0)
    assert route.io_ms == 20
    route = costs.observe("GET /c", cpu_ms=1, wall_ms=21, now=0, inflight=2)
    assert route.io_ms == 0  # contended: wall - cpu is not I/O
    route = costs.observe("GET /d", cpu_ms=1, wall_ms=30, now=0, io_ms=50)
    assert route.io_ms == 30
    route = costs.observe("GET /e", cpu_ms=0, wall_ms=0, now=0, io_ms=5)
    assert route.io_ms == 5  # no wall time reported: the wait is not bounded by it
    route = costs.observe("GET /f", cpu_ms=0, wall_ms=0.5, now=0, io_ms=5)
    assert route.io_ms == 0.5
    for i in range(2):
        route = costs.observe("GET /a", cpu_ms=0.5, wall_ms=0.9, now=8 + i)
    assert route.samples == 3 and route.last_seen == 9


def test_observe_report_passes_every_figure_and_needs_both_cpu_and_wall() -> None:
    costs = model()
    cpu_only = parse_load_report("TEXT request_cost.cpu_ms=5")
    assert cpu_only is not None and costs.observe_report("GET /x", cpu_only, 0.0) is None
    report = parse_load_report("TEXT request_cost.cpu_ms=1, request_cost.wall_ms=21, "
                               "request_cost.io_ms=3")
    assert report is not None
    route = costs.observe_report("GET /io", report, 4.5)
    assert route is not None and route.io_ms == 3 and route.last_seen == 4.5
    busy = parse_load_report("TEXT request_cost.cpu_ms=1, request_cost.wall_ms=21, "
                             "named_metrics.inflight=5")
    assert busy is not None
    route = costs.observe_report("GET /busy", busy, 0.0)
    assert route is not None and route.io_ms == 0


def test_the_auto_threshold_is_computed_every_auto_every_reports_and_only_when_auto() -> None:
    costs = model(threshold=None)
    for i in range(127):
        costs.observe(f"GET /r{i % 4}", cpu_ms=5, wall_ms=5, now=i, io_ms=0)
    assert costs.threshold_ms == AUTO_FLOOR_MS
    costs.observe("GET /r0", cpu_ms=5, wall_ms=5, now=127, io_ms=0)
    assert costs.threshold_ms == 50  # AUTO_FACTOR x 5 ms
    fixed = model(threshold=100)
    for i in range(128):
        fixed.observe(f"GET /r{i % 4}", cpu_ms=5, wall_ms=5, now=i, io_ms=0)
    assert fixed.threshold_ms == 100


def test_the_auto_threshold_needs_auto_min_reports_and_takes_the_first_quartile() -> None:
    costs = model(threshold=None)
    for i in range(19):
        costs.observe(f"GET /r{i % 5}", cpu_ms=(i % 5) + 1, wall_ms=10, now=i, io_ms=0)
    costs.configure(costs.learning, cpu_threshold_ms=None, io_threshold=0.5)
    assert costs.threshold_ms == AUTO_FLOOR_MS  # 19 reports: too few to move it
    costs.observe("GET /r4", cpu_ms=5, wall_ms=10, now=19, io_ms=0)
    costs.configure(costs.learning, cpu_threshold_ms=None, io_threshold=0.5)
    assert costs.threshold_ms == 20  # costs 1..5 ms: the first quartile is 2 ms


def test_lookup_finds_probation_and_main_table_routes_and_the_spray_template() -> None:
    costs = model()
    costs.observe("GET /p", cpu_ms=5, wall_ms=5, now=0, io_ms=0)
    assert costs.lookup("GET /p") is not None  # still in probation
    for i in range(SPRAY_VARIANTS):
        costs.observe(f"GET /s?{i}?x", cpu_ms=5, wall_ms=5, now=i, io_ms=0)
    exact = costs.lookup("GET /s?0?x")
    assert exact is not None and exact.template == "GET /s?0?x"
    folded = costs.observe("GET /s?9?x", cpu_ms=300, wall_ms=300, now=9, io_ms=0)
    assert folded.template == "GET /s?*" and costs.decides(folded)  # heavy: main table
    assert costs.lookup("GET /s?10?x") is folded
    again = costs.observe("GET /s?11?x", cpu_ms=300, wall_ms=300, now=10, io_ms=0)
    assert again is folded and folded.samples == 2


def test_the_spray_template_in_probation_keeps_learning() -> None:
    costs = model()
    for i in range(SPRAY_VARIANTS + 3):
        route = costs.observe(f"GET /s?k{i}", cpu_ms=5, wall_ms=5, now=i, io_ms=0)
    assert route.template == "GET /s?*" and route.samples == 3


def test_the_query_key_counts_are_bounded_at_four_times_max_routes() -> None:
    def sprayed_after(others: int) -> bool:
        costs = model(max_routes=2)  # remembers the key sets of 8 paths
        for i in range(SPRAY_VARIANTS - 1):
            costs.observe(f"GET /a?k{i}", cpu_ms=5, wall_ms=5, now=i, io_ms=0)
        for i in range(others):
            costs.observe(f"GET /o{i}?k", cpu_ms=5, wall_ms=5, now=10 + i, io_ms=0)
        costs.observe("GET /a?k7", cpu_ms=5, wall_ms=5, now=30, io_ms=0)
        return costs.observe("GET /a?k8", cpu_ms=5, wall_ms=5, now=31, io_ms=0).template == (
            "GET /a?*")
    assert sprayed_after(7)       # 8 paths: /a is still counted
    assert not sprayed_after(8)   # 9 paths: /a, the least recent, was forgotten


def test_probation_holds_max_routes_newest_kept() -> None:
    costs = model(max_routes=3)
    for i in range(3):
        costs.observe(f"GET /n{i}", cpu_ms=5, wall_ms=5, now=i, io_ms=0)
    assert len(costs) == 3
    costs.observe("GET /n3", cpu_ms=5, wall_ms=5, now=3, io_ms=0)
    assert len(costs) == 3 and costs.lookup("GET /n0") is None
    assert costs.lookup("GET /n3") is not None


def test_confidence_is_stable_reports_over_min_samples_capped_at_one() -> None:
    costs = model(min_samples=5)
    route = costs.observe("GET /c", cpu_ms=5, wall_ms=5, now=0, io_ms=0)
    assert costs.confidence(route) == pytest.approx(0.2)
    for i in range(10):
        route = costs.observe("GET /c", cpu_ms=5, wall_ms=5, now=1 + i, io_ms=0)
    assert costs.confidence(route) == 1.0


def test_repr_counts_routes_and_confident_ones() -> None:
    costs = model(min_samples=2)
    for i in range(3):
        costs.observe("GET /a", cpu_ms=5, wall_ms=5, now=i, io_ms=0)
    costs.observe("GET /b", cpu_ms=5, wall_ms=5, now=0, io_ms=0)
    assert repr(costs) == "<CostModel 2 routes (1 confident), cpu_threshold 100 ms>"


def test_a_settled_spray_template_survives_a_spray_of_new_paths() -> None:
    costs = model()
    for i in range(SPRAY_VARIANTS):
        costs.observe(f"GET /s?k{i}", cpu_ms=5, wall_ms=5, now=i, io_ms=0)
    for i in range(10):
        route = costs.observe(f"GET /s?j{i}", cpu_ms=300, wall_ms=300, now=10 + i, io_ms=0)
    assert route.template == "GET /s?*" and costs.decides(route)
    for i in range(100):  # new paths churn probation only
        costs.observe(f"GET /p{i}", cpu_ms=5, wall_ms=5, now=100 + i, io_ms=0)
    assert costs.lookup("GET /s?zz") is route
