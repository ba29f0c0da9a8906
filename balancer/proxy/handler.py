"""The request handler: pick a backend, forward the request, stream the response back.

A request goes through named steps (pingora's phases), all sharing one `RequestContext`:
`_admit` (check and rewrite the head), the body (`exchange.plan_body`, then
`exchange.read_small_body` when there is one), `_route` (classify, pool, decision metrics),
`_connect_with_retries` (choose, queue, exchange, retry budget), `_respond` (tunnel, or head,
learning, body), then the metrics and the access-log line in `handle`. The exchange itself
(sending, reading, streaming, when to send a request again) is `balancer.proxy.exchange`.

Rules this module keeps:
- A client never hangs: every failure becomes a response from `error_response` (one line
  of text naming the reason and the request id), or, once the response has started, a
  closed connection (so a truncated body is never mistaken for a whole one).
- The snapshot (`Runtime`) is read once per request, into its context; every step, learning
  and the access log included, uses that one: a reload never changes a request midway.
- Time is the injected `clock` (the event loop's: queue deadlines are in its time).
"""

import asyncio
import hmac
import logging
from collections.abc import Callable
from typing import Any, cast

from aiohttp import HttpVersion11 as HTTP11
from aiohttp import web

from balancer.balancing.classify import BadTarget
from balancer.balancing.costs import CostModel
from balancer.balancing.health import RetryBudget
from balancer.balancing.load_report import parse_load_report
from balancer.balancing.runtime import Runtime
from balancer.balancing.selection.pool import Pool
from balancer.config.addresses import Address
from balancer.config.model import Config
from balancer.http.errors import (
    BadRequest,
    BadResponse,
    CodingNotImplemented,
    ConnectFailed,
    ConnectNotAllowed,
    ConnectTimeout,
    HeadTooLarge,
    InternalError,
    NoBackend,
    ProxyError,
)
from balancer.http.headers import ForwardedRequest, UnsupportedCoding, forward_request
from balancer.metrics import Metrics
from balancer.proxy.access_log import AccessLog, describe_request
from balancer.proxy.context import RequestContext
from balancer.proxy.exchange import (
    client_head,
    exchange,
    plan_body,
    read_small_body,
    relay,
    retryable,
    whole_response,
)
from balancer.proxy.replies import (
    RequestIds,
    SentResponse,
    error_response,
    version_not_supported,
)
from balancer.proxy.tunnel import drop_client, tunnel
from balancer.upstream.backends import BackendTable
from balancer.upstream.connection import Response, UpstreamConnection
from balancer.upstream.connections import Connections
from balancer.upstream.health_events import FAILURES
from balancer.upstream.waitqueue import WaitQueue

log = logging.getLogger("balancer.proxy")

