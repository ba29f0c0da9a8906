"""DNS discovery's pure core (balancer.balancing.discovery), its config keys, and the runtime's
pools built from discovered addresses. Table-driven, synchronous, fake clock."""

import ipaddress
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balancer.balancing.discovery import Failed, NameState, Resolved, observe, wanted_names
from balancer.balancing.runtime import Runtime
from balancer.config.addresses import Address
from balancer.config.converters import as_resolver
from balancer.config.model import Discover, DiscoveryConfig
from balancer.config.parse import parse_config
from balancer.config.yamltree import ConfigError


def tcp(host: str, port: int = 8000) -> Address:
    return Address("tcp", host=host, port=port)


A2, A3, A4, V6 = tcp("127.0.0.2"), tcp("127.0.0.3"), tcp("127.0.0.4"), tcp("::1")
NEVER = NameState("async", 8000, next_at=0.0)
KNOWN = NameState("async", 8000, (A2, A3), next_at=5.0, resolved_at=0.0)


@pytest.mark.parametrize(
    ("state", "answer", "addresses", "added", "removed", "next_at"),
    [
        # first answer: every address joins; next resolution after the interval
        (NEVER, Resolved(("127.0.0.3", "127.0.0.2"), ttl=60), (A2, A3), (A2, A3), (), 110.0),
        # scale up: the new one joins; a TTL shorter than the interval wins
        (KNOWN, Resolved(("127.0.0.2", "127.0.0.3", "127.0.0.4"), ttl=3), (A2, A3, A4), (A4,),
         (), 103.0),
        # scale down: the gone one leaves; a TTL of 0 is bounded below by 1 s
        (KNOWN, Resolved(("127.0.0.2",), ttl=0), (A2,), (), (A3,), 101.0),
        # A and AAAA together, IPv4 first; duplicates (two records) count once
        (NEVER, Resolved(("::1", "127.0.0.2", "127.0.0.2"), ttl=10), (A2, V6), (A2, V6), (),
         110.0),
        # the same set: nothing joins or leaves
        (KNOWN, Resolved(("127.0.0.3", "127.0.0.2"), ttl=30), (A2, A3), (), (), 110.0),
    ],
)
def test_an_answer_with_addresses_replaces_the_set(
    state: NameState, answer: Resolved, addresses: tuple[Address, ...],
    added: tuple[Address, ...], removed: tuple[Address, ...], next_at: float,
) -> None:
    step = observe(state, answer, now=100.0, interval=10.0)
    assert step.state.addresses == addresses
    assert (step.added, step.removed, step.failed) == (added, removed, False)
    assert step.changed == bool(added or removed)
    assert step.state.next_at == next_at
    assert step.state.failures == 0 and step.state.resolved_at == 100.0


@pytest.mark.parametrize("answer", [Failed("no answer within 2s"), Resolved((), ttl=5),
                                    Failed("no such name (NXDOMAIN)")])
@pytest.mark.parametrize("state", [NEVER, KNOWN])
def test_a_failure_or_an_empty_answer_keeps_the_last_good_set(
    state: NameState, answer: Failed | Resolved,
) -> None:
    step = observe(state, answer, now=100.0, interval=10.0)
    assert step.failed and not step.changed
    assert step.state.addresses == state.addresses  # never emptied; None stays None
    assert step.state.failures == 1 and step.state.total_failures == 1
    assert step.state.last_error == (answer.reason if isinstance(answer, Failed)
                                     else "no A or AAAA record")


def test_failures_retry_sooner_backing_off_to_the_interval_then_an_answer_resets() -> None:
    state, waits = KNOWN, []
    for now in range(6):
        step = observe(state, Failed("down"), now=float(now), interval=5.0)
        state = step.state
        waits.append(state.next_at - now)
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert state.total_failures == 6 and state.addresses == (A2, A3)
    state = observe(state, Resolved(("127.0.0.2",), ttl=60), now=10.0, interval=5.0).state
    assert (state.failures, state.total_failures, state.addresses) == (0, 6, (A2,))


def test_a_reload_keeps_known_names_with_their_addresses_and_adds_new_ones_due_now() -> None:
    states = wanted_names([("async", 8000), ("threaded", 9000)], {"async:8000": KNOWN,
                                                                  "gone:1": NEVER}, now=42.0)
    assert list(states) == ["async:8000", "threaded:9000"]
    assert states["async:8000"] is KNOWN
    assert states["threaded:9000"] == NameState("threaded", 9000, next_at=42.0)


# -- config -----------------------------------------------------------------------------------

CONFIG = """\
listen: 127.0.0.1:0
resolvers: [127.0.0.11:53, "[::1]:5353", 10.0.0.1]
discovery: {interval: 2s}
pools:
  default:
    backends:
      - http://127.0.0.1:9000
      - {discover: http://async:8000, weight: 2}
      - {discover: http://other:8000}
"""


def test_the_contract_spellings_parse() -> None:
    config = parse_config(CONFIG)
    assert config.resolvers == (("127.0.0.11", 53), ("::1", 5353), ("10.0.0.1", 53))
    assert config.discovery == DiscoveryConfig(interval=2.0)
    assert config.watch is True
    pool = config.pools[0]
    assert pool.backends == (tcp("127.0.0.1", 9000),)
    assert pool.discover == (Discover("async", 8000, 2.0), Discover("other", 8000))
    defaults = parse_config("listen: 1\npools: {d: {backends: [{discover: http://a:1}]}}\n")
    assert defaults.resolvers == () and defaults.discovery == DiscoveryConfig(interval=5.0)


