"""`ClientConnection`'s request-head timer and head-size bound without sockets: bytes fed to
`data_received`, the clock moved by hand (tests/unit/fake_io.py). The rules are those of
balancer/proxy/client.py: from the first byte of a request head to its end at most
`timeouts.client_header` (then 408 and close), and at most `limits.max_head_size` bytes of
head (then 431 and close)."""

import asyncio
from typing import cast

from aiohttp import web

from balancer.config.parse import parse_config
from balancer.proxy.client import ClientConnection, ProxyServer
from tests.unit.fake_io import FakeTransport, ManualClockLoop, settle

CONFIG = """\
listen: 127.0.0.1:0
timeouts: {client_header: 5s}
limits: {max_head_size: 2KiB}
pools: {p: {backends: [http://127.0.0.1:9]}}
"""


class Client:
    """A client connection on a fake transport; requests are answered 200 "ok"."""

    def __init__(self, loop: ManualClockLoop) -> None:
        self.loop = loop
        self.refused: list[int] = []
        self.transport = FakeTransport()
        server = ProxyServer(self._answer, parse_config(CONFIG), on_bad_request=self.refused.append,
                             new_request_id=lambda: "req-1",
                             loop=loop, access_log=None,
                             handler_cancellation=True)
        conn = server()
        assert isinstance(conn, ClientConnection)
        self.conn = conn
        conn.connection_made(cast(asyncio.Transport, self.transport))

    async def _answer(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text="ok")

    async def feed(self, data: bytes) -> None:
        self.conn.data_received(data)
        await settle()

    async def advance(self, seconds: float) -> None:
        self.loop.advance(seconds)
        await settle()

    def written(self) -> bytes:
        return bytes(self.transport.written)

    async def close(self) -> None:
        self.conn.connection_lost(None)
        await settle()


def test_a_head_not_complete_in_time_gets_a_408_and_the_connection_closes() -> None:
    loop = ManualClockLoop()

    async def scenario() -> None:
        client = Client(loop)
        await client.feed(b"GET / HTTP/1.1\r\nHo")
        await client.advance(4.9)
        assert client.written() == b"" and not client.transport.closing
        await client.advance(0.2)
        assert client.written().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"did not arrive within 5s (request id req-1)" in client.written()
        assert client.refused == [408] and client.transport.closing
        await client.close()

    loop.run(scenario)


def test_a_head_completed_in_time_stops_the_timer() -> None:
    loop = ManualClockLoop()

    async def scenario() -> None:
        client = Client(loop)
        await client.feed(b"GET / HTTP/1.1\r\nHo")
        await client.advance(4.0)
        await client.feed(b"st: a\r\n\r\n")
        await client.advance(10.0)
        assert client.written().startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"408" not in client.written() and client.refused == []
        await client.close()

    loop.run(scenario)


def test_each_request_on_a_kept_alive_connection_has_its_own_head_deadline() -> None:
    loop = ManualClockLoop()

    async def scenario() -> None:
        client = Client(loop)
        await client.feed(b"GET /1 HTTP/1.1\r\n")  # in two reads: its timer runs, then stops
        await client.feed(b"Host: a\r\n\r\n")
        await client.advance(30.0)  # idle between requests: client_idle's business, not this timer
        assert client.written().startswith(b"HTTP/1.1 200 OK\r\n") and client.refused == []
        answered = len(client.written())
        await client.feed(b"GET /2 HTTP/1.1\r\n")
        await client.advance(5.1)
        assert client.written()[answered:].startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert client.refused == [408]
        await client.close()

    loop.run(scenario)


def test_a_head_over_max_head_size_gets_a_431_before_its_deadline() -> None:
    loop = ManualClockLoop()

    async def scenario() -> None:
        client = Client(loop)
        await client.feed(b"GET / HTTP/1.1\r\n")
        for _ in range(3):
            assert client.written() == b""
            await client.feed(b"X-Filler: " + b"a" * 1000 + b"\r\n")
        assert client.written().startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        assert b"over 2048 bytes" in client.written()
        assert client.refused == [431] and client.transport.closing
        await client.close()
    loop.run(scenario)
