"""DNS discovery against a real DNS server (dnsmasq) and real backends on 127.0.0.x.

Every backend listens on the same port on its own loopback address (127.0.0.2, .3, ...), as
containers behind one name do; dnsmasq answers the name from a hosts file the test
rewrites. The balancer runs in process, resolving every second (the records' TTL is 1 s).
"""

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.dnsmasq import DNSMASQ, Dnsmasq
from tests.fakes import SEEN, echo_app
from tests.helpers import BalancerFactory, wait_for

HOSTS = [f"127.0.0.{i}" for i in range(2, 8)]


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    if DNSMASQ is None:
        message = ("dnsmasq is not installed (make test installs it: scripts/ensure-debs.sh "
                   "dnsmasq:dnsmasq-base)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = Dnsmasq(tmp_path)
    yield server
    server.stop()


class Fleet:
    """Echo backends on HOSTS, all on one port; each answers `X-Backend: <its address>`."""

    def __init__(self) -> None:
        self.port = 0
        self.runners: dict[str, web.AppRunner] = {}

    async def start(self, count: int) -> None:
        for host in HOSTS[:count]:
            runner = web.AppRunner(echo_app(host), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, host, self.port)
            await site.start()
            if not self.port:
                self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.runners[host] = runner

    def connections(self, host: str) -> int:
        server = self.runners[host].server
        return len(server.connections) if server is not None else 0

    async def close(self) -> None:
        for runner in self.runners.values():
            await runner.cleanup()


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    backends = Fleet()
    yield backends
    await backends.close()


def config(dns: Dnsmasq, port: int, name: str = "svc.test", extra: str = "") -> str:
    return (f"listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nresolvers: [{dns.resolver}]\n"
            f"discovery: {{interval: 1s, timeout: 500ms}}\n{extra}"
            f"pools:\n  default:\n    policy: round_robin\n    backends:\n"
            f"      - {{discover: http://{name}:{port}}}\n")


async def spread(session: aiohttp.ClientSession, url: str, requests: int,
                 strict: bool = True) -> Counter[str]:
    """Which backends `requests` requests reach (a failed one counts as its status)."""
    seen: Counter[str] = Counter()
    for _ in range(requests):
        async with session.get(f"{url}/x") as response:
            assert response.status == 200 or not strict, await response.text()
            seen[response.headers.get("X-Backend", str(response.status))] += 1
    return seen


async def wait_for_backends(session: aiohttp.ClientSession, url: str, hosts: set[str],
                            timeout: float = 10.0) -> None:
    """Until a round of requests reaches exactly `hosts` (within `timeout`)."""
    seen: Counter[str] = Counter()

    async def reached() -> bool:
        nonlocal seen
        seen = await spread(session, url, 4 * len(hosts), strict=False)
        return set(seen) == hosts

    deadline = asyncio.get_running_loop().time() + timeout
    while not await reached():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"after {timeout}s requests reach {dict(seen)}, not {hosts}")
        await asyncio.sleep(0.05)




