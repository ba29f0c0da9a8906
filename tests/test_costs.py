"""Learned costs with a fake clock: step changes, hysteresis, confidence, eviction."""

import itertools

from balancer.costs import CostModel
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
