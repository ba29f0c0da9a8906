"""Hostile clients against a balancer in its own process (its own descriptor limit); the
in-process ones are in tests/integration/test_hostile.py."""

import asyncio
import re
import resource
from pathlib import Path

import aiohttp
import psutil

from tests.helpers import (
    BackendFactory,
    ProcessFactory,
    missing_prerequisite,
    one_pool_config,
)

IDLE_CONNECTIONS = 10_000



async def test_ten_thousand_idle_client_connections_are_held_and_others_still_served(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < IDLE_CONNECTIONS + 200:
        try:  # root may raise the hard limit itself
            hard = IDLE_CONNECTIONS + 1000
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            missing_prerequisite(f"the open-file limit ({limit}) is below "
                                 f"{IDLE_CONNECTIONS} connections and cannot be raised")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    backend = await backend_factory("b")
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(backend.url, extra="timeouts: {client_idle: 5m}\n"))
    lb = balancer_process(config)  # its own process: 10,000 descriptors on each side
    host, port = lb.url.removeprefix("http://").rsplit(":", 1)
    balancer = psutil.Process(lb.proc.pid)
    before = balancer.memory_info().rss
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    gate = asyncio.Semaphore(200)

    async def idle_connection() -> None:
        async with gate:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(re.search(rb"Content-Length: (\d+)", head)[1]))  # type: ignore[index]
            held.append((reader, writer))  # then idle, kept open

    try:
        await asyncio.gather(*(idle_connection() for _ in range(IDLE_CONNECTIONS)))
        assert balancer.num_fds() >= IDLE_CONNECTIONS
        per_connection = (balancer.memory_info().rss - before) / IDLE_CONNECTIONS
        print(f"\n{IDLE_CONNECTIONS} idle connections: "
              f"{per_connection / 1024:.1f} KiB of balancer RSS each")
        assert per_connection < 64 * 1024
        async with aiohttp.ClientSession() as session:  # a new client is served meanwhile
            for _ in range(20):
                async with session.get(f"{lb.url}/y") as resp:
                    assert resp.status == 200
        for reader, writer in held[::1000]:  # and the idle ones are still usable
            writer.write(b"GET /z HTTP/1.1\r\nHost: a\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 ")
    finally:
        for _, writer in held:
            writer.close()
