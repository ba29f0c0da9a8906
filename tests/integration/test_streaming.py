"""Bodies stream through: a tunnel does not buffer for a side that does not read. The memory
bounds, measured on a balancer in its own process, are in tests/e2e/test_streaming.py."""

import asyncio

import pytest

from tests.helpers import (
    BalancerFactory,
    RawBackendFactory,
    Running,
    buffered_bytes,
    one_pool_config,
    wait_for,
)

TUNNEL_BYTES = 32 * 1024 * 1024
UPGRADE = (b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
SWITCHING = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
             b"Upgrade: websocket\r\n\r\n")


async def _peak_for_a_second(lb: Running, side: int) -> int:
    """The most the balancer buffered towards clients (side 0) or backends (side 1), sampled
    for a second once bytes started to wait."""
    await wait_for(lambda: buffered_bytes(lb)[side] > 0, what="bytes waiting in the balancer")
    loop = asyncio.get_running_loop()
    deadline, peak = loop.time() + 1.0, 0
    while loop.time() < deadline:
        peak = max(peak, buffered_bytes(lb)[side])
        await asyncio.sleep(0.02)
    return peak


@pytest.mark.parametrize("direction", ["backend to client", "client to backend"])
async def test_a_tunnel_does_not_buffer_for_a_side_that_does_not_read(
    raw_backend_factory: RawBackendFactory,
    balancer_factory: BalancerFactory, direction: str,
) -> None:
    reader_ready = asyncio.Event()
    received_by_backend = [0]

    async def blast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(SWITCHING)
        if direction == "backend to client":
            for _ in range(TUNNEL_BYTES // 65536):
                writer.write(b"x" * 65536)
                await writer.drain()  # blocks while the balancer does not read
            writer.close()
        else:
            await reader_ready.wait()  # not reading until told
            while chunk := await reader.read(1 << 20):
                received_by_backend[0] += len(chunk)

    raw = await raw_backend_factory(blast)
    lb = await balancer_factory(one_pool_config(raw.url))
    host, port = lb.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(UPGRADE)
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
    if direction == "backend to client":
        peak = await _peak_for_a_second(lb, 0)  # the client reads nothing meanwhile
        assert peak < 2 * 1024 * 1024, f"{peak} bytes buffered for a client that reads nothing"
        total = 0
        while chunk := await reader.read(1 << 20):
            total += len(chunk)
        assert total == TUNNEL_BYTES  # nothing lost by pausing and resuming
    else:
        async def send() -> None:
            for _ in range(TUNNEL_BYTES // 65536):
                writer.write(b"y" * 65536)
                await writer.drain()  # blocks while the balancer does not read
            writer.write_eof()

        sender = asyncio.ensure_future(send())
        peak = await _peak_for_a_second(lb, 1)  # the backend reads nothing meanwhile
        assert peak < 2 * 1024 * 1024, f"{peak} bytes buffered for a backend that reads nothing"
        assert not sender.done()
        reader_ready.set()
        await asyncio.wait_for(sender, 30)
        await wait_for(lambda: received_by_backend[0] == TUNNEL_BYTES, timeout=30,
                       what="every byte at the backend")
    writer.close()


