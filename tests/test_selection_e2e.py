"""least_latency end to end: three real backends on sockets, one slowed; count who served."""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import Running

SERVED = web.AppKey("served", list)
DELAY = web.AppKey("delay", float)
Started = list[tuple[str, list[str]]]  # (url, the ids of the requests it served)


async def _work(request: web.Request) -> web.Response:
    request.app[SERVED].append(request.query.get("id", ""))
    await asyncio.sleep(request.app[DELAY])
    return web.Response(text="ok\n")


@pytest.fixture
async def delayed_backends() -> AsyncIterator[Callable[[list[float]], Awaitable[Started]]]:
    runners: list[web.AppRunner] = []

    async def make(delays: list[float]) -> Started:
        started = []
        for delay in delays:
            app = web.Application()
            app[SERVED] = []
            app[DELAY] = delay
            app.router.add_get("/work", _work)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            started.append((f"http://127.0.0.1:{port}", app[SERVED]))
        return started

    yield make
    for runner in runners:
        await runner.cleanup()


async def test_a_slowed_backend_gets_a_smaller_share(
        delayed_backends: Callable[[list[float]], Awaitable[Started]],
        balancer_factory: Callable[..., Awaitable[Running]]) -> None:
    backends = await delayed_backends([0.005, 0.005, 0.020])  # the third is 4x slower
    urls = ", ".join(url for url, _ in backends)
    running = await balancer_factory(
        "listen: 127.0.0.1:0\npools:\n  default:\n    policy: least_latency\n"
        f"    backends: [{urls}]\n")
    total, concurrency = 600, 4
    ids = iter(range(total))
    statuses: Counter[int] = Counter()

    async def client(session: aiohttp.ClientSession) -> None:
        for request_id in ids:
            async with session.get(f"{running.url}/work?id={request_id}") as resp:
                assert await resp.text() == "ok\n"
                statuses[resp.status] += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.wait_for(asyncio.gather(*(client(session) for _ in range(concurrency))),
                               timeout=60)
    assert statuses == {200: total}
    seen = [served for _, served in backends]
    # every request reached exactly one backend, once
    assert sorted(int(i) for served in seen for i in served) == list(range(total))
    shares = [len(served) / total for served in seen]
    # least_request gives it about 18% here (it holds its requests longer), round-robin 33%
    assert shares[2] < 0.10, shares
    assert min(shares[:2]) > 0.25, shares
