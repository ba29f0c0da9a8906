"""Forwarding end to end: real backends, a real balancer, real sockets on port 0."""

import asyncio
import hashlib
import os
import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.fakes import read_request_head
from tests.helpers import (
    BackendFactory,
    BalancerFactory,
    RawBackendFactory,
    one_pool_config,
    raw_exchange,
    wait_for,
)


def header_map(echo: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def test_method_path_query_headers_and_body_are_forwarded(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory()
    lb = await balancer_factory(one_pool_config(backend.url))
    body = os.urandom(3000)
    url = URL(f"{lb.url}/a/b%20c?x=1&y=%2F", encoded=True)  # sent exactly as written
    async with session.request("PATCH", url, data=body,
                               headers={"X-Custom": "v1", "Cookie": "s=1"}) as resp:
        assert resp.status == 200
        echo = await resp.json()
    assert echo["method"] == "PATCH"
    assert echo["path_qs"] == "/a/b%20c?x=1&y=%2F"
    assert echo["body_len"] == 3000
    assert echo["body_sha"] == hashlib.sha256(body).hexdigest()
    headers = header_map(echo)
    assert headers["x-custom"] == ["v1"] and headers["cookie"] == ["s=1"]
    assert resp.headers["X-Backend"] == "echo"


async def test_proxy_duties_on_request_and_response(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory()
    lb = await balancer_factory(one_pool_config(backend.url))
    async with session.get(f"{lb.url}/duties", headers={
        "Connection": "keep-alive, X-Hop", "X-Hop": "secret", "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic eA==", "X-Forwarded-For": "6.6.6.6",
        "Host": "shop.example",
    }) as resp:
        echo = await resp.json()
        request_id = resp.headers["X-Request-Id"]
    headers = header_map(echo)
    for hop in ("x-hop", "keep-alive", "proxy-authorization"):
        assert hop not in headers
    assert headers["x-forwarded-for"] == ["127.0.0.1"]  # the client is not a trusted proxy
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["shop.example"]
    assert headers["host"] == ["shop.example"]
    assert headers["via"] == ["1.1 echonext-balancer"]
    assert headers["x-request-id"] == [request_id]
    assert resp.headers["Via"] == "1.1 echonext-balancer"


async def test_forwarded_for_is_appended_for_trusted_proxies_and_request_id_kept(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory()
    lb = await balancer_factory(one_pool_config(
        backend.url, extra="trusted_proxies: [127.0.0.0/8]\n"))
    async with session.get(f"{lb.url}/", headers={"X-Forwarded-For": "203.0.113.9",
                                                  "X-Request-Id": "client-id-42"}) as resp:
        echo = await resp.json()
    headers = header_map(echo)
    assert headers["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert headers["x-request-id"] == ["client-id-42"]
    assert resp.headers["X-Request-Id"] == "client-id-42"


async def test_chunked_request_body_is_streamed_chunked(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory()
    lb = await balancer_factory(one_pool_config(backend.url))
    pieces = [os.urandom(n) for n in (10, 70000, 5, 200000)]

    async def gen() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async with session.post(f"{lb.url}/chunked", data=gen()) as resp:
        echo = await resp.json()
    assert echo["body_len"] == sum(map(len, pieces))
    assert echo["body_sha"] == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert echo["transfer_encoding"] == "chunked"


async def test_head_and_bodiless_statuses(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    backend = await backend_factory()
    lb = await balancer_factory(one_pool_config(backend.url))
    # HEAD keeps the backend's Content-Length and sends no body; the connection stays usable
    raw, closed = await raw_exchange(
        lb.url, b"HEAD /download?bytes=1234&length=1 HTTP/1.1\r\nHost: x\r\n"
                b"\r\nGET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /status/304 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        timeout=10)
    assert closed  # after the third response, as it asked
    responses = raw.split(b"HTTP/1.1 ")[1:]
    assert [r[:3] for r in responses] == [b"200", b"204", b"304"]
    assert b"Content-Length: 1234\r\n" in responses[0]
    assert responses[0].endswith(b"\r\n\r\n")  # no body after the HEAD response
    assert responses[1].endswith(b"\r\n\r\n")


async def test_expect_100_continue(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    backend = await backend_factory()
    lb = await balancer_factory(one_pool_config(backend.url))
    host, port = lb.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_response_without_content_length_is_read_to_close(
    raw_backend_factory: RawBackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for _ in range(5):
            writer.write(b"part-" * 1000)
            await writer.drain()
        writer.close()

    backend = await raw_backend_factory(close_delimited)
    lb = await balancer_factory(one_pool_config(backend.url))
    for _ in range(2):
        async with session.get(f"{lb.url}/") as resp:
            assert resp.status == 200
            assert await resp.read() == b"part-" * 5000


async def test_unix_socket_backend(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory(unix=True)
    lb = await balancer_factory(one_pool_config(backend.url))
    for _ in range(3):
        async with session.get(f"{lb.url}/over-unix") as resp:
            assert resp.status == 200
            assert (await resp.json())["path_qs"] == "/over-unix"
    upstream = next(iter(lb.balancer.backend_table.connections().values()))
    assert upstream.open_count == 1  # one keep-alive connection served all three


async def test_websocket_echo_through_the_balancer(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory()
    lb = await balancer_factory(one_pool_config(backend.url))
    async with session.ws_connect(f"{lb.url}/ws") as ws:
        for text in ("hello", "world" * 1000):
            await ws.send_str(text)
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.data == "echo:" + text
        await ws.send_bytes(b"\x00\x01" * 50000)
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.data == b"\x00\x01" * 50000
    # the balancer still serves plain requests afterwards
    async with session.get(f"{lb.url}/after") as resp:
        assert resp.status == 200


async def test_round_robin_over_the_pool(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backends = [await backend_factory(name) for name in ("a", "b", "c")]
    lb = await balancer_factory(one_pool_config(*(b.url for b in backends))
                                + "    policy: round_robin\n")
    seen = []
    for _ in range(6):
        async with session.get(f"{lb.url}/") as resp:
            seen.append(resp.headers["X-Backend"])
    assert seen == ["a", "b", "c", "a", "b", "c"]


# -- errors -------------------------------------------------------------------------------------

async def refused_url() -> str:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return f"http://127.0.0.1:{port}"


async def test_all_backends_refusing_is_503_with_reason_and_request_id(
    balancer_factory: BalancerFactory, session: aiohttp.ClientSession,
) -> None:
    lb = await balancer_factory(one_pool_config(await refused_url(), await refused_url()))
    async with session.get(f"{lb.url}/") as resp:
        text = await resp.text()
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        request_id = resp.headers["X-Request-Id"]
    assert re.match(r"503 no backend available: every backend of pool default is down "
                    r"\(2 tried; last: backend 127\.0\.0\.1:\d+ refused the connection", text)
    assert text.endswith(f"(request id {request_id})\n") and text.count("\n") == 1


async def test_connection_limit_reached_is_503_with_retry_after(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory()
    config = one_pool_config(backend.url, extra="timeouts: {connect: 200ms}\n")
    lb = await balancer_factory(config + "    max_connections: 1\n")
    slow = asyncio.ensure_future(session.get(f"{lb.url}/slow?s=1"))
    upstream_pools = lb.balancer.backend_table.connections
    await wait_for(lambda: any(p.open_count for p in upstream_pools().values()), what="busy")
    async with session.get(f"{lb.url}/fast") as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.text()).startswith("503 backend connection limit reached")
    async with await slow as resp:
        assert resp.status == 200


async def test_body_over_the_limit_is_413_before_it_is_read(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
) -> None:
    backend = await backend_factory()
    limits = "limits: {max_body_size: 1KiB}\n"
    lb = await balancer_factory(one_pool_config(backend.url, extra=limits))
    raw, _ = await raw_exchange(
        lb.url, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                b"Expect: 100-continue\r\n\r\n", until=b"\r\n\r\n", timeout=10)
    assert raw.startswith(b"HTTP/1.1 413")
    assert b"100 Continue" not in raw


async def test_response_cut_off_midway_closes_the_client_connection(
    raw_backend_factory: RawBackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    async def truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 400000)
        await writer.drain()
        writer.transport.abort()

    backend = await raw_backend_factory(truncated)
    lb = await balancer_factory(one_pool_config(backend.url))
    async with session.get(f"{lb.url}/") as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


# -- the stale keep-alive race ---------------------------------------------------------------------

@pytest.mark.parametrize("how", ["close", "reset"])
async def test_stale_keepalive_connection_is_retried_on_a_fresh_one(
    how: str, raw_backend_factory: RawBackendFactory,
    balancer_factory: BalancerFactory, session: aiohttp.ClientSession,
) -> None:
    """The backend answers one request per connection with keep-alive, then drops the next."""
    async def one_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request_head(reader)  # the second request arrives ...
        if how == "reset":
            writer.transport.abort()       # ... and the connection is reset
        else:
            writer.close()                 # ... or closed, unanswered

    backend = await raw_backend_factory(one_then_drop)
    lb = await balancer_factory(one_pool_config(backend.url))
    for _ in range(4):
        async with session.get(f"{lb.url}/") as resp:
            assert resp.status == 200
            assert await resp.read() == b"ok"
    assert backend.connections == 4


async def test_backend_connection_close_is_honoured(
    raw_backend_factory: RawBackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    requests_seen: list[int] = []

    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        requests_seen.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.2)  # keep the socket open: only the header says it will close

    backend = await raw_backend_factory(closing)
    lb = await balancer_factory(one_pool_config(backend.url))
    for _ in range(3):
        async with session.get(f"{lb.url}/") as resp:
            assert await resp.read() == b"ok"
    assert backend.connections == 3 and len(requests_seen) == 3


async def test_backends_that_report_more_load_get_less_traffic(
    backend_factory: BackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    """Weighted least-request: load reports steer traffic (4x the CPU per request: 1/4)."""
    idle = await backend_factory("idle", report="TEXT cpu_utilization=0.1, rps_fractional=50")
    busy = await backend_factory("busy", report="TEXT cpu_utilization=0.4, rps_fractional=50")
    lb = await balancer_factory(one_pool_config(idle.url, busy.url).replace(
        "    backends:", "    policy: weighted_least_request\n    backends:"))  # not the default
    for stats in (lb.balancer.backend_table.stats(a) for a in lb.balancer.runtime.addresses()):
        stats.added_at -= 3600  # past slow start: compare the report weights alone
    for _ in range(10):  # first reports from both
        async with session.get(f"{lb.url}/") as resp:
            assert resp.status == 200
    seen = Counter()
    for _ in range(400):
        async with session.get(f"{lb.url}/") as resp:
            seen[resp.headers["X-Backend"]] += 1
    assert 0.70 <= seen["idle"] / 400 <= 0.90, seen  # weights 4:1 -> 80 %
