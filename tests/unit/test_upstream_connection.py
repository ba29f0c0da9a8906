"""`UpstreamConnection` without sockets: bytes fed to `data_received`, timers fired by a fake
clock (tests/unit/fake_io.py). Each test names the rule of balancer/upstream/connection.py it
holds to."""

import asyncio
from typing import cast

import pytest

from balancer.config.addresses import parse_backend
from balancer.http.errors import BackendClosed, BadResponse, ResponseTimeout
from balancer.upstream.connection import HIGH_WATER, LOW_WATER, UpstreamConnection
from tests.unit.fake_io import FakeLoop, FakeTransport, settle

GET = b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"
BACKEND = parse_backend("http://127.0.0.1:9")


class Wire:
    """A connection on a fake transport, and what it reported lost."""

    def __init__(self) -> None:
        self.loop = FakeLoop()
        self.transport = FakeTransport()
        self.lost: list[UpstreamConnection] = []
        self.conn = UpstreamConnection(cast(asyncio.AbstractEventLoop, self.loop), BACKEND,
                                       on_lost=self.lost.append)
        self.conn.connection_made(cast(asyncio.Transport, self.transport))

    def feed(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.conn.data_received(piece)

    def close(self) -> None:
        """The backend closed: what asyncio does once the transport is gone."""
        self.transport.closing = True
        self.conn.connection_lost(None)


async def whole_body(conn: UpstreamConnection) -> bytes:
    chunks = []
    while chunk := await conn.read_chunk(5.0):
        chunks.append(chunk)
    return b"".join(chunks)


async def test_a_whole_response_in_one_read_is_complete_and_the_connection_reusable() -> None:
    wire = Wire()
    wire.conn.send(GET)
    assert bytes(wire.transport.written) == GET
    wire.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello")
    response = await wire.conn.read_head(5.0)
    assert (response.status, response.reason, response.content_length) == (200, b"OK", 5)
    assert response.headers == [(b"Content-Length", b"5"), (b"X-A", b"1")]
    assert wire.conn.is_complete() and wire.conn.take_body() == b"hello"
    assert wire.conn.is_reusable()


async def test_interim_responses_are_skipped_and_the_final_head_is_returned_alone() -> None:
    wire = Wire()
    wire.conn.send(GET)
    wire.feed(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
    assert not wire.conn.answered()
    wire.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    response = await wire.conn.read_head(5.0)
    assert (response.status, response.reason) == (201, b"Created")
    assert response.headers == [(b"Content-Length", b"2")]  # no Link from the 103
    assert wire.conn.take_body() == b"ok" and wire.conn.is_reusable()


async def test_a_head_response_is_complete_at_its_head_and_the_next_exchange_parses() -> None:
    wire = Wire()
    wire.conn.send(b"HEAD / HTTP/1.1\r\nHost: b\r\n\r\n", expect_body=False)
    wire.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    response = await wire.conn.read_head(5.0)
    assert response.content_length == 100
    assert wire.conn.is_complete() and await wire.conn.read_chunk(5.0) == b""
    assert wire.conn.is_reusable()
    wire.conn.send(GET)  # the parser must not wait for the 100 bytes the HEAD announced
    wire.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope")
    assert (await wire.conn.read_head(5.0)).status == 404
    assert wire.conn.take_body() == b"nope" and wire.conn.is_reusable()
    assert wire.conn.requests == 2


async def test_a_body_after_a_head_response_is_out_of_turn() -> None:
    wire = Wire()
    wire.conn.send(b"HEAD / HTTP/1.1\r\nHost: b\r\n\r\n", expect_body=False)
    wire.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert (await wire.conn.read_head(5.0)).status == 200
    assert wire.conn.out_of_turn and wire.transport.closing
    assert not wire.conn.is_reusable()


async def test_a_close_delimited_body_ends_with_the_connection() -> None:
    wire = Wire()
    wire.conn.send(GET)
    wire.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nsome ")
    assert (await wire.conn.read_head(5.0)).content_length is None
    assert await wire.conn.read_chunk(5.0) == b"some "
    wire.feed(b"more")
    wire.close()
    assert await whole_body(wire.conn) == b"more"
    assert wire.conn.is_complete() and not wire.conn.is_reusable()
    assert wire.lost == [wire.conn]


async def test_a_chunked_body_cut_by_the_close_is_an_error_not_a_short_body() -> None:
    wire = Wire()
    wire.conn.send(GET)
    wire.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await wire.conn.read_head(5.0)
    wire.close()
    assert await wire.conn.read_chunk(5.0) == b"hello"
    with pytest.raises(BackendClosed) as caught:
        await wire.conn.read_chunk(5.0)
    assert not caught.value.before_response


@pytest.mark.parametrize("extra", [b"HTTP/1.1 204 No Content\r\nX-Forged: 1\r\n\r\n",
                                   b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged",
                                   b"\x00 not http"])
async def test_bytes_after_a_complete_response_close_the_connection_and_the_response_stands(
    extra: bytes,
) -> None:
    wire = Wire()
    wire.conn.send(GET)
    wire.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + extra)
    response = await wire.conn.read_head(5.0)
    assert (response.status, response.headers) == (200, [(b"Content-Length", b"2")])
    assert wire.conn.take_body() == b"ok"
    assert wire.conn.out_of_turn and wire.transport.closing and not wire.conn.is_reusable()


@pytest.mark.parametrize("byte", [b"H", b"\x00"])
@pytest.mark.parametrize("when", ["before any request", "while idle after a response"])
async def test_a_byte_nobody_asked_for_closes_the_connection(when: str, byte: bytes) -> None:
    wire = Wire()
    if when != "before any request":
        wire.conn.send(GET)
        wire.feed(b"HTTP/1.1 204 No Content\r\n\r\n")
        await wire.conn.read_head(5.0)
        assert wire.conn.is_reusable()
    wire.feed(byte)
    assert wire.conn.out_of_turn and wire.transport.closing and not wire.conn.is_reusable()


async def test_an_invalid_response_fails_the_exchange_and_closes() -> None:
    wire = Wire()
    wire.conn.send(GET)
    wire.feed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
    with pytest.raises(BadResponse):
        await wire.conn.read_head(5.0)
    assert wire.transport.closing


async def test_an_upgrade_splits_the_read_at_the_head_and_the_rest_goes_to_the_tunnel() -> None:
    wire = Wire()
    wire.conn.send(b"GET /ws HTTP/1.1\r\nHost: b\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n")
    wire.feed(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"
              b"\x81\x05first")
    response = await wire.conn.read_head(5.0)
    assert response.status == 101 and not wire.conn.is_reusable()
    received: list[bytes] = []
    wire.conn.open_tunnel(received.append)  # what came with the head was kept for the tunnel
    wire.feed(b"HTTP/1.1 200 not parsed")  # from now on bytes, not HTTP
    wire.close()
    assert received == [b"\x81\x05first", b"HTTP/1.1 200 not parsed", b""]
    assert not wire.conn.out_of_turn


async def test_reading_pauses_over_the_high_water_mark_and_resumes_under_the_low() -> None:
    wire = Wire()
    piece = 32 * 1024
    total = HIGH_WATER + 4 * piece
    wire.conn.send(GET)
    wire.feed(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
    await wire.conn.read_head(5.0)
    fed = 0
    while fed <= HIGH_WATER:
        assert wire.transport.reading, f"paused at {fed} bytes buffered"
        wire.feed(b"x" * piece)
        fed += piece
    assert not wire.transport.reading
    taken = 0
    while fed - taken >= LOW_WATER:
        assert not wire.transport.reading, f"resumed at {fed - taken} bytes buffered"
        taken += len(await wire.conn.read_chunk(5.0))
    assert wire.transport.reading


@pytest.mark.parametrize(("sent_first", "before_response"), [(b"", True), (b"HTTP/1.1 2", False)])
async def test_a_close_before_any_response_byte_is_the_stale_keep_alive_race(
    sent_first: bytes, before_response: bool,
) -> None:
    wire = Wire()
    wire.conn.send(GET)
    if sent_first:  # (asyncio never calls data_received with b"")
        wire.feed(sent_first)
    wire.close()
    with pytest.raises(BackendClosed) as caught:
        await wire.conn.read_head(5.0)
    assert caught.value.before_response is before_response


async def test_a_reused_connection_starts_each_exchange_from_a_clean_slate() -> None:
    wire = Wire()
    wire.conn.send(GET)
    wire.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-First: 1\r\n\r\none")
    await wire.conn.read_head(5.0)
    wire.conn.send(GET)  # the first body was never taken
    assert not wire.conn.answered() and not wire.conn.is_complete()
    wire.feed(b"HTTP/1.1 202 Accepted\r\nContent-Length: 3\r\n\r\ntwo")
    response = await wire.conn.read_head(5.0)
    assert (response.status, response.reason) == (202, b"Accepted")
    assert response.headers == [(b"Content-Length", b"3")]
    assert await whole_body(wire.conn) == b"two"


async def test_the_response_head_has_a_deadline() -> None:
    wire = Wire()
    wire.conn.send(GET)
    head = asyncio.ensure_future(wire.conn.read_head(2.0))
    await settle()
    wire.loop.advance(1.9)
    await settle()
    assert not head.done()
    wire.loop.advance(0.2)
    with pytest.raises(ResponseTimeout):
        await asyncio.wait_for(head, 5)
    assert wire.loop.pending() == []


async def test_each_body_read_has_a_deadline_and_a_byte_in_time_resets_it() -> None:
    wire = Wire()
    wire.conn.send(GET)
    wire.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    await wire.conn.read_head(5.0)
    chunk = asyncio.ensure_future(wire.conn.read_chunk(2.0))
    await settle()
    wire.loop.advance(1.5)
    wire.feed(b"12345")
    assert await asyncio.wait_for(chunk, 5) == b"12345"
    chunk = asyncio.ensure_future(wire.conn.read_chunk(2.0))
    await settle()
    wire.loop.advance(2.1)
    with pytest.raises(ResponseTimeout):
        await asyncio.wait_for(chunk, 5)


async def test_a_write_waits_while_the_backend_reads_nothing_then_times_out() -> None:
    wire = Wire()
    wire.conn.send(b"POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 8\r\n\r\n")
    wire.conn.pause_writing()
    write = asyncio.ensure_future(wire.conn.write(b"1234", 3.0))
    await settle()
    assert not write.done()
    wire.conn.resume_writing()
    await asyncio.wait_for(write, 5)
    wire.conn.pause_writing()
    write = asyncio.ensure_future(wire.conn.write(b"5678", 3.0))
    await settle()
    wire.loop.advance(3.1)
    with pytest.raises(ResponseTimeout):
        await asyncio.wait_for(write, 5)
    assert wire.transport.written.endswith(b"12345678")


async def test_an_early_answer_releases_a_write_waiting_for_the_backend() -> None:
    wire = Wire()
    wire.conn.send(b"POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 8\r\n\r\n")
    wire.conn.pause_writing()
    write = asyncio.ensure_future(wire.conn.write(b"1234", 3.0))
    await settle()
    wire.feed(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
    await asyncio.wait_for(write, 5)
    assert wire.conn.answered() and (await wire.conn.read_head(5.0)).status == 413


async def test_the_pool_is_told_once_when_the_connection_is_gone() -> None:
    wire = Wire()
    wire.conn.send(GET)
    wire.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    await wire.conn.read_head(5.0)
    assert wire.lost == []
    wire.close()
    assert wire.lost == [wire.conn] and not wire.conn.is_usable()
