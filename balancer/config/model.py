"""The balancer's YAML config as frozen dataclasses.

Pure: `parse_config(text, file)` returns a `Config` or raises `ConfigError` listing every
problem found, each as `file:line:col: key.path: message`. Unknown keys are errors (with a
did-you-mean hint). Durations read as `250ms`/`2s`/`1m`, sizes as `16KiB`/`10MiB`.
Values may use `${VAR}`/`${VAR:-default}` from the `env` given (balancer/config/substitution.py),
and a secret key `K` may instead be `K_file: path`, read with the `read_secret` given (the
file's content without its trailing newline), so a container's YAML holds no secret.
`balancer.ops.config_file.load_config` is the I/O shell: it passes the process environment
and reads secret files relative to the config file's directory. balancer/config/schema.py
derives the JSON Schema from the key lists and parsers here: a key added here without a schema
fails its test.
"""

import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import yaml

from balancer.balancing.health import HealthPolicy
from balancer.config.addresses import Address, parse_backend, parse_listen
from balancer.config.routing import RoutingConfig, read_routing
from balancer.config.substitution import substitute
from balancer.config.units import parse_duration, parse_size
from balancer.config.yamltree import (
    ConfigError,
    Problem,
    Reader,
    as_bool,
    as_choice,
    as_int,
    as_number,
    as_ratio,
    as_str,
    compose,
    join,
)

PoolKind = Literal["async", "threaded", "multiprocess"]
Policy = Literal["least_latency", "weighted_least_request", "least_request", "round_robin"]
POLICIES: tuple[Policy, ...] = ("least_latency", "weighted_least_request", "least_request",
                                "round_robin")
POOL_KINDS: tuple[PoolKind, ...] = ("async", "threaded", "multiprocess")

LogFormat = Literal["text", "combined", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "combined", "json")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 2.0
    backend_response: float = 30.0
    upstream_idle: float = 30.0
    client_idle: float = 75.0
    client_header: float = 10.0  # from the first byte of a request head to its end (then 408)
    client_body: float = 10.0    # longest wait for the next piece of a request body (then 408)
    client_send: float = 30.0    # longest a client may take nothing of a response the
                                 # balancer holds more of (then it is dropped)
    grace: float = 0.0           # SIGTERM: keep serving this long first, /healthz 503 and
                                 # every response `Connection: close` (for a load balancer
                                 # or Kubernetes to take the instance out); then drain
    drain: float = 15.0
    tunnel_idle: float = 3600.0  # an upgraded connection (websocket) with no byte either way


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
POOL_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # an RFC 9110 token: header-safe
BACKEND_KEYS = ("address", "discover", "weight")


def _no_secret_files(name: str) -> str:
    raise OSError(0, "secret files are not read here (load_config reads them)")


def parse_config(
    text: str, file: str = "<config>", *, env: Mapping[str, str] | None = None,
    read_secret: Callable[[str], str] = _no_secret_files,
) -> Config:
    root = compose(text, file)
    reader = Reader(file)
    if root is None:
        raise ConfigError([_empty_problem(file)])
    for node, problem in substitute(root, env or {}, file):
        reader.reject(node, problem)
    entries = reader.mapping(root, "", TOP_KEYS, required=("listen", "pools"))
    if entries is None:
        raise ConfigError(reader.problems)

    listen = _listen(reader, entries.get("listen"))
    admin = None
    if "admin" in entries and not _is_null(entries["admin"]):
        admin = reader.convert(entries["admin"], "admin", _listen_address)
    pools = _pools(reader, entries.get("pools"))
    timeouts = _section(reader, entries.get("timeouts"), "timeouts", Timeouts, TIMEOUT_PARSERS)
    limits = _section(reader, entries.get("limits"), "limits", Limits, LIMIT_PARSERS)
    health = _section(reader, entries.get("health"), "health", HealthPolicy, HEALTH_PARSERS)
    trusted = _trusted(reader, entries.get("trusted_proxies"))
    admin_token = _secret(reader, entries, "admin_token", as_token, read_secret)
    allowed_hosts: tuple[str, ...] = ()
    if "admin_allowed_hosts" in entries:
        allowed_hosts = _each(reader, entries["admin_allowed_hosts"], "admin_allowed_hosts",
                              as_host_name, allow_scalar=False)
    access_log = None
    if "access_log" in entries and not _is_null(entries["access_log"]):
        access_log = _section(reader, entries["access_log"], "access_log", AccessLogConfig,
                              ACCESS_LOG_PARSERS)
    resolvers = _resolvers(reader, entries.get("resolvers"))
    discovery = _section(reader, entries.get("discovery"), "discovery", DiscoveryConfig,
                         DISCOVERY_PARSERS)
    watch = True
    if "watch" in entries:
        watch = reader.convert(entries["watch"], "watch", as_bool) is not False
    names = {pool.name for pool in pools}
    _check_spill(reader, entries.get("pools"), pools, names)
    routing = None
    if "routing" in entries:
        routing = read_routing(reader, entries["routing"], names)

    if admin is not None and admin in listen and not (admin.kind == "tcp" and admin.port == 0):
        reader.fail(entries["admin"], "admin", f"{admin} is also a public listener")
    if reader.problems:
        raise ConfigError(reader.problems)
    return Config(
        source=file,
        listen=listen,
        pools=pools,
        admin=admin,
        timeouts=timeouts,
        limits=limits,
        trusted_proxies=trusted,
        routing=routing,
        health=health,
        access_log=access_log,
        admin_token=admin_token,
        admin_allowed_hosts=allowed_hosts,
        resolvers=resolvers,
        discovery=discovery,
        watch=watch,
        digest=hashlib.sha256(text.encode()).hexdigest()[:12],
    )


