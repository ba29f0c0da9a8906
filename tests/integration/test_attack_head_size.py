"""Attack round (after issue 11): the whole request head is bounded (`limits.max_head_size`,
default 64 KiB), not only each line and the count of lines. Before, one head could hold
max_headers x max_header_size = 1.6 MiB, and 100 connections each sending such a head and
never finishing it took 314 MiB of the balancer's RSS within `client_header`. Two-sided: the
client gets 431 and the connection closes; the backend sees nothing."""

import asyncio
import contextlib

from tests.helpers import ProxiedFactory, one_pool_config, raw_exchange

LINES = [b"X-Filler-%d: %b\r\n" % (i, b"v" * 2000) for i in range(40)]  # 80 KB, 40 lines


async def test_a_whole_head_over_the_limit_is_431_and_reaches_nobody(
    proxied: ProxiedFactory,
) -> None:
    lb, backend = await proxied()
    request = b"GET /big HTTP/1.1\r\nHost: a\r\n" + b"".join(LINES) + b"\r\n"
    received, closed = await raw_exchange(lb.url, request)
    assert received.startswith(b"HTTP/1.1 431 "), received[:200]
    assert b"request head is over 65536 bytes" in received
    assert closed
    # nothing to wait for: the head is refused before a backend is chosen
    assert backend.requests == [] and backend.links == []


async def test_a_head_under_the_limit_is_forwarded_whole(proxied: ProxiedFactory) -> None:
    lb, backend = await proxied()
    lines = LINES[:30]  # 60 KB
    request = b"GET /fits HTTP/1.1\r\nHost: a\r\n" + b"".join(lines) + b"\r\n"
    received, _ = await raw_exchange(lb.url, request, until=b"for /fits")
    assert received.startswith(b"HTTP/1.1 200 ")
    assert len(backend.requests) == 1
    assert backend.requests[0].header(b"x-filler-29") == [b"v" * 2000]


async def test_an_unfinished_head_over_the_limit_is_cut_before_client_header(
    proxied: ProxiedFactory,
) -> None:
    lb, backend = await proxied(extra="timeouts: {client_header: 5s}\n")
    host, port = lb.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /slow HTTP/1.1\r\nHost: a\r\n")
    with contextlib.suppress(ConnectionError):  # (the balancer closes while we still send)
        for line in LINES:  # in pieces, never finished
            writer.write(line)
            await writer.drain()
            await asyncio.sleep(0.005)
            if reader.at_eof() or len(reader._buffer):  # type: ignore[attr-defined]
                break  # answered: stop sending, so that no reset discards the answer
    answer = await asyncio.wait_for(reader.read(), 4)  # before client_header's 408
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert backend.links == []


def test_max_head_size_is_configurable() -> None:
    from balancer.config.parse import parse_config

    config = parse_config(one_pool_config("http://127.0.0.1:1",
                                          extra="limits: {max_head_size: 1MiB}\n"), "t.yaml")
    assert config.limits.max_head_size == 1024 * 1024