@pytest.mark.parametrize(("entry", "message"), [
    ("- {discover: unix:/x}", "5:20: pools.d.backends[0].discover: 'unix:/x' is not a name "
     "to discover (expected http://name:port)"),
    ("- {discover: http://a:1, address: http://b:2}", "5:9: pools.d.backends[0]: a backend "
     "has either 'address' or 'discover', not both"),
    ("- {weight: 2}", "5:9: pools.d.backends[0]: missing required key 'address' (or "
     "'discover': a DNS name whose addresses are the backends)"),
    ("- {discover: http://a:1}\n      - {discover: http://a:1}", "6:9: pools.d.backends[1]: "
     "a:1 is discovered twice in this pool"),
])
def test_bad_discover_entries_are_located(entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"listen: 1\npools:\n  d:\n    backends:\n      {entry}\n", "f.yaml")
    assert [str(p) for p in caught.value.problems] == [f"f.yaml:{message}"]


@pytest.mark.parametrize(("top", "message"), [
    ("resolvers: [dns.local:53]", "1:13: resolvers[0]: 'dns.local:53' is not a DNS server "
     "(expected ip:port, e.g. 127.0.0.11:53): a resolver is an IP address"),
    ("resolvers: [127.0.0.1:0]", "1:13: resolvers[0]: '127.0.0.1:0': port 0 is out of range "
     "(1-65535)"),
    ("discovery: {interval: 100ms}", "1:23: discovery.interval: a discovery interval is at "
     "least 1s"),
    ("discovery: {intervl: 1s}", "1:13: discovery.intervl: unknown key 'intervl' (did you "
     "mean 'interval'? expected one of: interval, timeout)"),
    ("watch: sometimes", "1:8: watch: 'sometimes' is not true or false"),
])
def test_bad_top_level_discovery_keys_are_located(top: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"{top}\nlisten: 1\npools: {{d: {{backends: [http://a:1]}}}}\n", "f.yaml")
    assert [str(p) for p in caught.value.problems] == [f"f.yaml:{message}"]


# -- the runtime's pools ------------------------------------------------------------------------

def test_every_discovered_address_is_a_backend_of_its_own_with_the_entry_weight() -> None:
    runtime = Runtime(parse_config(CONFIG), 1, random.Random(1))
    pool = runtime.pools["default"]
    assert pool.backends == (tcp("127.0.0.1", 9000),)
    assert pool.unresolved == ("async:8000", "other:8000")
    runtime = runtime.rediscovered({"async:8000": (A2, A3), "gone:1": (A4,)})
    pool = runtime.pools["default"]
    assert pool.backends == (tcp("127.0.0.1", 9000), A2, A3)
    assert pool.static_weight == {tcp("127.0.0.1", 9000): 1.0, A2: 2.0, A3: 2.0}
    assert pool.unresolved == ("other:8000",)
    assert runtime.generation == 1
    assert set(runtime.backend_pools()) == {tcp("127.0.0.1", 9000), A2, A3}


def test_a_pool_whose_names_never_resolved_has_no_backend_and_names_them() -> None:
    config = parse_config("listen: 1\npools: {d: {backends: [{discover: http://a:1}]}}\n")
    pool = Runtime(config, 1, random.Random(1)).pools["d"]
    assert pool.backends == () and pool.unresolved == ("a:1",)


@given(st.one_of(st.text(max_size=40), st.integers(), st.none(),
                 st.builds(lambda ip, port: f"{ip}:{port}", st.ip_addresses(v=4).map(str),
                           st.integers(-5, 70000)),
                 st.builds(lambda ip, port: f"[{ip}]:{port}", st.ip_addresses(v=6).map(str),
                           st.integers(-5, 70000))))
def test_any_resolver_entry_parses_to_an_ip_and_port_or_says_why(raw: object) -> None:
    try:
        host, port = as_resolver(raw)
    except ValueError as exc:
        assert "DNS server" in str(exc) or "port" in str(exc)
        return
    assert ipaddress.ip_address(host) and 0 < port <= 65535


# -- mutation testing, after merging round 3 (bench/results/mutation.md) ---------------------

def test_a_step_keeps_the_name_port_last_error_and_resolved_at_it_does_not_change() -> None:
    failed = observe(KNOWN, Failed("timeout"), 10.0, 30.0).state
    assert (failed.name, failed.port, failed.resolved_at, failed.last_error) == (
        "async", 8000, 0.0, "timeout")
    ok = observe(failed, Resolved(("10.0.0.9",), 60.0), 20.0, 30.0).state
    assert (ok.name, ok.port, ok.resolved_at, ok.last_error) == ("async", 8000, 20.0, "timeout")


def test_ipv4_addresses_come_before_ipv6_ones_whatever_their_text() -> None:
    step = observe(NEVER, Resolved(("2001:db8::1", "30.0.0.1", "2001:db8::2"), 60.0), 0.0, 30.0)
    assert [a.host for a in step.state.addresses or ()] == ["30.0.0.1", "2001:db8::1",
                                                            "2001:db8::2"]
    gone = observe(step.state, Resolved(("40.0.0.1",), 60.0), 1.0, 30.0)
    assert [a.host for a in gone.removed] == ["30.0.0.1", "2001:db8::1", "2001:db8::2"]
