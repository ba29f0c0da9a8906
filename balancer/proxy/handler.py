"""The request handler: pick a backend, forward the request, stream the response back.

Rules this module keeps:
- A client never hangs: every failure becomes a response from `error_response` (one line
  of text naming the reason and the request id), or, once the response has started, a
  closed connection (so a truncated body is never mistaken for a whole one).
- Bodies stream in both directions with back-pressure; only small request bodies (up to
  REPLAY_LIMIT) are held, so that the stale keep-alive race can be retried on a fresh
  connection. Larger bodies always go on a fresh connection.
- The snapshot (`Runtime`) is read once per request; a reload never changes it midway.
"""

import asyncio
import hmac
import logging
import time
from typing import Any, cast

from aiohttp import HttpVersion11 as HTTP11
from aiohttp import web

from balancer.balancing.classify import BadTarget, Decision
from balancer.balancing.costs import CostModel
from balancer.balancing.health import RetryBudget
from balancer.balancing.load_report import parse_load_report
from balancer.balancing.runtime import Pool, Runtime
from balancer.balancing.weights import BackendStats
from balancer.config.addresses import Address
from balancer.config.model import Limits, Timeouts
from balancer.http.errors import (
    BackendClosed,
    BadRequest,
    BadResponse,
    BodyTimeout,
    BodyTooLarge,
    CodingNotImplemented,
    ConnectFailed,
    ConnectNotAllowed,
    ConnectTimeout,
    HeadTooLarge,
    InternalError,
    NoBackend,
    PoolExhausted,
    ProxyError,
)
from balancer.http.headers import (
    ForwardedRequest,
    UnsupportedCoding,
    close_delimited_coding,
    forward_request,
    response_head,
)
from balancer.metrics import Metrics
from balancer.proxy.access_log import AccessLog, Entry
from balancer.proxy.replies import (
    RequestIds,
    SentResponse,
    StreamedResponse,
    error_response,
    version_not_supported,
)
from balancer.proxy.tunnel import drop_client, tunnel
from balancer.upstream.backends import BackendTable
from balancer.upstream.connection import Response, UpstreamConnection
from balancer.upstream.health_events import FAILURES
from balancer.upstream.pool import ConnectionPool
from balancer.upstream.waitqueue import WaitQueue

log = logging.getLogger("balancer.proxy")

REPLAY_LIMIT = 64 * 1024
CLIENT_GONE = 499  # (nginx's status for "client closed request"), in metrics and access log
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Outcome:
    """Where a request went and why: for the explain header and for learning its cost."""

    __slots__ = ("address", "decision", "explain", "pool", "spilled", "stats")

    def __init__(self, decision: Decision | None, pool: Pool, address: Address, spilled: bool,
                 explain: bool, stats: BackendStats) -> None:
        self.decision = decision
        self.pool = pool
        self.address = address
        self.spilled = spilled
        self.explain = explain
        self.stats = stats

    def header(self) -> tuple[tuple[bytes, bytes]]:
        decision = self.decision
        assert decision is not None
        source = "spill" if self.spilled else decision.source
        value = (f"class={decision.request_class}; pool={self.pool.name}; "
                 f"backend={self.address.key}; "
                 f"score={decision.score:.2f}; source={source}")
        # header-safe whatever the names hold (config checks them too)
        return ((b"X-Balancer-Decision", value.encode("ascii", "backslashreplace")),)


class _Facts:
    """The request as the classifier reads it (balancer.balancing.classify.RequestFacts)."""

    __slots__ = ("_forwarded", "_request", "content_length", "method", "path", "query")

    def __init__(self, request: web.BaseRequest, forwarded: ForwardedRequest) -> None:
        self._request = request
        self._forwarded = forwarded
        self.method = request.method
        target = (forwarded.target.decode("utf-8", "surrogateescape") if forwarded.target
                  else request.raw_path)  # the origin-form the backend gets
        self.path, _, self.query = target.partition("?")
        self.content_length = forwarded.content_length

    def host(self) -> str:
        host = self._forwarded.host
        return host.decode("latin-1") if host else ""

    def content_type(self) -> str:
        return self._request.headers.get("Content-Type", "")

    def header(self, name: str) -> str | None:
        return self._request.headers.get(name)


