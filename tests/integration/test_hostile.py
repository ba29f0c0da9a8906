"""Hostile clients, on raw sockets: every bad request gets a clear 4xx (or 505), the connection
is closed where that is right, nothing is forwarded with a framing a backend could read
differently, and other clients are served throughout."""

import asyncio
import re
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.fakes import RawBackend
from tests.helpers import (
    BackendFactory,
    BalancerFactory,
    RawBackendFactory,
    Running,
    one_pool_config,
    raw_exchange,
)


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    assert match is not None, response[:200]
    return int(match.group(1))


class Bystander:
    """A well-behaved client sending requests the whole time; all must succeed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not self._stop.is_set():
                try:
                    async with session.get(f"{self.url}/bystander") as resp:
                        await resp.read()
                        if resp.status == 200:
                            self.ok += 1
                        else:
                            self.failures.append(str(resp.status))
                except aiohttp.ClientError as exc:
                    self.failures.append(repr(exc))
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stop.set()
        await self._task
        assert self.failures == []
        assert self.ok > 0


@pytest.fixture
async def guarded(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    raw_backend_factory: RawBackendFactory,
) -> AsyncIterator[tuple[Running, RawBackend]]:
    """A balancer with two pools: `/bystander` goes to an echo backend, anything else to a
    raw backend that records every connection (a rejected request must open none)."""
    echo = await backend_factory("echo")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()

    raw = await raw_backend_factory(answer)
    lb = await balancer_factory(f"""\
listen: 127.0.0.1:0
admin: 127.0.0.1:0
timeouts: {{client_header: 500ms, client_body: 500ms}}
limits: {{max_uri_size: 1KiB, max_header_size: 2KiB, max_headers: 20, max_body_size: 1KiB}}
pools:
  echo: {{backends: [{echo.url}]}}
  raw:  {{backends: [{raw.url}]}}
routing:
  classes: {{io: echo, light_cpu: raw, heavy_cpu: raw}}
  default_class: light_cpu
  rules:
    - {{path: "/bystander", class: io}}
