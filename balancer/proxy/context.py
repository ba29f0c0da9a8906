"""The request context: everything the proxy knows about one request, from its start to its
access-log line (pingora's per-request CTX).

Rules:
- One per request, created by `Proxy.handle` with the config snapshot (`runtime`) current at
  the request's start; every later step (routing, choosing, observing, learning, logging)
  reads that snapshot, never the proxy's current one: a reload never changes a request
  midway.
- Where the request went is written in one place, `use` (per attempt: a retry or a spill may
  go to another pool and backend); the explain header and the access log read it from here.
- Plain data, no I/O; the access log (`balancer.proxy.access_log`) formats it.
"""

from balancer.balancing.classify import Decision
from balancer.balancing.runtime import Runtime
from balancer.balancing.selection.pool import Pool
from balancer.balancing.weights import BackendStats
from balancer.config.addresses import Address


class RequestContext:
    """One request: its snapshot, where it went and why, its timings, and what the access log
    prints (the fields from `client` to `referer`, filled in only when there is a log)."""

    __slots__ = ("address", "bytes_sent", "client", "decision", "explain", "host", "method",
                 "path", "peer", "pool", "protocol", "referer", "request_class", "request_id",
                 "runtime", "source", "spilled", "started", "stats", "status", "total_s",
                 "upstream_s", "user_agent", "wall_started")

    def __init__(self, runtime: Runtime, started: float) -> None:
        self.runtime = runtime    # the snapshot the request is served with, start to end
        self.started = started    # the proxy's clock (monotonic) when the handler began
        self.request_id = "-"
        self.peer = "-"           # the client connection's peer address ("unix" on a socket)
        self.decision: Decision | None = None
        self.request_class = "none"
        self.source = "-"         # what decided the class: rule, learned, default, ... or spill
        self.explain = False      # the client may see the X-Balancer-Decision header
        self.pool: Pool | None = None   # routed to, then (per attempt) the one used
        self.address: Address | None = None
        self.stats: BackendStats | None = None
        self.spilled = False      # this attempt went to a spill pool
        self.status = 0
        self.bytes_sent = 0
        self.upstream_s = -1.0    # send to response head, of the attempt that answered
        self.total_s = 0.0
        self.wall_started = 0.0   # wall clock (time.time()) when the request head was read
        self.client = "-"         # the peer, or the X-Forwarded-For client of a trusted peer
        self.host = ""
        self.method = "-"
        self.path = "-"           # the request target as the client sent it
        self.protocol = "HTTP/1.1"
        self.user_agent = ""
        self.referer = ""

    def route(self, decision: Decision | None, pool: Pool) -> None:
        """The classifier's decision (None without routing) and the pool it routes to."""
        self.decision = decision
        self.pool = pool
        if decision is not None:
            self.request_class = decision.request_class
            self.source = decision.source

    def use(self, pool: Pool, address: Address, stats: BackendStats, spilled: bool) -> None:
        """The pool and backend of this attempt (the one place where they are written)."""
        self.pool = pool
        self.address = address
        self.stats = stats
        self.spilled = spilled

    def chosen(self) -> tuple[Pool, Address, BackendStats]:
        """The pool, backend and backend stats of the current attempt (set by `use`)."""
        assert self.pool is not None and self.address is not None and self.stats is not None
        return self.pool, self.address, self.stats

    @property
    def pool_name(self) -> str:
        return "none" if self.pool is None else self.pool.name

    @property
    def backend(self) -> str:
        return "-" if self.address is None else self.address.key

    def explain_header(self) -> tuple[tuple[bytes, bytes], ...]:
        """X-Balancer-Decision (class, pool, backend, score, source), for a client that may
        see it; none otherwise or without routing."""
        decision = self.decision
        if not self.explain or decision is None:
            return ()
        source = "spill" if self.spilled else decision.source
        value = (f"class={decision.request_class}; pool={self.pool_name}; "
                 f"backend={self.backend}; "
                 f"score={decision.score:.2f}; source={source}")
        # header-safe whatever the names hold (config checks them too)
        return ((b"X-Balancer-Decision", value.encode("ascii", "backslashreplace")),)
