"""Attack round (after issue 11): a backend that answers before it has read the whole request
body (413, 401, 404 ... then closes, or stops reading) gets its answer relayed, as nginx and
HAProxy do. Before, a streamed upload (over 64 KiB or chunked) to such a backend became a 502
("backend closed the connection while the request was sent") or a 504 after
`backend_response`, each counted as a backend fault: any client could get backends ejected by
sending uploads they refuse early. The rest of the body is not sent, and both connections
close after the answer (neither can be trusted for another request). Two-sided: what the
backend received, what the client got."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.helpers import BalancerFactory, one_pool_config, raw_exchange

ANSWER = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n%b\r\ntoo large"


class EarlyBackend:
    """Reads a request head, answers at once; `close`: then closes (lingering), else stops
    reading."""

    def __init__(self, close: bool) -> None:
        self.close = close
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> "EarlyBackend":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(ANSWER % (b"Connection: close\r\n" if self.close else b""))
            await writer.drain()
            if self.close:  # a lingering close (as nginx's): FIN, then drop what still comes
                writer.write_eof()  # (closing at once would reset, and the reset can discard
                with contextlib.suppress(TimeoutError):  # the answer in the balancer's kernel)
                    async with asyncio.timeout(2):
                        while await reader.read(65536):
                            pass
            else:
                await asyncio.sleep(30)  # reads nothing more
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def early() -> AsyncIterator[Callable[[bool], Awaitable[EarlyBackend]]]:
    started: list[EarlyBackend] = []

    async def make(close: bool) -> EarlyBackend:
        backend = await EarlyBackend(close).start()
        started.append(backend)
        return backend

    yield make
    for backend in started:
        assert backend.server is not None
        backend.server.close()


@pytest.mark.parametrize("close", [True, False], ids=["closes", "stops-reading"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_an_early_answer_to_a_streamed_upload_is_relayed(
    balancer_factory: BalancerFactory, early: Callable[[bool], Awaitable[EarlyBackend]],
    close: bool, framing: str,
) -> None:
    backend = await early(close)
    lb = await balancer_factory(one_pool_config(
        backend.url, extra="timeouts: {backend_response: 5s}\n"))
    size = 8 * 1024 * 1024  # more than the kernel buffers between the balancer and backend
    if framing == "chunked":
        head = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = b"%x\r\n%b\r\n0\r\n\r\n" % (size, b"x" * size)
    else:
        head = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size
        body = b"x" * size
    received, _ = await raw_exchange(lb.url, head + body, timeout=2)
    assert received.startswith(b"HTTP/1.1 413 "), received[:300]
    # one answer, which closes: the rest of the body (read and dropped) is no next request
    # (it was taken for a request head: a 431 followed)
    assert received.endswith(b"too large") and received.count(b"HTTP/1.1 ") == 1, received
    assert b"\r\nConnection: close\r\n" in received
    assert len(backend.heads) == 1 and backend.heads[0].startswith(b"POST /upload HTTP/1.1")
    # the balancer itself still serves, and counted no backend fault
    backend_table = lb.balancer.backend_table
    assert [backend_table.health(address).failures
            for address in lb.balancer.runtime.addresses()] == [0]
