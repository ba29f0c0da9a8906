"""One exchange with a backend: read a small request body whole (`plan_body`, then
`read_small_body`), send the request (head, then its body), read the response head, then give
the client the response, whole or streamed (`client_head`, then `whole_response` or `relay`).

I/O shell; the rules on sending a request again are pure functions (`replayable`,
`retryable`, `replays_stale`), tested as a table. Rules this module keeps:
- Only small request bodies (up to REPLAY_LIMIT) are held, so that the stale keep-alive race
  (a reused connection the backend closed as the request went out) can be retried once on a
  fresh connection; larger and chunked bodies stream with back-pressure and always go on a
  fresh connection.
- A request is sent again only when that is safe: nothing was sent (the connection never came
  up), or it is replayable (an idempotent method or an Idempotency-Key) and no byte of a
  response came back.
- Once the response has started, a failure closes the client connection (a truncated body
  is never mistaken for a whole one); a client that takes nothing for `client_send` is dropped.
"""

import asyncio
import logging
from collections.abc import Mapping
from typing import cast

from aiohttp import HttpVersion11 as HTTP11
from aiohttp import web

from balancer.config.model import Limits, Timeouts
from balancer.http.body_rate import body_wait
from balancer.http.errors import (
    BackendClosed,
    BadRequest,
    BadResponse,
    BodyTimeout,
    BodyTooLarge,
    ConnectFailed,
    ConnectTimeout,
    PoolExhausted,
    ProxyError,
)
from balancer.http.headers import ForwardedRequest, close_delimited_coding, response_head
from balancer.proxy.context import RequestContext
from balancer.proxy.replies import SentResponse, StreamedResponse
from balancer.proxy.tunnel import drop_client
from balancer.upstream.connection import Response, UpstreamConnection
from balancer.upstream.connections import Connections

log = logging.getLogger("balancer.proxy")

REPLAY_LIMIT = 64 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def replayable(method: str, headers: Mapping[str, str]) -> bool:
    """May be sent again once a backend may have read (and executed) it: an idempotent method
    or a request carrying an Idempotency-Key (RFC 9110 section 9.2.2)."""
    return method in IDEMPOTENT or "Idempotency-Key" in headers


def retryable(error: ProxyError, method: str, headers: Mapping[str, str],
              streamed: bool) -> bool:
    """Safe to send again elsewhere: the connection never came up (nothing was sent), or a
    replayable request whose connection broke before any byte of a response."""
    if isinstance(error, ConnectFailed | ConnectTimeout):
        return True
    return (isinstance(error, BackendClosed) and error.before_response and not streamed
            and replayable(method, headers))


def replays_stale(error: BackendClosed, reused: bool, streamed: bool, method: str,
                  headers: Mapping[str, str]) -> bool:
    """The stale keep-alive race: a reused connection closed before any byte of a response,
    for a held (not streamed) replayable request: sent again, once, on a fresh connection."""
    return reused and error.before_response and not streamed and replayable(method, headers)


def plan_body(request: web.BaseRequest, limits: Limits, forwarded: ForwardedRequest) -> bool:
    """Whether the request body is streamed (chunked, or larger than REPLAY_LIMIT) rather than
    read whole by `read_small_body`; refuses one over the size limit."""
    length = forwarded.content_length
    if length is not None and length > limits.max_body_size:
        raise BodyTooLarge(f"{length} bytes is over the {limits.max_body_size}-byte limit")
    if request.version < HTTP11:
        forwarded.expect_continue = False  # no 1xx to HTTP/1.0 (RFC 9110 section 15.2)
    return forwarded.chunked or (length is not None and length > REPLAY_LIMIT)


async def read_small_body(request: web.BaseRequest, timeouts: Timeouts,
                          forwarded: ForwardedRequest) -> bytes:
    """The bytes to send: the head and the body (of `content_length` bytes, not streamed:
    see `plan_body`) read whole, so that it can be sent again. Without a body, the head
    alone: the caller skips this coroutine then (the common case costs no await)."""
    length = forwarded.content_length
    if not length:
        return forwarded.head
    if forwarded.expect_continue:
        await request.writer.write(CONTINUE)
    try:
        async with asyncio.timeout(timeouts.client_body):
            return forwarded.head + await request.content.readexactly(length)
    except asyncio.IncompleteReadError:
        raise BadRequest("client closed before sending the whole body") from None
    except TimeoutError:
        raise BodyTimeout(f"no whole body after {timeouts.client_body:g}s") from None


