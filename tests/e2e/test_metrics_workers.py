"""Metrics of a real supervisor (`balancer run --workers 2`): no summed counter goes down
when a worker is killed and restarted; process metrics per worker; every metric the
shipped Grafana dashboard (deploy/grafana/balancer.json) queries is in a real scrape."""

import asyncio
import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import Backend
from tests.helpers import ROOT, BackendFactory, Process, ProcessFactory, one_pool_config

DASHBOARD = ROOT / "deploy" / "grafana" / "balancer.json"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
ROUTING = ("routing:\n  classes: {io: default, light_cpu: default, heavy_cpu: default}\n"
           "  rules:\n    - {path: \"/api/**\", class: io}\n")


def start_supervisor(tmp_path: Path, backend: Backend, start: ProcessFactory) -> Process:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(backend.url, extra=ROUTING).replace(
        "listen: 127.0.0.1:0", f"listen: 127.0.0.1:{port}"))
    return start(config, "--workers", "2", ready=r"serving with 2 workers")


async def scrape(client: aiohttp.ClientSession, lb: Process) -> tuple[Samples, set[str]]:
    """(the summed samples: counters and histograms, by name and labels; every sample name)"""
    async with client.get(f"{lb.admin_url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    summed: Samples = {}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
            if family.type in ("counter", "histogram"):
                summed[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return summed, names


async def load(client: aiohttp.ClientSession, lb: Process, count: int) -> None:
    for index in range(count):  # new connections: the kernel spreads them over the workers
        async with aiohttp.ClientSession() as fresh:
            path = "/api/items" if index % 2 else "/page"
            async with fresh.get(f"{lb.url}{path}?i={index}") as resp:
                assert resp.status == 200


async def workers(client: aiohttp.ClientSession, lb: Process) -> list[dict[str, object]]:
    async with client.get(f"{lb.admin_url}/status") as resp:
        document = await resp.json()
    result: list[dict[str, object]] = document["workers"]
    return result


def assert_not_lower(before: Samples, after: Samples, when: str) -> None:
    dropped = {key: (value, after.get(key)) for key, value in before.items()
               if after.get(key, float("-inf")) < value}
    assert not dropped, f"{when}: counters went down (before, after): {dropped}"


async def test_no_summed_counter_goes_down_when_a_worker_is_killed(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory("b")
    lb = start_supervisor(tmp_path, backend, balancer_process)
    async with aiohttp.ClientSession() as client:
        await load(client, lb, 40)
        before, names = await scrape(client, lb)
        cpu = {k: v for k, v in before.items() if k[0] == "balancer_process_cpu_seconds_total"}
        assert {dict(labels)["worker"] for _, labels in cpu} == {"0", "1"}
        assert {"balancer_process_resident_memory_bytes", "balancer_process_open_fds"} <= names
        victim = (await workers(client, lb))[1]
        os.kill(int(str(victim["pid"])), signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:  # scrape while it is down and after it is back: never lower
            after, _ = await scrape(client, lb)
            assert_not_lower(before, after, "after the kill")
            before = after
            state = (await workers(client, lb))[1]
            if state["running"] and state["restarts"] == 1 and state["pid"] != victim["pid"]:
                break
            assert time.monotonic() < deadline, f"worker 1 did not come back: {state}"
            await asyncio.sleep(0.1)
        await load(client, lb, 40)
        final, _ = await scrape(client, lb)
        assert_not_lower(before, final, "after the restart and more requests")
        requests = sum(v for (name, _), v in final.items() if name == "balancer_requests_total")
        assert requests >= 80


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    exprs.append(dashboard["templating"]["list"][1]["query"])
    return {name for expr in exprs for name in re.findall(r"\bbalancer_[a-z_]+\b", expr)}


async def test_every_metric_the_grafana_dashboard_queries_is_in_a_real_scrape(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    wanted = dashboard_metrics()
    assert len(wanted) >= 15, wanted
    backend = await backend_factory("b")
    lb = start_supervisor(tmp_path, backend, balancer_process)
    async with aiohttp.ClientSession() as client:
        await load(client, lb, 10)
        async with client.post(f"{lb.admin_url}/reload") as resp:
            assert resp.status == 200
        reader, writer = await asyncio.open_connection(*lb.url[7:].rsplit(":", 1))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")  # a 400
        await reader.read()
        writer.close()
        deadline = time.monotonic() + 10
        while True:  # the reload's and the 400's counters appear once every worker has them
            _, names = await scrape(client, lb)
            if wanted <= names or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert wanted - names == set(), f"the dashboard queries metrics no scrape has: {names}"
        deadline = time.monotonic() + 10
        while True:  # and the merged history shows the requests and the supervisor's reload
            async with client.get(f"{lb.admin_url}/status/history") as resp:
                history = await resp.json()
            served = sum(p["rps"].get("default", {}).get("2xx", 0) for p in history["points"])
            reloads = [e for e in history["events"] if e["kind"] == "reload"]
            if served > 0 and len(reloads) == 1:
                break
            assert time.monotonic() < deadline, history
            await asyncio.sleep(0.2)
