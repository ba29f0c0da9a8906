"""Attack round 2: a slow streamed upload pinned a backend connection. `timeouts.client_body`
bounds only the wait for the *next* piece of a body (as nginx's client_body_timeout does), so
a client sending one byte every (client_body - e) seconds kept a streamed upload (over 64 KiB
or chunked: it goes to the backend as it arrives, on a fresh connection) and so a backend
connection busy for as long as it liked; `max_connections` such clients filled a pool. Now a
streamed body must also keep up an average of `limits.min_body_rate` bytes a second, with
`client_body` seconds of slack (Apache's mod_reqtimeout `body=20,MinRate=500`): the
attacker gets 408 and its backend connection is closed, never reused. A steady slow upload
still passes. Two-sided: what the backend (h11) received, what the clients got."""

import asyncio
import contextlib
import time

import pytest

from tests.helpers import BalancerFactory, one_pool_config, wait_for
from tests.recording import RecordingBackend, answer_echo, echo_body, parse_responses

SIZE = 100_000  # over the 64 KiB held whole: streamed to the backend as it arrives
HEAD = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % SIZE
CHUNKED = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def config(url: str, extra: str = "") -> str:
    return one_pool_config(url, extra="timeouts: {client_body: 1s, connect: 6s}\n" + extra) \
        + "    max_connections: 1\n"


async def read_all(reader: asyncio.StreamReader, timeout: float) -> bytes:
    received = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                received += chunk
    return received


async def trickle(url: str, every: float, chunked: bool) -> bytes:
    """The attacker: the head, then one byte of the body (a one-byte chunk) every `every`
    seconds until the balancer answers or closes; what it got."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(CHUNKED if chunked else HEAD)
    answer = asyncio.ensure_future(read_all(reader, 30))
    try:
        for _ in range(SIZE):
            if answer.done():
                break
            writer.write(b"1\r\nx\r\n" if chunked else b"x")
            await asyncio.sleep(every)  # the attack's pace (no test sleeps on a condition)
    except ConnectionError:
        pass
    writer.close()
    return await answer


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_trickled_upload_is_cut_and_frees_its_backend_connection(
        balancer_factory: BalancerFactory, chunked: bool) -> None:
    backend = await RecordingBackend(answer_echo).start()
    try:
        lb = await balancer_factory(config(backend.url))
        attacker = asyncio.ensure_future(trickle(lb.url, 0.4, chunked))  # 2.5 B/s, never 1s idle
        await wait_for(lambda: len(backend.links) == 1, 5, "the upload reaching the backend")
        started = time.monotonic()
        # the pool's one connection is the attacker's: another client waits for it
        host, port = lb.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /victim HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        victim = await read_all(reader, 10)
        writer.close()
        elapsed = time.monotonic() - started
        # the victim got its answer once the attacker was cut (before: 503 after connect)
        answers = parse_responses(victim)
        assert [a.status for a in answers] == [200], victim
        assert answers[0].body == echo_body(b"GET", b"/victim", b"")
        trickled = await asyncio.wait_for(attacker, 10)
        assert trickled.startswith(b"HTTP/1.1 408 "), trickled[:300]
        assert b"\r\nConnection: close\r\n" in trickled and b"B/s" in trickled, trickled
        assert elapsed < 6, elapsed
        # backend side: the upload's connection was closed mid-body, never reused; the
        # victim's request came on a new connection, and the upload never completed
        await wait_for(lambda: backend.links[0].closed, 5, "the upload's connection closed")
        head, _, body = bytes(backend.links[0].raw).partition(b"\r\n\r\n")
        assert head.startswith(b"POST /upload HTTP/1.1\r\n"), head
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: 100000"
        assert b"\r\n" + framing in head and 0 < len(body) < SIZE, (head, len(body))
        assert [(r.method, r.target, r.connection) for r in backend.requests] \
            == [(b"GET", b"/victim", 1)]
    finally:
        await backend.stop()


async def test_a_steady_slow_upload_passes(balancer_factory: BalancerFactory) -> None:
    """3 KiB every 0.1 s (about 30 KB/s, 60x the default minimum): 100 kB in about 3.3 s,
    longer than client_body (1s), so no bound on the whole body's time would let it pass."""
    backend = await RecordingBackend(answer_echo).start()
    try:
        lb = await balancer_factory(config(backend.url))
        host, port = lb.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(HEAD)
        body = bytes(i % 251 for i in range(SIZE))
        started = time.monotonic()
        for offset in range(0, SIZE, 3072):
            writer.write(body[offset:offset + 3072])
            await writer.drain()
            await asyncio.sleep(0.1)  # the client's pace
        received = b""
        async with asyncio.timeout(10):
            while b"sha=" not in received:
                chunk = await reader.read(65536)
                assert chunk, received
                received += chunk
        writer.close()
        assert time.monotonic() - started > 1  # it did take longer than client_body
        answers = parse_responses(received, [b"POST"])
        assert [a.status for a in answers] == [200], received
        assert answers[0].body == echo_body(b"POST", b"/upload", body)
        assert [(r.method, r.body == body) for r in backend.requests] == [(b"POST", True)]
    finally:
        await backend.stop()
