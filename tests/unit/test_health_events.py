"""`HealthEvents`, the one place that acts on a health transition, and the ejection-expiry
step of `HealthMonitor`, without sockets: what each transition counts, logs (logger, level,
line) and restarts."""

import asyncio
import logging
import random

import pytest

from balancer.balancing.health import EJECTED, RESTORED, BackendHealth
from balancer.balancing.runtime import Runtime
from balancer.balancing.weights import BackendStats
from balancer.config.addresses import Address, parse_backend
from balancer.config.model import HealthPolicy
from balancer.config.parse import parse_config
from balancer.metrics import Metrics
from balancer.upstream.backends import BackendTable
from balancer.upstream.health_events import CHECKS, EXPIRY, FAILURES, Cause, HealthEvents
from balancer.upstream.monitor import HealthMonitor

A = parse_backend("http://127.0.0.1:9001")
POLICY = HealthPolicy(consecutive_failures=4, fall=3, rise=2)
NOW = 500.0


class Table:
    """Stats by address, as the backend table keeps them."""

    def __init__(self) -> None:
        self.stats: dict[Address, BackendStats] = {}

    def get(self, address: Address) -> BackendStats:
        return self.stats.setdefault(address, BackendStats(0.0))


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    return [(r.name, r.levelno, r.getMessage()) for r in caplog.records]


@pytest.fixture
def caplog_all(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def test_a_passive_ejection_is_counted_and_warned_under_balancer_proxy(
    caplog_all: pytest.LogCaptureFixture,
) -> None:
    metrics, table, health = Metrics(), Table(), BackendHealth()
    health.ejected_until = NOW + 20.0
    stats = table.get(A)
    stats.error_rate = 0.5
    HealthEvents(metrics, table.get).on_transition(A, EJECTED, FAILURES, health, POLICY, NOW)
    assert metrics.ejections == {A.key: 1}
    assert lines(caplog_all) == [("balancer.proxy", logging.WARNING,
                                  f"backend {A} ejected for 20s after 4 consecutive failures")]
    assert stats.error_rate == 0.5  # an ejection restarts nothing


def test_checks_taking_a_backend_out_are_counted_and_warned_under_balancer_health(
    caplog_all: pytest.LogCaptureFixture,
) -> None:
    metrics, table = Metrics(), Table()
    HealthEvents(metrics, table.get).on_transition(A, EJECTED, CHECKS, BackendHealth(), POLICY,
                                                   NOW)
    assert metrics.ejections == {A.key: 1}
    assert lines(caplog_all) == [("balancer.health", logging.WARNING,
                                  f"backend {A} down: 3 health checks failed")]


@pytest.mark.parametrize(("cause", "line"), [
    (CHECKS, f"backend {A} up: 2 health checks passed"),
    (EXPIRY, f"backend {A} restored after ejection 3"),
])
def test_a_backend_that_comes_back_restarts_slow_start_and_is_logged_not_counted(
    caplog_all: pytest.LogCaptureFixture, cause: Cause, line: str,
) -> None:
    metrics, table, health = Metrics(), Table(), BackendHealth()
    health.ejections = 3
    stats = table.get(A)
    stats.error_rate = 0.9
    HealthEvents(metrics, table.get).on_transition(A, RESTORED, cause, health, POLICY, NOW)
    assert (stats.added_at, stats.error_rate) == (NOW, 0.0)  # ramps up again, errors forgotten
    assert metrics.ejections == {}
    assert lines(caplog_all) == [("balancer.health", logging.INFO, line)]


@pytest.mark.parametrize("cause", [FAILURES, CHECKS, EXPIRY])
def test_no_transition_does_nothing(caplog_all: pytest.LogCaptureFixture, cause: Cause) -> None:
    metrics, table = Metrics(), Table()
    HealthEvents(metrics, table.get).on_transition(A, None, cause, BackendHealth(), POLICY, NOW)
    assert metrics.ejections == {} and table.stats == {} and caplog_all.records == []


async def test_an_ejection_ends_on_the_expiry_step_not_before_and_only_once(
    caplog_all: pytest.LogCaptureFixture,
) -> None:
    config = parse_config(f"listen: 127.0.0.1:0\npools: {{p: {{backends: [{A.url}]}}}}\n")
    runtime = Runtime(config, generation=1, rng=random.Random(1))
    table = BackendTable(asyncio.get_running_loop(), Metrics())
    monitor = HealthMonitor(lambda: runtime, table)
    health = table.health(A)
    assert health.observe(True, NOW, HealthPolicy(consecutive_failures=1)) is EJECTED
    table.stats(A).error_rate = 1.0
    monitor.restore_expired(NOW + 9.9)
    assert health.is_ejected(NOW + 9.9) and table.stats(A).error_rate == 1.0
    monitor.restore_expired(NOW + 10.0)
    monitor.restore_expired(NOW + 10.5)
    assert not health.is_ejected(NOW + 10.0)
    assert (table.stats(A).added_at, table.stats(A).error_rate) == (NOW + 10.0, 0.0)
    assert lines(caplog_all) == [("balancer.health", logging.INFO,
                                  f"backend {A} restored after ejection 1")]


async def test_the_running_monitor_ends_ejections_by_itself() -> None:
    config = parse_config(f"listen: 127.0.0.1:0\npools: {{p: {{backends: [{A.url}]}}}}\n")
    runtime = Runtime(config, generation=1, rng=random.Random(1))
    loop = asyncio.get_running_loop()
    table = BackendTable(loop, Metrics())
    monitor = HealthMonitor(lambda: runtime, table)
    health = table.health(A)
    health.observe(True, loop.time() - 60.0, HealthPolicy(consecutive_failures=1))  # long over
    table.stats(A).error_rate = 1.0
    monitor.start()
    try:
        deadline = loop.time() + 10.0
        while health.ejected_until and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert health.ejected_until == 0.0 and table.stats(A).error_rate == 0.0
    finally:
        await monitor.stop()
