"""Attack round 2: nothing capped the number of client connections (HAProxy's `maxconn`,
nginx's `worker_connections`). Each costs a file descriptor and memory, and thousands of idle
keep-alive or slow-head ones were bounded only by timeouts; past the open-files limit even
backend connections fail. Now `limits.max_client_connections` (per process): past it a new
connection gets a 503 (`Retry-After: 1`, `Connection: close`) and is closed at once, counted
in `balancer_client_connections_refused_total`; the connections already open keep working.
Two-sided: the backend (h11) sees only the admitted clients' requests."""

import asyncio
import contextlib

import aiohttp

from tests.helpers import ProxiedFactory, wait_for
from tests.recording import answer_echo, echo_body, parse_responses


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: bytes) -> bytes:
    writer.write(b"GET %b HTTP/1.1\r\nHost: a\r\n\r\n" % target)
    received = b""
    async with asyncio.timeout(5):
        while b"sha=" not in received:
            chunk = await reader.read(65536)
            assert chunk, received
            received += chunk
    return received


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    received = b""
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                received += chunk
    return received


async def test_past_the_cap_a_new_connection_gets_503_and_the_open_ones_keep_working(
        proxied: ProxiedFactory, session: aiohttp.ClientSession) -> None:
    lb, backend = await proxied(answer_echo, extra="limits: {max_client_connections: 3}\n")
    host, port = lb.url.removeprefix("http://").rsplit(":", 1)
    clients = [await asyncio.open_connection(host, int(port)) for _ in range(3)]
    for number, (reader, writer) in enumerate(clients):
        answer = parse_responses(await ask(reader, writer, b"/first-%d" % number))
        assert [a.status for a in answer] == [200]
    # the fourth is refused at once, before it sends anything
    reader, writer = await asyncio.open_connection(host, int(port))
    refused = await read_to_end(reader)
    writer.close()
    answers = parse_responses(refused)
    assert [a.status for a in answers] == [503], refused
    assert answers[0].header(b"connection") == [b"close"]
    assert answers[0].header(b"retry-after") == [b"1"]
    assert b"max_client_connections" in answers[0].body, refused
    # the three admitted ones still work, on the same connections
    for number, (reader, writer) in enumerate(clients):
        answer = parse_responses(await ask(reader, writer, b"/again-%d" % number))
        assert [a.body for a in answer] == [echo_body(b"GET", b"/again-%d" % number, b"")]
    # backend side: only the admitted clients' requests, each on its client's connection
    targets = sorted(r.target for r in backend.requests)
    assert targets == sorted([b"/first-%d" % n for n in range(3)]
                             + [b"/again-%d" % n for n in range(3)])
    async with session.get(f"{lb.admin_url}/metrics") as resp:
        text = await resp.text()
    assert "balancer_client_connections_refused_total 1.0" in text, text
    # one leaves: a new one is admitted again
    clients[0][1].close()
    server = lb.balancer._public.server  # type: ignore[union-attr]
    await wait_for(lambda: len(server.connections) == 2, 5, "the closed client to be gone")
    reader, writer = await asyncio.open_connection(host, int(port))
    answer = parse_responses(await ask(reader, writer, b"/after"))
    assert [a.status for a in answer] == [200]
    writer.close()
    for _, other in clients[1:]:
        other.close()
