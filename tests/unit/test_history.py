"""The history ring (balancer.ops.history) and its merge over workers (balancer.ops.aggregate):
pure, with hand-made snapshots and wall-clock times."""

from typing import Any

from balancer.metrics import BUCKETS
from balancer.ops.aggregate import merge_history
from balancer.ops.history import BackendSample, History, Snapshot, quantile


def buckets(**at: int) -> tuple[int, ...]:
    """Bucket counts with `b<i>=n` set."""
    counts = [0] * (len(BUCKETS) + 1)
    for name, count in at.items():
        counts[int(name[1:])] = count
    return tuple(counts)


def test_quantile_interpolates_inside_the_bucket_and_is_none_when_empty() -> None:
    assert quantile([0] * (len(BUCKETS) + 1), 0.5) is None
    # 10 requests between 1 ms and 2.5 ms (bucket 1): the median is half-way
    assert quantile(buckets(b1=10), 0.5) == 0.001 + (0.0025 - 0.001) * 0.5
    # 99 fast, 1 in (5 s, 10 s]: p99 is at the top of the fast bucket, p99.9 in the slow one
    fast_slow = buckets(b0=99, b12=1)
    assert quantile(fast_slow, 0.99) == 0.001
    assert 5.0 < (quantile(fast_slow, 0.999) or 0) <= 10.0
    assert quantile(buckets(b14=3), 0.99) == BUCKETS[-1]  # +Inf: the last finite bound


def snapshot(at: float, ok: int = 0, errors: int = 0, **kw: Any) -> Snapshot:
    return Snapshot(at=at, requests={("web", "2xx"): ok, ("web", "5xx"): errors},
                    latency={"web": buckets(b3=ok + errors)},
                    backends=(BackendSample("web", "10.0.0.1:80", 3, 8, 1.5, "up"),),
                    queues={"web": 2}, spills={"web": kw.pop("spills", 0)},
                    threshold_ms=100.0, **kw)


def test_a_point_is_the_rates_and_quantiles_between_two_snapshots() -> None:
    history = History()
    history.add(snapshot(100.0, ok=50, errors=0))
    assert len(history.points) == 0  # the first snapshot is only a baseline
    history.add(snapshot(102.0, ok=250, errors=10, spills=4))
    [point] = history.points
    assert point["t"] == 102.0
    assert point["rps"] == {"web": {"2xx": 100.0, "5xx": 5.0}}
    assert 5.0 < point["p50_ms"]["web"] <= 10.0 and point["p99_ms"]["web"] <= 10.0
    assert point["backends"] == {"10.0.0.1:80": {"pool": "web", "inflight": 3, "cap": 8,
                                                 "weight": 1.5, "state": "up"}}
    assert point["queue"] == {"web": 2} and point["spill"] == {"web": 2.0}
    history.add(snapshot(103.0, ok=250, errors=10))  # nothing answered: no latency to show
    assert history.points[-1]["p50_ms"] == {"web": None}
    assert history.points[-1]["rps"]["web"] == {"2xx": 0.0, "5xx": 0.0}


def test_reloads_ejections_and_class_changes_become_events_once() -> None:
    history = History()
    history.add(snapshot(10.0, routes={"GET /a": (5.0, "light_cpu")}))
    history.add(snapshot(11.0, routes={"GET /a": (150.0, "heavy_cpu")},
                         reloads=((10.5, True, 2),), ejections={"10.0.0.1:80": 1}))
    history.add(snapshot(12.0, routes={"GET /a": (150.0, "heavy_cpu")},
                         reloads=((10.5, True, 2),), ejections={"10.0.0.1:80": 1}))
    assert [(e["t"], e["kind"]) for e in history.events] == [
        (10.5, "reload"), (11.0, "ejection"), (11.0, "class")]
    assert history.events[2]["text"] == "GET /a: light_cpu → heavy_cpu"
    assert history.points[-1]["routes"] == {"GET /a": {"cpu_ms": 150.0, "class": "heavy_cpu"}}


