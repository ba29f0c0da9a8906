"""Bodies stream through in bounded memory: 200 MiB each way leaves the balancer's RSS (its own
process, measured alone) within 50 MiB of its start; a client that reads nothing holds it
within 64 MiB. The in-process streaming tests: tests/integration/test_streaming.py."""

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil

from tests.helpers import (
    BackendFactory,
    ProcessFactory,
    RawBackendFactory,
    one_pool_config,
    wait_for,
)

SIZE = 200 * 1024**2
RSS_BOUND = 50 * 1024**2


class PeakRss:
    """Samples a process's RSS in the background and keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss)
            await asyncio.sleep(0.02)

    def __enter__(self) -> "PeakRss":
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


GROWTH_BOUND = 64 * 1024**2  # generous: the intact balancer grows by 1-3 MiB here



async def test_200_mib_upload_and_download_stream_in_bounded_memory(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory()
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(backend.url, extra="limits: {max_body_size: 1GiB}\n"))
    lb = balancer_process(config)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{lb.url}/warm") as resp:  # warm up the balancer first
            assert resp.status == 200
        block = bytes(range(256)) * 256
        expected = hashlib.sha256()

        async def upload() -> AsyncIterator[bytes]:
            for _ in range(SIZE // len(block)):
                expected.update(block)
                yield block

        with PeakRss(lb.proc.pid) as rss:
            async with session.post(f"{lb.url}/upload", data=upload()) as resp:
                assert resp.status == 200
                result = await resp.json()
            assert result == {"size": SIZE, "sha": expected.hexdigest()}
            received = 0
            async with session.get(f"{lb.url}/download?bytes={SIZE}&length=1") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Length"] == str(SIZE)
                async for chunk in resp.content.iter_any():
                    received += len(chunk)
            assert received == SIZE
        assert rss.growth < RSS_BOUND, f"RSS grew by {rss.growth / 2**20:.1f} MiB"


async def test_a_download_to_a_client_that_reads_nothing_does_not_pile_up_in_the_balancer(
    tmp_path: Path, raw_backend_factory: RawBackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    """Back-pressure on the download side: while the client reads nothing, the balancer stops
    reading from the backend, so the backend's writes stall instead of 200 MiB piling up."""
    sent = [0]

    async def download(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE)
        block = b"x" * 65536
        while sent[0] < SIZE:
            writer.write(block)
            await writer.drain()  # blocks while the balancer does not read
            sent[0] += len(block)

    raw = await raw_backend_factory(download)
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(raw.url))
    lb = balancer_process(config)
    host, port = lb.url.removeprefix("http://").rsplit(":", 1)
    with PeakRss(lb.proc.pid) as rss:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /download HTTP/1.1\r\nHost: a\r\n\r\n")
        # The client reads nothing until the backend stalls (or, without back-pressure,
        # has sent everything into the balancer).
        await wait_for(lambda: sent[0] > 0, what="the backend to start sending")
        last, steady_since = -1, 0.0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while sent[0] < SIZE and loop.time() < deadline:
            if sent[0] != last:
                last, steady_since = sent[0], loop.time()
            elif loop.time() - steady_since > 0.5:
                break  # no progress for half a second: the backend is held back
            await asyncio.sleep(0.02)
        held = rss.growth
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        received = 0
        while received < SIZE:
            chunk = await reader.read(1 << 20)
            assert chunk, f"connection closed after {received} bytes"
            received += len(chunk)
        writer.close()
    assert received == SIZE  # nothing lost by pausing and resuming
    assert held < GROWTH_BOUND, (
        f"RSS grew by {held / 2**20:.1f} MiB while the client read nothing "
        f"(the backend had sent {sent[0] / 2**20:.0f} MiB)")
    assert rss.growth < GROWTH_BOUND, f"RSS grew by {rss.growth / 2**20:.1f} MiB"


async def test_a_200_mib_upload_with_content_length_streams_in_bounded_memory(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    """A body with a Content-Length over the replay limit is streamed, not held for replay."""
    backend = await backend_factory()
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(backend.url, extra="limits: {max_body_size: 1GiB}\n"))
    lb = balancer_process(config)
    host, port = lb.url.removeprefix("http://").rsplit(":", 1)
    block = bytes(range(256)) * 256
    expected = hashlib.sha256()
    with PeakRss(lb.proc.pid) as rss:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % SIZE)
        for _ in range(SIZE // len(block)):
            expected.update(block)
            writer.write(block)
            await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        body = await reader.readexactly(length)
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert json.loads(body) == {"size": SIZE, "sha": expected.hexdigest()}
    assert rss.growth < GROWTH_BOUND, f"RSS grew by {rss.growth / 2**20:.1f} MiB"
