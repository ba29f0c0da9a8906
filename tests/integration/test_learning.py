"""Learning from REAL backends under contention: a route that burns CPU is never `io`.

The runners serve the demo app as subprocesses; a GIL-bound view is hammered with more
concurrent requests than the backend has threads, so most of each request's wall time is
spent waiting for the GIL (or for a core), and every report is folded into a CostModel as
the balancer does.
"""

import asyncio

import aiohttp
import pytest

from balancer.balancing.costs import CostModel
from balancer.balancing.load_report import LoadReport
from balancer.config.routing import Learning
from tests.fakes import BackendProcess, read_request_head
from tests.helpers import (
    BackendFactory,
    BackendProcessFactory,
    BalancerFactory,
    RawBackendFactory,
    one_pool_config,
    report_of,
)


async def hammer(backend: BackendProcess, path: str, concurrency: int,
                 rounds: int) -> list[LoadReport]:
    reports: list[LoadReport] = []
    async with backend.session() as session:
        async def one() -> None:
            async with session.get(f"http://b{path}") as resp:
                assert resp.status == 200
                reports.append(report_of(resp))

        for _ in range(rounds):
            await asyncio.gather(*(one() for _ in range(concurrency)))
    return reports


def learn(reports: list[LoadReport], template: str, threshold: float | None) -> list[str]:
    costs = CostModel(Learning(), cpu_threshold_ms=threshold, io_threshold=0.5)
    classes = []
    for now, report in enumerate(reports):
        route = costs.observe_report(template, report, float(now))
        assert route is not None
        classes.append(route.learned_class)
    return classes


