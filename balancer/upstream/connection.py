"""One keep-alive HTTP/1.1 connection to a backend, on an asyncio protocol with httptools.

I/O shell (its transport and timers come from the loop it is given; `Connections` in
`connections.py` opens, reuses and closes these). Rules this module keeps:
- One request at a time per connection (no pipelining); a connection goes back to its pool
  only after a whole response was read and both sides agreed to keep it alive.
- Every wait has a deadline (response head, each body read, each paused write); a missed one
  raises ResponseTimeout, never hangs.
- Flow control both ways: writes wait for `resume_writing`, and reading from the backend
  pauses while more than HIGH_WATER bytes of its body wait for the client (resumed under
  LOW_WATER).
- A reused connection that closes before any response byte is reported with
  `before_response=True`, so the caller can retry the stale keep-alive race on a fresh one.
- Nothing after a complete response is parsed: a byte that arrives after it and before the
  next request is sent (in the same read, later, or while idle in the pool) means the backend
  spoke out of turn, and the connection is closed, never reused (response queue poisoning).
- Each exchange starts from a clean slate: `send` forgets everything the last response left
  (`_start_exchange`, h11's `start_next_cycle`); what outlives an exchange is the transport
  and its flow-control state.
- The connection knows nothing of its pool: it reports its end through `on_lost`.
"""

import asyncio
import collections
from collections.abc import Callable
from typing import cast

import httptools

from balancer.config.addresses import Address
from balancer.http.errors import BackendClosed, BadResponse, ResponseTimeout
from balancer.http.headers import close_delimited_coding

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class _OutOfTurn(Exception):
    """Raised from a parser callback to stop parsing bytes that follow a complete response."""


