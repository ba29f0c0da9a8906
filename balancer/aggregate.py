"""Many workers' answers as one: their `/status` documents and their Prometheus expositions.

Pure (text and dicts in, dicts and metric families out); the supervisor fetches the inputs.
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


def merge_expositions(texts: list[str]) -> list[Metric]:
    """Counters and histograms summed per label set; gauges kept per worker (a `worker`
    label, the worker's index in `texts`), as prometheus-client's multiprocess mode does."""
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for index, text in enumerate(texts):
        for family in text_string_to_metric_families(text):
            families.setdefault(family.name,
                                Metric(family.name, family.documentation, family.type))
            values = sums.setdefault(family.name, {})
            for sample in family.samples:
                labels = dict(sample.labels)
                if family.type == "gauge":
                    labels["worker"] = str(index)
                key = (sample.name, tuple(sorted(labels.items())))
                values[key] = values.get(key, 0.0) + sample.value
    for name, family in families.items():
        for (sample_name, label_pairs), value in sums[name].items():
            family.add_sample(sample_name, dict(label_pairs), value)
    return list(families.values())