class Proxy:
    """Forwards requests using the current Runtime; `runtime` is swapped on reload."""

    def __init__(self, runtime: Runtime, backend_table: BackendTable, costs: CostModel,
                 metrics: Metrics, access_log: AccessLog | None = None) -> None:
        self.runtime = runtime
        self.access_log = access_log
        self.draining = False  # SIGTERM's grace period: every response closes its connection
        self.backend_table = backend_table
        self.costs = costs
        self.metrics = metrics
        self.ids = RequestIds()
        self.retry_budget = RetryBudget(runtime.health)
        self.queues: dict[str, WaitQueue] = {}

    def _observe(self, runtime: Runtime, outcome: "Outcome", failed: bool) -> None:
        """A backend's outcome: its error rate (weights) and passive health (ejection)."""
        outcome.stats.observe_outcome(failed, runtime.weight_policy)
        now = self.backend_table.loop.time()
        health = self.backend_table.health(outcome.address)
        may_eject = failed and runtime.may_eject(outcome.pool, self.backend_table, now)
        transition = health.observe(failed, now, runtime.health, may_eject)
        self.backend_table.health_events.on_transition(outcome.address, transition, FAILURES,
                                                       health, runtime.health, now)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = self.backend_table.loop.time()
        record = Entry()
        reply = await self._handle(request, record)
        if self.draining and isinstance(reply, web.StreamResponse) and not reply.prepared:
            reply.force_close()
        record.total_s = self.backend_table.loop.time() - started
        self.metrics.request(record.pool, record.request_class, reply.status, record.total_s)
        access_log = self.access_log
        if access_log is not None:
            _describe_request(record, request, self.runtime)
            record.status = reply.status
            if isinstance(reply, SentResponse):
                record.bytes_sent = reply.body_length
            elif isinstance(reply, web.Response):
                record.bytes_sent = reply.content_length or 0
            access_log.record(record)
        return reply

    async def _handle(self, request: web.BaseRequest, record: Entry) -> web.StreamResponse:
        runtime = self.runtime
        client_ip = _client_ip(request)
        if request.version.major != 1:
            record.request_id = self.ids.new()
            return version_not_supported(request, record.request_id)
        if request.method == "CONNECT":
            record.request_id = self.ids.new()
            return error_response(ConnectNotAllowed(), record.request_id)
        trusted = runtime.is_trusted(client_ip)
        max_head = runtime.config.limits.max_head_size
        if _head_size(request) > max_head:  # (one that came whole in one read)
            record.request_id = self.ids.new()
            return error_response(HeadTooLarge(f"the request head is over {max_head} bytes"),
                                  record.request_id)
        try:
            forwarded = forward_request(
                request.method,
                request.raw_path.encode("utf-8", "surrogateescape"),
                request.raw_headers,
                client_ip=client_ip,
                trusted_client=trusted,
                new_request_id=self.ids.new(),
                http10=request.version < HTTP11,
            )
        except UnsupportedCoding as exc:
            record.request_id = self.ids.new()
            return error_response(CodingNotImplemented(str(exc)), record.request_id)
        except ValueError as exc:
            record.request_id = self.ids.new()
            return error_response(BadRequest(str(exc)), record.request_id)
        record.request_id = forwarded.request_id
        explain = runtime.explain and (trusted or _has_admin_token(forwarded, runtime))
        try:
            return await self._forward(request, runtime, forwarded, record, explain)
        except ProxyError as error:
            response = error_response(error, forwarded.request_id)
            if forwarded.declined_upgrade:  # the parser dropped what came after it: close
                response.force_close()
            return response
        except ConnectionError:
            # the client went away mid-response: nobody to answer, and a debug line only (raised
            # to aiohttp, it logged an ERROR and a traceback per client: a log any client fills)
            log.debug("%s: the client closed the connection", forwarded.request_id)
            drop_client(request, discard=True)
            return cast(web.StreamResponse, SentResponse(b"", False, CLIENT_GONE, 0))
        except asyncio.CancelledError:
            raise  # the client went away: there is nobody to answer
        except Exception:
            log.exception("%s: internal error", forwarded.request_id)
            return error_response(InternalError(), forwarded.request_id)

    async def _forward(
        self, request: web.BaseRequest, runtime: Runtime, forwarded: ForwardedRequest,
        record: Entry, explain: bool,
    ) -> web.StreamResponse:
        limits = runtime.config.limits
        timeouts = runtime.config.timeouts
        length = forwarded.content_length
        if length is not None and length > limits.max_body_size:
            raise BodyTooLarge(f"{length} bytes is over the {limits.max_body_size}-byte limit")
        streamed = forwarded.chunked or (length is not None and length > REPLAY_LIMIT)
        payload = forwarded.head
        if request.version < HTTP11:
            forwarded.expect_continue = False  # no 1xx to HTTP/1.0 (RFC 9110 section 15.2)
        if length and not streamed:
            if forwarded.expect_continue:
                await request.writer.write(CONTINUE)
            try:
                async with asyncio.timeout(timeouts.client_body):
                    payload += await request.content.readexactly(length)
            except asyncio.IncompleteReadError:
                raise BadRequest("client closed before sending the whole body") from None
            except TimeoutError:
                raise BodyTimeout(f"no whole body after {timeouts.client_body:g}s") from None

        decision = None
        if runtime.classifier is not None:
            try:
                decision = runtime.classifier.classify(_Facts(request, forwarded), self.costs)
            except BadTarget as exc:  # a path the backend could route differently
                raise BadRequest(str(exc)) from None
        pool = runtime.pool_for_decision(decision)
        record.pool = pool.name
        if decision is not None:
            record.request_class = decision.request_class
            record.source = decision.source
            self.metrics.decisions[(decision.request_class, decision.source)] += 1
            if decision.source == "learned-escalation":
                self.metrics.learned_overrides += 1
        if not pool.backends:
            if pool.unresolved:
                raise NoBackend(f"pool {pool.name}: {', '.join(pool.unresolved)} has not "
                                "resolved to any address (DNS discovery)")
            raise NoBackend(f"pool {pool.name} has no backends")
        backend_table = self.backend_table
        self.retry_budget.on_request(runtime.health)
        tried: list[Address] = []
        last_error: ProxyError = NoBackend(f"pool {pool.name} has no backend left to try")
        queueing = pool.config.max_queue > 0
        deadline = backend_table.loop.time() + pool.config.queue_timeout
        while True:
            chosen = runtime.choose(pool, backend_table, backend_table.loop.time(), tried,
                                    over_cap=not queueing or bool(tried),
                                    request_class=record.request_class)
            if chosen is None:
                if tried:  # every backend already tried by this request
                    if isinstance(last_error, ConnectFailed | ConnectTimeout):
                        raise NoBackend(f"every backend of pool {pool.name} is down "
                                        f"({len(tried)} tried; last: {last_error.detail})")
                    raise last_error
                await self._queue(pool.name).wait(deadline, pool.config.max_queue)
                continue
            used_pool, address, spilled = chosen
            if spilled:
                self.metrics.spills[pool.name] += 1
                record.source = "spill"
            if tried:
                if not self.retry_budget.try_retry():  # spent only when another backend is there
                    raise last_error
                log.info("%s: %s from %s; retrying on %s", forwarded.request_id,
                         last_error.reason, tried[-1], address)
                self.metrics.retries[type(last_error).__name__] += 1
            upstream = backend_table.get(address, used_pool.config, timeouts)
            outcome = Outcome(decision, used_pool, address, spilled,
                              explain and decision is not None, backend_table.stats(address))
            record.pool = used_pool.name
            record.backend = address.key
            sent_at = backend_table.loop.time()
            try:
                conn, response = await self._exchange(
                    request, upstream, payload, forwarded, streamed, limits, timeouts
                )
                record.upstream_s = backend_table.loop.time() - sent_at
                outcome.stats.observe_latency(record.upstream_s, response.status,
                                              backend_table.inflight(address), record.request_class,
                                              sent_at + record.upstream_s, runtime.weight_policy)
                self.metrics.upstream_latency[address.key].observe(record.upstream_s)
                break
            except ProxyError as error:
                self._wake(used_pool.name)  # the failed attempt freed its slot
                if error.backend_fault:
                    self._observe(runtime, outcome, failed=True)
                if not _retryable(error, request, streamed):
                    raise
                tried.append(address)
                last_error = error
        try:
            if response.status == 101:
                if forwarded.upgrade is None:  # RFC 9110 section 15.2.2
                    raise BadResponse("backend switched protocols for a request that asked "
                                      "for no upgrade")
                upstream.to_tunnel(conn)
                return await tunnel(request, conn, response, forwarded.request_id,
                                    timeouts.tunnel_idle)
            return await self._respond(request, upstream, conn, response, forwarded, timeouts,
                                       outcome, record)
        finally:
            if not conn.released:  # on every path, whatever was raised
                conn.abort()
            self._wake(used_pool.name)  # this backend may have room now

    def _wake(self, pool: str) -> None:
        queue = self.queues.get(pool)
        if queue is not None:
            queue.wake_one()

    def _queue(self, pool: str) -> WaitQueue:
        queue = self.queues.get(pool)
        if queue is None:
            queue = self.queues[pool] = WaitQueue(self.backend_table.loop)
        return queue

    async def _exchange(
        self,
        request: web.BaseRequest,
        upstream: ConnectionPool,
        payload: bytes,
        forwarded: ForwardedRequest,
        streamed: bool,
        limits: Limits,
        timeouts: Timeouts,
    ) -> tuple[UpstreamConnection, Response]:
        """Send the request and read the response head, retrying the stale keep-alive race."""
        expect_body = request.method != "HEAD"
        if forwarded.upgrade is not None and not upstream.has_tunnel_room():
            raise PoolExhausted(f"backend {upstream.address} has its {upstream.max_tunnels} "
                                "tunnels (max_tunnels) open")
        for attempt in (1, 2):
            conn, reused = await upstream.acquire(fresh=streamed or forwarded.upgrade is not None)
            try:
                conn.send(payload, expect_body=expect_body)
                if streamed and not await _send_body(request, conn, forwarded, limits, timeouts):
                    conn.body_cut = True  # an early answer: relayed, then both sides close
                return conn, await conn.read_head(timeouts.backend_response)
            except BackendClosed as exc:
                conn.abort()
                if attempt == 1 and reused and exc.before_response and not streamed \
                        and _replayable(request):
                    log.debug("stale keep-alive connection to %s; retrying", upstream.address)
                    continue
                raise
            except BaseException:
                conn.abort()
                raise
        raise AssertionError("unreachable")

    async def _respond(
        self,
        request: web.BaseRequest,
        upstream: ConnectionPool,
        conn: UpstreamConnection,
        response: Response,
        forwarded: ForwardedRequest,
        timeouts: Timeouts,
        outcome: "Outcome",
        record: Entry,
    ) -> web.StreamResponse:
        extra = outcome.header() if outcome.explain else ()
        http10 = request.version < HTTP11
        # after an upgrade aiohttp's parser does not switch for (not websocket), the bytes that
        # came with the request are lost: close, so that the client resends what it pipelined
        keep_alive = request.keep_alive and not self.draining and not forwarded.declined_upgrade \
            and not conn.body_cut  # (the rest of the client's body is unread)
        length = response.content_length
        coding = close_delimited_coding(response.headers) if length is None else None
        if coding is not None:  # e.g. `Transfer-Encoding: gzip`: the body ends with the close
            if http10:  # RFC 9112 section 6.1: no Transfer-Encoding to an HTTP/1.0 client
                raise BadResponse("backend used a transfer coding an HTTP/1.0 client cannot "
                                  "receive")
            keep_alive = False
        if conn.is_complete():
            body = conn.take_body()
            upstream.release(conn)
            if body:
                length = len(body) if coding is None else None
            elif length is None and coding is None and request.method != "HEAD" \
                    and response.status != 304:
                length = 0  # an empty chunked or close-delimited body
            head, report = response_head(
                response.status, response.reason, response.headers, forwarded.request_id,
                content_length=length, keep_alive=keep_alive, http10=http10, extra=extra,
                transfer_coding=coding,
            )
            self._learn(report, outcome, response.status)
            return cast(web.StreamResponse, SentResponse(
                head + body, keep_alive, response.status, len(body), timeouts.client_send))

        chunked = length is None and coding is None and not http10
        if length is None and not chunked:
            keep_alive = False  # the body ends with the connection
        head, report = response_head(
            response.status, response.reason, response.headers, forwarded.request_id,
            content_length=length, keep_alive=keep_alive, http10=http10, extra=extra,
            transfer_coding=b"chunked" if chunked else coding,
        )
        self._learn(report, outcome, response.status)
        reply = StreamedResponse(head, chunked=chunked, keep_alive=keep_alive,
                                 status=response.status)
        await reply.prepare(request)
        try:
            while chunk := await conn.read_chunk(timeouts.backend_response):
                record.bytes_sent += len(chunk)
                async with asyncio.timeout(timeouts.client_send):
                    await reply.write(chunk)  # waits while the client's buffer is full
        except ProxyError as exc:
            log.warning("%s: response from %s cut off: %s", forwarded.request_id,
                        upstream.address, exc.detail)
            drop_client(request)
            return cast(web.StreamResponse, reply)
        except TimeoutError:
            log.info("%s: client took nothing for %gs; dropped", forwarded.request_id,
                     timeouts.client_send)
            conn.abort()
            drop_client(request, discard=True)
            return cast(web.StreamResponse, reply)
        except (ConnectionError, asyncio.CancelledError):
            conn.abort()
            raise
        upstream.release(conn)  # read whole: the backend is done whatever the client does
        try:
            async with asyncio.timeout(timeouts.client_send):
                await reply.write_eof()
        except TimeoutError:
            log.info("%s: client took nothing of the end of a response for %gs; dropped",
                     forwarded.request_id, timeouts.client_send)
            drop_client(request, discard=True)
        return cast(web.StreamResponse, reply)

    def _learn(self, report: bytes | None, outcome: Outcome, status: int) -> None:
        """Fold the response into the backend's weight and error rate, and the backend's
        report of what the request cost into the route's learned cost."""
        runtime = self.runtime
        self._observe(runtime, outcome, failed=status >= 500 or status == 429)
        weight_policy = runtime.weight_policy
        if report is None:
            return
        parsed = parse_load_report(report)
        if parsed is None:
            return
        now = self.backend_table.loop.time()
        outcome.stats.observe_report(parsed, now, weight_policy,
                                     self.backend_table.inflight(outcome.address))
        decision = outcome.decision
        if decision is not None and 200 <= status < 400 and parsed.cpu_ms is not None:
            self.costs.observe_report(decision.template, parsed, now)


