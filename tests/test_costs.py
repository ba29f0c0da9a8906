"""Learned costs with a fake clock: step changes, hysteresis, confidence, eviction."""

import itertools

import pytest

from balancer.costs import CostModel, RouteCost
from balancer.routing_config import Learning


def model(**learning: float) -> CostModel:
    return CostModel(Learning(**learning), cpu_threshold_ms=100, io_threshold=0.5)  # type: ignore[arg-type]


def test_a_cheap_route_that_becomes_heavy_is_reclassified_within_a_few_requests() -> None:
    costs = model()
    now = 0.0
    for _ in range(20):
        now += 1
        route = costs.observe("GET /report", cpu_ms=5, wall_ms=6, now=now)
    assert route.learned_class == "light_cpu" and costs.is_confident(route)
    steps = 0
    while not (route.learned_class == "heavy_cpu" and costs.is_confident(route)) and steps < 10:
        now += 1
        steps += 1
        route = costs.observe("GET /report", cpu_ms=300, wall_ms=310, now=now)
    assert route.learned_class == "heavy_cpu"
    assert steps == 3, f"took {steps} requests (README and balancer/costs.py promise 3)"


def test_an_io_route_is_learned_from_its_share_of_waiting() -> None:
    costs = model()
    for i in range(6):
        route = costs.observe("GET /db/query?user", cpu_ms=1, wall_ms=21, now=i)
    assert route.learned_class == "io" and route.io_share > 0.9


