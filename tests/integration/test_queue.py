"""The pool queue: waiting for room, bounded, with a timeout that answers 503."""

import asyncio

import aiohttp

from tests.helpers import BackendFactory, BalancerFactory, Running, one_pool_config, wait_for


async def start(backend_factory: BackendFactory,
                balancer_factory: BalancerFactory, timeout: str) -> Running:
    backend = await backend_factory()
    return await balancer_factory(one_pool_config(backend.url) + (
        f"    max_inflight: 1\n    max_queue: 1\n    queue_timeout: {timeout}\n"))


Pending = asyncio.Future[aiohttp.ClientResponse]


async def busy_with_a_waiter(lb: Running, session: aiohttp.ClientSession,
                             seconds: str) -> tuple[Pending, Pending]:
    """A request that keeps the one backend busy for `seconds` (/slow), and one that waits
    in the queue (/queued) behind it; both still running."""
    proxy = lb.balancer.proxy
    assert proxy is not None
    busy = asyncio.ensure_future(session.get(f"{lb.url}/slow?s={seconds}"))
    await wait_for(lambda: lb.balancer.backend_table.inflight(
        next(iter(lb.balancer.runtime.addresses()))) == 1, what="the backend busy")
    waiting = asyncio.ensure_future(session.get(f"{lb.url}/queued"))
    await wait_for(lambda: sum(len(q) for q in proxy.queues.values()) == 1, what="a waiter")
    return busy, waiting


async def test_a_full_queue_answers_503_at_once_and_a_waiter_times_out(
    backend_factory: BackendFactory,
    balancer_factory: BalancerFactory,
) -> None:
    lb = await start(backend_factory, balancer_factory, "300ms")
    async with aiohttp.ClientSession() as session:
        busy, waiting = await busy_with_a_waiter(lb, session, "1.5")
        async with session.get(f"{lb.url}/refused") as resp:  # the queue (1) is full
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
            assert (await resp.text()).startswith("503 pool queue full")
        async with await waiting as resp:  # gave up after 300 ms: the backend stayed busy
            assert resp.status == 503
            assert (await resp.text()).startswith("503 no backend had room within the queue")
        async with await busy as resp:
            assert resp.status == 200


async def test_a_waiter_is_served_when_room_frees_up(
    backend_factory: BackendFactory,
    balancer_factory: BalancerFactory,
) -> None:
    lb = await start(backend_factory, balancer_factory, "5s")
    async with aiohttp.ClientSession() as session:
        busy, waiting = await busy_with_a_waiter(lb, session, "0.3")
        async with await busy as resp:
            assert resp.status == 200
        async with await waiting as resp:
            assert resp.status == 200
            assert (await resp.json())["path_qs"] == "/queued"
