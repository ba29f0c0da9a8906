"""The client side of a connection: aiohttp's request handler with what a proxy needs on top.

I/O shell. aiohttp parses requests strictly (llhttp: no obs-fold, bare LF, conflicting
framing or smuggling-prone Transfer-Encoding gets through); this adds:
- errors in our format: a malformed request gets one line naming the fault and a request id
  (never an echo of the offending bytes), 414 for an over-long request line, 431 for an
  over-long header line or too many headers, 400 otherwise; the connection is closed. Such
  requests are counted, and logged at debug level only: they are the client's fault, and an
  attacker must not be able to flood the log.
- pipelined requests are taken from the parser one at a time: the ones before a malformed
  request are answered in order before its 400, and bytes after a `Connection: close`
  request are ignored, not answered with 400 (RFC 9112 section 9.6).
- a request-head timeout (slowloris): from the first byte of a request until its head is
  complete, at most `timeouts.client_header`; then 408 and close. Idle keep-alive
  connections are governed by `client_idle` instead.
- a cap on open client connections (`limits.max_client_connections`, lowered to three
  quarters of the open-files limit: the rest is for backend connections, logs and listeners;
  past the limit, accept fails and so do backend connects): past it, a new connection gets a 503
  and is closed at once (counted); the open ones carry on. It is counted when aiohttp
  registers a connection, so a burst accepted in one loop iteration may pass it by up to the
  listen backlog. Idle keep-alive connections are not closed to make room: finding one is a
  scan of every connection per refused accept (a cost an attacker would choose), and
  `client_idle` bounds them.
- a bound on the whole head (`limits.max_head_size`): the per-line and count limits alone let
  one head hold max_headers x max_header_size (1.6 MiB by default) in the parser's buffer, and
  100 such unfinished heads took 314 MiB of RSS; over it, 431 and close.

aiohttp's `web.Server` builds a `RequestHandler` per connection in `__call__`; `ProxyServer`
builds a `ClientConnection` instead. The attributes used here (`_request_count`,
`_request_in_progress`, `_keepalive`, and the server's `_kwargs` for new connections) are
aiohttp's own (3.10 to 3.14); tests cover the behaviour.
"""

import asyncio
import logging
import re
import resource
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web, web_protocol
from aiohttp.http import HttpRequestParser
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestPayloadError, _ErrInfo

from balancer.config.model import Config
from balancer.http.errors import (
    BadRequest,
    HeadTimeout,
    HeadTooLarge,
    ProxyError,
    TooManyConnections,
    UriTooLong,
)
from balancer.proxy.replies import SentResponse, closing_reply

log = logging.getLogger("balancer.client")

MESSAGE_QUEUE = web_protocol.MAX_MSG_QUEUE_SIZE  # parsed requests waiting per connection