async def exchange(
    request: web.BaseRequest,
    conns: Connections,
    payload: bytes,
    forwarded: ForwardedRequest,
    streamed: bool,
    limits: Limits,
    timeouts: Timeouts,
) -> tuple[UpstreamConnection, Response]:
    """Send the request and read the response head, retrying the stale keep-alive race."""
    expect_body = request.method != "HEAD"
    if forwarded.upgrade is not None and not conns.has_tunnel_room():
        raise PoolExhausted(f"backend {conns.address} has its {conns.max_tunnels} "
                            "tunnels (max_tunnels) open")
    for attempt in (1, 2):
        conn, reused = await conns.acquire(fresh=streamed or forwarded.upgrade is not None)
        try:
            conn.send(payload, expect_body=expect_body)
            if streamed and not await send_body(request, conn, forwarded, limits, timeouts):
                conn.body_cut = True  # an early answer: relayed, then both sides close
            return conn, await conn.read_head(timeouts.backend_response)
        except BackendClosed as exc:
            conn.abort()
            if attempt == 1 and replays_stale(exc, reused, streamed, request.method,
                                              request.headers):
                log.debug("stale keep-alive connection to %s; retrying", conns.address)
                continue
            raise
        except BaseException:
            conn.abort()
            raise
    raise AssertionError("unreachable")


async def send_body(
    request: web.BaseRequest,
    conn: UpstreamConnection,
    forwarded: ForwardedRequest,
    limits: Limits,
    timeouts: Timeouts,
) -> bool:
    """Stream the request body to the backend; False when the backend answered before it had
    all of it (a 413, 401 ... that the client gets, as nginx and HAProxy relay it): the rest
    is not sent."""
    if forwarded.expect_continue:
        await request.writer.write(CONTINUE)
    total = 0
    frame = forwarded.chunked
    started = asyncio.get_running_loop().time()
    while chunk := await _read_body_chunk(request, conn, timeouts, limits, started, total):
        total += len(chunk)
        if total > limits.max_body_size:
            raise BodyTooLarge(f"body is over the {limits.max_body_size}-byte limit")
        try:
            await conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if frame else chunk,
                             timeouts.backend_response)
        except BackendClosed:
            if conn.answered():  # it answered, then closed without reading the rest
                return False
            raise
    if chunk is None:  # the backend answered before it had the whole body
        return False
    if forwarded.content_length is not None and total < forwarded.content_length:
        raise BadRequest("client closed before sending the whole body")
    if frame:
        await conn.write(b"0\r\n\r\n", timeouts.backend_response)
    return True


async def _read_body_chunk(request: web.BaseRequest, conn: UpstreamConnection,
                           timeouts: Timeouts, limits: Limits, started: float,
                           received: int) -> bytes | None:
    """The next bytes of the client's body; b"" at its end, None when the backend has
    answered meanwhile (nothing more is read). Waits at most `client_body`, and less when
    the body is falling under `min_body_rate` (balancer/http/body_rate.py)."""
    if conn.answered():
        return None
    wait, by_rate = body_wait(started, received, asyncio.get_running_loop().time(),
                              timeouts.client_body, limits.min_body_rate)
    try:
        if by_rate and wait <= 0:
            raise TimeoutError
        async with asyncio.timeout(wait):
            return await request.content.readany()
    except TimeoutError:
        if by_rate:
            raise BodyTimeout(f"the body came slower than {limits.min_body_rate} B/s on "
                              "average (limits.min_body_rate)") from None
        raise BodyTimeout(f"nothing of the body for {timeouts.client_body:g}s") from None


class ClientHead:
    """The response head the client gets, the backend's load report, and the body when the
    backend sent it whole (else it is streamed: `chunked` says how it is framed)."""

    __slots__ = ("body", "chunked", "head", "keep_alive", "report")

    def __init__(self, head: bytes, report: bytes | None, keep_alive: bool, chunked: bool,
                 body: bytes | None) -> None:
        self.head = head
        self.report = report
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.body = body