def test_a_route_near_the_threshold_does_not_flap() -> None:
    """Blocks of four at 90 and 112 ms move the average across 100 ms again and again, but
    never past the 20 % margin (80 / 120 ms): with hysteresis the class never changes (without
    it, it changes on nearly every block)."""
    costs = model()
    classes, averages = [], []
    for i in range(200):
        cpu = 90 if (i // 4) % 2 == 0 else 112
        route = costs.observe("GET /edge", cpu_ms=cpu, wall_ms=cpu + 1, now=i)
        classes.append(route.learned_class)
        averages.append(route.cpu_ms)
    assert min(averages[8:]) < 100 < max(averages)  # the average does cross the threshold
    changes = sum(1 for a, b in itertools.pairwise(classes) if a != b)
    assert classes[0] == "light_cpu" and changes == 0, f"{changes} class changes"


def test_a_route_that_crosses_the_margin_does_change_class() -> None:
    """The other side of hysteresis: past threshold x (1 + margin) the class changes, and it
    changes back only below threshold x (1 - margin)."""
    costs = model()
    route = costs.observe("GET /edge", cpu_ms=90, wall_ms=91, now=0)
    for i in range(1, 30):
        route = costs.observe("GET /edge", cpu_ms=130, wall_ms=131, now=i)
        if route.learned_class == "heavy_cpu":
            break
    assert route.learned_class == "heavy_cpu" and route.cpu_ms >= 120
    for i in range(30, 60):
        route = costs.observe("GET /edge", cpu_ms=60, wall_ms=61, now=i)
        assert route.learned_class == "heavy_cpu" or route.cpu_ms < 80
        if route.learned_class != "heavy_cpu":
            break
    assert route.learned_class == "light_cpu" and route.cpu_ms < 80


def test_confidence_needs_samples_and_low_variance() -> None:
    costs = model(min_samples=5, max_cv=0.5)
    for i in range(4):
        route = costs.observe("GET /a", cpu_ms=10, wall_ms=12, now=i)
    assert not costs.is_confident(route)
    route = costs.observe("GET /a", cpu_ms=10, wall_ms=12, now=5)
    assert costs.is_confident(route) and costs.confidence(route) == 1.0
    for i in range(10):
        route = costs.observe("GET /b", cpu_ms=1 if i % 2 else 200, wall_ms=201, now=i)
    assert not costs.is_confident(route)


def test_templates_are_bounded_least_recently_used_first() -> None:
    costs = model(max_routes=3)
    for i, name in enumerate(["a", "b", "c"]):
        costs.observe(f"GET /{name}", 1, 2, now=i)
    costs.observe("GET /a", 1, 2, now=4)       # a is now the most recent
    costs.observe("GET /d", 1, 2, now=5)       # evicts b, the least recently used
    assert {r.template for r in costs.routes()} == {"GET /a", "GET /c", "GET /d"}
    assert costs.evictions == 1 and len(costs) == 3


def test_reconfigure_keeps_what_was_learned_and_applies_new_thresholds() -> None:
    costs = model()
    for i in range(6):
        costs.observe("GET /x", cpu_ms=60, wall_ms=61, now=i)
    assert costs.lookup("GET /x").learned_class == "light_cpu"  # type: ignore[union-attr]
    costs.configure(Learning(), cpu_threshold_ms=50, io_threshold=0.5)
    assert costs.lookup("GET /x").learned_class == "heavy_cpu"  # type: ignore[union-attr]


def exact(**learning: float) -> CostModel:
    """alpha = 1: the average is the last sample, so class boundaries can be hit exactly."""
    return model(alpha=1.0, **learning)


def test_the_first_sample_classifies_without_margin_at_the_thresholds() -> None:
    costs = model()
    assert costs.observe("GET /cpu", cpu_ms=100, wall_ms=100, now=0).learned_class == "heavy_cpu"
    assert costs.observe("GET /cpu2", cpu_ms=99, wall_ms=99, now=0).learned_class == "light_cpu"
    assert costs.observe("GET /io", cpu_ms=10, wall_ms=20, now=0).learned_class == "io"  # 0.5
    assert costs.observe("GET /io2", cpu_ms=11, wall_ms=20, now=0).learned_class == "light_cpu"


def test_the_cpu_margin_is_20_percent_each_way() -> None:
    costs = exact()
    steps = [(90, "light_cpu"), (119, "light_cpu"), (121, "heavy_cpu"), (81, "heavy_cpu"),
             (79, "light_cpu"), (119, "light_cpu")]
    for i, (cpu, expected) in enumerate(steps):
        route = costs.observe("GET /r", cpu_ms=cpu, wall_ms=cpu, now=i)
        assert route.learned_class == expected, (cpu, route.learned_class)


def test_the_io_margin_is_the_hysteresis_share_of_the_nearer_side() -> None:
    """io_threshold 0.7: the margin is 0.2 x min(0.7, 0.3) = 0.06, so io from 0.76 up and
    back to light below 0.64."""
    costs = CostModel(Learning(alpha=1.0), cpu_threshold_ms=100, io_threshold=0.7)
    assert costs.observe("GET /x", cpu_ms=30, wall_ms=100, now=0).learned_class == "io"  # 0.70
    steps = [(50, "light_cpu"), (25, "light_cpu"), (23, "io"), (35, "io"), (37, "light_cpu")]
    for i, (cpu, expected) in enumerate(steps, start=1):  # io share = (100 - cpu) / 100
        route = costs.observe("GET /y", cpu_ms=cpu, wall_ms=100, now=i)
        assert route.learned_class == expected, (cpu, route.learned_class)


def test_averages_variance_io_share_and_last_seen() -> None:
    costs = model()  # alpha 0.2
    route = costs.observe("GET /a", cpu_ms=10, wall_ms=20, now=7.5)
    assert (route.cpu_ms, route.io_share, route.cpu_var, route.samples) == (10, 0.5, 0, 1)
    assert route.last_seen == 7.5
    route = costs.observe("GET /a", cpu_ms=20, wall_ms=20, now=8.5)
    assert route.cpu_ms == pytest.approx(12)           # 10 + 0.2 x 10
    assert route.cpu_var == pytest.approx(16)          # 0.8 x 0.2 x 10^2
    assert route.io_share == pytest.approx(0.4)        # 0.5 + 0.2 x (0 - 0.5)
    assert route.last_seen == 8.5 and route.samples == 2


def test_io_share_of_odd_wall_times() -> None:
    costs = model()
    assert costs.observe("GET /z", cpu_ms=5, wall_ms=0, now=0).io_share == 0.0
    assert costs.observe("GET /c", cpu_ms=10, wall_ms=10, now=0).io_share == 0.0
    assert costs.observe("GET /w", cpu_ms=0.25, wall_ms=1, now=0).io_share == 0.75


def test_confidence_grows_with_samples_and_shrinks_with_variance() -> None:
    costs = model(min_samples=5)
    for i in range(2):
        route = costs.observe("GET /c", cpu_ms=10 + 10 * i, wall_ms=30, now=i)
    assert route.cpu_cv > 0
    assert costs.confidence(route) == pytest.approx(0.4 / (1 + route.cpu_cv))
    for i in range(2, 10):
        route = costs.observe("GET /c", cpu_ms=10 + 10 * (i % 2), wall_ms=30, now=i)
    assert costs.confidence(route) == pytest.approx(1 / (1 + route.cpu_cv))


def test_a_cost_with_the_largest_allowed_variation_is_confident() -> None:
    costs = model(min_samples=5, max_cv=1.5)
    route = RouteCost("GET /v", cpu_ms=10, cpu_var=225, samples=5)  # cv = 15 / 10
    assert route.cpu_cv == 1.5 and costs.is_confident(route)
    assert not costs.is_confident(RouteCost("GET /v", cpu_ms=10, cpu_var=226, samples=5))
    assert not costs.is_confident(RouteCost("GET /v", cpu_ms=10, cpu_var=0, samples=4))


def test_reconfigure_evicts_down_to_the_new_bound_and_keeps_the_new_settings() -> None:
    costs = model()
    for i, name in enumerate(["a", "b", "c"]):
        costs.observe(f"GET /{name}", cpu_ms=10, wall_ms=11, now=i)
    costs.configure(Learning(max_routes=1, alpha=0.5), cpu_threshold_ms=100, io_threshold=0.9)
    assert [r.template for r in costs.routes()] == ["GET /c"] and costs.evictions == 2
    assert costs.io_threshold == 0.9 and costs.learning.alpha == 0.5
    route = costs.observe("GET /c", cpu_ms=20, wall_ms=21, now=5)
    assert route.cpu_ms == pytest.approx(15)  # the new alpha
    assert route.learned_class == "light_cpu"


def test_every_eviction_is_counted() -> None:
    costs = model(max_routes=1)
    for i, name in enumerate(["a", "b", "c"]):
        costs.observe(f"GET /{name}", 1, 2, now=i)
    assert costs.evictions == 2 and len(costs) == 1


def test_repr_counts_routes_and_confident_ones() -> None:
    costs = model(min_samples=2)
    for i in range(2):
        costs.observe("GET /a", 10, 11, now=i)
    costs.observe("GET /b", 10, 11, now=3)
    assert repr(costs) == "<CostModel 2 routes (1 confident)>"
