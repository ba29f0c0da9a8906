"""README promises about the proxy that only had unit tests, checked end to end: who is trusted
with X-Forwarded-For, hop-by-hop response headers, no request sent twice once part of its
response arrived, the retry budget and the ejected share. Backends parse what they receive with
h11 (an independent parser, not the balancer's httptools)."""

import asyncio

import aiohttp
import h11
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import h11_ok, h11_request
from tests.helpers import BalancerFactory, RawBackendFactory, Running, one_pool_config


def headers_of(event: h11.Request | h11.Response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in event.headers:
        out.setdefault(name.decode().lower(), []).append(value.decode())
    return out


async def client_exchange(url: str, request: bytes) -> tuple[h11.Response, bytes]:
    """Send one request on a raw socket; the response as parsed by h11."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    conn = h11.Connection(h11.CLIENT)
    writer.write(request)
    response, body = None, b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await asyncio.wait_for(reader.read(65536), 10))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    finally:
        writer.close()
    assert response is not None
    return response, body


async def dead_address() -> str:
    """An address on which nothing listens: connections to it are refused."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return f"http://127.0.0.1:{port}"


async def metrics(session: aiohttp.ClientSession, lb: Running) -> dict[str, float]:
    """Every sample of the admin /metrics, summed over labels, by sample name."""
    async with session.get(f"{lb.admin_url}/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


# -- X-Forwarded-For from a client outside trusted_proxies -------------------------------------

async def test_a_client_outside_a_non_empty_trusted_proxies_has_its_forwarded_headers_replaced(
    raw_backend_factory: RawBackendFactory, balancer_factory: BalancerFactory,
) -> None:
    received: list[h11.Request] = []

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        request = await h11_request(reader, conn)
        assert request is not None
        received.append(request)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()

    raw = await raw_backend_factory(backend)
    lb = await balancer_factory(one_pool_config(
        raw.url, extra="trusted_proxies: [10.0.0.0/8, '::1/128']\n"))
    response, body = await client_exchange(
        lb.url, b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 203.0.113.9\r\n"
                b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n"
                b"Connection: close\r\n\r\n")
    assert response.status_code == 200 and body == b"ok"
    headers = headers_of(received[0])
    assert headers["x-forwarded-for"] == ["127.0.0.1"]  # 127.0.0.1 is not in 10.0.0.0/8
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["shop.example"]


# -- hop-by-hop headers in a response ----------------------------------------------------------

HOP_BY_HOP_RESPONSE = (
    b"TE: trailers\r\n"
    b"Trailer: X-Checksum\r\n"
    b"Upgrade: h2c\r\n"  # not a 101: nothing is being upgraded
    b"Proxy-Authenticate: Basic realm=inner\r\n"
    b"Proxy-Connection: keep-alive\r\n"
    b"Keep-Alive: timeout=5\r\n"
    b"Connection: X-Named\r\n"
    b"X-Named: hop\r\n"
    b"X-Kept: end-to-end\r\n"
)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_hop_by_hop_response_headers_do_not_reach_the_client(
    framing: str, raw_backend_factory: RawBackendFactory, balancer_factory: BalancerFactory,
) -> None:
    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await h11_request(reader, h11.Connection(h11.SERVER))
        if framing == "chunked":  # streamed to the client
            writer.write(b"HTTP/1.1 200 OK\r\n" + HOP_BY_HOP_RESPONSE
                         + b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        else:  # small enough to be sent with a head the balancer writes itself
            writer.write(b"HTTP/1.1 200 OK\r\n" + HOP_BY_HOP_RESPONSE
                         + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()

    raw = await raw_backend_factory(backend)
    lb = await balancer_factory(one_pool_config(raw.url))
    response, body = await client_exchange(lb.url, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert response.status_code == 200 and body == b"ok"
    headers = headers_of(response)
    assert headers["x-kept"] == ["end-to-end"]
    leaked = {"te", "trailer", "upgrade", "proxy-authenticate", "proxy-connection",
              "keep-alive", "x-named"} & set(headers)
    assert not leaked, f"hop-by-hop headers reached the client: {sorted(leaked)}"
    assert "x-named" not in headers.get("connection", [""])[0].lower()


# -- a request is never sent twice once part of its response arrived ---------------------------

async def test_a_reused_connection_that_dies_mid_response_head_is_not_sent_again(
    raw_backend_factory: RawBackendFactory, balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    """The backend answers the first request of each connection, then starts answering the
    second and closes: the second request may have been processed, so it must not be sent
    again (RFC 9110 section 9.2.2: retrying is for a connection that failed before any response
    byte). The stale-connection retry before any byte is tested in test_proxy.py."""
    targets: list[str] = []

    async def one_then_half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        request = await h11_request(reader, conn)
        assert request is not None
        targets.append(request.target.decode())
        writer.write(h11_ok(conn, b"ok"))
        await writer.drain()
        conn.start_next_cycle()
        request = await h11_request(reader, conn)  # the second request on this connection
        if request is None:
            return
        targets.append(request.target.decode())
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")  # part of a response head ...
        await writer.drain()
        writer.close()  # ... and the connection is gone

    raw = await raw_backend_factory(one_then_half)
    lb = await balancer_factory(one_pool_config(raw.url))
    async with session.get(f"{lb.url}/first") as resp:
        assert resp.status == 200 and await resp.read() == b"ok"
    assert raw.connections == 1
    async with session.get(f"{lb.url}/second") as resp:
        assert resp.status == 502, await resp.text()
    assert targets == ["/first", "/second"], f"the backend saw {targets}"


# -- the retry budget, wired into the proxy ----------------------------------------------------

async def test_the_proxy_retries_within_the_budget_and_counts_what_it_refuses(
    balancer_factory: BalancerFactory, session: aiohttp.ClientSession,
) -> None:
    """Two refusing backends that are never ejected: each request wants one retry. README:
    retries are at most `retry_budget` of requests, plus `retry_burst` saved up."""
    requests, budget, burst = 60, 0.1, 2
    lb = await balancer_factory(one_pool_config(
        await dead_address(), await dead_address(),
        extra=f"health: {{consecutive_failures: 1000000, retry_budget: {budget}, "
              f"retry_burst: {burst}}}\n"))
    for _ in range(requests):
        async with session.get(f"{lb.url}/") as resp:
            assert resp.status in (502, 503)  # refused: with a retry (503) or without
    seen = await metrics(session, lb)
    retries = seen.get("balancer_retries_total", 0.0)
    exhausted = seen.get("balancer_retry_budget_exhausted_total", 0.0)
    assert retries <= burst + budget * requests, f"{retries} retries for {requests} requests"
    # the budget refills with requests: more retries than the initial burst alone allows
    assert retries > burst + 1, f"only {retries} retries: the budget is not refilled"
    assert exhausted >= requests - retries - 1, (retries, exhausted)


async def test_a_failure_with_no_other_backend_spends_no_retry_budget(
    balancer_factory: BalancerFactory, session: aiohttp.ClientSession,
) -> None:
    """With one backend there is nothing to retry on: no token is spent and no exhaustion is
    counted (the budget was charged before the choice once, so a lone dead backend drained it
    and counted every request as exhausted)."""
    lb = await balancer_factory(one_pool_config(
        await dead_address(),
        extra="health: {consecutive_failures: 1000000, retry_budget: 0.1, retry_burst: 2}\n"))
    for _ in range(20):
        async with session.get(f"{lb.url}/") as resp:
            assert resp.status in (502, 503)
    seen = await metrics(session, lb)
    assert seen.get("balancer_retries_total", 0.0) == 0
    assert seen.get("balancer_retry_budget_exhausted_total", 0.0) == 0


# -- at most max_ejected_share of a pool is ejected --------------------------------------------

async def test_the_proxy_never_ejects_more_than_the_share_of_a_pool(
    balancer_factory: BalancerFactory, session: aiohttp.ClientSession,
) -> None:
    lb = await balancer_factory(one_pool_config(
        await dead_address(), await dead_address(),
        extra="health: {consecutive_failures: 1, ejection: 60s, max_ejected_share: 0.5}\n"))
    for _ in range(20):
        async with session.get(f"{lb.url}/") as resp:
            assert resp.status in (502, 503)  # refused: with a retry (503) or without
    seen = await metrics(session, lb)
    assert seen["balancer_backend_ejections_total"] == 1  # half of 2: one, never both
    now = lb.balancer.backend_table.loop.time()
    ejected = [a for a in lb.balancer.runtime.addresses()
               if lb.balancer.backend_table.health(a).is_ejected(now)]
    assert len(ejected) == 1


# -- Connection may not name the headers that frame the message ------------------------------

async def test_connection_naming_content_length_cannot_smuggle_a_request(
    raw_backend_factory: RawBackendFactory, balancer_factory: BalancerFactory,
) -> None:
    targets: list[str] = []

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        while (request := await h11_request(reader, conn)) is not None:
            targets.append(request.target.decode())
            writer.write(h11_ok(conn, b"ok"))
            await writer.drain()
            conn.start_next_cycle()

    raw = await raw_backend_factory(backend)
    lb = await balancer_factory(one_pool_config(raw.url))
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    response, _ = await client_exchange(
        lb.url, b"POST /upload HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\n"
                b"Content-Length: %d\r\n\r\n%b" % (len(smuggled), smuggled))
    assert response.status_code in (200, 400)
    # the next request reuses the backend connection: once it is answered, the backend has
    # read everything the balancer sent before it
    response, body = await client_exchange(lb.url, b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    assert response.status_code == 200 and body == b"ok"
    assert "/smuggled" not in targets, f"the backend saw {targets}"
