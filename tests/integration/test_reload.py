"""Reload in-process: listeners move without dropping connections, bad files change nothing,
state carries over. (The access log's reload refusal: test_access_log.py.)"""

import asyncio
import contextlib
import re
import socket
import time
from pathlib import Path

import aiohttp
import h11

from tests.fakes import h11_ok, h11_request
from tests.helpers import (
    BackendFactory,
    BalancerFactory,
    RawBackendFactory,
    Running,
    free_port,
    one_pool_config,
    wait_for,
)


async def _from_file(tmp_path: Path, balancer_factory: BalancerFactory,
                     text: str) -> tuple[Running, Path]:
    """A balancer started from a config file (so that it can reload it)."""
    path = tmp_path / "lb.yaml"
    path.write_text(text)
    return await balancer_factory(text, str(path)), path


async def test_a_changed_listen_address_binds_the_new_socket_and_keeps_open_connections(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    backend = await backend_factory("b")
    lb, path = await _from_file(tmp_path, balancer_factory, one_pool_config(backend.url))
    old_url = lb.url
    connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection, reused throughout
    async with aiohttp.ClientSession(connector=connector) as client:
        async with client.get(f"{old_url}/before") as resp:
            assert resp.status == 200
        async with client.ws_connect(f"{old_url}/ws") as ws:
            new_port = free_port()
            path.write_text(one_pool_config(backend.url).replace(
                "listen: 127.0.0.1:0", f"listen: 127.0.0.1:{new_port}"))
            outcome = await lb.balancer.reload()
            assert outcome.ok, outcome.errors
            assert lb.balancer.public_addresses == [f"127.0.0.1:{new_port}"]
            # the open websocket, accepted by the old listener, carries on
            await ws.send_str("still here")
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.data == "echo:still here"
        # the new address serves; the old one accepts no new connection
        async with aiohttp.ClientSession() as other:
            async with other.get(f"http://127.0.0.1:{new_port}/after") as resp:
                assert resp.status == 200
            try:
                async with other.get(f"{old_url}/after"):
                    raise AssertionError("the old listener still accepts connections")
            except aiohttp.ClientConnectorError:
                pass


async def test_an_idle_keep_alive_client_connection_survives_a_reload(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    first, second = await backend_factory("first"), await backend_factory("second")
    lb, path = await _from_file(tmp_path, balancer_factory, one_pool_config(first.url))
    opened: list[object] = []
    trace = aiohttp.TraceConfig()

    async def on_connection_create_end(*args: object) -> None:
        opened.append(args)

    trace.on_connection_create_end.append(on_connection_create_end)

    async def get(client: aiohttp.ClientSession) -> str:
        async with client.get(f"{lb.url}/x") as resp:
            assert resp.status == 200
            return resp.headers["X-Backend"]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                     trace_configs=[trace]) as client:
        assert await get(client) == "first"
        path.write_text(one_pool_config(second.url))
        assert (await lb.balancer.reload()).ok
        assert await get(client) == "second"
    assert len(opened) == 1, "the client had to open a new connection"


async def test_a_listen_address_that_cannot_be_bound_refuses_the_reload(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    backend = await backend_factory("b")
    lb, path = await _from_file(tmp_path, balancer_factory, one_pool_config(backend.url))
    with socket.socket() as taken:  # bound without SO_REUSEPORT: nobody may share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path.write_text(one_pool_config(backend.url).replace(
            "listen: 127.0.0.1:0", f"listen: [127.0.0.1:0, 127.0.0.1:{port}]"))
        outcome = await lb.balancer.reload()
    assert not outcome.ok
    assert re.fullmatch(rf".*lb\.yaml: cannot listen on 127\.0\.0\.1:{port}: .*",
                        outcome.errors[0]), outcome.errors
    assert outcome.generation == 1
    assert len(lb.balancer.public_addresses) == 1  # the socket bound before the error is gone
    async with aiohttp.ClientSession() as client, client.get(f"{lb.url}/x") as resp:
        assert resp.status == 200


