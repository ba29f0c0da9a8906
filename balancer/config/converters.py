"""Parsers of the config's single values: admin tokens, host names, paths, DNS resolvers,
networks, backend weights and discovery names, the listen/backend address parsers that also
refuse host names a resolver cannot take; and the tables that give each key of a flat section
(timeouts, limits, health, discovery, access_log, a pool's one-value keys) its parser.

Pure. Each takes a YAML scalar and returns the value or raises ValueError with a message that
names the accepted form (yamltree.Reader.convert records it, located). The generic ones
(numbers, ratios, choices) are in balancer/config/yamltree.py, durations and sizes in
balancer/config/units.py, address forms in balancer/config/addresses.py.
"""

import ipaddress
import re
from collections.abc import Callable

from balancer.config.addresses import Address, parse_backend, parse_listen
from balancer.config.model import LOG_FORMATS, POLICIES, POOL_KINDS, Discover, IPNetwork, Timeouts
from balancer.config.units import parse_duration, parse_rate, parse_size
from balancer.config.yamltree import Parsers, as_choice, as_int, as_number, as_ratio, as_str


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


def at_least(seconds: float, minimum: float, what: str) -> float:
    """A discovery duration with its floor."""
    if seconds < minimum:
        raise ValueError(f"a discovery {what} is at least {minimum:g}s")
    return seconds


def as_resolver(raw: object) -> tuple[str, int]:
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


def as_network(raw: object) -> IPNetwork:
    try:
        return ipaddress.ip_network(str(raw), strict=False)
    except ValueError:
        raise ValueError(f"{raw!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None


def as_weight(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= 1000:
        raise ValueError(f"{raw!r} is not a weight (a number above 0, at most 1000)")
    return float(raw)


def _resolvable(parse: Callable[[object], Address]) -> Callable[[object], Address]:
    """An address parser that also refuses a host the resolver cannot take (`.0.0.1`,
    `a..b`, control characters, an IPv6 zone such as `fe80::1%a..b`): getaddrinfo (socket's
    and uvloop's) IDNA-encodes every host, IP literals too, and would raise UnicodeError at
    bind or connect."""
    def checked(raw: object) -> Address:
        address = parse(raw)
        if address.kind == "tcp":
            try:
                address.host.encode("idna")
            except UnicodeError:
                raise ValueError(f"{address.host!r} is not a valid host name") from None
        return address
    return checked


listen_address = _resolvable(parse_listen)
backend_address = _resolvable(parse_backend)


def as_discover(raw: object) -> Discover:
    """`http://name:port`: a name whose addresses are backends (weight set by the caller)."""
    expected = "a name to discover (expected http://name:port)"
    if not isinstance(raw, str) or not raw.startswith("http://"):
        raise ValueError(f"{raw!r} is not {expected}")
    address = backend_address(raw)
    return Discover(address.host, address.port)


# How each key of a flat section reads (the keys are the dataclass's fields).
TIMEOUT_PARSERS: Parsers = {name: parse_duration for name in Timeouts.__dataclass_fields__}
LIMIT_PARSERS: Parsers = {
    "max_body_size": parse_size,
    "max_header_size": parse_size,
    "max_uri_size": parse_size,
    "max_headers": as_int(minimum=1),
    "max_head_size": parse_size,
    "min_body_rate": parse_rate,
    "max_client_connections": as_int(minimum=1),
}
HEALTH_PARSERS: Parsers = {
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
DISCOVERY_PARSERS: Parsers = {
    "interval": lambda raw: at_least(parse_duration(raw), 1.0, "interval"),
    "timeout": lambda raw: at_least(parse_duration(raw), 0.1, "timeout"),
}
ACCESS_LOG_PARSERS: Parsers = {
    "format": as_choice(LOG_FORMATS),
    "path": as_str,
}
# the keys of a pool that are one value each (backends and spill_to are lists)
POOL_PARSERS: Parsers = {
    "kind": as_choice(POOL_KINDS),
    "policy": as_choice(POLICIES),
    "max_queue": as_int(minimum=0),
    "queue_timeout": parse_duration,
    "max_connections": as_int(minimum=1),
    "max_idle": as_int(minimum=1),
    "max_inflight": as_int(minimum=1),
    "max_tunnels": as_int(minimum=1),
}
