"""Cost-aware routing end to end: real backends as pools, the explain header, learning, spill."""

import asyncio

import aiohttp
import pytest

from balancer.config.parse import parse_config
from balancer.config.yamltree import ConfigError
from tests.helpers import BackendFactory, BalancerFactory, Running, wait_for


async def three_pools(backend_factory: BackendFactory, balancer_factory: BalancerFactory,
                      extra_pool: str = "", rules: str = "", heavy_pool: str = "") -> Running:
    io, light, heavy = [await backend_factory(n) for n in ("io", "light", "heavy")]
    return await balancer_factory(f"""\
listen: 127.0.0.1:0
admin: 127.0.0.1:0
trusted_proxies: [127.0.0.1]  # the explain header is for trusted clients only
pools:
  io:    {{kind: async,        backends: [{io.url}]}}
  light: {{kind: threaded,     backends: [{light.url}]{extra_pool}}}
  heavy: {{kind: multiprocess, backends: [{heavy.url}]{heavy_pool}}}
routing:
  cpu_threshold: 100ms
  io_threshold: 0.5
  classes: {{io: io, light_cpu: light, heavy_cpu: heavy}}
  default_class: light_cpu
  explain: true
  rules:
    - {{path: "/api/**", class: io}}
    - {{path: "/render/**", class: light_cpu}}
    - {{path: "/process/**", methods: [POST], class: heavy_cpu}}
{rules}""")


def decision(resp: aiohttp.ClientResponse) -> dict[str, str]:
    return dict(part.split("=", 1) for part in resp.headers["X-Balancer-Decision"].split("; "))