class Response:
    """The head of a backend response and how its body is framed."""

    __slots__ = ("content_length", "headers", "keep_alive", "reason", "status")

    def __init__(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.content_length: int | None = None


class UpstreamConnection(asyncio.Protocol):
    """One connection to a backend. Drive it with `send`, `read_head`, `read_chunk`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, address: Address,
                 on_lost: Callable[["UpstreamConnection"], None] | None = None) -> None:
        self.loop = loop
        self.address = address
        self._on_lost = on_lost  # told once, when the transport is gone
        self.transport: asyncio.Transport | None = None
        self.requests = 0
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._fresh_parser = False
        self._body: collections.deque[bytes] = collections.deque()
        self._start_exchange(expect_body=True)
        self._complete = True  # no request yet: a byte from the backend now is out of turn
        self._closed = False
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False
        self._tunnel_sink: Callable[[bytes], None] | None = None
        self._tunnel_buffer = b""
        self._upgraded = False
        self.out_of_turn = False  # the backend sent bytes nobody asked for: closed
        self.body_cut = False  # answered before it had the whole request body: never reused
        self.released = False  # given back to the pool (or closed by it) since acquired

    def _start_exchange(self, *, expect_body: bool) -> None:
        """Forget the last exchange (h11's `start_next_cycle`): no response, no byte read,
        no error, no body buffered. What outlives an exchange is set in `__init__` only."""
        if self._fresh_parser:
            self._parser = httptools.HttpResponseParser(self)
            self._fresh_parser = False
        self._response = Response()
        self._head_done = False
        self._complete = False
        self._received = False
        self._expect_body = expect_body
        self._error: BaseException | None = None
        self._body.clear()
        self._buffered = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("busy" if not self._complete else "idle")
        return f"<UpstreamConnection {self.address} {state} requests={self.requests}>"

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._upgraded:
            self._tunnel_data(data)
            return
        if self._complete:
            self._spoke_out_of_turn()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self._upgraded = True
            self._tunnel_data(data[offset:])
            self._wake()
        except httptools.HttpParserError as exc:
            if self.out_of_turn:
                return  # the response before the extra bytes stands; the connection is closed
            self._fail(BadResponse(f"backend sent an invalid response ({exc})"))
            self.close()

    def _spoke_out_of_turn(self) -> None:
        self.out_of_turn = True
        self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if not self._complete and not self._upgraded:
            if self._head_done and self._response.content_length is None and self._until_eof():
                self._complete = True  # a close-delimited body ends with the connection
            else:
                self._fail(BackendClosed(
                    "backend closed the connection before the response was complete",
                    before_response=not self._received,
                ))
        if self._upgraded and self._tunnel_sink is not None:
            self._tunnel_sink(b"")
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self._on_lost is not None:
            self._on_lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            self._spoke_out_of_turn()
            raise _OutOfTurn

    def on_status(self, status: bytes) -> None:
        self._response.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._response.headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self._response
        response.status = self._parser.get_status_code()
        if 100 <= response.status < 200 and response.status != 101:
            return  # an interim response (103 Early Hints): skip it, wait for the final one
        response.keep_alive = self._parser.should_keep_alive()
        for name, value in response.headers:
            if name.lower() == b"content-length":
                response.content_length = int(value)
        self._head_done = True
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)  # an early answer: the request body waits no more
        if not self._expect_body:
            self._complete = True
            self._fresh_parser = True  # the parser would wait for the HEAD body that never comes
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._complete:  # a body after a HEAD response's head
            self._spoke_out_of_turn()
            raise _OutOfTurn
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self._head_done:
            self._response = Response()  # end of an interim response
            return
        self._complete = True
        self._wake()

    # -- driving a request ---------------------------------------------------------------

    def is_usable(self) -> bool:
        return not self._closed and self.transport is not None and not self.transport.is_closing()

    def is_reusable(self) -> bool:
        """True when the response was read whole and both sides keep the connection alive."""
        return (
            self._complete and self._error is None and self._response.keep_alive
            and not self._upgraded and not self.out_of_turn and not self.body_cut
            and self.is_usable()
        )

    def send(self, data: bytes, *, expect_body: bool = True) -> None:
        """Start a request: forget the last exchange and write its head (and small body)."""
        self._start_exchange(expect_body=expect_body)
        self.requests += 1
        assert self.transport is not None
        self.transport.write(data)

    async def write(self, data: bytes, timeout: float) -> None:
        """Write part of a request body; wait (up to `timeout`) while the backend is not reading."""
        if self._error is not None:
            raise self._error
        if self._closed or self.transport is None:
            raise BackendClosed("backend closed the connection while the request was sent")
        self.transport.write(data)
        if self._write_paused:
            drain = self._drain = self.loop.create_future()
            timer = self.loop.call_later(timeout, _expire, drain)
            try:
                await drain
            finally:
                timer.cancel()
                self._drain = None
            if self._closed:
                raise BackendClosed("backend closed the connection while the request was sent")

    def answered(self) -> bool:
        """The final response head has arrived (perhaps before the whole request was sent)."""
        return self._head_done

    async def read_head(self, timeout: float) -> Response:
        while not self._head_done and not self._upgraded:
            await self._wait(timeout)
        return self._response

    def is_complete(self) -> bool:
        return self._complete

    def take_body(self) -> bytes:
        """The whole buffered body, for a response that is already complete."""
        data = b"".join(self._body)
        self._body.clear()
        self._buffered = 0
        return data

    async def read_chunk(self, timeout: float) -> bytes:
        """The next piece of the body; b"" once it is complete."""
        while not self._body:
            if self._complete:
                return b""
            await self._wait(timeout)
        chunk = self._body.popleft()
        self._buffered -= len(chunk)
        if self._reading_paused and self._buffered < LOW_WATER and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunk

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- tunnel (after 101 Switching Protocols) ------------------------------------------

    @property
    def write_paused(self) -> bool:
        """The backend is not reading: its transport's buffer is over the high-water mark."""
        return self._write_paused

    async def drained(self) -> None:
        """Return once the backend has taken its buffered bytes (or the connection is gone)."""
        if not self._write_paused or self._closed:
            return
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()
        await self._drain

    def open_tunnel(self, sink: Callable[[bytes], None]) -> None:
        """Send every further byte from the backend to `sink`; b"" means the backend closed."""
        self._tunnel_sink = sink
        if self._tunnel_buffer:
            data, self._tunnel_buffer = self._tunnel_buffer, b""
            sink(data)
        if self._closed:
            sink(b"")

    def _tunnel_data(self, data: bytes) -> None:
        if not data:
            return
        if self._tunnel_sink is None:
            self._tunnel_buffer += data
        else:
            self._tunnel_sink(data)

    # -- internals -----------------------------------------------------------------------

    def _until_eof(self) -> bool:
        """A body that ends with the connection: no chunked coding (and no length)."""
        chunked = any(name.lower() == b"transfer-encoding" for name, _ in self._response.headers)
        return not chunked or close_delimited_coding(self._response.headers) is not None

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout: float) -> None:
        if self._error is not None:
            raise self._error
        waiter = self.loop.create_future()
        self._waiter = waiter
        timer = self.loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self._error is not None:
            raise self._error


def _expire(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_exception(ResponseTimeout())