async def _send_body(
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
    chunked = forwarded.chunked
    content = request.content
    while True:
        if conn.answered():
            return False
        try:
            async with asyncio.timeout(timeouts.client_body):
                chunk = await content.readany()
        except TimeoutError:
            raise BodyTimeout(f"nothing of the body for {timeouts.client_body:g}s") from None
        if not chunk:
            break
        total += len(chunk)
        if total > limits.max_body_size:
            raise BodyTooLarge(f"body is over the {limits.max_body_size}-byte limit")
        try:
            if chunked:
                await conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk),
                                 timeouts.backend_response)
            else:
                await conn.write(chunk, timeouts.backend_response)
        except BackendClosed:
            if conn.answered():  # it answered, then closed without reading the rest
                return False
            raise
    if forwarded.content_length is not None and total < forwarded.content_length:
        raise BadRequest("client closed before sending the whole body")
    if chunked:
        await conn.write(b"0\r\n\r\n", timeouts.backend_response)
    return True


IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def _replayable(request: web.BaseRequest) -> bool:
    """May be sent again once a backend may have read (and executed) it: an idempotent method
    or a request carrying an Idempotency-Key (RFC 9110 section 9.2.2)."""
    return request.method in IDEMPOTENT or "Idempotency-Key" in request.headers