async def test_post_reload_answers_the_outcome_and_counts_failures(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory("b")
    lb, path = await _from_file(tmp_path, balancer_factory, one_pool_config(backend.url))
    async with session.post(f"{lb.admin_url}/reload") as resp:
        assert resp.status == 200
        body = await resp.json()
        assert body["ok"] is True and body["generation"] == 2 and body["errors"] == []
    path.write_text(one_pool_config(backend.url) + "  extra: {backends: [nope]}\n")
    async with session.post(f"{lb.admin_url}/reload") as resp:
        assert resp.status == 422
        body = await resp.json()
    assert body["ok"] is False and body["generation"] == 2
    assert body["errors"] == [f"{path}:7:22: pools.extra.backends[0]: 'nope' is not a backend "
                              "address (expected http://host:port or unix:/path)"]
    async with session.get(f"{lb.admin_url}/metrics") as resp:
        text = await resp.text()
    assert 'balancer_config_reloads_total{result="ok"} 1.0' in text
    assert 'balancer_config_reloads_total{result="error"} 1.0' in text
    assert "balancer_config_generation 2.0" in text


async def test_backend_state_carries_over_a_reload_by_address(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory("b", report="TEXT cpu_utilization=0.5, rps_fractional=10")
    other = await backend_factory("other")
    lb, path = await _from_file(tmp_path, balancer_factory, one_pool_config(backend.url))
    address = lb.balancer.runtime.config.pools[0].backends[0]
    async with session.get(f"{lb.url}/x") as resp:
        assert resp.status == 200
    stats = lb.balancer.backend_table.stats(address)
    assert stats.report is not None
    path.write_text(one_pool_config(backend.url, other.url))
    assert (await lb.balancer.reload()).ok
    assert lb.balancer.backend_table.stats(address) is stats  # the same record: report, errors
    assert lb.balancer.backend_table.stats(address).report is not None


async def test_a_request_in_flight_finishes_on_the_config_it_started_with(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    first, second = await backend_factory("first"), await backend_factory("second")
    lb, path = await _from_file(tmp_path, balancer_factory, one_pool_config(
        first.url, extra="trusted_proxies: [127.0.0.1]\nrouting:\n  classes: {io: default, "
                         "light_cpu: default, heavy_cpu: default}\n  explain: true\n"))
    async with aiohttp.ClientSession() as client:
        slow = asyncio.ensure_future(client.get(f"{lb.url}/slow?s=0.5&id=in-flight"))
        await wait_for(lambda: first.seen == ["in-flight"], what="the request at the backend")
        path.write_text(one_pool_config(second.url))  # another backend, and no routing
        assert (await lb.balancer.reload()).ok
        async with client.get(f"{lb.url}/x") as resp:
            assert resp.headers["X-Backend"] == "second"
            assert "X-Balancer-Decision" not in resp.headers
        async with await slow as resp:
            assert resp.status == 200
            assert resp.headers["X-Backend"] == "first"
            assert "pool=default" in resp.headers["X-Balancer-Decision"]  # generation 1's
    # the removed backend's connection is closed once its last request is done
    server = first.runner.server
    assert server is not None
    await wait_for(lambda: len(server.connections) == 0, what="first's connection closed")
    assert (set(lb.balancer.backend_table.connections())
            == set(lb.balancer.runtime.config.pools[0].backends))


async def test_client_limits_and_timeouts_of_a_reload_apply_to_new_connections(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    backend = await backend_factory("b")
    lb, path = await _from_file(tmp_path, balancer_factory, one_pool_config(backend.url))
    big = {"X-Big": "a" * 3000}
    async with aiohttp.ClientSession() as client, client.get(f"{lb.url}/x", headers=big) as resp:
        assert resp.status == 200
    path.write_text(one_pool_config(backend.url, extra="limits: {max_header_size: 2KiB}\n"))
    assert (await lb.balancer.reload()).ok
    async with aiohttp.ClientSession() as client, client.get(f"{lb.url}/x", headers=big) as resp:
        assert resp.status == 431


async def test_a_reloaded_drain_timeout_is_the_one_stop_uses(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    backend = await backend_factory("b")
    lb, path = await _from_file(tmp_path, balancer_factory, one_pool_config(
        backend.url, extra="timeouts: {drain: 30s}\n"))
    path.write_text(one_pool_config(backend.url, extra="timeouts: {drain: 300ms}\n"))
    assert (await lb.balancer.reload()).ok
    async with aiohttp.ClientSession() as client:
        slow = asyncio.ensure_future(client.get(f"{lb.url}/slow?s=6&id=long"))
        await wait_for(lambda: backend.seen == ["long"], what="the request at the backend")
        started = time.monotonic()
        await lb.balancer.stop()  # drains for at most 300 ms, not 30 s
        assert time.monotonic() - started < 3
        with contextlib.suppress(aiohttp.ClientError):
            (await slow).close()


# -- what README's Signals table promises carries over a reload, one promise per test ----------

async def test_an_ejected_backend_stays_ejected_across_a_reload(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    alive = await backend_factory("alive")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    health = "health: {consecutive_failures: 1, ejection: 60s}\n"
    lb, path = await _from_file(tmp_path, balancer_factory,
                                one_pool_config(alive.url, dead, extra=health))
    dead_address = next(a for a in lb.balancer.runtime.addresses() if a.key in dead)
    backend_table = lb.balancer.backend_table
    for _ in range(50):  # until a request has met the dead backend
        async with session.get(f"{lb.url}/") as resp:
            assert resp.status == 200  # the refused connect is retried on the other one
        if backend_table.health(dead_address).is_ejected(backend_table.loop.time()):
            break
    assert backend_table.health(dead_address).is_ejected(backend_table.loop.time())
    path.write_text(one_pool_config(alive.url, dead, extra=health + "timeouts: {connect: 4s}\n"))
    assert (await lb.balancer.reload()).ok
    health_after = backend_table.health(dead_address)
    assert health_after.is_ejected(backend_table.loop.time()), "the reload forgot the ejection"
    assert health_after.ejections == 1


async def test_learned_route_costs_carry_over_a_reload(
    tmp_path: Path, backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    light, heavy = await backend_factory("light"), await backend_factory("heavy")

    def config(timeout: str) -> str:
        return f"""\
listen: 127.0.0.1:0
admin: 127.0.0.1:0
trusted_proxies: [127.0.0.1]   # the explain header is for trusted clients only
timeouts: {{backend_response: {timeout}}}
pools:
  light: {{backends: [{light.url}]}}
  heavy: {{backends: [{heavy.url}]}}
routing:
  cpu_threshold: 100ms
  classes: {{io: light, light_cpu: light, heavy_cpu: heavy}}
  default_class: light_cpu
  explain: true
  rules:
    - {{path: "/render/**", class: light_cpu}}
"""

    lb, path = await _from_file(tmp_path, balancer_factory, config("30s"))

    async def decided() -> tuple[str, str]:
        async with session.get(f"{lb.url}/render/page?cpu=400&wall=402") as resp:
            assert resp.status == 200
            parts = dict(p.split("=", 1) for p in resp.headers["X-Balancer-Decision"].split("; "))
        return parts["pool"], parts["source"]

    for _ in range(3):  # one heavy report isolates the route (escalation over its rule)
        await decided()
    assert await decided() == ("heavy", "learned-escalation")
    path.write_text(config("31s"))
    assert (await lb.balancer.reload()).ok
    assert await decided() == ("heavy", "learned-escalation"), "the reload forgot the learned cost"


async def test_warm_connections_to_a_kept_backend_are_reused_after_a_reload(
    tmp_path: Path, raw_backend_factory: RawBackendFactory,
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        while await h11_request(reader, conn) is not None:
            writer.write(h11_ok(conn, b"ok"))
            await writer.drain()
            conn.start_next_cycle()

    kept = await raw_backend_factory(keep_alive)
    added = await backend_factory("added")
    lb, path = await _from_file(tmp_path, balancer_factory, one_pool_config(kept.url))
    async with session.get(f"{lb.url}/") as resp:
        assert await resp.read() == b"ok"
    assert kept.connections == 1
    address = lb.balancer.runtime.config.pools[0].backends[0]
    pool = lb.balancer.backend_table.connections()[address]
    path.write_text(one_pool_config(kept.url, added.url)
                    + "    policy: round_robin\n")
    assert (await lb.balancer.reload()).ok
    assert lb.balancer.backend_table.connections()[address] is pool
    for _ in range(4):  # round robin: two of them to the kept backend
        async with session.get(f"{lb.url}/") as resp:
            assert resp.status == 200
    assert kept.connections == 1, "the reload dropped the warm connection"
