"""The metric families built at scrape time from what the collector is handed (no balancer,
no socket): the learned-route evictions counter reads the cost model it is given."""

import random

from prometheus_client import CollectorRegistry, generate_latest

from balancer.balancing.costs import CostModel
from balancer.balancing.health import RetryBudget
from balancer.balancing.runtime import Runtime
from balancer.config.parse import parse_config
from balancer.config.routing import Learning
from balancer.metrics import Metrics, MetricsCollector
from tests.unit.test_selection import View

CONFIG = "listen: 127.0.0.1:0\npools:\n  default: {backends: ['http://127.0.0.1:8101']}\n"


def scrape(costs: CostModel) -> dict[str, float]:
    runtime = Runtime(parse_config(CONFIG, "t.yaml"), 1, random.Random(0))
    registry = CollectorRegistry()
    registry.register(MetricsCollector(
        Metrics(), runtime=lambda: runtime, backends=View(runtime), clock=lambda: 100.0,
        retry_budget=RetryBudget(runtime.health), discovered=list, costs=costs))
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_route_evictions_are_a_counter_of_the_cost_model() -> None:
    costs = CostModel(Learning(max_routes=2), cpu_threshold_ms=50.0, io_threshold=0.5)
    assert scrape(costs)["balancer_route_costs_evicted_total"] == 0
    costs.evictions = 3
    assert scrape(costs)["balancer_route_costs_evicted_total"] == 3