class ProxyServer(web.Server):
    """aiohttp's low-level server whose connections are `ClientConnection`s, with the
    client-side limits and timeouts of a config; `apply` puts a reloaded config's in place
    for the connections accepted from then on."""

    def __init__(self, handler: Any, config: Config, *, on_bad_request: Callable[[int], None],
                 new_request_id: Callable[[], str], on_refused: Callable[[], None] = lambda: None,
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.on_bad_request = on_bad_request
        self.new_request_id = new_request_id
        self.on_refused = on_refused
        self.apply(config)

    def apply(self, config: Config) -> None:
        limits, timeouts = config.limits, config.timeouts
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        cap = connection_cap(limits.max_client_connections,
                             None if soft == resource.RLIM_INFINITY else soft)
        if cap < limits.max_client_connections and cap != getattr(self, "max_connections", 0):
            log.warning("limits.max_client_connections %d lowered to %d: three quarters of the "
                        "open-files limit (ulimit -n %d)", limits.max_client_connections,
                        cap, soft)
        self.max_connections = cap
        self.header_timeout = timeouts.client_header
        self.max_uri_size = limits.max_uri_size
        self.max_head_size = limits.max_head_size
        self._kwargs.update(
            keepalive_timeout=timeouts.client_idle,
            # after an early answer (413, 408) read and drop what the client still sends, so
            # that closing does not reset the connection under the answer; at most this long
            lingering_time=timeouts.client_body,
            max_line_size=limits.max_uri_size,
            max_field_size=limits.max_header_size,
            max_headers=limits.max_headers,
        )

    def __call__(self) -> web_protocol.RequestHandler:
        if len(self._connections) >= self.max_connections:
            self.on_refused()
            return cast(web_protocol.RequestHandler, RefusedConnection(self.new_request_id()))
        return ClientConnection(self, loop=self._loop, **self._kwargs)


def connection_cap(configured: int, open_files: int | None) -> int:
    """The client connections a process admits: as configured, but leaving a quarter of its
    open-files limit (`None`: unlimited), at least 256 descriptors, for the rest; at least 1."""
    if open_files is None:
        return configured
    return max(1, min(configured, open_files - max(256, open_files // 4)))


class RefusedConnection(asyncio.Protocol):
    """A connection past `limits.max_client_connections`: a 503 and close, nothing read."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        head, body = closing_reply(
            TooManyConnections("the balancer has its limits.max_client_connections open"),
            self.request_id)
        transport.write(head + body)
        transport.close()


class ClientConnection(web_protocol.RequestHandler):
    __slots__ = ("_body", "_client_done", "_head_bytes", "_header_timer", "_last_read",
                 "_max_head_size", "_refused_head")

    def __init__(self, manager: ProxyServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._last_read = b""  # the last bytes read, to tell a malformed HEAD (see handle_error)
        self._refused_head: bool | None = None
        self._client_done = False  # the client half-closed after whole requests
        # aiohttp parses a whole read at once and, when a message in it is malformed, drops
        # the well-formed ones before it (and llhttp refuses bytes after `Connection: close`
        # instead of leaving them unread). A parser that pauses after every message hands
        # them over one by one (data_received), so each is answered in order and the fault
        # is answered after them, if the connection is still open by then.
        self._parser = HttpRequestParser(
            self, self._loop, self._read_bufsize, max_line_size=self.max_line_size,
            max_field_size=self.max_field_size, max_headers=self.max_headers,
            payload_exception=RequestPayloadError,
            auto_decompress=kwargs.get("auto_decompress", True), max_msg_queue_size=1)
        self._body: Any = None  # the last request's body stream (aiohttp's payload)
        self._head_bytes = 0  # of the request head being received (while the timer runs)
        self._max_head_size = manager.max_head_size  # (the config of its accept)

    @property
    def _server(self) -> ProxyServer:
        manager = self._manager
        assert isinstance(manager, ProxyServer)
        return manager

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        super().data_received(data)
        parsed = self._request_count
        # the parser stops after each message (see __init__): take the pipelined ones one at a
        # time, so that a malformed one is queued behind those before it, not instead of them
        while parsed != count and len(self._messages) < MESSAGE_QUEUE \
                and not isinstance(self._messages[-1][0], _ErrInfo):
            before = parsed
            super().data_received(b"")
            parsed = self._request_count
            if parsed == before:
                break
        if parsed != count and self._refused_head is None \
                and isinstance(self._messages[-1][0], _ErrInfo):
            self._refused_head = _last_request_is_head(self._last_read + data)
        if data:
            self._last_read = data
        if parsed != count:  # a whole request head arrived
            self._cancel_header_timer()
        elif self._header_timer is None and not self._request_in_progress and data \
                and self._keepalive and (self._body is None or self._body.is_eof()):
            # the first bytes of a request head (not after a final answer, nor the rest of a
            # body aiohttp reads and drops after an early answer: those are no head): it has
            # client_header seconds to complete; counted from the next read (this one may
            # end a body)
            self._header_timer = self._loop.call_later(self._server.header_timeout,
                                                       self._header_timed_out)
            self._head_bytes = 0
        elif self._header_timer is not None:
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head_size:
                self._head_too_large()

    async def _handle_request(self, request: web.BaseRequest, *args: Any) -> Any:
        self._body = request.content  # (aiohttp's own; 3.10 to 3.14 pass it here)
        return await super()._handle_request(request, *args)

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio: True keeps it open
        """The client shut down its sending side. Requests it sent whole are answered, then
        the connection is closed (as if the last had said `Connection: close`); with a request
        still incomplete, or none, it is closed at once (aiohttp's way: a request cut short
        cannot be answered, and must not be forwarded)."""
        bodies = [payload for _, payload in self._messages]
        if self._current_request is not None:
            bodies.append(self._current_request.content)
        if not (bodies or self._request_in_progress) or self._header_timer is not None \
                or self._payload_parser is not None or self._upgraded \
                or not all(body.is_eof() for body in bodies):  # (a tunnel ends with the close)
            return False  # the transport closes
        self._client_done = True
        return True  # keep it open to write the answers

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        answered = await super().finish_response(request, resp, start_time)
        if self._client_done and not self._messages:
            self.close()  # the last request the half-closed client sent is answered
        return answered

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _cancel_header_timer(self) -> None:
        self._head_bytes = 0
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _head_too_large(self) -> None:
        self._cancel_header_timer()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        head, body = closing_reply(
            HeadTooLarge(f"the request head is over {self._max_head_size} bytes"),
            self._server.new_request_id())
        transport.write(head + body)
        self._server.on_bad_request(431)
        log.debug("431: request head over %d bytes", self._max_head_size)
        self.force_close()
        transport.close()

    def _header_timed_out(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        seconds = self._server.header_timeout
        head, body = closing_reply(
            HeadTimeout(f"the request head did not arrive within {seconds:g}s"),
            self._server.new_request_id())
        transport.write(head + body)
        self._server.on_bad_request(408)
        log.debug("408: request head not complete after %gs", seconds)
        self.force_close()

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, BadHttpMessage):
            return super().handle_error(request, status, exc, message)
        error = self._status_for(exc)
        self._server.on_bad_request(error.status)
        request_id = self._server.new_request_id()
        log.debug("%s: %d from %s: %s", request_id, error.status, request.remote, error.detail)
        # written as HTTP/1.1 whatever the request line said (as nginx does: aiohttp would say
        # HTTP/1.0 for a request it could not parse); to what looks like a HEAD, no body and
        # `Content-Length: 0`, so that a wrong guess still frames the answer right
        head, body = closing_reply(error, request_id, with_body=not self._refused_head)
        return cast(web.StreamResponse, SentResponse(head + body, False, error.status, len(body)))

    def _status_for(self, exc: BadHttpMessage) -> ProxyError:
        """The refusal (414, 431 or 400) for what the parser could not take."""
        if isinstance(exc, LineTooLong):
            limit = exc.args[1] if len(exc.args) > 1 else None
            line = exc.args[0] if exc.args else b""
            uri_like = isinstance(line, bytes | bytearray) and line[:1] in (b"/", b"h", b"*")
            if limit == self._server.max_uri_size and uri_like:
                return UriTooLong(f"the request line is over {limit} bytes")
            return HeadTooLarge(f"a header line is over {limit} bytes")
        text = (exc.message or "").split(":\n", 1)[0].split("\n", 1)[0].strip()
        if text == "Too many headers received":
            return HeadTooLarge("too many header lines")
        return BadRequest(_printable(text) or "malformed request")


_REQUEST_LINE = re.compile(rb"(?:^|\n)[\r\n]*([!#$%&'*+.^_`|~0-9A-Za-z-]+) [^ \r\n]+ HTTP/")


def _last_request_is_head(recent: bytes) -> bool:
    """Whether the last request line in the bytes last read (the request that could not be
    parsed, whose method the parser does not tell) is a HEAD's. A guess, for the error answer
    only: a body that contains a request line, or a malformed request glued to the body before
    it, can mislead it; the answer is framed right either way (see handle_error)."""
    lines = _REQUEST_LINE.findall(recent)
    return bool(lines) and lines[-1] == b"HEAD"


def _printable(text: str) -> str:
    """The parser's message without anything the client sent (it quotes bytes after `:`)."""
    return "".join(c for c in text if c.isprintable())[:200]