def _retryable(error: ProxyError, request: web.BaseRequest, streamed: bool) -> bool:
    """Safe to send again elsewhere: the connection never came up (nothing was sent), or a
    replayable request whose connection broke before any byte of a response."""
    if isinstance(error, ConnectFailed | ConnectTimeout):
        return True
    return (isinstance(error, BackendClosed) and error.before_response and not streamed
            and _replayable(request))


def _has_admin_token(forwarded: ForwardedRequest, runtime: Runtime) -> bool:
    """The request carries the admin token in X-Balancer-Token (it may see explain)."""
    token, expected = forwarded.explain_token, runtime.config.admin_token
    return (token is not None and expected is not None
            and hmac.compare_digest(token, expected.encode()))


def _describe_request(record: Entry, request: web.BaseRequest, runtime: Runtime) -> None:
    """The access log's view of the request (only when there is an access log)."""
    headers = request.headers
    record.started = time.time() - record.total_s
    client = _client_ip(request)
    forwarded_for = headers.get("X-Forwarded-For") if runtime.is_trusted(client) else None
    if forwarded_for:
        client = forwarded_for.partition(",")[0].strip() or client
    record.client = client
    record.host = headers.get("Host", "")
    record.method = request.method
    record.path = request.raw_path
    record.protocol = f"HTTP/{request.version.major}.{request.version.minor}"
    record.user_agent = headers.get("User-Agent", "")
    record.referer = headers.get("Referer", "")


def _head_size(request: web.BaseRequest) -> int:
    """The bytes of the request head as received (line and header lines, with CRLFs)."""
    size = len(request.method) + len(request.raw_path) + 14
    for name, value in request.raw_headers:
        size += len(name) + len(value) + 4
    return size


def _client_ip(request: web.BaseRequest) -> str:
    transport = request.transport
    peer: Any = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unix"