def test_the_ring_is_bounded_and_serves_the_points_after_since() -> None:
    history = History(capacity=5)
    for second in range(20):
        history.add(snapshot(float(second), ok=second))
    assert [p["t"] for p in history.points] == [15.0, 16.0, 17.0, 18.0, 19.0]
    assert [p["t"] for p in history.document(since=17.0)["points"]] == [18.0, 19.0]
    assert history.document()["capacity"] == 5


def test_merged_history_adds_up_workers_on_aligned_seconds() -> None:
    def worker(t: float, rps: float, p50: float, p99: float, inflight: int,
               events: list[dict[str, Any]]) -> dict[str, Any]:
        point = {"t": t, "rps": {"web": {"2xx": rps}}, "p50_ms": {"web": p50},
                 "p99_ms": {"web": p99},
                 "backends": {"b": {"pool": "web", "inflight": inflight, "cap": 8,
                                    "weight": 1.0 + inflight, "state": "up"}},
                 "queue": {"web": 1}, "spill": {"web": 0.5},
                 "routes": {"GET /a": {"cpu_ms": 10.0 * inflight, "class": "light_cpu"}},
                 "threshold_ms": 100.0}
        return {"interval_s": 1.0, "capacity": 900, "points": [point], "events": events}

    reload_seen_by_worker = {"t": 5.2, "kind": "reload", "ok": True, "text": "w"}
    ejection = {"t": 5.3, "kind": "ejection", "backend": "b", "text": "b ejected"}
    merged = merge_history(
        [worker(6.01, 30.0, 2.0, 9.0, 1, [reload_seen_by_worker]),
         None,  # a worker that did not answer
         worker(5.98, 10.0, 6.0, 40.0, 3, [ejection])],
        [{"at": 5.1, "ok": True, "generation": 2}])
    [point] = merged["points"]
    assert point["rps"] == {"web": {"2xx": 40.0}}
    assert point["p50_ms"] == {"web": 3.0}  # weighted by requests: (30*2 + 10*6) / 40
    assert point["p99_ms"] == {"web": 40.0}
    assert point["backends"]["b"]["inflight"] == 4 and point["backends"]["b"]["cap"] == 16
    assert point["backends"]["b"]["weight"] == 3.0
    assert point["queue"] == {"web": 2} and point["spill"] == {"web": 1.0}
    assert point["routes"]["GET /a"]["cpu_ms"] == 20.0
    assert [(e["kind"], e.get("worker")) for e in merged["events"]] == [
        ("reload", None), ("ejection", 2)]  # the supervisor's reload, not each worker's


# -- mutation testing, after merging round 3 (bench/results/mutation.md) ---------------------