def _secret[T](
    reader: Reader, entries: dict[str, yaml.Node], key: str, parse: Callable[[object], T],
    read_secret: Callable[[str], str],
) -> T | None:
    """`key: value`, or `key_file: path` whose content is the value (never echoed in errors)."""
    file_key = key + SECRET_SUFFIX
    present = [k for k in (key, file_key) if k in entries and not _is_null(entries[k])]
    if present == [key]:
        return reader.convert(entries[key], key, parse)
    if not present:
        return None
    node = entries[file_key]
    if len(present) == 2:
        reader.fail(node, file_key, f"set {key} or {file_key}, not both")
        return None
    name = reader.convert(node, file_key, as_str)
    if name is None:
        return None
    try:
        value = read_secret(name).rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        reader.fail(node, file_key, f"cannot read {name}: {reason}")
        return None
    try:
        return parse(value)
    except ValueError as exc:
        reader.fail(node, file_key, f"the content of {name}: {exc}")
        return None


def _empty_problem(file: str) -> Problem:
    return Problem(file, 1, 1, "", "the file is empty (expected at least 'listen' and 'pools')")


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def _listen(reader: Reader, node: yaml.Node | None) -> tuple[Address, ...]:
    if node is None:
        return ()
    seen: dict[Address, int] = {}
    items = reader.sequence(node, "listen", allow_scalar=True)
    if not items:
        reader.fail(node, "listen", "at least one listen address is required")
    for index, item in enumerate(items):
        path = "listen" if isinstance(node, yaml.ScalarNode) else join("listen", index)
        address = reader.convert(item, path, _listen_address)
        if address is None:
            continue
        if address in seen and not (address.kind == "tcp" and address.port == 0):
            reader.fail(item, path, f"{address} is listed twice")
        seen[address] = index
    return tuple(seen)


def _pools(reader: Reader, node: yaml.Node | None) -> tuple[PoolConfig, ...]:
    if node is None:
        return ()
    entries = reader.mapping(node, "pools")
    if entries is None:
        return ()
    if not entries:
        reader.fail(node, "pools", "at least one pool is required")
    pools = []
    for name, pool_node in entries.items():
        if not POOL_NAME.fullmatch(name):
            reader.fail(pool_node, join("pools", name), "a pool name must be letters, digits "
                        "and !#$%&'*+.^_`|~- only (it is sent in headers)")
            continue
        pool = _pool(reader, name, pool_node)
        if pool is not None:
            pools.append(pool)
    return tuple(pools)