@pytest.mark.parametrize(("kind", "threads"), [("threaded", "8"), ("async", "16")])
async def test_a_gil_bound_route_on_a_contended_backend_is_never_learned_io(
    start_backend: BackendProcessFactory, kind: str, threads: str,
) -> None:
    backend = start_backend(kind, "--threads", threads)
    reports = await hammer(backend, "/cpu/spin?ms=40", concurrency=24, rounds=2)
    walls = [r.wall_ms or 0 for r in reports]
    cpus = [r.cpu_ms or 0 for r in reports]
    assert max(walls) >= 3 * max(cpus), "the backend was not contended: the test proves nothing"
    io_shares = [(r.io_ms or 0) / ((r.io_ms or 0) + (r.cpu_ms or 1)) for r in reports]
    assert sorted(io_shares)[len(io_shares) // 2] < 0.3, io_shares   # wall - cpu would be > 0.6
    assert "io" not in learn(reports, "GET /cpu/spin?ms", threshold=100)   # under a 100 ms bar
    assert set(learn(reports, "GET /cpu/spin?ms", threshold=10)) == {"heavy_cpu"}


@pytest.mark.parametrize("kind", ["threaded", "async", "multiprocess"])
async def test_a_waiting_route_is_still_learned_io(
    start_backend: BackendProcessFactory, kind: str,
) -> None:
    backend = start_backend(kind, "--threads", "8", "--workers", "2")
    reports = await hammer(backend, "/io/sleep?ms=20", concurrency=2, rounds=6)
    classes = learn(reports, "GET /io/sleep?ms", threshold=None)
    assert classes[-1] == "io", [(r.cpu_ms, r.io_ms, r.wall_ms) for r in reports]


# -- through the balancer ------------------------------------------------------------------------

def three_runner_config(io: BackendProcess, light: BackendProcess, heavy: BackendProcess) -> str:
    """No rules and no thresholds written: what the defaults do."""
    return f"""\
listen: 127.0.0.1:0
admin: 127.0.0.1:0
trusted_proxies: [127.0.0.1]  # the explain header is for trusted clients only
pools:
  io:    {{kind: async,        backends: [unix:{io.socket}]}}
  light: {{kind: threaded,     backends: [unix:{light.socket}]}}
  heavy: {{kind: multiprocess, backends: [unix:{heavy.socket}]}}
routing:
  classes: {{io: io, light_cpu: light, heavy_cpu: heavy}}
  explain: true
"""


def explained(resp: aiohttp.ClientResponse) -> dict[str, str]:
    return dict(part.split("=", 1) for part in resp.headers["X-Balancer-Decision"].split("; "))


MIX = ["/api/items?id=1", "/io/sleep?ms=20", "/api/items?id=2", "/io/sleep?ms=20",
       "/api/items?id=3", "/io/sleep?ms=20", "/api/items?id=4", "/io/sleep?ms=20",
       "/api/items?id=5", "/cpu/spin?ms=50"]  # 45 % JSON, 45 % I/O wait, 10 % GIL-bound CPU


async def test_with_no_rules_the_mix_is_isolated_as_an_expert_would_from_a_cold_start(
    start_backend: BackendProcessFactory,
    balancer_factory: BalancerFactory,
) -> None:
    io = start_backend("async", "--threads", "16")
    light = start_backend("threaded", "--threads", "8")
    heavy = start_backend("multiprocess", "--workers", "2")
    lb = await balancer_factory(three_runner_config(io, light, heavy))
    seen: dict[str, list[tuple[str, str]]] = {}
    async with aiohttp.ClientSession() as session:
        async def worker(offset: int) -> None:
            for i in range(offset, offset + 240, 8):
                path = MIX[i % len(MIX)]
                async with session.get(f"{lb.url}{path}") as resp:
                    assert resp.status == 200
                    decided = explained(resp)
                    seen.setdefault(path.split("?")[0], []).append(
                        (decided["pool"], decided["source"]))

        await asyncio.gather(*(worker(k) for k in range(8)))
        async with session.get(f"{lb.admin_url}/status") as resp:
            routes = {r["route"]: r for r in (await resp.json())["routes"]}
    cpu = seen["/cpu/spin"]
    # cold start: only the requests sent before the first report came back miss the heavy pool
    assert sum(1 for pool, _ in cpu if pool != "heavy") <= 8, cpu
    assert cpu[-5:] == [("heavy", "learned")] * 5
    assert seen["/io/sleep"][-5:] == [("io", "learned")] * 5
    assert {pool for pool, _ in seen["/api/items"][-10:]} <= {"light", "io"}
    assert routes["GET /cpu/spin?ms"]["class"] == "heavy_cpu"
    assert routes["GET /io/sleep?ms"]["class"] == "io"
    assert all(r["confident"] for r in routes.values()), routes


async def test_only_2xx_and_3xx_answers_are_learned_and_a_query_key_spray_flushes_nothing(
    raw_backend_factory: RawBackendFactory,
    balancer_factory: BalancerFactory,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_request_head(reader)
            status = 404 if b" /missing" in head else 200
            cpu = 300 if b" /heavy" in head else 1
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\nendpoint-load-metrics: TEXT "
                         b"request_cost.cpu_ms=%d, request_cost.wall_ms=%d, "
                         b"request_cost.io_ms=0\r\n\r\n" % (status, cpu, cpu))
            await writer.drain()

    raw = await raw_backend_factory(handler)
    lb = await balancer_factory(one_pool_config(raw.url, extra="""\
routing:
  classes: {light_cpu: default}
"""))
    async with aiohttp.ClientSession() as session:
        for _ in range(10):
            async with session.get(f"{lb.url}/missing/heavy") as resp:
                assert resp.status == 404
        for _ in range(6):
            async with session.get(f"{lb.url}/heavy") as resp:
                assert resp.status == 200
        for i in range(1000):
            async with session.get(f"{lb.url}/search?k{i}=1") as resp:
                assert resp.status == 200
        async with session.get(f"{lb.admin_url}/status") as resp:
            routes = {r["route"]: r for r in (await resp.json())["routes"]}
    assert "GET /missing/heavy" not in routes
    assert routes["GET /heavy"]["class"] == "heavy_cpu" and routes["GET /heavy"]["samples"] == 6
    assert len(routes) <= 12, sorted(routes)


async def test_a_rule_sends_requests_to_any_named_pool_and_learned_cpu_still_goes_heavy(
    backend_factory: BackendFactory,
    balancer_factory: BalancerFactory,
) -> None:
    light, heavy, gpu = [await backend_factory(n) for n in ("light", "heavy", "gpu")]
    lb = await balancer_factory(f"""\
listen: 127.0.0.1:0
admin: 127.0.0.1:0
trusted_proxies: [127.0.0.1]  # the explain header is for trusted clients only
pools:
  light: {{backends: [{light.url}]}}
  heavy: {{backends: [{heavy.url}]}}
  gpu:   {{backends: [{gpu.url}]}}
routing:
  classes: {{light_cpu: light, heavy_cpu: heavy}}
  explain: true
  rules:
    - {{path: "/infer/**", pool: gpu}}
    - {{path: "/pinned/**", pool: gpu, pin: true}}
""")
    async with aiohttp.ClientSession() as session:
        for path, pools in [("/infer/a?cpu=1", ["gpu"] * 3),
                            ("/infer/b?cpu=400", ["gpu", "heavy", "heavy"]),  # escalated
                            ("/pinned/c?cpu=400", ["gpu"] * 3)]:
            got = []
            for _ in range(3):
                async with session.get(f"{lb.url}{path}") as resp:
                    assert resp.status == 200
                    got.append(resp.headers["X-Backend"])
                    assert explained(resp)["pool"] == got[-1]
            assert got == pools, path
        async with session.get(f"{lb.url}/infer/b?cpu=400") as resp:
            assert explained(resp)["source"] == "learned-escalation"
