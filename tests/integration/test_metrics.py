"""Metrics on the admin listener: scraped and parsed with prometheus-client's own parser."""

from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import BackendFactory, BalancerFactory, free_port, one_pool_config

EXPECTED_LABELS = {
    "balancer_requests": {"pool", "class", "status_class"},
    "balancer_request_duration_seconds": {"pool", "class"},
    "balancer_upstream_response_seconds": {"backend"},
    "balancer_upstream_connect_seconds": {"backend"},
    "balancer_classifications": {"class", "source"},
    "balancer_learned_overrides": set(),
    "balancer_retries": {"reason"},
    "balancer_retry_budget_exhausted": set(),
    "balancer_route_costs_evicted": set(),
    "balancer_config_reloads": {"result"},
    "balancer_config_generation": set(),
    "balancer_backend_weight": {"pool", "backend"},
    "balancer_backend_inflight": {"pool", "backend"},
    "balancer_backend_healthy": {"pool", "backend"},
    "balancer_backend_ejections": {"pool", "backend"},
}


async def test_metrics_exist_with_bounded_labels(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_factory: BalancerFactory,
) -> None:
    a, b = await backend_factory("a"), await backend_factory("b")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: a refused connect, then a retry
    config = one_pool_config(a.url, b.url, dead) + """\
    policy: round_robin
routing:
  classes: {io: default, light_cpu: default, heavy_cpu: default}
  rules:
    - {path: "/api/**", class: io}
"""
    path = tmp_path / "lb.yaml"
    path.write_text(config)
    lb = await balancer_factory(config, str(path))
    assert (await lb.balancer.reload()).ok  # a sample for balancer_config_reloads
    async with aiohttp.ClientSession() as session:
        for i in range(20):  # 20 distinct paths must not become 20 label values
            async with session.get(f"{lb.url}/api/items/{i}?q={i}") as resp:
                assert resp.status == 200
        async with session.get(f"{lb.admin_url}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
        async with session.get(f"{lb.url}/metrics") as resp:  # not on the public listener
            assert "balancer_requests" not in await resp.text()
        async with session.get(f"{lb.admin_url}/status") as resp:
            status = await resp.json()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, labels in EXPECTED_LABELS.items():
        assert name in families, name
        assert families[name].samples, f"{name} has no sample: its labels are unchecked"
        for sample in families[name].samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)
    requests = {tuple(sorted(s.labels.items())): s.value
                for s in families["balancer_requests"].samples if s.name.endswith("_total")}
    assert requests == {(("class", "io"), ("pool", "default"), ("status_class", "2xx")): 20.0}
    assert not any("/api/items" in str(s.labels)
                   for f in families.values() for s in f.samples)
    weights = [s for s in families["balancer_backend_weight"].samples]
    assert len(weights) == 3 and all(s.value > 0 for s in weights)
    retries = {s.labels["reason"]: s.value for s in families["balancer_retries"].samples
               if s.name.endswith("_total")}
    assert retries.get("ConnectFailed", 0) >= 1, retries
    backends = status["pools"][0]["backends"]
    assert {"healthy", "weight", "inflight", "last_report", "report_age_s"} <= set(backends[0])
