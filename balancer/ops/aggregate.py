"""Many workers' answers as one: their `/status` and `/status/history` documents and their
Prometheus expositions.

Pure (text and dicts in, dicts and metric families out); the supervisor fetches the inputs.
`ExpositionMerge` remembers what earlier scrapes saw, so that summed counters never drop.
"""

from typing import Any

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families


def merge_status(documents: list[dict[str, Any] | None]) -> dict[str, Any]:
    """One `/status` document for all workers: per backend, in-flight and connection counts
    add up; weights and reports are the first worker's; learned routes are the entry with
    the most samples. Workers that did not answer are left out."""
    present = [d for d in documents if d is not None]
    if not present:
        return {"generation": 0, "digest": "", "config": "", "listen": [], "pools": [],
                "routes": []}
    merged = present[0]
    for other in present[1:]:
        for pool, other_pool in zip(merged["pools"], other["pools"], strict=False):
            theirs = {b["address"]: b for b in other_pool["backends"]}  # by address: DNS
            for backend in pool["backends"]:  # discovery may differ a moment between workers
                other_backend = theirs.get(backend["address"])
                if other_backend is None:
                    continue
                for key in ("inflight", "open_connections", "idle_connections"):
                    backend[key] += other_backend[key]
        routes = {r["route"]: r for r in merged["routes"]}
        for route in other["routes"]:
            if route["samples"] > routes.get(route["route"], {"samples": -1})["samples"]:
                routes[route["route"]] = route
        merged["routes"] = sorted(routes.values(), key=lambda r: -r["samples"])
    return merged


Key = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)
PER_WORKER = "balancer_process_"  # process metrics: every sample keeps its `worker` label
STARTED = "balancer_process_start_time_seconds"


class ExpositionMerge:
    """The workers' expositions as one that never goes backwards.

    Counters and histograms are summed per label set, gauges kept per worker (a `worker`
    label, the worker's index), as prometheus-client's multiprocess mode does. Summed
    counters must not drop when a worker restarts or misses a scrape, or Prometheus'
    `rate()` would read a reset: so the last samples seen from each worker are kept, a
    worker that does not answer counts with those, and when a worker comes back as a new
    process (its `balancer_process_start_time_seconds` changed, or a counter went down)
    what the old one counted is retired into a running total that every later scrape adds.
    Counted between a worker's last scrape and its death is lost (a counter that rises
    less, never one that drops). Stateful, but pure: texts in, families out.
    """

    def __init__(self, workers: int) -> None:
        self._last: list[dict[Key, float]] = [{} for _ in range(workers)]
        self._incarnation: list[float | None] = [None] * workers
        self._retired: dict[Key, float] = {}
        self._families: dict[str, tuple[str, str]] = {}  # name: (documentation, type)

    def merge(self, texts: list[str | None]) -> list[Metric]:
        gauges: dict[str, dict[Key, float]] = {}
        for index, text in enumerate(texts):
            if text is None:
                continue  # missed the scrape: its last counters stand in
            counters, started = self._parse(index, text, gauges)
            last = self._last[index]
            restarted = (started != self._incarnation[index]
                         or any(value < last.get(key, 0.0) for key, value in counters.items()))
            if restarted:
                for key, value in last.items():
                    self._retired[key] = self._retired.get(key, 0.0) + value
            self._incarnation[index] = started
            self._last[index] = counters
        sums: dict[str, dict[Key, float]] = {}
        for source in (self._retired, *self._last):
            for key, value in source.items():
                values = sums.setdefault(_family_of(key[0], self._families), {})
                values[key] = values.get(key, 0.0) + value
        families: list[Metric] = []
        for name, (documentation, kind) in self._families.items():
            family = Metric(name, documentation, kind)
            for (sample_name, label_pairs), value in {**sums.get(name, {}),
                                                      **gauges.get(name, {})}.items():
                family.add_sample(sample_name, dict(label_pairs), value)
            if family.samples:
                families.append(family)
        return families

    def _parse(self, index: int, text: str, gauges: dict[str, dict[Key, float]]
               ) -> tuple[dict[Key, float], float | None]:
        """(its summed samples, its process's start time: which incarnation answered)"""
        counters: dict[Key, float] = {}
        started = None
        for family in text_string_to_metric_families(text):
            self._families.setdefault(family.name, (family.documentation, family.type))
            summed = family.type in ("counter", "histogram", "summary")
            for sample in family.samples:
                if sample.name == STARTED:
                    started = sample.value
                if sample.name.endswith("_created"):
                    continue  # a timestamp: adding them up means nothing
                labels = dict(sample.labels)
                if not summed or family.name.startswith(PER_WORKER):
                    labels["worker"] = str(index)
                key = (sample.name, tuple(sorted(labels.items())))
                if summed:
                    counters[key] = counters.get(key, 0.0) + sample.value
                else:
                    values = gauges.setdefault(family.name, {})
                    values[key] = values.get(key, 0.0) + sample.value
        return counters, started