def test_a_point_and_its_events_are_exactly_this_document() -> None:
    """Every key, every rounding, the defaults for what the previous snapshot lacked."""
    prev = Snapshot(at=100.0, requests={("p", "2xx"): 10}, spills={"q": 2},
                    routes={"GET /a": (1.0, "light_cpu")}, reloads=((99.0, True, 1),))
    cur = Snapshot(
        at=100.5, requests={("p", "2xx"): 13, ("p", "5xx"): 1},
        latency={"p": buckets(b0=1, b2=3)},
        backends=(BackendSample("p", "127.0.0.1:1", 2, 64, 0.123456, "up"),),
        queues={"p": 1}, spills={"p": 1, "q": 3}, ejections={"127.0.0.1:1": 1},
        routes={"GET /a": (123.45678, "heavy_cpu"), "GET /b": (2.0, "io")},
        threshold_ms=25.0,
        reloads=((99.0, True, 1), (100.1234, False, 2), (100.2, True, 3)))
    history = History(capacity=5, interval=0.5)
    history.add(prev)
    history.add(cur)
    point = history.document()["points"][0]
    assert point["t"] == 100.5 and point["threshold_ms"] == 25.0
    assert point["rps"] == {"p": {"2xx": 6.0, "5xx": 2.0}}
    assert point["backends"] == {"127.0.0.1:1": {"pool": "p", "inflight": 2, "cap": 64,
                                                 "weight": 0.1235, "state": "up"}}
    assert point["queue"] == {"p": 1} and point["spill"] == {"p": 2.0, "q": 2.0}
    assert point["routes"] == {"GET /a": {"cpu_ms": 123.457, "class": "heavy_cpu"},
                               "GET /b": {"cpu_ms": 2.0, "class": "io"}}
    p50 = quantile(buckets(b0=1, b2=3), 0.5)
    assert p50 is not None and point["p50_ms"] == {"p": round(p50 * 1000, 3)}
    assert history.document() == {"interval_s": 0.5, "capacity": 5,
                                  "points": [point], "events": [
        {"t": 100.123, "kind": "reload", "ok": False, "text": "reload refused at 2"},
        {"t": 100.2, "kind": "reload", "ok": True, "text": "reload to generation 3"},
        {"t": 100.5, "kind": "ejection", "backend": "127.0.0.1:1",
         "text": "127.0.0.1:1 ejected"},
        {"t": 100.5, "kind": "class", "route": "GET /a", "from": "light_cpu",
         "to": "heavy_cpu", "text": "GET /a: light_cpu → heavy_cpu"}]}


def test_rates_over_a_short_interval_and_rounding() -> None:
    prev = Snapshot(at=1.0, requests={("p", "2xx"): 0})
    cur = Snapshot(at=1.0001, requests={("p", "2xx"): 1, ("p", "4xx"): 1})
    history = History()
    history.add(prev)
    history.add(cur)
    point = history.document()["points"][0]
    assert point["t"] == 1.0 and point["rps"] == {"p": {"2xx": 1000.0, "4xx": 1000.0}}
    prev = Snapshot(at=0.0, requests={("p", "2xx"): 0})
    cur = Snapshot(at=3.0, requests={("p", "2xx"): 1})
    history.add(prev)
    history.add(cur)
    assert history.document()["points"][-1]["rps"] == {"p": {"2xx": 0.333}}


def test_the_latency_of_a_new_pool_counts_from_zero_and_milliseconds_round_to_three() -> None:
    prev = Snapshot(at=0.0)
    cur = Snapshot(at=1.0, latency={"p": buckets(b1=1)})
    history = History()
    history.add(prev)
    history.add(cur)
    p50 = quantile(buckets(b1=1), 0.5)
    assert p50 is not None
    assert history.document()["points"][0]["p50_ms"] == {"p": round(p50 * 1000, 3)}
    assert history.document()["points"][0]["p50_ms"]["p"] != round(p50 * 1001, 3)


def test_quantile_edges() -> None:
    assert quantile(buckets(b0=1), 0.5) == BUCKETS[0] / 2  # one count: half way in
    assert quantile(buckets(b0=2, b3=2), 0.0) == 0.0
    assert quantile(buckets(b3=2), 0.0) == BUCKETS[2]  # empty buckets before are skipped
    assert quantile(buckets(**{f"b{len(BUCKETS)}": 2}), 0.99) == BUCKETS[-1]  # the +Inf bucket


def test_the_event_ring_is_bounded() -> None:
    history = History()
    for i in range(300):
        history.add(Snapshot(at=float(i), ejections={"b": i}))
    assert len(history.document()["events"]) == 256


def test_event_times_are_rounded_to_the_millisecond() -> None:
    history = History()
    history.add(Snapshot(at=0.0, routes={"GET /r": (1.0, "io")}))
    history.add(Snapshot(at=1.0004, ejections={"b": 1}, routes={"GET /r": (1.0, "light_cpu")}))
    assert [e["t"] for e in history.document()["events"]] == [1.0, 1.0]
