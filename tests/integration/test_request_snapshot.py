"""One snapshot per request: what a response teaches (passive health, weights, learned costs)
is judged by the config the request started with, not by one a reload put in place meanwhile."""

import asyncio
from pathlib import Path

import aiohttp

from tests.fakes import read_request_head
from tests.helpers import BalancerFactory, RawBackendFactory, one_pool_config, wait_for


async def test_a_response_after_a_reload_is_observed_with_the_health_policy_it_started_with(
    tmp_path: Path, raw_backend_factory: RawBackendFactory,
    balancer_factory: BalancerFactory,
) -> None:
    arrived, answer = asyncio.Event(), asyncio.Event()

    async def held_500(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        arrived.set()
        await answer.wait()  # until the reload is in place
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nfail")
        await writer.drain()

    backend = await raw_backend_factory(held_500)
    strict = one_pool_config(
        backend.url, extra="health: {consecutive_failures: 1, max_ejected_share: 1.0}\n")
    path = tmp_path / "lb.yaml"
    path.write_text(strict)
    lb = await balancer_factory(strict, str(path))
    async with aiohttp.ClientSession() as client:
        pending = asyncio.ensure_future(client.get(f"{lb.url}/x"))
        await asyncio.wait_for(arrived.wait(), 10)
        path.write_text(one_pool_config(backend.url))  # the default: 5 failures in a row
        outcome = await lb.balancer.reload()
        assert outcome.ok, outcome.errors
        answer.set()
        async with await pending as resp:
            assert resp.status == 500
    # one failure ejects under the request's config (the reloaded one would need five)
    await wait_for(lambda: sum(lb.balancer.metrics.ejections.values()) == 1,
                   what="the backend ejected by the request's own health policy")