def _family_of(sample_name: str, families: dict[str, tuple[str, str]]) -> str:
    if sample_name in families:
        return sample_name
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        if sample_name.endswith(suffix) and sample_name[:-len(suffix)] in families:
            return sample_name[:-len(suffix)]
    return sample_name


def merge_history(documents: list[dict[str, Any] | None],
                  reloads: list[dict[str, Any]]) -> dict[str, Any]:
    """One `/status/history` for all workers: points aligned on the interval; requests,
    in-flight, caps, queues and spills add up; p50 is the request-weighted mean of the
    workers' (an approximation), p99 the highest (an upper bound); weights and route costs
    are the workers' mean. Ejection and class-change events are tagged with their worker;
    reload markers are the supervisor's own (`reloads`: `at`, `ok`, `generation`)."""
    present = [(i, d) for i, d in enumerate(documents) if d is not None]
    interval = float(present[0][1]["interval_s"]) if present else 1.0
    slots: dict[int, list[dict[str, Any]]] = {}
    found_events: list[dict[str, Any]] = []
    for index, document in present:
        for point in document["points"]:
            slots.setdefault(round(point["t"] / interval), []).append(point)
        for event in document["events"]:
            if event["kind"] != "reload":
                found_events.append({**event, "worker": index})
    for reload in reloads:
        found_events.append({"t": reload["at"], "kind": "reload", "ok": reload["ok"],
                              "text": f"reload {'to generation' if reload['ok'] else 'refused at'}"
                                      f" {reload['generation']}"})
    points = [_merge_points(group) for _, group in sorted(slots.items())]
    return {"interval_s": interval,
            "capacity": max((d["capacity"] for _, d in present), default=0),
            "points": points, "events": sorted(found_events, key=lambda e: e["t"])}


def _merge_points(group: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"t": max(p["t"] for p in group), "rps": {}, "p50_ms": {},
                              "p99_ms": {}, "backends": {}, "queue": {}, "spill": {},
                              "routes": {}, "threshold_ms": group[0]["threshold_ms"]}
    weights: dict[str, list[float]] = {}
    costs: dict[str, list[float]] = {}
    p50: dict[str, list[tuple[float, float]]] = {}
    for point in group:
        for pool, by_status in point["rps"].items():
            into = merged["rps"].setdefault(pool, {})
            for status_class, rate in by_status.items():
                into[status_class] = round(into.get(status_class, 0.0) + rate, 3)
            if point["p50_ms"].get(pool) is not None:
                p50.setdefault(pool, []).append((point["p50_ms"][pool], sum(by_status.values())))
        for pool, value in point["p99_ms"].items():
            if value is not None:
                merged["p99_ms"][pool] = max(value, merged["p99_ms"].get(pool) or 0.0)
        for address, backend in point["backends"].items():
            into = merged["backends"].setdefault(address, {**backend, "inflight": 0, "cap": 0})
            into["inflight"] += backend["inflight"]
            into["cap"] += backend["cap"]
            weights.setdefault(address, []).append(backend["weight"])
        for key in ("queue", "spill"):
            for pool, value in point[key].items():
                merged[key][pool] = round(merged[key].get(pool, 0) + value, 3)
        for route, cost in point["routes"].items():
            merged["routes"].setdefault(route, dict(cost))
            costs.setdefault(route, []).append(cost["cpu_ms"])
    for pool, values in p50.items():
        total = sum(w for _, w in values)
        merged["p50_ms"][pool] = round(sum(v * w for v, w in values) / total, 3) if total \
            else values[0][0]
    for address, shares in weights.items():
        merged["backends"][address]["weight"] = round(sum(shares) / len(shares), 4)
    for route, cpu in costs.items():
        merged["routes"][route]["cpu_ms"] = round(sum(cpu) / len(cpu), 3)
    return merged