""")
    yield lb, raw


SMUGGLING = {
    "content-length with transfer-encoding":
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
    "duplicate content-length":
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
    "conflicting content-length":
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    "content-length list": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\nabcd",
    "signed content-length": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd",
    "obs-fold": b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    "invalid chunk size":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n",
    "chunk size overflow":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"ffffffffffffffffff1\r\nabcd\r\n0\r\n\r\n",
    "bare LF line ends": b"GET /x HTTP/1.1\nHost: a\n\n",
    "bare LF in a header": b"GET /x HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n",
    "chunked, identity":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "chunked twice":
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "unknown transfer-coding": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    "space before colon": b"GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
    "CR inside a header value": b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\rX-B: c\r\n\r\n",
    "NUL inside a header value": b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
    "invalid method": b"G(T /x HTTP/1.1\r\nHost: a\r\n\r\n",
    "space in the target": b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "missing Host on HTTP/1.1": b"GET /x HTTP/1.1\r\n\r\n",
    "two Host headers": b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "target that is not a path or http URI": b"GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "absolute URI with userinfo": b"GET http://u@evil/x HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
async def test_malformed_requests_get_400_are_closed_and_never_forwarded(
    guarded: tuple[Running, RawBackend], name: str,
) -> None:
    lb, raw = guarded
    bystander = Bystander(lb.url)
    response, closed = await raw_exchange(lb.url, SMUGGLING[name])
    await bystander.stop()
    assert status_of(response) == 400, response
    body = response.split(b"\r\n\r\n", 1)[1]
    assert re.fullmatch(rb"400 bad request: [^\r\n]+ \(request id [0-9a-f]+-[0-9a-f]+\)\n", body)
    assert closed
    assert raw.connections == 0


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    (b"GET /x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n", 431),
    (b"GET /x HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(30))
     + b"\r\n", 431),
    (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n", 413),  # no body sent
], ids=["uri 414", "header line 431", "header count 431", "body 413 before the body"])
async def test_oversized_requests_get_their_status_before_the_body_is_read(
    guarded: tuple[Running, RawBackend], request_bytes: bytes, status: int,
) -> None:
    lb, raw = guarded
    bystander = Bystander(lb.url)
    response, closed = await raw_exchange(lb.url, request_bytes)
    await bystander.stop()
    assert status_of(response) == status, response[:300]
    assert closed
    assert raw.connections == 0
    async with aiohttp.ClientSession() as session, session.get(f"{lb.admin_url}/metrics") as m:
        metrics = await m.text()
    if status != 413:  # 413 comes from the proxy itself, the others from the parser
        assert f'balancer_bad_requests_total{{status="{status}"}} 1.0' in metrics


async def test_slowloris_headers_are_cut_off_by_the_client_header_timeout(
    guarded: tuple[Running, RawBackend],
) -> None:
    lb, raw = guarded
    bystander = Bystander(lb.url)
    host, port = lb.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    first = asyncio.ensure_future(reader.read(1))
    for byte in b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 100:
        if first.done() or time.monotonic() - started > 5:
            break  # an answer came: stop sending, or the close would reset the connection
        writer.write(bytes([byte]))  # a byte every 50 ms: the head never completes
        await asyncio.sleep(0.05)
    async with asyncio.timeout(5):
        received = await first + await reader.read()
    elapsed = time.monotonic() - started
    writer.close()
    await bystander.stop()
    assert status_of(received) == 408
    assert b"did not arrive within 0.5s" in received
    assert 0.4 < elapsed < 3.0
    assert raw.connections == 0


async def test_an_idle_keep_alive_connection_is_not_cut_by_the_header_timeout(
    guarded: tuple[Running, RawBackend],
) -> None:
    lb, _ = guarded
    host, port = lb.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    for _ in range(2):
        writer.write(b"GET /bystander HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert status_of(head) == 200
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        await asyncio.sleep(0.8)  # idle longer than client_header, shorter than client_idle
    writer.close()


@pytest.mark.parametrize("size", [100, 900])
async def test_a_stalled_request_body_gets_408_within_the_client_body_timeout(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory, size: int,
) -> None:
    backend = await backend_factory("b")
    lb = await balancer_factory(one_pool_config(
        backend.url, extra="timeouts: {client_body: 500ms}\n"
                           "limits: {max_body_size: 1MiB}\n"))
    length = size * 1000  # 100 kB: held then sent; 900 kB: streamed to the backend
    started = time.monotonic()
    response, closed = await raw_exchange(
        lb.url, b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % length
        + b"x" * (length // 2))
    elapsed = time.monotonic() - started
    assert status_of(response) == 408, response
    assert b"408 request body too slow" in response
    assert closed and elapsed < 3.0


async def test_connect_and_http2_request_lines_are_refused(
    guarded: tuple[Running, RawBackend],
) -> None:
    lb, raw = guarded
    response, _ = await raw_exchange(lb.url, b"CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n")
    assert status_of(response) == 405
    response, closed = await raw_exchange(lb.url, b"GET /x HTTP/2.0\r\nHost: a\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
    assert closed
    assert raw.connections == 0


async def test_absolute_form_is_forwarded_in_origin_form_and_routed_by_its_path(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    io, light = await backend_factory("io"), await backend_factory("light")
    lb = await balancer_factory(f"""\
listen: 127.0.0.1:0
pools:
  io:    {{backends: [{io.url}]}}
  light: {{backends: [{light.url}]}}
routing:
  classes: {{io: io, light_cpu: light, heavy_cpu: light}}
  default_class: light_cpu
  rules:
    - {{path: "/api/**", class: io}}
""")
    response, _ = await raw_exchange(
        lb.url, b"GET http://Example.COM:8080/api/items?id=7 HTTP/1.1\r\nHost: other\r\n"
                b"Connection: close\r\n\r\n")
    assert status_of(response) == 200
    assert b"X-Backend: io" in response
    body = response.split(b"\r\n\r\n", 1)[1]
    assert b'"path_qs": "/api/items?id=7"' in body
    assert b'["Host", "Example.COM:8080"]' in body


async def test_the_admin_api_is_not_reachable_through_the_public_listener(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory("b")
    lb = await balancer_factory(one_pool_config(backend.url))
    for method, path in (("GET", "/status"), ("GET", "/metrics"), ("POST", "/reload"),
                         ("GET", "/healthz"), ("GET", "/")):
        async with session.request(method, f"{lb.url}{path}") as resp:
            assert resp.headers["X-Backend"] == "b", path  # the backend answered, not admin
    assert lb.balancer.runtime.generation == 1