def client_head(request: web.BaseRequest, conns: Connections, conn: UpstreamConnection,
                response: Response, forwarded: ForwardedRequest,
                extra: tuple[tuple[bytes, bytes], ...], draining: bool) -> ClientHead:
    """Frame the response for the client. A body the backend sent whole is taken, and its
    connection released, here; otherwise `relay` streams it."""
    http10 = request.version < HTTP11
    # after an upgrade aiohttp's parser does not switch for (not websocket), the bytes that
    # came with the request are lost: close, so that the client resends what it pipelined
    keep_alive = request.keep_alive and not draining and not forwarded.declined_upgrade \
        and not conn.body_cut  # (the rest of the client's body is unread)
    length = response.content_length
    coding = close_delimited_coding(response.headers) if length is None else None
    if coding is not None:  # e.g. `Transfer-Encoding: gzip`: the body ends with the close
        if http10:  # RFC 9112 section 6.1: no Transfer-Encoding to an HTTP/1.0 client
            raise BadResponse("backend used a transfer coding an HTTP/1.0 client cannot "
                              "receive")
        keep_alive = False
    body, chunked, framing = None, False, coding
    if conn.is_complete():
        body = conn.take_body()
        conns.release(conn)
        if body:
            length = len(body) if coding is None else None
        elif length is None and coding is None and request.method != "HEAD" \
                and response.status != 304:
            length = 0  # an empty chunked or close-delimited body
    else:
        chunked = length is None and coding is None and not http10
        if length is None and not chunked:
            keep_alive = False  # the body ends with the connection
        framing = b"chunked" if chunked else coding
    head, report = response_head(
        response.status, response.reason, response.headers, forwarded.request_id,
        content_length=length, keep_alive=keep_alive, http10=http10, extra=extra,
        transfer_coding=framing,
    )
    return ClientHead(head, report, keep_alive, chunked, body)


def whole_response(status: int, head: ClientHead, timeouts: Timeouts) -> web.StreamResponse:
    """The response the backend sent whole (`head.body`), sent at once (no coroutine: the
    common case)."""
    assert head.body is not None
    return cast(web.StreamResponse, SentResponse(
        head.head + head.body, head.keep_alive, status, len(head.body), timeouts.client_send))


async def relay(
    request: web.BaseRequest,
    conns: Connections,
    conn: UpstreamConnection,
    status: int,
    head: ClientHead,
    ctx: RequestContext,
    timeouts: Timeouts,
) -> web.StreamResponse:
    """Send the response: at once when whole (`whole_response`), else streamed as it arrives
    (with the client's back-pressure); the connection goes back to its pool once the backend
    is done."""
    if head.body is not None:
        return whole_response(status, head, timeouts)
    reply = StreamedResponse(head.head, chunked=head.chunked, keep_alive=head.keep_alive,
                             status=status)
    await reply.prepare(request)
    if await _stream(request, conns, conn, reply, ctx, timeouts):
        conns.release(conn)  # read whole: the backend is done whatever the client does
        try:
            async with asyncio.timeout(timeouts.client_send):
                await reply.write_eof()
        except TimeoutError:
            log.info("%s: client took nothing of the end of a response for %gs; dropped",
                     ctx.request_id, timeouts.client_send)
            drop_client(request, discard=True)
    return cast(web.StreamResponse, reply)


async def _stream(
    request: web.BaseRequest,
    conns: Connections,
    conn: UpstreamConnection,
    reply: StreamedResponse,
    ctx: RequestContext,
    timeouts: Timeouts,
) -> bool:
    """Copy the backend's body to the client; False when either side failed (then the client
    is dropped: it must not take a truncated body for a whole one)."""
    try:
        while chunk := await conn.read_chunk(timeouts.backend_response):
            ctx.bytes_sent += len(chunk)
            async with asyncio.timeout(timeouts.client_send):
                await reply.write(chunk)  # waits while the client's buffer is full
    except ProxyError as exc:
        log.warning("%s: response from %s cut off: %s", ctx.request_id, conns.address,
                    exc.detail)
        drop_client(request)
        return False
    except TimeoutError:
        log.info("%s: client took nothing for %gs; dropped", ctx.request_id,
                 timeouts.client_send)
        conn.abort()
        drop_client(request, discard=True)
        return False
    except (ConnectionError, asyncio.CancelledError):
        conn.abort()
        raise
    return True
