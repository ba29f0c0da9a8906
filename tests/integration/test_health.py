"""Failover end to end: a dead backend costs no request and comes back without a reload, only
idempotent requests are retried after a reset, active checks take a backend out and back.
The pure health rules (ejection, panic, retry budget): tests/unit/test_health.py."""

import asyncio
from collections import Counter

import aiohttp
from aiohttp import web

from tests.fakes import echo_app, read_request_head
from tests.helpers import (
    BackendFactory,
    BalancerFactory,
    RawBackendFactory,
    one_pool_config,
    wait_for,
)


async def test_a_dead_backend_costs_no_request_and_comes_back_without_a_reload(
    backend_factory: BackendFactory,
    balancer_factory: BalancerFactory, session: aiohttp.ClientSession,
) -> None:
    alive = await backend_factory("alive")
    dead = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = dead.sockets[0].getsockname()[1]
    dead.close()
    await dead.wait_closed()
    lb = await balancer_factory(one_pool_config(
        alive.url, f"http://127.0.0.1:{port}",
        extra="health: {consecutive_failures: 3, ejection: 300ms}\n"))
    for _ in range(40):
        async with session.get(f"{lb.url}/") as resp:
            assert resp.status == 200  # refused connections are retried on the other backend
            assert resp.headers["X-Backend"] == "alive"
    health = next(h for a, h in lb.balancer.backend_table.healths() if a.port == port)
    assert health.ejections >= 1

    runner = web.AppRunner(echo_app("revived"), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        seen: Counter[str] = Counter()
        deadline = asyncio.get_running_loop().time() + 15
        while seen["revived"] < 5:
            assert asyncio.get_running_loop().time() < deadline, seen
            async with session.get(f"{lb.url}/") as resp:
                assert resp.status == 200
                seen[resp.headers["X-Backend"]] += 1
            await asyncio.sleep(0.02)
    finally:
        await runner.cleanup()


async def test_only_idempotent_requests_are_retried_after_a_reset(
    raw_backend_factory: RawBackendFactory,
    backend_factory: BackendFactory,
    balancer_factory: BalancerFactory, session: aiohttp.ClientSession,
) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.transport.abort()  # reset after reading the request: it may have been processed

    broken = await raw_backend_factory(reset)
    good = await backend_factory("good")
    lb = await balancer_factory(one_pool_config(broken.url, good.url)
                                + "    policy: round_robin\n")
    async with session.post(f"{lb.url}/", data=b"x") as resp:  # round-robin: broken first
        assert resp.status == 502  # it may have been processed: a POST is not sent again
    assert broken.connections == 1
    for _ in range(4):
        async with session.get(f"{lb.url}/") as resp:
            assert resp.status == 200  # a GET that met the reset is retried on the good one
            assert resp.headers["X-Backend"] == "good"
    assert broken.connections >= 2  # so some GETs did meet the reset


async def test_active_health_checks_end_to_end(
    backend_factory: BackendFactory,
    balancer_factory: BalancerFactory, session: aiohttp.ClientSession,
) -> None:
    steady, flaky = await backend_factory("steady"), await backend_factory("flaky")
    lb = await balancer_factory(one_pool_config(
        steady.url, flaky.url,
        extra="health: {check_interval: 50ms, check_timeout: 500ms, rise: 1, fall: 2}\n"))
    backend_table = lb.balancer.backend_table
    address = next(a for a in lb.balancer.runtime.addresses() if flaky.url.endswith(a.key))
    flaky.set_healthy(False)
    await wait_for(lambda: backend_table.health(address).down, what="flaky marked down")
    seen = Counter()
    for _ in range(20):
        async with session.get(f"{lb.url}/") as resp:
            seen[resp.headers["X-Backend"]] += 1
    assert seen == {"steady": 20}
    flaky.set_healthy(True)
    await wait_for(lambda: not backend_table.health(address).down, what="flaky back up")
    async with session.get(f"{lb.admin_url}/status") as resp:
        backends = (await resp.json())["pools"][0]["backends"]
    assert all(b["healthy"] for b in backends)
