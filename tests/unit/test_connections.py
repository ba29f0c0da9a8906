"""`Connections` without sockets: connections to a `FakeNetwork` (tests/unit/fake_io.py),
responses fed by hand, the clock moved by hand. The rules are those of
balancer/upstream/connections.py."""

import asyncio
from typing import cast

import pytest

from balancer.config.addresses import parse_backend
from balancer.http.errors import ConnectFailed, ConnectTimeout, PoolExhausted
from balancer.upstream.connection import UpstreamConnection
from balancer.upstream.connections import Connections
from tests.unit.fake_io import FakeNetwork, settle

GET = b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def pool_on(network: FakeNetwork, *, max_connections: int = 2, max_idle: int = 2,
            idle_timeout: float = 30.0, connect_timeout: float = 5.0) -> Connections:
    return Connections(cast(asyncio.AbstractEventLoop, network),
                          parse_backend("http://127.0.0.1:9"), max_connections=max_connections,
                          max_idle=max_idle, idle_timeout=idle_timeout,
                          connect_timeout=connect_timeout, max_tunnels=4)


async def exchange(pool: Connections, answer: bytes = OK) -> UpstreamConnection:
    """Acquire, send a GET, read the whole answer (not released yet)."""
    conn, _ = await pool.acquire()
    conn.send(GET)
    conn.data_received(answer)
    await conn.read_head(5.0)
    conn.take_body()
    return conn


async def test_a_released_connection_is_reused_last_in_first_out() -> None:
    network = FakeNetwork()
    pool = pool_on(network)
    first, second = await exchange(pool), await exchange(pool)
    pool.release(first)
    pool.release(second)
    assert (pool.open_count, pool.idle_count, pool.inflight) == (2, 2, 0)
    assert await pool.acquire() == (second, True)
    assert await pool.acquire() == (first, True)
    assert len(network.transports) == 2 and pool.inflight == 2


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    OK + b"HTTP/1.1 200 OK\r\n",  # spoke out of turn
])
async def test_a_connection_that_cannot_be_kept_is_closed_on_release(answer: bytes) -> None:
    network = FakeNetwork()
    pool = pool_on(network)
    conn = await exchange(pool, answer)
    pool.release(conn)
    await settle()
    assert conn.released and network.transports[0].closing
    assert (pool.open_count, pool.idle_count) == (0, 0)
    assert (await pool.acquire())[1] is False  # a fresh one


async def test_past_max_idle_a_released_connection_is_closed() -> None:
    network = FakeNetwork()
    pool = pool_on(network, max_idle=1)
    first, second = await exchange(pool), await exchange(pool)
    pool.release(first)
    pool.release(second)
    await settle()
    assert pool.idle_count == 1 and network.transports[1].closing


async def test_an_idle_connection_past_its_timeout_is_not_reused_and_the_sweep_closes_it(
) -> None:
    network = FakeNetwork()
    pool = pool_on(network, idle_timeout=30.0)
    pool.release(await exchange(pool))
    network.advance(29.0)
    assert pool.sweep() == 0 and pool.idle_count == 1
    network.advance(1.5)
    assert pool.sweep() == 1 and pool.idle_count == 0 and network.transports[0].closing
    pool.release(await exchange(pool))
    network.advance(31.0)
    conn, reused = await pool.acquire()  # the expired one is closed, a new one opened
    assert not reused and conn.transport is cast(object, network.transports[2])
    assert network.transports[1].closing


async def test_at_max_connections_acquire_waits_for_a_release() -> None:
    network = FakeNetwork()
    pool = pool_on(network, max_connections=1)
    conn = await exchange(pool)
    waiting = asyncio.ensure_future(pool.acquire())
    await settle()
    assert not waiting.done()
    pool.release(conn)
    await asyncio.wait_for(waiting, 5)
    assert pool.open_count == 1  # never more than max_connections


async def test_at_max_connections_acquire_gives_up_at_the_connect_timeout() -> None:
    network = FakeNetwork()
    pool = pool_on(network, max_connections=1, connect_timeout=5.0)
    await exchange(pool)
    waiting = asyncio.ensure_future(pool.acquire())
    await settle()
    network.advance(5.0)
    with pytest.raises(PoolExhausted):
        await asyncio.wait_for(waiting, 5)


async def test_at_max_connections_an_idle_connection_is_closed_to_make_room() -> None:
    network = FakeNetwork()
    pool = pool_on(network, max_connections=1)
    pool.release(await exchange(pool))
    _, reused = await asyncio.wait_for(pool.acquire(fresh=True), 5)  # room via on_lost
    assert not reused and network.transports[0].closing and pool.open_count == 1


async def test_a_lost_connection_frees_its_room_and_leaves_the_idle_list() -> None:
    network = FakeNetwork()
    pool = pool_on(network, max_connections=1)
    pool.release(await exchange(pool))
    network.transports[0].close()  # the backend closed it while idle
    await settle()
    assert (pool.open_count, pool.idle_count) == (0, 0)


async def test_a_tunnel_holds_no_room_under_max_connections() -> None:
    network = FakeNetwork()
    pool = pool_on(network, max_connections=1)
    conn = await exchange(pool, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                                b"Connection: upgrade\r\n\r\n")
    waiting = asyncio.ensure_future(pool.acquire())
    await settle()
    pool.to_tunnel(conn)
    other, _ = await asyncio.wait_for(waiting, 5)
    assert other is not conn and (pool.tunnel_count, pool.open_count) == (1, 1)
    network.transports[0].close()
    await settle()
    assert pool.tunnel_count == 0


async def test_a_retired_pool_keeps_nothing_idle() -> None:
    network = FakeNetwork()
    pool = pool_on(network)
    idle, busy = await exchange(pool), await exchange(pool)
    pool.release(idle)
    pool.retire()
    assert network.transports[0].closing and pool.idle_count == 0
    assert not network.transports[1].closing  # its request finishes
    pool.release(busy)
    await settle()
    assert network.transports[1].closing and pool.open_count == 0


async def test_connecting_fails_with_the_reason() -> None:
    network = FakeNetwork()
    pool = pool_on(network, connect_timeout=0.01)
    network.refuse = ConnectionRefusedError(111, "Connection refused")
    with pytest.raises(ConnectFailed, match=r"refused the connection \(Connection refused\)"):
        await pool.acquire()
    network.refuse, network.hang = None, True
    with pytest.raises(ConnectTimeout, match=r"did not accept within 0\.01s"):
        await pool.acquire()
    assert pool.open_count == 0