async def test_scaling_up_sends_traffic_to_new_addresses_after_the_next_resolution(
    dnsmasq: Dnsmasq, fleet: Fleet, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    await fleet.start(4)
    dnsmasq.publish({"svc.test": HOSTS[:2]})
    running = await balancer_factory(config(dnsmasq, fleet.port))
    # resolved before serving: the very first requests reach both
    assert set(await spread(session, running.url, 8)) == set(HOSTS[:2])
    dnsmasq.publish({"svc.test": HOSTS[:4]})
    await wait_for_backends(session, running.url, set(HOSTS[:4]))
    async with session.get(f"{running.admin_url}/status") as response:
        status = await response.json()
    assert [b["address"] for b in status["pools"][0]["backends"]] == [
        f"http://{host}:{fleet.port}" for host in HOSTS[:4]]
    assert status["discovery"][0]["name"] == f"svc.test:{fleet.port}"
    async with session.get(f"{running.admin_url}/metrics") as response:
        metrics = await response.text()
    assert f'balancer_discovery_addresses{{name="svc.test:{fleet.port}"}} 4.0' in metrics
    for host in HOSTS[:4]:
        assert f'balancer_backend_inflight{{backend="{host}:{fleet.port}",pool="default"}}' \
            in metrics


async def test_scaling_down_under_load_fails_no_request_and_closes_the_gone_connections(
    dnsmasq: Dnsmasq, fleet: Fleet, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    await fleet.start(3)
    dnsmasq.publish({"svc.test": HOSTS[:3]})
    running = await balancer_factory(config(dnsmasq, fleet.port))
    balancer = running.balancer
    statuses: Counter[int] = Counter()
    served: Counter[str] = Counter()
    stop = asyncio.Event()

    async def client(index: int) -> None:
        sent = 0
        while not stop.is_set():  # requests of 0-150 ms: some are always in flight
            sent += 1
            url = f"{running.url}/slow?s={index % 4 * 0.05}&id={index}-{sent}"
            async with session.get(url) as response:
                await response.read()
                statuses[response.status] += 1
                served[response.headers.get("X-Backend", "?")] += 1

    clients = [asyncio.create_task(client(i)) for i in range(12)]
    try:
        await wait_for(lambda: len(served) == 3 and statuses[200] > 50, what="load on all 3")
        dnsmasq.publish({"svc.test": HOSTS[:1]})
        await wait_for(lambda: len(balancer.runtime.pools["default"].backends) == 1,
                       what="the pool to shrink to one backend")
        after = served[HOSTS[0]]
        await wait_for(lambda: served[HOSTS[0]] > after + 50, what="load on the one left")
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert set(statuses) == {200}, statuses
    assert sum(balancer.metrics.retries.values()) == 0
    # two-sided: each request reached a backend exactly once (none cut off and sent again)
    received = Counter(i for runner in fleet.runners.values() for i in runner.app[SEEN])
    assert received.total() == statuses.total()
    assert [i for i, n in received.items() if n > 1] == []
    # the gone backends' connections close once their requests finished
    await wait_for(lambda: fleet.connections(HOSTS[1]) + fleet.connections(HOSTS[2]) == 0,
                   what="the retired backends' connections to close")
    assert (list(balancer.backend_table.connections())
            == list(balancer.runtime.pools["default"].backends))


async def test_a_resolver_that_goes_down_keeps_the_last_set_serving(
    dnsmasq: Dnsmasq, fleet: Fleet, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    await fleet.start(2)
    dnsmasq.publish({"svc.test": HOSTS[:2]})
    running = await balancer_factory(config(dnsmasq, fleet.port))
    failures = running.balancer.metrics.discovery_failures
    key = f"svc.test:{fleet.port}"
    dnsmasq.pause()  # down: no answers (it keeps its port, so it can come back on it)
    await wait_for(lambda: failures[key] >= 2, what="two failed resolutions")
    assert set(await spread(session, running.url, 8)) == set(HOSTS[:2])
    async with session.get(f"{running.admin_url}/metrics") as response:
        assert f'balancer_discovery_failures_total{{name="{key}"}}' in await response.text()
    dnsmasq.resume()  # back, with a smaller set: followed again
    dnsmasq.publish({"svc.test": HOSTS[:1]})
    await wait_for_backends(session, running.url, set(HOSTS[:1]))


async def test_a_name_with_no_records_answers_503_naming_it_until_it_resolves(
    dnsmasq: Dnsmasq, fleet: Fleet, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    await fleet.start(1)
    dnsmasq.publish({"other.test": HOSTS[:1]})
    running = await balancer_factory(config(dnsmasq, fleet.port, name="missing.test"))
    async with session.get(f"{running.url}/x") as response:
        body = await response.text()
        assert response.status == 503
    assert f"missing.test:{fleet.port} has not resolved to any address" in body, body
    async with session.get(f"{running.admin_url}/status") as response:
        status = await response.json()
    assert status["pools"][0]["unresolved"] == [f"missing.test:{fleet.port}"]
    assert status["discovery"][0]["addresses"] is None
    assert "NXDOMAIN" in status["discovery"][0]["last_error"]
    dnsmasq.publish({"missing.test": HOSTS[:1]})
    await wait_for_backends(session, running.url, set(HOSTS[:1]))


async def test_a_reload_that_adds_a_discovered_name_serves_it_at_once(
    dnsmasq: Dnsmasq, fleet: Fleet, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession, tmp_path: Path,
) -> None:
    await fleet.start(3)
    dnsmasq.publish({"one.test": HOSTS[:1], "two.test": HOSTS[1:3]})
    path = tmp_path / "balancer.yaml"
    path.write_text(config(dnsmasq, fleet.port, name="one.test"))
    running = await balancer_factory(path.read_text(), str(path))
    path.write_text(config(dnsmasq, fleet.port, name="two.test"))
    outcome = await running.balancer.reload()
    assert outcome.ok, outcome.errors
    assert set(await spread(session, running.url, 8)) == set(HOSTS[1:3])
