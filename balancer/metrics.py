"""Prometheus metrics, on the balancer's own CollectorRegistry.

The request path only bumps plain counters and histogram buckets in dictionaries keyed by
bounded labels (pool, class, status class, backend address, decision source); a collector
turns them into metric families when `/metrics` is scraped, together with the live state of
every backend (weight, in flight, health, ejections) and of the config. No raw path is ever
a label; route templates are exported by the admin `/status`, not here.
"""

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from balancer.balancing.costs import CostModel
from balancer.balancing.discovery import NameState
from balancer.balancing.health import RetryBudget
from balancer.balancing.runtime import Runtime
from balancer.balancing.selection.selectors import BackendView

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class Metrics:
    """Counters the proxy bumps; exported by `MetricsCollector`."""

    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.latency: defaultdict[tuple[str, str], Histogram] = defaultdict(Histogram)
        self.upstream_latency: defaultdict[str, Histogram] = defaultdict(Histogram)
        self.connect_latency: defaultdict[str, Histogram] = defaultdict(Histogram)
        self.decisions: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.learned_overrides = 0
        self.retries: defaultdict[str, int] = defaultdict(int)
        self.ejections: defaultdict[str, int] = defaultdict(int)
        self.reloads: defaultdict[str, int] = defaultdict(int)
        self.bad_requests: defaultdict[int, int] = defaultdict(int)  # by status: 400, 408, ...
        self.spills: defaultdict[str, int] = defaultdict(int)  # by the pool that was full
        self.discovery_failures: defaultdict[str, int] = defaultdict(int)  # by name:port
        self.refused_connections = 0  # past limits.max_client_connections

    def refused_connection(self) -> None:
        self.refused_connections += 1

    def bad_request(self, status: int) -> None:
        self.bad_requests[status] += 1

    def request(self, pool: str, request_class: str, status: int, seconds: float) -> None:
        self.requests[(pool, request_class, f"{status // 100}xx")] += 1
        self.latency[(pool, request_class)].observe(seconds)


class MetricsCollector(Collector):
    """Builds every metric family at scrape time, from the counters and what it is handed of
    the live state: the runtime in force, the backends, the clock they are measured on, the
    proxy's retry budget, the discovered names and the learned route costs."""

    def __init__(self, metrics: Metrics, *, runtime: Callable[[], Runtime],
                 backends: BackendView, clock: Callable[[], float], retry_budget: RetryBudget,
                 discovered: Callable[[], Iterable[NameState]], costs: CostModel) -> None:
        self.metrics = metrics
        self.runtime = runtime
        self.backends = backends
        self.clock = clock
        self.retry_budget = retry_budget
        self.discovered = discovered
        self.costs = costs

    def collect(self) -> Iterator[Metric]:
        yield from _request_families(self.metrics)
        yield from self._state()
        yield from self._backends()

    def _state(self) -> Iterator[Metric]:
        """The retry budget, the config and the discovered names."""
        metrics = self.metrics
        yield CounterMetricFamily("balancer_retry_budget_exhausted",
                                  "Retries refused because the retry budget was spent",
                                  value=self.retry_budget.exhausted)
        yield CounterMetricFamily("balancer_route_costs_evicted",
                                  "Learned routes dropped to make room (a steady rise: more "
                                  "distinct routes than the cost table holds)",
                                  value=self.costs.evictions)
        yield _counters("balancer_config_reloads", "Config reloads by result", ["result"],
                        metrics.reloads)
        yield GaugeMetricFamily("balancer_config_generation", "Config generation serving",
                                value=self.runtime().generation)
        yield _counters("balancer_discovery_failures",
                        "DNS resolutions of a discovered name that failed or found no "
                        "address (the last good set kept)", ["name"], metrics.discovery_failures)
        addresses = GaugeMetricFamily("balancer_discovery_addresses",
                                      "Addresses a discovered name resolves to", labels=["name"])
        for state in self.discovered():
            addresses.add_metric([state.key], len(state.addresses or ()))
        yield addresses

    def _backends(self) -> Iterator[Metric]:
        runtime, backends = self.runtime(), self.backends
        now = self.clock()
        labels = ["pool", "backend"]
        weight = GaugeMetricFamily("balancer_backend_weight", "Effective selection weight",
                                   labels=labels)
        inflight = GaugeMetricFamily("balancer_backend_inflight", "Requests in flight",
                                     labels=labels)
        healthy = GaugeMetricFamily("balancer_backend_healthy", "1 unless ejected",
                                    labels=labels)
        ejections = CounterMetricFamily("balancer_backend_ejections", "Passive ejections",
                                        labels=labels)
        for name, pool in runtime.pools.items():
            weights = runtime.weights(pool, backends, now)
            for address, value in zip(pool.backends, weights, strict=True):
                key = [name, address.key]
                weight.add_metric(key, value)
                inflight.add_metric(key, backends.inflight(address))
                health = backends.health(address)
                healthy.add_metric(key, 0.0 if health.is_ejected(now) else 1.0)
                ejections.add_metric(key, self.metrics.ejections[address.key])
        yield from (weight, inflight, healthy, ejections)


def _request_families(metrics: Metrics) -> Iterator[Metric]:
    """What the request path counted: requests, latencies, decisions, retries, spills."""
    yield _counters("balancer_requests", "Requests answered",
                    ["pool", "class", "status_class"], metrics.requests)
    yield _histograms("balancer_request_duration_seconds",
                      "Time from request to response handed to the client",
                      ["pool", "class"], metrics.latency)
    yield _histograms("balancer_upstream_response_seconds",
                      "Time from sending to a backend to its response head",
                      ["backend"], metrics.upstream_latency)
    yield _histograms("balancer_upstream_connect_seconds",
                      "Time to open a new connection to a backend",
                      ["backend"], metrics.connect_latency)
    yield _counters("balancer_classifications", "Classification decisions",
                    ["class", "source"], metrics.decisions)
    yield CounterMetricFamily("balancer_learned_overrides",
                              "Decisions where a learned cost overrode a matching rule",
                              value=metrics.learned_overrides)
    yield _counters("balancer_bad_requests", "Malformed or too slow requests refused "
                    "before reaching the proxy", ["status"], metrics.bad_requests)
    yield CounterMetricFamily("balancer_client_connections_refused",
                              "Client connections answered 503 and closed at once: "
                              "limits.max_client_connections were open",
                              value=metrics.refused_connections)
    yield _counters("balancer_retries", "Requests sent again to another backend",
                    ["reason"], metrics.retries)
    yield _counters("balancer_spills", "Requests sent to a spill_to pool because every "
                    "backend of their pool was at its in-flight cap", ["pool"],
                    metrics.spills)


def _key(labels: object) -> list[str]:
    return list(labels) if isinstance(labels, tuple) else [str(labels)]


def _counters(name: str, documentation: str, labels: list[str],
              counts: Mapping[Any, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, count in counts.items():
        family.add_metric(_key(key), count)
    return family


def _histograms(name: str, documentation: str, labels: list[str],
                histograms: Mapping[Any, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for key, histogram in histograms.items():
        family.add_metric(_key(key), histogram.buckets(), histogram.total)
    return family


def build_registry(collector: MetricsCollector) -> CollectorRegistry:
    """The balancer's metrics and its process's (`balancer_process_cpu_seconds_total`,
    `_resident_memory_bytes`, `_open_fds`, ...: prometheus-client's, read from /proc)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(namespace="balancer", registry=registry)
    return registry
