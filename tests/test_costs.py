"""Learned costs with a fake clock: what decides a class, escalation in one report and
de-escalation with confidence, the auto threshold, stability as confidence, bounds."""

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balancer.costs import AUTO_FLOOR_MS, SPRAY_VARIANTS, CostModel
from balancer.feedback import parse_load_report
from balancer.routing_config import Learning


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
