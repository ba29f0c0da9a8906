"""What the proxy writes back itself: request ids, error responses, raw serialised responses.

I/O shell (aiohttp response objects), no state. `error_text` is the one body of every error
the balancer answers itself, `error_response` (through aiohttp) and `closing_reply` (raw,
before a request could be parsed) the two ways it goes out: a one-line plain-text body
naming the reason and the request id, `X-Request-Id`, `Retry-After` on 503 (aiohttp's way
only), and the connection closed after a 400, 408 or 413 (what is left of such a request can
be neither trusted nor skipped).
"""

import asyncio
import itertools
import logging
import secrets
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

from aiohttp import web

from balancer.http.errors import ProxyError, VersionNotSupported

log = logging.getLogger("balancer.proxy")


class RequestIds:
    """Short unique request ids: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"


def error_text(error: ProxyError, request_id: str) -> str:
    """The body of every error the balancer answers itself: one line of plain text,
    `<status> <reason>: <detail> (request id <id>)` (no detail when it only repeats the
    reason)."""
    detail = "" if error.detail == error.reason else f": {error.detail}"
    return f"{error.status} {error.reason}{detail} (request id {request_id})\n"


def error_response(error: ProxyError, request_id: str) -> web.Response:
    """The one place that turns a failure into what the client sees (through aiohttp)."""
    text = error_text(error, request_id)
    headers = {"X-Request-Id": request_id}
    if error.status == 503:
        headers["Retry-After"] = "1"
    response = PlainResponse(status=error.status, text=text, headers=headers)
    if error.status in CLOSE_AFTER:
        response.force_close()  # what is left of the request cannot be trusted or skipped
    return response


CLOSE_AFTER = frozenset({400, 405, 408, 413, 431, 501})  # 405: a refused CONNECT's tunnel bytes


class PlainResponse(web.Response):
    """aiohttp's Response without the `Server: Python/... aiohttp/...` header (no versions
    disclosed; the proxied responses have none of the balancer's either)."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall("Server", None)


class PlainStreamResponse(web.StreamResponse):
    """aiohttp's StreamResponse without its Server header (for the 101 of a tunnel)."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall("Server", None)


# the reason phrases (RFC 9110) of the refusals written raw, by status
# RFC 9110's phrases where Python's HTTPStatus still has an older one
PHRASES = {414: "URI Too Long"}


def phrase(status: int) -> str:
    """The reason phrase of a status line the balancer writes itself."""
    return PHRASES.get(status) or HTTPStatus(status).phrase


def closing_reply(error: ProxyError, request_id: str,
                  with_body: bool = True) -> tuple[bytes, bytes]:
    """(head, body) of a refusal written before (or instead of) aiohttp's response machinery:
    as HTTP/1.1 whatever the request line said (as nginx does), `Connection: close`, the
    `error_text` body counted in Content-Length. Without the body (`with_body=False`, for a
    request that may be a HEAD) the head says `Content-Length: 0`: right framing whatever the
    request's method turns out to have been."""
    body = error_text(error, request_id).encode() if with_body else b""
    retry = b"Retry-After: 1\r\n" if error.status == 503 else b""
    head = (b"HTTP/1.1 %d %s\r\nConnection: close\r\n%bDate: %s\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
            b"X-Request-Id: %s\r\n\r\n" % (error.status, phrase(error.status).encode(),
                                           retry, formatdate(usegmt=True).encode(), len(body),
                                           request_id.encode()))
    return head, body


def version_not_supported(request: web.BaseRequest, request_id: str) -> web.StreamResponse:
    """505, written as HTTP/1.1 whatever version the request line claimed."""
    error = VersionNotSupported(f"HTTP/{request.version.major}.{request.version.minor}")
    head, body = closing_reply(error, request_id)
    return cast(web.StreamResponse, SentResponse(head + body, False, 505, len(body)))


class SentResponse:
    """A response the proxy serialised itself (head and whole body in one write).

    aiohttp's request handler needs only `prepare`, `write_eof` and `keep_alive` of what a
    handler returns; writing the backend's raw header bytes straight to the transport skips
    decoding them into a CIMultiDict and encoding them again, the largest per-request cost
    of the naive proxy after its client side.
    """

    __slots__ = ("_data", "body_length", "keep_alive", "send_timeout", "status")

    def __init__(self, data: bytes, keep_alive: bool, status: int, body_length: int,
                 send_timeout: float = 0.0) -> None:
        self._data = data
        self.keep_alive = keep_alive
        self.status = status
        self.body_length = body_length
        self.send_timeout = send_timeout

    async def prepare(self, request: web.BaseRequest) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        transport.write(self._data)
        if self.send_timeout and transport.get_write_buffer_size():
            await _until_taken(request, transport, self.send_timeout)

    async def write_eof(self, data: bytes = b"") -> None:
        return None


WRITE_HIGH_WATER = 64 * 1024


class StreamedResponse:
    """A response whose head the proxy serialised itself and whose body it relays as it
    arrives: in chunks (`chunked`), or as the head frames it (Content-Length, or the end of
    the connection, then `keep_alive` is False). Like SentResponse, it gives aiohttp's request
    handler `prepare`, `write_eof` and `keep_alive`; `prepare` and `write_eof` may be called
    again (by aiohttp after the handler returns) and then do nothing."""

    __slots__ = ("_chunked", "_ended", "_head", "_request", "keep_alive", "status")

    def __init__(self, head: bytes, *, chunked: bool, keep_alive: bool, status: int) -> None:
        self._head = head
        self._chunked = chunked
        self._ended = False
        self._request: web.BaseRequest | None = None
        self.keep_alive = keep_alive
        self.status = status

    async def prepare(self, request: web.BaseRequest) -> None:
        if self._request is not None:
            return
        self._request = request
        self._transport().write(self._head)

    async def write(self, data: bytes) -> None:
        """Send part of the body; waits while the client's buffer is full."""
        transport = self._transport()
        if self._chunked:
            # one write (not writelines: asyncio's does not pause the protocol)
            transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            transport.write(data)
        if transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            assert self._request is not None
            await self._request.writer.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        if self._ended or self._request is None:
            return
        self._ended = True
        transport = self._transport()
        if self._chunked:
            transport.write(b"0\r\n\r\n")
        if transport.get_write_buffer_size():
            await self._request.writer.drain()

    def _transport(self) -> asyncio.Transport:
        assert self._request is not None
        transport = self._request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        return transport


async def _until_taken(request: web.BaseRequest, transport: asyncio.Transport,
                       timeout: float) -> None:
    """Wait while the client's buffer is full; a client that takes nothing of it for
    `timeout` seconds is dropped (else a client that never reads would hold it forever)."""
    while True:
        before = transport.get_write_buffer_size()
        try:
            async with asyncio.timeout(timeout):
                await request.writer.drain()
            return
        except TimeoutError:
            if transport.get_write_buffer_size() >= before:
                log.info("client took nothing of a response for %gs; dropped", timeout)
                transport.abort()
                return
