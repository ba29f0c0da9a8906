"""Every parser table the config is read with names fields of the dataclass built from it.

`Reader.fields`/`Reader.section` build a dataclass from `{key: parser}` tables with the
values typed Any, so mypy cannot see a key that is not a field: this test does.
"""

import dataclasses
from collections.abc import Callable

import pytest

from balancer.config.addresses import Address, parse_backend, parse_listen
from balancer.config.converters import (
    ACCESS_LOG_PARSERS,
    DISCOVERY_PARSERS,
    HEALTH_PARSERS,
    LIMIT_PARSERS,
    POOL_PARSERS,
    TIMEOUT_PARSERS,
    _resolvable,
    as_host_name,
    as_resolver,
    at_least,
    backend_address,
    listen_address,
)
from balancer.config.model import (
    AccessLogConfig,
    DiscoveryConfig,
    HealthPolicy,
    Limits,
    PoolConfig,
    Timeouts,
)
from balancer.config.routing import (
    LEARNING_PARSERS,
    ROUTING_PARSERS,
    RULE_PARSERS,
    Learning,
    RoutingConfig,
    Rule,
)
from balancer.config.yamltree import Parsers

TABLES: list[tuple[str, Parsers, Callable[..., object]]] = [
    ("timeouts", TIMEOUT_PARSERS, Timeouts),
    ("limits", LIMIT_PARSERS, Limits),
    ("health", HEALTH_PARSERS, HealthPolicy),
    ("discovery", DISCOVERY_PARSERS, DiscoveryConfig),
    ("access_log", ACCESS_LOG_PARSERS, AccessLogConfig),
    ("pools.*", POOL_PARSERS, PoolConfig),
    ("routing", ROUTING_PARSERS, RoutingConfig),
    ("routing.rules[]", RULE_PARSERS, Rule),
    ("routing.learning", LEARNING_PARSERS, Learning),
]


@pytest.mark.parametrize(("where", "parsers", "cls"), TABLES, ids=[t[0] for t in TABLES])
def test_every_key_of_a_parser_table_is_a_field(
    where: str, parsers: Parsers, cls: Callable[..., object]
) -> None:
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    assert set(parsers) <= fields, f"{where}: {set(parsers) - fields} are not fields"


# -- the single-value parsers (mutation run after the redesign, bench/results/mutation.md) ------

DNS = "is not a DNS server (expected ip:port, e.g. 127.0.0.11:53)"


@pytest.mark.parametrize(("raw", "resolver"), [
    ("127.0.0.11:53", ("127.0.0.11", 53)),
    ("10.0.0.2", ("10.0.0.2", 53)),         # no port: 53
    ("[::1]:5353", ("::1", 5353)),          # a resolver written as [::1]:5353 is that pair
    ("[::1]", ("::1", 53)),
    ("fd00::53", ("fd00::53", 53)),         # bare IPv6: its colons are not a port
    ("127.0.0.1:1", ("127.0.0.1", 1)),      # the port range's ends are ports
    ("[::1]:65535", ("::1", 65535)),
])
def test_a_resolver_is_an_ip_address_and_a_port_53_by_default(
        raw: str, resolver: tuple[str, int]) -> None:
    assert as_resolver(raw) == resolver


@pytest.mark.parametrize(("raw", "message"), [
    ("[::1]x53", f"'[::1]x53' {DNS}"),       # after the bracket only :port
    ("[::1]:x5", f"'[::1]:x5' {DNS}"),
    ("[::1]]:53", f"'[::1]]:53' {DNS}"),
    ("127.0.0.1:x", f"'127.0.0.1:x' {DNS}"),
    (53, f"53 {DNS}"),
    ("dns.local", f"'dns.local' {DNS}: a resolver is an IP address"),
    ("127.0.0.1:65536", "'127.0.0.1:65536': port 65536 is out of range (1-65535)"),
    ("[::1]:0", "'[::1]:0': port 0 is out of range (1-65535)"),
])
def test_a_bad_resolver_says_which_form_is_expected(raw: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        as_resolver(raw)
    assert str(info.value) == message


@pytest.mark.parametrize("parse", [parse_listen, parse_backend])
def test_an_address_whose_host_name_a_resolver_cannot_take_is_refused(
        parse: Callable[[object], Address]) -> None:
    # the wrapper is built here, not only at import, so that mutation testing reaches it
    for checked in (_resolvable(parse), listen_address if parse is parse_listen
                    else backend_address):
        scheme = "" if parse is parse_listen else "http://"
        for host in ("localhost", "127.0.0.1", "bü.example", "[::1]"):
            assert checked(f"{scheme}{host}:80") == parse(f"{scheme}{host}:80")
        assert checked("unix:/run/b.sock") == Address("unix", path="/run/b.sock")
        with pytest.raises(ValueError) as info:
            checked(f"{scheme}a..b:80")
        assert str(info.value) == "'a..b' is not a valid host name"


@pytest.mark.parametrize(("raw", "name"), [
    ("balancer.internal", "balancer.internal"),
    ("Balancer.Internal", "balancer.internal"),  # host names compare without case
    ("10.0.0.1", "10.0.0.1"),
])
def test_an_allowed_host_is_a_host_name_in_lower_case(raw: str, name: str) -> None:
    assert as_host_name(raw) == name


@pytest.mark.parametrize("raw", ["host:80", "a..b", "-a", "", 80, None])
def test_a_bad_allowed_host_says_what_a_host_name_is(raw: object) -> None:
    with pytest.raises(ValueError) as info:
        as_host_name(raw)
    assert str(info.value) == f"{raw!r} is not a host name (e.g. balancer.internal, no port)"


def test_a_discovery_duration_at_its_floor_is_allowed() -> None:
    assert at_least(1.0, 1.0, "interval") == 1.0
    with pytest.raises(ValueError, match=r"^a discovery interval is at least 1s$"):
        at_least(0.999, 1.0, "interval")


@pytest.mark.parametrize("checked", [listen_address, _resolvable(parse_listen)])
def test_an_ipv6_address_whose_zone_a_resolver_cannot_take_is_refused(
        checked: Callable[[object], Address]) -> None:
    # getaddrinfo IDNA-encodes the host: `fe80::1%a..b` raised UnicodeError at bind
    assert checked("[fe80::1%eth0]:80") == Address("tcp", host="fe80::1%eth0", port=80)
    with pytest.raises(ValueError) as info:
        checked("[fe80::1%a..b]:80")
    assert str(info.value) == "'fe80::1%a..b' is not a valid host name"