CLIENT_GONE = 499  # (nginx's status for "client closed request"), in metrics and access log
Attempt = tuple[Connections, UpstreamConnection, Response]  # the backend that answered


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
    """Forwards requests using the current Runtime; `runtime` is swapped on reload (a request
    keeps the one it started with). `clock` is the event loop's time."""

    def __init__(self, runtime: Runtime, backend_table: BackendTable, costs: CostModel,
                 metrics: Metrics, access_log: AccessLog | None = None, *,
                 clock: Callable[[], float]) -> None:
        self.runtime = runtime
        self.access_log = access_log
        self.draining = False  # SIGTERM's grace period: every response closes its connection
        self.backend_table = backend_table
        self.costs = costs
        self.metrics = metrics
        self.clock = clock
        self.ids = RequestIds()
        self.retry_budget = RetryBudget(runtime.health)
        self.queues: dict[str, WaitQueue] = {}

    def _observe(self, runtime: Runtime, ctx: RequestContext, failed: bool) -> None:
        """A backend's outcome: its error rate (weights) and passive health (ejection)."""
        pool, address, stats = ctx.chosen()
        stats.observe_outcome(failed, runtime.weight_policy)
        now = self.clock()
        health = self.backend_table.health(address)
        eject_allowed = failed and runtime.may_eject(pool, self.backend_table, now)
        transition = health.observe(failed, now, runtime.health, eject_allowed)
        if transition is not None:  # (most responses change nothing: no call)
            self.backend_table.health_events.on_transition(address, transition, FAILURES,
                                                           health, runtime.health, now)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """One request, from its head to its metrics and access-log line."""
        ctx = RequestContext(self.runtime, self.clock())
        reply = await self._handle(request, ctx)
        if self.draining and isinstance(reply, web.StreamResponse) and not reply.prepared:
            reply.force_close()
        ctx.total_s = self.clock() - ctx.started
        self.metrics.request(ctx.pool_name, ctx.request_class, reply.status, ctx.total_s)
        if self.access_log is not None:
            describe_request(ctx, request, ctx.peer)
            ctx.status = reply.status
            if isinstance(reply, SentResponse):
                ctx.bytes_sent = reply.body_length
            elif isinstance(reply, web.Response):
                ctx.bytes_sent = reply.content_length or 0
            self.access_log.record(ctx)
        return reply

    async def _handle(self, request: web.BaseRequest, ctx: RequestContext) -> web.StreamResponse:
        """The request admitted and forwarded; whatever fails becomes its error response."""
        forwarded = self._admit(request, ctx)
        if not isinstance(forwarded, ForwardedRequest):
            return forwarded  # refused
        try:
            return await self._forward(request, ctx, forwarded)
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

    def _admit(self, request: web.BaseRequest,
               ctx: RequestContext) -> ForwardedRequest | web.StreamResponse:
        """The head checked and rewritten for the backend, or the response refusing it; sets
        the request id and whether the client may see the explain header."""
        runtime = ctx.runtime
        client_ip = ctx.peer = _client_ip(request)
        if request.version.major != 1:
            ctx.request_id = self.ids.new()
            return version_not_supported(request, ctx.request_id)
        trusted = runtime.is_trusted(client_ip)
        try:
            forwarded = self._rewrite(request, runtime.config, client_ip, trusted)
        except ProxyError as refusal:
            ctx.request_id = self.ids.new()
            return error_response(refusal, ctx.request_id)
        ctx.request_id = forwarded.request_id
        ctx.explain = runtime.explain and (trusted or _has_admin_token(forwarded, runtime))
        return forwarded

    def _rewrite(self, request: web.BaseRequest, config: Config, client_ip: str,
                 trusted: bool) -> ForwardedRequest:
        """`forward_request`'s head for the backend; raises the error that refuses it."""
        if request.method == "CONNECT":
            raise ConnectNotAllowed()
        max_head = config.limits.max_head_size
        if _head_size(request) > max_head:  # (one that came whole in one read)
            raise HeadTooLarge(f"the request head is over {max_head} bytes")
        try:
            return forward_request(
                request.method,
                request.raw_path.encode("utf-8", "surrogateescape"),
                request.raw_headers,
                client_ip=client_ip,
                trusted_client=trusted,
                new_request_id=self.ids.new(),
                http10=request.version < HTTP11,
            )
        except UnsupportedCoding as exc:
            raise CodingNotImplemented(str(exc)) from None
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    async def _forward(self, request: web.BaseRequest, ctx: RequestContext,
                       forwarded: ForwardedRequest) -> web.StreamResponse:
        """The request's steps once admitted: body, route, backend, response."""
        config = ctx.runtime.config
        streamed = plan_body(request, config.limits, forwarded)
        payload = forwarded.head
        if forwarded.content_length and not streamed:
            payload = await read_small_body(request, config.timeouts, forwarded)
        pool = self._route(request, ctx, forwarded)
        conns, conn, response = await self._connect_with_retries(
            request, ctx, forwarded, pool, payload, streamed)
        try:
            return await self._respond(request, ctx, forwarded, conns, conn, response)
        finally:
            if not conn.released:  # on every path, whatever was raised
                conn.abort()
            self._wake(ctx.pool_name)  # this backend may have room now

    def _route(self, request: web.BaseRequest, ctx: RequestContext,
               forwarded: ForwardedRequest) -> Pool:
        """Classify the request (with routing) and count the decision; its pool."""
        runtime = ctx.runtime
        decision = None
        if runtime.classifier is not None:
            try:
                decision = runtime.classifier.classify(_Facts(request, forwarded), self.costs)
            except BadTarget as exc:  # a path the backend could route differently
                raise BadRequest(str(exc)) from None
        pool = runtime.pool_for_decision(decision)
        ctx.route(decision, pool)
        if decision is not None:
            self.metrics.decisions[(decision.request_class, decision.source)] += 1
            if decision.source == "learned-escalation":
                self.metrics.learned_overrides += 1
        if not pool.backends:
            if pool.unresolved:
                raise NoBackend(f"pool {pool.name}: {', '.join(pool.unresolved)} has not "
                                "resolved to any address (DNS discovery)")
            raise NoBackend(f"pool {pool.name} has no backends")
        return pool

    async def _connect_with_retries(
        self, request: web.BaseRequest, ctx: RequestContext, forwarded: ForwardedRequest,
        pool: Pool, payload: bytes, streamed: bool,
    ) -> Attempt:
        """Choose a backend (waiting in the pool's queue while none has room) and exchange
        with it; after a failure that is safe to retry, another, while the budget allows."""
        runtime, backend_table = ctx.runtime, self.backend_table
        self.retry_budget.on_request(runtime.health)
        tried: list[Address] = []
        last_error: ProxyError | None = None  # (set with every address in `tried`)
        queueing = pool.config.max_queue > 0
        deadline = self.clock() + pool.config.queue_timeout
        while True:
            chosen = runtime.choose(pool, backend_table, self.clock(), tried,
                                    over_cap=not queueing or bool(tried),
                                    request_class=ctx.request_class)
            if chosen is None:
                if last_error is not None:  # every backend already tried by this request
                    raise _exhausted(pool, tried, last_error)
                await self._queue(pool.name).wait(deadline, pool.config.max_queue)
                continue
            used_pool, address, spilled = chosen
            if spilled:
                self.metrics.spills[pool.name] += 1
                ctx.source = "spill"
            if last_error is not None:
                self._spend_retry(ctx, tried[-1], last_error, address)
            ctx.use(used_pool, address, backend_table.stats(address), spilled)
            try:
                return await self._attempt(request, ctx, forwarded, payload, streamed)
            except ProxyError as error:
                self._wake(used_pool.name)  # the failed attempt freed its slot
                if error.backend_fault:
                    self._observe(runtime, ctx, failed=True)
                if not retryable(error, request.method, request.headers, streamed):
                    raise
                tried.append(address)
                last_error = error

    def _spend_retry(self, ctx: RequestContext, failed: Address, error: ProxyError,
                     address: Address) -> None:
        """A retry on another backend spends the retry budget; spent, the last error stands."""
        if not self.retry_budget.try_retry():  # spent only when another backend is there
            raise error
        log.info("%s: %s from %s; retrying on %s", ctx.request_id, error.reason, failed,
                 address)
        self.metrics.retries[type(error).__name__] += 1

    async def _attempt(self, request: web.BaseRequest, ctx: RequestContext,
                       forwarded: ForwardedRequest, payload: bytes, streamed: bool) -> Attempt:
        """One exchange with the backend `ctx.use` chose, timed to the response head."""
        pool, address, stats = ctx.chosen()
        runtime, backend_table = ctx.runtime, self.backend_table
        timeouts = runtime.config.timeouts
        conns = backend_table.get(address, pool.config, timeouts)
        sent_at = self.clock()
        conn, response = await exchange(request, conns, payload, forwarded, streamed,
                                        runtime.config.limits, timeouts)
        ctx.upstream_s = self.clock() - sent_at
        stats.observe_latency(ctx.upstream_s, response.status, backend_table.inflight(address),
                              ctx.request_class, sent_at + ctx.upstream_s,
                              runtime.weight_policy)
        self.metrics.upstream_latency[address.key].observe(ctx.upstream_s)
        return conns, conn, response

    async def _respond(
        self, request: web.BaseRequest, ctx: RequestContext, forwarded: ForwardedRequest,
        conns: Connections, conn: UpstreamConnection, response: Response,
    ) -> web.StreamResponse:
        """A tunnel after 101; otherwise the head for the client, what the response teaches
        (before its body is relayed, as the head has the load report), then the body."""
        timeouts = ctx.runtime.config.timeouts
        if response.status == 101:
            if forwarded.upgrade is None:  # RFC 9110 section 15.2.2
                raise BadResponse("backend switched protocols for a request that asked "
                                  "for no upgrade")
            conns.to_tunnel(conn)
            return await tunnel(request, conn, response, forwarded.request_id,
                                timeouts.tunnel_idle)
        extra = ctx.explain_header() if ctx.explain else ()  # (no call for most requests)
        head = client_head(request, conns, conn, response, forwarded, extra,
                           self.draining)
        self._learn(ctx, head.report, response.status)
        if head.body is not None:  # sent whole: no coroutine to await
            return whole_response(response.status, head, timeouts)
        return await relay(request, conns, conn, response.status, head, ctx, timeouts)

    def _learn(self, ctx: RequestContext, report: bytes | None, status: int) -> None:
        """Fold the response into the backend's weight and error rate, and the backend's
        report of what the request cost into the route's learned cost (by the request's own
        snapshot, whatever was reloaded meanwhile)."""
        runtime = ctx.runtime
        self._observe(runtime, ctx, failed=status >= 500 or status == 429)
        if report is None:
            return
        parsed = parse_load_report(report)
        if parsed is None:
            return
        now = self.clock()
        _, address, stats = ctx.chosen()
        stats.observe_report(parsed, now, runtime.weight_policy,
                             self.backend_table.inflight(address))
        decision = ctx.decision
        if decision is not None and 200 <= status < 400 and parsed.cpu_ms is not None:
            self.costs.observe_report(decision.template, parsed, now)

    def _wake(self, pool: str) -> None:
        queue = self.queues.get(pool)
        if queue is not None:
            queue.wake_one()

    def _queue(self, pool: str) -> WaitQueue:
        queue = self.queues.get(pool)
        if queue is None:
            # the running loop's timers, on the clock the deadlines are computed with
            queue = self.queues[pool] = WaitQueue(asyncio.get_running_loop())
        return queue


def _exhausted(pool: Pool, tried: list[Address], last_error: ProxyError) -> ProxyError:
    """The error once every backend of the pool was tried."""
    if isinstance(last_error, ConnectFailed | ConnectTimeout):
        return NoBackend(f"every backend of pool {pool.name} is down "
                         f"({len(tried)} tried; last: {last_error.detail})")
    return last_error


def _has_admin_token(forwarded: ForwardedRequest, runtime: Runtime) -> bool:
    """The request carries the admin token in X-Balancer-Token (it may see explain)."""
    token, expected = forwarded.explain_token, runtime.config.admin_token
    return (token is not None and expected is not None
            and hmac.compare_digest(token, expected.encode()))


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