async def test_the_explain_header_names_class_pool_backend_score_and_source(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    lb = await three_pools(backend_factory, balancer_factory)
    expectations = [  # the score: a rule's nominal cost, or the request facts' estimate
        ("GET", "/api/items?id=3", "io", "io", "rule", "0.00"),
        ("POST", "/process/image", "heavy_cpu", "heavy", "rule", "1.00"),
        ("GET", "/api/../process/x", "light_cpu", "light", "default", "0.10"),  # /process/x
        ("GET", "/render/page", "light_cpu", "light", "rule", "0.50"),
        ("GET", "/unknown", "light_cpu", "light", "default", "0.10"),
    ]
    for method, path, cls, pool, source, score in expectations:
        async with session.request(method, f"{lb.url}{path}") as resp:
            assert resp.status == 200
            explained = decision(resp)
            assert (explained["class"], explained["pool"], explained["source"]) == (
                cls, pool, source), path
            assert resp.headers["X-Backend"] == pool
            assert explained["backend"].startswith("127.0.0.1:")
            assert explained["score"] == score, path


async def test_learned_costs_reroute_a_route_whose_cost_changes(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    lb = await three_pools(backend_factory, balancer_factory)
    seen = []
    for i in range(12):
        cpu = 5 if i < 6 else 400  # the route gets expensive halfway
        async with session.get(f"{lb.url}/render/page?cpu={cpu}&wall={cpu + 2}") as resp:
            assert "endpoint-load-metrics" not in resp.headers  # stripped for the client
            seen.append((decision(resp)["pool"], decision(resp)["source"]))
    # learning moves a route against its rule only to protect others: cheap, the rule holds
    assert seen[:7] == [("light", "rule")] * 7
    # one heavy report (of request 6) isolates it; it stays isolated (no fall back)
    assert seen[7:] == [("heavy", "learned-escalation")] * 5
    async with session.get(f"{lb.admin_url}/status") as resp:
        routes = {r["route"]: r for r in (await resp.json())["routes"]}
    learned = routes["GET /render/page?cpu&wall"]
    assert learned["class"] == "heavy_cpu" and learned["samples"] == 12 and learned["confident"]


async def test_a_saturated_pool_spills_to_its_spill_to_pool(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    lb = await three_pools(backend_factory, balancer_factory,
                           extra_pool=", max_inflight: 1, spill_to: [io]")
    busy = asyncio.ensure_future(session.get(f"{lb.url}/slow?s=1"))  # default class → light
    table = lb.balancer.backend_table
    await wait_for(lambda: sum(u.inflight for u in table.connections().values()) == 1,
                   what="the light backend to be busy")
    async with session.get(f"{lb.url}/render/page") as resp:
        explained = decision(resp)
        assert (explained["class"], explained["pool"], explained["source"]) == (
            "light_cpu", "io", "spill")
        assert resp.headers["X-Backend"] == "io"
    async with await busy as resp:
        assert resp.headers["X-Backend"] == "light" and decision(resp)["pool"] == "light"
    async with session.get(f"{lb.url}/render/page") as resp:  # room again: back home
        assert decision(resp)["pool"] == "light"


async def test_a_saturated_pool_without_spill_to_keeps_its_requests(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    """Heavy CPU never lands on the async pool unless spill_to says so."""
    lb = await three_pools(backend_factory, balancer_factory, heavy_pool=", max_inflight: 1",
                           rules='    - {path: "/slow", class: heavy_cpu}\n')
    busy = asyncio.ensure_future(session.get(f"{lb.url}/slow?s=1"))
    table = lb.balancer.backend_table
    await wait_for(lambda: sum(u.inflight for u in table.connections().values()) == 1,
                   what="the heavy backend to be busy")
    async with session.post(f"{lb.url}/process/x") as resp:
        explained = decision(resp)
        assert (explained["pool"], explained["source"]) == ("heavy", "rule")
        assert resp.headers["X-Backend"] == "heavy"
    async with await busy as resp:
        assert resp.headers["X-Backend"] == "heavy"


def test_routing_errors_are_located() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("""\
listen: 127.0.0.1:0
pools:
  io: {backends: [http://127.0.0.1:1], spill_to: [nowhere]}
  light: {backends: [http://127.0.0.1:2], spill_to: light}
routing:
  classes: {io: io, light_cpu: lite, cpu: light}
  default_class: heavy_cpu
  rules:
    - {path: "/a/**", class: fast}
    - {path: "/b", path_regex: "^/b$", class: io}
    - {path_regex: "([", class: io}
    - {path: "/c"}
    - {path: "/d", class: io, cpu_ms: 5}
    - {path: "/e", methods: [G E T], class: io}
""", "lb.yaml")
    assert [str(p) for p in info.value.problems] == [
        "lb.yaml:3:51: pools.io.spill_to[0]: no pool named 'nowhere' (defined: io, light)",
        "lb.yaml:4:53: pools.light.spill_to[0]: a pool cannot spill to itself",
        "lb.yaml:6:32: routing.classes.light_cpu: no pool named 'lite' (defined: io, light)",
        "lb.yaml:6:38: routing.classes.cpu: unknown key 'cpu' (expected one of: heavy_cpu, io, "
        "light_cpu)",
        "lb.yaml:7:18: routing.default_class: class 'heavy_cpu' has no pool in routing.classes",
        "lb.yaml:9:30: routing.rules[0].class: unknown value 'fast' (expected one of: io, "
        "light_cpu, heavy_cpu)",
        "lb.yaml:10:32: routing.rules[1].path_regex: a rule has path or path_regex, not both",
        "lb.yaml:11:20: routing.rules[2].path_regex: '([' is not a valid regular expression "
        "(unterminated character set at position 1)",
        "lb.yaml:12:7: routing.rules[3]: a rule needs a class, a cost hint (cpu_ms and/or "
        "io_ratio), or a pool",
        "lb.yaml:13:7: routing.rules[4]: a rule gives a class or a cost hint (cpu_ms, io_ratio), "
        "not both",
        "lb.yaml:14:30: routing.rules[5].methods[0]: 'G E T' is not an HTTP method",
    ]