def _pool(reader: Reader, name: str, node: yaml.Node) -> PoolConfig | None:
    path = join("pools", name)
    entries = reader.mapping(node, path, POOL_KEYS, required=("backends",))
    if entries is None:
        return None
    backends: list[Address] = []
    weights: list[float] = []
    discover: list[Discover] = []
    if "backends" in entries:
        items = reader.sequence(entries["backends"], join(path, "backends"))
        if not items and isinstance(entries["backends"], yaml.SequenceNode):
            reader.fail(entries["backends"], join(path, "backends"), "a pool needs a backend")
        for index, item in enumerate(items):
            item_path = join(join(path, "backends"), index)
            address, weight = _backend(reader, item, item_path)
            if isinstance(address, Discover):
                if any(d.key == address.key for d in discover):
                    reader.fail(item, item_path, f"{address.key} is discovered twice in this "
                                                 "pool")
                else:
                    discover.append(address)
                continue
            if address is None:
                continue
            if address in backends:
                reader.fail(item, item_path, f"{address} is listed twice in this pool")
                continue
            backends.append(address)
            weights.append(weight)
    kind = None
    if "kind" in entries:
        kind = reader.convert(entries["kind"], join(path, "kind"), as_choice(POOL_KINDS))
    options: dict[str, object] = {}
    if any(weight != 1.0 for weight in weights):
        options["weights"] = tuple(weights)
    if discover:
        options["discover"] = tuple(discover)
    if "policy" in entries:
        policy = reader.convert(entries["policy"], join(path, "policy"), as_choice(POLICIES))
        if policy is not None:
            options["policy"] = policy
    if "spill_to" in entries:
        spill_path = join(path, "spill_to")
        items = reader.sequence(entries["spill_to"], spill_path, allow_scalar=True)
        targets = [reader.convert(item, join(spill_path, i), as_str)
                   for i, item in enumerate(items)]
        options["spill_to"] = tuple(t for t in targets if t is not None)
    if "max_queue" in entries:
        options["max_queue"] = reader.convert(entries["max_queue"], join(path, "max_queue"),
                                              as_int(minimum=0))
    if "queue_timeout" in entries:
        options["queue_timeout"] = reader.convert(entries["queue_timeout"],
                                                  join(path, "queue_timeout"), parse_duration)
    options = {k: v for k, v in options.items() if v is not None}
    for key in ("max_connections", "max_idle", "max_inflight", "max_tunnels"):
        if key in entries:
            value = reader.convert(entries[key], join(path, key), as_int(minimum=1))
            if value is not None:
                options[key] = value
    return PoolConfig(name=name, backends=tuple(backends), kind=kind, **options)  # type: ignore[arg-type]


def _section[S](
    reader: Reader, node: yaml.Node | None, path: str, cls: type[S],
    parsers: dict[str, Callable[[object], object]],
) -> S:
    """A flat section: each key is a dataclass field, read with its own parser."""
    if node is None:
        return cls()
    values = {}
    for key, value_node in (reader.mapping(node, path, parsers) or {}).items():
        value = reader.convert(value_node, join(path, key), parsers[key])
        if value is not None:
            values[key] = value
    return cls(**values)


TIMEOUT_PARSERS: dict[str, Callable[[object], object]] = {
    name: parse_duration for name in Timeouts.__dataclass_fields__
}

def as_token(raw: object) -> str:
    """An admin bearer token: at least 16 printable characters, no spaces."""
    if not isinstance(raw, str) or len(raw) < 16 or not raw.isprintable() or " " in raw:
        raise ValueError("an admin token must be a string of at least 16 printable characters "
                         "without spaces")
    return raw


_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*", re.IGNORECASE)


def as_host_name(raw: object) -> str:
    """A host name (or IPv4 address) as a Host header names it, without a port."""
    if not isinstance(raw, str) or not _HOST_NAME.fullmatch(raw):
        raise ValueError(f"{raw!r} is not a host name (e.g. balancer.internal, no port)")
    return raw.lower()


def as_path(raw: object) -> str:
    if not isinstance(raw, str) or not raw.startswith("/") or any(c in raw for c in " \r\n"):
        raise ValueError(f"{raw!r} is not a request path (e.g. /__health)")
    return raw


HEALTH_PARSERS: dict[str, Callable[[object], object]] = {
    "consecutive_failures": as_int(minimum=1),
    "ejection": parse_duration,
    "max_ejection": parse_duration,
    "max_ejected_share": as_ratio,
    "retry_budget": as_ratio,
    "retry_burst": as_number(1),
    "check_interval": parse_duration,
    "check_timeout": parse_duration,
    "check_path": as_path,
    "rise": as_int(minimum=1),
    "fall": as_int(minimum=1),
}
DISCOVERY_PARSERS: dict[str, Callable[[object], object]] = {
    "interval": lambda raw: _at_least(parse_duration(raw), 1.0, "interval"),
    "timeout": lambda raw: _at_least(parse_duration(raw), 0.1, "timeout"),
}


def _at_least(seconds: float, minimum: float, what: str) -> float:
    if seconds < minimum:
        raise ValueError(f"a discovery {what} is at least {minimum:g}s")
    return seconds


ACCESS_LOG_PARSERS: dict[str, Callable[[object], object]] = {
    "format": as_choice(LOG_FORMATS),
    "path": as_str,
}
LIMIT_PARSERS: dict[str, Callable[[object], object]] = {
    "max_body_size": parse_size,
    "max_header_size": parse_size,
    "max_uri_size": parse_size,
    "max_headers": as_int(minimum=1),
    "max_head_size": parse_size,
}


def _trusted(reader: Reader, node: yaml.Node | None) -> tuple[IPNetwork, ...]:
    return () if node is None else _each(reader, node, "trusted_proxies", _network)


