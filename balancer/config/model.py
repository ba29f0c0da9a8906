"""The balancer's config as frozen dataclasses, and the keys its YAML file has.

Pure, and only the model: balancer/config/parse.py reads a file into it (`parse_config`,
every problem located as `file:line:col: key.path: message`), balancer/config/converters.py
holds the parsers of its values and which one reads each key of a flat section, and
balancer/config/schema.py derives the JSON Schema from the key lists here and the parsers
there. The `routing` section's model is in balancer/config/routing.py, addresses in
balancer/config/addresses.py.
"""

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from balancer.config.addresses import Address
from balancer.config.routing import RoutingConfig

PoolKind = Literal["async", "threaded", "multiprocess"]
Policy = Literal["least_latency", "weighted_least_request", "least_request", "round_robin"]
POLICIES: tuple[Policy, ...] = ("least_latency", "weighted_least_request", "least_request",
                                "round_robin")
POOL_KINDS: tuple[PoolKind, ...] = ("async", "threaded", "multiprocess")

LogFormat = Literal["text", "combined", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "combined", "json")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """The `health:` section: passive ejection, active checks, the retry budget."""

    consecutive_failures: int = 5
    ejection: float = 10.0
    max_ejection: float = 300.0
    max_ejected_share: float = 0.5
    retry_budget: float = 0.2     # retries at most this share of requests
    retry_burst: float = 10.0     # tokens a quiet balancer may save up for a burst of retries
    check_interval: float = 0.0   # active checks (GET check_path) every this often; 0: off
    check_timeout: float = 1.0
    check_path: str = "/__health"
    rise: int = 2                 # passing checks in a row that bring a failed backend back
    fall: int = 3                 # failing checks in a row that take a backend out


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. `client_header`: from the first byte of a request head to its end (then 408).
    `client_body`: the longest wait for the next piece of a request body (then 408).
    `client_send`: the longest a client may take nothing of a response the balancer holds more
    of (then it is dropped). `grace`: on SIGTERM, keep serving this long first, /healthz 503
    and every response `Connection: close` (for a load balancer or Kubernetes to take the
    instance out); then drain. `tunnel_idle`: an upgraded connection (websocket) with no byte
    either way."""

    connect: float = 2.0
    backend_response: float = 30.0
    upstream_idle: float = 30.0
    client_idle: float = 75.0
    client_header: float = 10.0
    client_body: float = 10.0
    client_send: float = 30.0
    grace: float = 0.0
    drain: float = 15.0
    tunnel_idle: float = 3600.0


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    format: LogFormat = "text"
    path: str = "-"  # "-" is standard error, "stdout" standard output, else a file (appended)


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_size: int = 100 * 1024**2
    max_header_size: int = 16 * 1024
    max_uri_size: int = 8 * 1024
    max_headers: int = 100
    max_head_size: int = 64 * 1024  # the whole request head (line and headers) at most
    # bytes a second a streamed request body must keep up on average, after `client_body`
    # seconds of slack (0: no minimum); see balancer/http/body_rate.py
    min_body_rate: int = 500
    # open client connections per process at most (then new ones get 503 and are closed);
    # the I/O shell lowers it to 3/4 of the open-files limit (balancer/proxy/client.py).
    # Generous: tests/integration/test_hostile.py holds 10,000 idle ones, under 64 KiB each
    max_client_connections: int = 16_384


DEFAULT_INFLIGHT: dict[PoolKind | None, int] = {
    "async": 256,        # an event loop takes hundreds of waiting requests
    "threaded": 8,       # its thread count (the runner's default)
    "multiprocess": 2,   # its worker count (the runner's default)
    None: 64,
}


@dataclass(frozen=True, slots=True)
class Discover:
    """A pool backend entry `{discover: http://name:port}`: every address the name resolves
    to (A and AAAA) is a backend of its own, with this entry's weight."""

    name: str
    port: int
    weight: float = 1.0

    @property
    def key(self) -> str:
        """The name as resolved and shown: `name:port`."""
        return f"{self.name}:{self.port}"


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    interval: float = 5.0  # re-resolution; the record TTL when shorter (at least 1 s)
    timeout: float = 2.0   # one resolution (A and AAAA) of one name, every resolver tried


@dataclass(frozen=True, slots=True)
class PoolConfig:
    name: str
    backends: tuple[Address, ...]
    kind: PoolKind | None = None
    max_connections: int = 256
    max_idle: int = 64
    max_tunnels: int = 1024           # upgraded connections (websockets) per backend
    max_inflight: int | None = None
    spill_to: tuple[str, ...] = ()
    policy: Policy = "least_latency"
    weights: tuple[float, ...] = ()   # static weight per backend (default 1 each)
    discover: tuple[Discover, ...] = ()  # names whose addresses are backends too
    max_queue: int = 0                # requests that may wait for room (0: none; send anyway)
    queue_timeout: float = 5.0

    def weight_of(self, index: int) -> float:
        return self.weights[index] if self.weights else 1.0

    @property
    def inflight_cap(self) -> int:
        """Requests in flight per backend at which the backend counts as saturated."""
        return self.max_inflight or DEFAULT_INFLIGHT[self.kind]


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    listen: tuple[Address, ...]
    pools: tuple[PoolConfig, ...]
    admin: Address | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    trusted_proxies: tuple[IPNetwork, ...] = ()
    routing: RoutingConfig | None = None
    health: HealthPolicy = field(default_factory=HealthPolicy)
    access_log: AccessLogConfig | None = None
    admin_token: str | None = None
    admin_allowed_hosts: tuple[str, ...] = ()  # Host names the admin listener answers (no token)
    resolvers: tuple[tuple[str, int], ...] = ()  # DNS servers (ip, port); () = resolv.conf
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    watch: bool = True  # reload when the file's content changes
    digest: str = ""

    def pool(self, name: str) -> PoolConfig:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    @property
    def default_pool(self) -> PoolConfig:
        """The pool requests go to until routing picks one: `default`, else the first."""
        for pool in self.pools:
            if pool.name == "default":
                return pool
        return self.pools[0]


TOP_KEYS = ("listen", "admin", "pools", "timeouts", "limits", "trusted_proxies", "routing",
            "health", "access_log", "admin_token", "admin_token_file", "admin_allowed_hosts",
            "resolvers", "discovery", "watch")
SECRET_SUFFIX = "_file"  # `admin_token_file: /run/secrets/token` instead of `admin_token: ...`
POOL_KEYS = ("backends", "kind", "max_connections", "max_idle", "max_inflight", "spill_to",
             "policy", "max_queue", "queue_timeout", "max_tunnels")
BACKEND_KEYS = ("address", "discover", "weight")
