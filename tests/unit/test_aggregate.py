"""Merging the workers' expositions and status documents (balancer.ops.aggregate): counters
and histograms are summed, and the sums never go backwards when a worker restarts or misses a
scrape (ExpositionMerge); gauges and process metrics keep a `worker` label; in-flight counts
add up and the best-sampled learned route wins."""

import json

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from balancer.ops.aggregate import ExpositionMerge, merge_status


def exposition(requests: float, started: float, inflight: float = 0.0,
               cpu: float = 1.0) -> str:
    return (
        "# HELP balancer_requests_total Requests answered\n"
        "# TYPE balancer_requests_total counter\n"
        f'balancer_requests_total{{pool="p",status_class="2xx"}} {requests}\n'
        f'balancer_requests_created{{pool="p",status_class="2xx"}} {started}\n'
        "# HELP balancer_request_duration_seconds Time\n"
        "# TYPE balancer_request_duration_seconds histogram\n"
        f'balancer_request_duration_seconds_bucket{{pool="p",le="0.1"}} {requests}\n'
        f'balancer_request_duration_seconds_bucket{{pool="p",le="+Inf"}} {requests}\n'
        f'balancer_request_duration_seconds_count{{pool="p"}} {requests}\n'
        f'balancer_request_duration_seconds_sum{{pool="p"}} {requests / 100}\n'
        "# HELP balancer_backend_inflight Requests in flight\n"
        "# TYPE balancer_backend_inflight gauge\n"
        f'balancer_backend_inflight{{backend="b"}} {inflight}\n'
        "# HELP balancer_process_cpu_seconds_total CPU\n"
        "# TYPE balancer_process_cpu_seconds_total counter\n"
        f"balancer_process_cpu_seconds_total {cpu}\n"
        "# HELP balancer_process_start_time_seconds Start\n"
        "# TYPE balancer_process_start_time_seconds gauge\n"
        f"balancer_process_start_time_seconds {started}\n")


def scrape(merge: ExpositionMerge, texts: list[str | None]) -> dict[tuple[str, str], float]:
    families = merge.merge(texts)

    class Fixed(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    values: dict[tuple[str, str], float] = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            metric, _, labels = name.partition("{")
            values[(metric, labels.rstrip("}"))] = float(value)
    return values


REQUESTS = ("balancer_requests_total", 'pool="p",status_class="2xx"')
COUNT = ("balancer_request_duration_seconds_count", 'pool="p"')


def test_a_restarted_worker_does_not_make_a_summed_counter_drop() -> None:
    merge = ExpositionMerge(2)
    first = scrape(merge, [exposition(100, started=1000.0), exposition(50, started=1000.5)])
    assert first[REQUESTS] == 150 and first[COUNT] == 150
    # worker 1 died and came back (another start time): it counts from 0 again
    second = scrape(merge, [exposition(110, started=1000.0), exposition(3, started=2000.0)])
    assert second[REQUESTS] == 110 + 50 + 3 and second[COUNT] == 163
    third = scrape(merge, [exposition(120, started=1000.0), exposition(9, started=2000.0)])
    assert third[REQUESTS] == 120 + 50 + 9
    # process CPU is per worker, and worker 1's keeps what its first process used
    assert third[("balancer_process_cpu_seconds_total", 'worker="1"')] == 2.0
    assert not any(name.endswith("_created") for name, _ in third)  # timestamps: not summed


def test_a_worker_that_misses_a_scrape_counts_with_what_it_last_said() -> None:
    merge = ExpositionMerge(2)
    scrape(merge, [exposition(100, started=1.0, inflight=2), exposition(50, started=2.0)])
    missed = scrape(merge, [exposition(101, started=1.0, inflight=2), None])
    assert missed[REQUESTS] == 151
    assert missed[("balancer_backend_inflight", 'backend="b",worker="0"')] == 2
    assert ("balancer_backend_inflight", 'backend="b",worker="1"') not in missed  # no stale gauge
    back = scrape(merge, [exposition(102, started=1.0), exposition(60, started=2.0)])
    assert back[REQUESTS] == 162


def test_a_counter_that_went_down_is_a_new_process_even_with_no_start_time() -> None:
    merge = ExpositionMerge(1)
    text = exposition(100, started=5.0).replace("balancer_process_start_time_seconds 5.0\n", "")
    scrape(merge, [text])
    after = scrape(merge, [exposition(7, started=5.0).replace(
        "balancer_process_start_time_seconds 5.0\n", "")])
    assert after[REQUESTS] == 107


def test_merged_status_adds_in_flight_counts_and_keeps_the_best_learned_route() -> None:
    def document(inflight: int, samples: int) -> dict[str, object]:
        return json.loads(json.dumps({
            "generation": 1, "digest": "d", "config": "c", "listen": [],
            "pools": [{"name": "p", "kind": None, "backends": [
                {"address": "a", "inflight": inflight, "open_connections": 1,
                 "idle_connections": 1}]}],
            "routes": [{"route": "GET /x", "samples": samples}]}))

    merged = merge_status([document(2, 5), None, document(3, 9)])
    backend = merged["pools"][0]["backends"][0]
    assert (backend["inflight"], backend["open_connections"]) == (5, 2)
    assert merged["routes"] == [{"route": "GET /x", "samples": 9}]


def test_merged_expositions_sum_counters_and_histograms_and_keep_gauges_per_worker() -> None:
    def exposition(requests: int, le_1: int, weight: float) -> str:
        return (
            "# HELP r_total Requests\n# TYPE r_total counter\n"  # as prometheus-client writes
            f'r_total{{pool="p"}} {requests}\n'
            "# HELP d Duration\n# TYPE d histogram\n"
            f'd_bucket{{le="1.0"}} {le_1}\nd_bucket{{le="+Inf"}} {le_1 + 1}\n'
            f"d_count {le_1 + 1}\nd_sum 2.5\n"
            "# HELP w Weight\n# TYPE w gauge\n"
            f'w{{backend="b"}} {weight}\n')

    merged = {family.name: family for family in
              ExpositionMerge(2).merge([exposition(3, 1, 0.5), exposition(4, 2, 0.7)])}

    def samples(family: Metric) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}

    assert samples(merged["r"]) == {("r_total", (("pool", "p"),)): 7.0}
    assert samples(merged["d"]) == {
        ("d_bucket", (("le", "1.0"),)): 3.0, ("d_bucket", (("le", "+Inf"),)): 5.0,
        ("d_count", ()): 5.0, ("d_sum", ()): 5.0}
    assert samples(merged["w"]) == {
        ("w", (("backend", "b"), ("worker", "0"))): 0.5,
        ("w", (("backend", "b"), ("worker", "1"))): 0.7}