def _each[T](reader: Reader, node: yaml.Node, key: str, convert: Callable[[object], T],
             allow_scalar: bool = True) -> tuple[T, ...]:
    """A list (or one scalar) of `key`, each item converted; the bad ones are located."""
    found = []
    for index, item in enumerate(reader.sequence(node, key, allow_scalar=allow_scalar)):
        value = reader.convert(item, join(key, index), convert)
        if value is not None:
            found.append(value)
    return tuple(found)


def _backend(
    reader: Reader, node: yaml.Node, path: str
) -> tuple[Address | Discover | None, float]:
    """`http://host:port`, `{address: http://host:port, weight: 2}` or
    `{discover: http://name:port, weight: 2}` (the weight then goes in the Discover)."""
    if not isinstance(node, yaml.MappingNode):
        return reader.convert(node, path, _backend_address), 1.0
    entries = reader.mapping(node, path, BACKEND_KEYS) or {}
    weight = 1.0
    if "weight" in entries:
        weight = reader.convert(entries["weight"], join(path, "weight"), _weight) or 1.0
    if "address" in entries and "discover" in entries:
        reader.fail(node, path, "a backend has either 'address' or 'discover', not both")
        return None, weight
    if "discover" in entries:
        discover = reader.convert(entries["discover"], join(path, "discover"), _discover)
        return (Discover(discover.name, discover.port, weight) if discover else None), weight
    if "address" not in entries:
        reader.fail(node, path, "missing required key 'address' (or 'discover': a DNS name "
                                "whose addresses are the backends)")
        return None, weight
    return reader.convert(entries["address"], join(path, "address"), _backend_address), weight


def _discover(raw: object) -> Discover:
    expected = "a name to discover (expected http://name:port)"
    if not isinstance(raw, str) or not raw.startswith("http://"):
        raise ValueError(f"{raw!r} is not {expected}")
    address = _backend_address(raw)
    return Discover(address.host, address.port)


def _resolvers(reader: Reader, node: yaml.Node | None) -> tuple[tuple[str, int], ...]:
    if node is None or _is_null(node):
        return ()
    return _each(reader, node, "resolvers", _resolver)


def _resolver(raw: object) -> tuple[str, int]:
    """`ip:port` or `ip` (port 53); `[v6]:port` for IPv6."""
    expected = "a DNS server (expected ip:port, e.g. 127.0.0.11:53)"
    if not isinstance(raw, str):
        raise ValueError(f"{raw!r} is not {expected}")
    text, port = raw, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        text = host
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"{raw!r} is not {expected}")
            port = int(rest[1:])
    elif text.count(":") == 1:
        text, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"{raw!r} is not {expected}")
        port = int(port_text)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{raw!r} is not {expected}: a resolver is an IP address") from None
    if not 0 < port <= 65535:
        raise ValueError(f"{raw!r}: port {port} is out of range (1-65535)")
    return text, port


def _resolvable(parse: Callable[[object], Address]) -> Callable[[object], Address]:
    """An address parser that also refuses a host name the resolver cannot take (`.0.0.1`,
    `a..b`, control characters): getaddrinfo would raise UnicodeError at bind or connect."""
    def checked(raw: object) -> Address:
        address = parse(raw)
        if address.kind == "tcp":
            try:
                ipaddress.ip_address(address.host)
            except ValueError:
                try:
                    address.host.encode("idna")
                except UnicodeError:
                    raise ValueError(f"{address.host!r} is not a valid host name") from None
        return address
    return checked


_listen_address = _resolvable(parse_listen)
_backend_address = _resolvable(parse_backend)


def _weight(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= 1000:
        raise ValueError(f"{raw!r} is not a weight (a number above 0, at most 1000)")
    return float(raw)


def _check_spill(
    reader: Reader, node: yaml.Node | None, pools: tuple[PoolConfig, ...], names: set[str]
) -> None:
    """Every spill_to names another defined pool (located at the offending item)."""
    if node is None or not isinstance(node, yaml.MappingNode):
        return
    nodes = {key.value: value for key, value in node.value}
    for pool in pools:
        pool_node = nodes.get(pool.name)
        if not isinstance(pool_node, yaml.MappingNode):
            continue
        spill_node = next((v for k, v in pool_node.value if k.value == "spill_to"), None)
        if spill_node is None:
            continue
        items = spill_node.value if isinstance(spill_node, yaml.SequenceNode) else [spill_node]
        for index, target in enumerate(pool.spill_to):
            path = join(join(join("pools", pool.name), "spill_to"), index)
            if target == pool.name:
                reader.fail(items[index], path, "a pool cannot spill to itself")
            elif target not in names:
                reader.fail(items[index], path, f"no pool named '{target}' "
                                                f"(defined: {', '.join(sorted(names))})")


def _network(raw: object) -> IPNetwork:
    try:
        return ipaddress.ip_network(str(raw), strict=False)
    except ValueError:
        raise ValueError(f"{raw!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
