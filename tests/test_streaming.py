"""Bodies stream through: 200 MiB each way leaves the balancer's RSS within 50 MiB of its start."""

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import psutil

from tests.conftest import Backend, Process, one_pool_config

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


async def test_200_mib_upload_and_download_stream_in_bounded_memory(
    tmp_path: Path, backend_factory: Callable[..., Awaitable[Backend]],
    balancer_process: Callable[[Path], Process],
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
