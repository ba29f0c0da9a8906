"""Signals on a real `python -m balancer run` process: SIGTERM drains, SIGHUP reloads."""

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.conftest import Backend, Process, one_pool_config


async def test_sigterm_lets_in_flight_requests_finish_then_exits_0(
    tmp_path: Path, backend_factory: Callable[..., Awaitable[Backend]],
    balancer_process: Callable[[Path], Process],
) -> None:
    backend = await backend_factory()
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(backend.url, extra="timeouts: {drain: 10s}\n"))
    lb = balancer_process(config)
    async with aiohttp.ClientSession() as session:
        slow = asyncio.ensure_future(session.get(f"{lb.url}/slow?s=1"))
        await asyncio.sleep(0.3)  # let the request reach the backend (it then takes 1 s)
        lb.signal(signal.SIGTERM)
        async with await slow as resp:
            assert resp.status == 200
            assert await resp.text() == "slow\n"
    assert await asyncio.to_thread(lb.proc.wait, 15) == 0
    assert "SIGTERM: draining" in lb.log()


async def test_sighup_swaps_a_valid_config_and_keeps_the_old_one_on_error(
    tmp_path: Path, backend_factory: Callable[..., Awaitable[Backend]],
    balancer_process: Callable[[Path], Process],
) -> None:
    first, second = await backend_factory("first"), await backend_factory("second")
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(first.url))
    lb = balancer_process(config)
    async with aiohttp.ClientSession() as session:
        async def served_by() -> str:
            async with session.get(f"{lb.url}/") as resp:
                assert resp.status == 200
                return resp.headers["X-Backend"]

        assert await served_by() == "first"
        config.write_text(one_pool_config(second.url).replace("listen: 127.0.0.1:0",
                                                               f"listen: {lb.url[7:]}"))
        lb.signal(signal.SIGHUP)
        await asyncio.to_thread(lb.wait_for_log, r"reloaded config: generation 2")
        assert await served_by() == "second"

        config.write_text("listen: 127.0.0.1:0\npools:\n  default:\n    backends: [http//x]\n")
        lb.signal(signal.SIGHUP)
        await asyncio.to_thread(lb.wait_for_log, r"reload refused, keeping generation 2: "
                                r".*lb\.yaml:4:16: pools\.default\.backends\[0\]")
        assert await served_by() == "second"
        async with session.get(f"{lb.admin_url}/status") as resp:
            status = await resp.json()
        assert status["generation"] == 2
        assert [r["ok"] for r in status["reloads"]] == [True, False]
