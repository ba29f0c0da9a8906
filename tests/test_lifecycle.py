"""Process lifecycle on real subprocesses: `drain: 0s` stops at once, a SIGHUP at any moment of
start-up is a reload (never a death), one instance per port in single-process mode, and
concurrent reloads leave no listener behind."""

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from balancer.config import parse_config
from balancer.server import Balancer
from tests.conftest import (
    ROOT,
    Backend,
    Process,
    RawBackend,
    RawHandler,
    one_pool_config,
    read_request_head,
    wait_for,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_drain_0s_stops_at_once_with_a_slow_request_in_flight(
    tmp_path: Path, raw_backend_factory: Callable[[RawHandler], Awaitable[RawBackend]],
    balancer_process: Callable[..., Process],
) -> None:
    received = asyncio.Event()

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        received.set()
        await asyncio.Event().wait()  # cancelled when the test ends

    backend = await raw_backend_factory(never_answers)
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(backend.url, extra="timeouts: {drain: 0s}\n"))
    lb = balancer_process(config)
    async with aiohttp.ClientSession() as session:
        slow = asyncio.ensure_future(session.get(f"{lb.url}/held"))
        await asyncio.wait_for(received.wait(), 10)
        lb.signal(signal.SIGTERM)
        # drain 0s: no wait for the request (its answer never comes, and the backend_response
        # timeout is 30 s); aiohttp took a timeout of 0 as "no limit"
        assert await asyncio.to_thread(lb.proc.wait, 20) == 0
        with pytest.raises(aiohttp.ClientError):
            async with await slow as resp:
                await resp.read()
    assert "SIGTERM: draining (up to 0s)" in lb.log()
