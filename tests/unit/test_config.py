"""Config parsing: the minimal file, defaults, and located errors (all of them, not the first)."""

import textwrap
from pathlib import Path

import pytest

from balancer.config.addresses import Address, parse_backend, parse_listen
from balancer.config.parse import parse_config
from balancer.config.units import parse_duration, parse_size
from balancer.config.yamltree import ConfigError
from balancer.ops.config_file import load_config

MINIMAL = """\
listen: 127.0.0.1:8080
admin: 127.0.0.1:9901
pools:
  default:
    backends:
      - http://127.0.0.1:8101
      - unix:/tmp/echonext-8102.sock
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "config/balancer.yaml")
    return [str(p) for p in info.value.problems]


def test_minimal_file_is_accepted_as_it_is() -> None:
    config = parse_config(MINIMAL, "config/balancer.yaml")
    assert config.listen == (Address("tcp", host="127.0.0.1", port=8080),)
    assert config.admin == Address("tcp", host="127.0.0.1", port=9901)
    assert config.default_pool.name == "default"
    assert config.default_pool.backends == (
        Address("tcp", host="127.0.0.1", port=8101),
        Address("unix", path="/tmp/echonext-8102.sock"),
    )
    assert config.timeouts.connect == 2.0
    assert config.limits.max_body_size == 100 * 1024**2
    assert len(config.digest) == 12


ROUTING_EXAMPLE = """\
listen: 127.0.0.1:8080
admin: 127.0.0.1:9901
pools:
  io:    {kind: async,        backends: [http://127.0.0.1:8101]}
  light: {kind: threaded,     backends: [http://127.0.0.1:8201]}
  heavy: {kind: multiprocess, backends: [http://127.0.0.1:8301]}
routing:
  cpu_threshold: 100ms      # expected CPU per request at or above which a request is heavy_cpu
  io_threshold: 0.5         # share of wall time spent waiting at or above which it is io
  classes: {io: io, light_cpu: light, heavy_cpu: heavy}
  default_class: light_cpu
  explain: true
  rules:
    - {path: "/api/**", class: io}
    - {path: "/render/**", class: light_cpu}
    - {path: "/process/**", methods: [POST], class: heavy_cpu}
"""


def test_the_routing_example_is_accepted_as_it_is() -> None:
    config = parse_config(ROUTING_EXAMPLE, "config/balancer.yaml")
    routing = config.routing
    assert routing is not None
    assert routing.cpu_threshold_ms == 100 and routing.io_threshold == 0.5 and routing.explain
    assert routing.pool_for("heavy_cpu") == "heavy" and routing.default_class == "light_cpu"
    assert [(r.path, r.methods, r.request_class) for r in routing.rules] == [
        ("/api/**", (), "io"), ("/render/**", (), "light_cpu"),
        ("/process/**", ("POST",), "heavy_cpu")]
    assert config.pool("heavy").inflight_cap == 2 and config.pool("io").inflight_cap == 256


def test_full_file_with_every_section() -> None:
    config = parse_config(textwrap.dedent("""\
        listen: [127.0.0.1:8080, "unix:/tmp/lb.sock"]
        admin: 127.0.0.1:9901
        timeouts: {connect: 250ms, backend_response: 2s, upstream_idle: 1m,
                   client_idle: 30s, client_header: 5s, drain: 10s}
        limits: {max_body_size: 10MiB, max_header_size: 8KiB, max_uri_size: 4KiB, max_headers: 50}
        trusted_proxies: [10.0.0.0/8, 127.0.0.1]
        pools:
          io: {kind: async, backends: [http://127.0.0.1:8101], max_connections: 10, max_idle: 5}
          heavy: {kind: multiprocess, backends: [http://127.0.0.1:8301]}
        """))
    assert [a.key for a in config.listen] == ["127.0.0.1:8080", "unix:/tmp/lb.sock"]
    assert config.timeouts.connect == 0.25 and config.timeouts.upstream_idle == 60
    assert config.limits.max_body_size == 10 * 1024**2 and config.limits.max_headers == 50
    assert config.pool("io").max_connections == 10 and config.pool("io").kind == "async"
    assert config.default_pool.name == "io"  # no pool named default: the first one
    assert len(config.trusted_proxies) == 2


def test_the_issue_example_error_is_located_exactly() -> None:
    found = problems("""\
        listen: 127.0.0.1:8080
        pools:
          heavy:
            backends:
              - http://127.0.0.1:8301
              - http//x
        """)
    assert found == [
        "config/balancer.yaml:6:9: pools.heavy.backends[1]: 'http//x' is not a backend address "
        "(expected http://host:port or unix:/path)"
    ]


def test_every_problem_is_reported_together_with_its_line_and_column() -> None:
    found = problems("""\
        listen: 127.0.0.1:80800
        admn: 127.0.0.1:9901
        timeouts:
          conect: 2s
          drain: soon
        limits:
          max_body_size: lots
        pools:
          web:
            backends: [http://127.0.0.1:1, http://127.0.0.1:1]
            kind: fastest
            max_connections: -1
          empty:
            backends: []
        """)
    assert found == [
        "config/balancer.yaml:1:9: listen: '127.0.0.1:80800': port 80800 is out of range (0-65535)",
        "config/balancer.yaml:2:1: admn: unknown key 'admn' (did you mean 'admin'? expected one "
        "of: access_log, admin, admin_allowed_hosts, admin_token, admin_token_file, discovery, "
        "health, limits, listen, pools, resolvers, routing, timeouts, trusted_proxies, watch)",
        "config/balancer.yaml:4:3: timeouts.conect: unknown key 'conect' (did you mean 'connect'? "
        "expected one of: backend_response, client_body, client_header, client_idle, "
        "client_send, connect, drain, grace, tunnel_idle, upstream_idle)",
        "config/balancer.yaml:5:10: timeouts.drain: 'soon' is not a duration "
        "(expected e.g. 250ms, 2s, 1m)",
        "config/balancer.yaml:7:18: limits.max_body_size: 'lots' is not a size "
        "(expected e.g. 16KiB, 10MiB)",
        "config/balancer.yaml:10:36: pools.web.backends[1]: 127.0.0.1:1 is listed twice "
        "in this pool",
        "config/balancer.yaml:11:11: pools.web.kind: unknown value 'fastest' "
        "(expected one of: async, threaded, multiprocess)",
        "config/balancer.yaml:12:22: pools.web.max_connections: -1 is too small (minimum 1)",
        "config/balancer.yaml:14:15: pools.empty.backends: a pool needs a backend",
    ]


def test_missing_keys_and_wrong_types() -> None:
    found = problems("""\
        admin: [1, 2]
        pools:
          a: [http://127.0.0.1:1]
          b: {kind: async}
        """)
    assert "config/balancer.yaml:1:1: listen: missing required key" in found
    assert "config/balancer.yaml:1:8: admin: expected a single value, got a list" in found
    assert "config/balancer.yaml:3:6: pools.a: expected a mapping, got a list" in found
    assert "config/balancer.yaml:4:6: pools.b.backends: missing required key" in found


def test_duplicate_pool_names_are_located_at_the_second() -> None:
    found = problems("""\
        listen: 127.0.0.1:8080
        pools:
          a: {backends: [http://127.0.0.1:1]}
          a: {backends: [http://127.0.0.1:2]}
        """)
    assert found == ["config/balancer.yaml:4:3: pools.a: duplicate key"]


def test_invalid_yaml_is_located() -> None:
    found = problems("""\
        listen: 127.0.0.1:8080
        pools:
          a: {backends: [http://127.0.0.1:1]
        """)
    assert len(found) == 1
    assert found[0].startswith("config/balancer.yaml:4:1: invalid YAML: ")


def test_empty_file_and_non_mapping_root() -> None:
    assert problems("") == [
        "config/balancer.yaml:1:1: the file is empty (expected at least 'listen' and 'pools')"
    ]
    assert problems("- 1\n") == ["config/balancer.yaml:1:1: expected a mapping, got a list"]


def test_admin_may_not_share_a_public_listener() -> None:
    found = problems("""\
        listen: 127.0.0.1:8080
        admin: 127.0.0.1:8080
        pools: {a: {backends: [http://127.0.0.1:1]}}
        """)
    assert found == ["config/balancer.yaml:2:8: admin: 127.0.0.1:8080 is also a public listener"]


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("2s", 2.0), ("1m", 60.0), ("1.5s", 1.5), (3, 3.0), ("1h", 3600.0),
])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "size"), [
    ("10MiB", 10 * 1024**2), ("16KiB", 16384), ("1KB", 1000), ("100B", 100), (512, 512),
    ("1GiB", 1024**3),
])
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["soon", "-1s", True, "2 parsecs"])
def test_bad_durations_say_what_is_expected(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(("text", "key"), [
    ("http://127.0.0.1:8101", "127.0.0.1:8101"),
    ("http://[::1]:8101/", "::1:8101"),
    ("unix:/tmp/a.sock", "unix:/tmp/a.sock"),
    ("unix:///tmp/a.sock", "unix:/tmp/a.sock"),
])
def test_backend_addresses(text: str, key: str) -> None:
    assert parse_backend(text).key == key


@pytest.mark.parametrize("bad", ["http//x", "https://a:1", "http://a", "http://a:1/path",
                                 "unix:relative.sock", "127.0.0.1:80", 8080])
def test_bad_backend_addresses(bad: object) -> None:
    with pytest.raises(ValueError, match="backend address"):
        parse_backend(bad)


def test_listen_addresses() -> None:
    assert parse_listen("0.0.0.0:0").port == 0
    assert parse_listen(8080).key == "0.0.0.0:8080"
    assert parse_listen("unix:/run/lb.sock").path == "/run/lb.sock"


# -- every pool option and backend form, read exactly; each bad value located -------------------

def test_every_pool_option_and_weighted_backends() -> None:
    config = parse_config(textwrap.dedent("""\
        listen: [127.0.0.1:0, 127.0.0.1:0]
        admin: ~
        admin_token: 0123456789abcdef
        trusted_proxies: 10.1.2.3/8
        health: {check_path: /ready}
        pools:
          a:
            backends:
              - {address: http://127.0.0.1:1, weight: 2.5}
              - http://127.0.0.1:2
              - {address: http://127.0.0.1:3}
              - {address: http://127.0.0.1:4, weight: 1000}
            policy: round_robin
            spill_to: b
            max_queue: 7
            queue_timeout: 250ms
            max_connections: 3
            max_idle: 2
            max_inflight: 9
          b:
            backends: [{address: http://127.0.0.1:5, weight: 1}]
            spill_to: [a]
        """), "f.yaml")
    a, b = config.pool("a"), config.pool("b")
    assert len(config.listen) == 1  # port 0 twice is accepted, not a duplicate error
    assert config.admin is None and config.admin_token == "0123456789abcdef"
    assert [str(n) for n in config.trusted_proxies] == ["10.0.0.0/8"]
    assert config.health.check_path == "/ready"
    assert a.weights == (2.5, 1.0, 1.0, 1000.0) and a.weight_of(3) == 1000.0
    assert b.weights == () and b.weight_of(0) == 1.0  # all 1: no weights kept
    assert (a.policy, a.spill_to, a.max_queue, a.queue_timeout) == ("round_robin", ("b",), 7, 0.25)
    assert (a.max_connections, a.max_idle, a.max_inflight, a.inflight_cap) == (3, 2, 9, 9)
    assert b.spill_to == ("a",) and b.policy == "least_latency"
    with pytest.raises(KeyError):
        config.pool("c")


def test_bad_pool_options_and_backends_are_each_located() -> None:
    found = problems("""\
        listen: [127.0.0.1:80, 127.0.0.1:80]
        admin_token: "short token"
        trusted_proxies: [nonsense]
        health: {check_path: ready}
        pools:
          a:
            backends:
              - {weight: 2}
              - {address: http://127.0.0.1:1, weight: 0}
              - {address: http://127.0.0.1:2, weight: true}
              - {address: http://127.0.0.1:3, weight: 1001}
              - {address: http//x}
              - {address: http://127.0.0.1:4, wieght: 2}
            policy: fastest
            spill_to: [a, nowhere]
            max_queue: -1
            queue_timeout: soon
            max_inflight: 0
        """)
    assert found == [
        "config/balancer.yaml:1:24: listen[1]: 127.0.0.1:80 is listed twice",
        "config/balancer.yaml:2:14: admin_token: an admin token must be a string of at least 16 "
        "printable characters without spaces",
        "config/balancer.yaml:3:19: trusted_proxies[0]: 'nonsense' is not an IP address or "
        "network (e.g. 10.0.0.0/8)",
        "config/balancer.yaml:4:22: health.check_path: 'ready' is not a request path "
        "(e.g. /__health)",
        "config/balancer.yaml:8:9: pools.a.backends[0]: missing required key 'address' (or "
        "'discover': a DNS name whose addresses are the backends)",
        "config/balancer.yaml:9:47: pools.a.backends[1].weight: 0 is not a weight "
        "(a number above 0, at most 1000)",
        "config/balancer.yaml:10:47: pools.a.backends[2].weight: True is not a weight "
        "(a number above 0, at most 1000)",
        "config/balancer.yaml:11:47: pools.a.backends[3].weight: 1001 is not a weight "
        "(a number above 0, at most 1000)",
        "config/balancer.yaml:12:19: pools.a.backends[4].address: 'http//x' is not a backend "
        "address (expected http://host:port or unix:/path)",
        "config/balancer.yaml:13:39: pools.a.backends[5].wieght: unknown key 'wieght' (did you "
        "mean 'weight'? expected one of: address, discover, weight)",
        "config/balancer.yaml:14:13: pools.a.policy: unknown value 'fastest' (expected one of: "
        "least_latency, weighted_least_request, least_request, round_robin)",
        "config/balancer.yaml:15:16: pools.a.spill_to[0]: a pool cannot spill to itself",
        "config/balancer.yaml:15:19: pools.a.spill_to[1]: no pool named 'nowhere' (defined: a)",
        "config/balancer.yaml:16:16: pools.a.max_queue: -1 is too small (minimum 0)",
        "config/balancer.yaml:17:20: pools.a.queue_timeout: 'soon' is not a duration "
        "(expected e.g. 250ms, 2s, 1m)",
        "config/balancer.yaml:18:19: pools.a.max_inflight: 0 is too small (minimum 1)",
    ]


@pytest.mark.parametrize(("text", "message"), [
    ("listen: []\npools: {a: {backends: [http://127.0.0.1:1]}}\n",
     "f.yaml:1:9: listen: at least one listen address is required"),
    ("listen: 127.0.0.1:1\npools: {}\n", "f.yaml:2:8: pools: at least one pool is required"),
    ("listen: 127.0.0.1:1\nadmin_token: 0123456789abcde\npools: {a: {backends: [unix:/a]}}\n",
     "f.yaml:2:14: admin_token: an admin token must be a string of at least 16 printable "
     "characters without spaces"),
    ("listen: 127.0.0.1:1\nadmin_token: \"0123456789abcdef\\t\"\n"
     "pools: {a: {backends: [unix:/a]}}\n",
     "f.yaml:2:14: admin_token: an admin token must be a string of at least 16 printable "
     "characters without spaces"),
    ("listen: 127.0.0.1:1\nhealth: {check_path: \"/a b\"}\npools: {a: {backends: [unix:/a]}}\n",
     "f.yaml:2:22: health.check_path: '/a b' is not a request path (e.g. /__health)"),
])
def test_one_bad_value(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "f.yaml")
    assert [str(p) for p in info.value.problems] == [message]


def test_a_listen_address_given_once_as_a_scalar_and_unix_twice() -> None:
    config = parse_config("listen: unix:/tmp/a.sock\npools: {a: {backends: [unix:/b]}}\n")
    assert [a.key for a in config.listen] == ["unix:/tmp/a.sock"]
    with pytest.raises(ConfigError) as info:
        parse_config("listen: [unix:/a, unix:/a]\npools: {a: {backends: [unix:/b]}}\n", "f")
    assert [str(p) for p in info.value.problems] == ["f:1:19: listen[1]: unix:/a is listed twice"]
    with pytest.raises(ConfigError) as info:
        parse_config("listen: 127.0.0.1:99999\npools: {a: {backends: [unix:/b]}}\n", "f")
    assert str(info.value.problems[0]).startswith("f:1:9: listen: ")


def test_load_config_reads_a_file_and_locates_an_unreadable_one(tmp_path: Path) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(MINIMAL)
    assert load_config(str(path)).source == str(path)
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(str(missing))
    assert [str(p) for p in info.value.problems] == [
        f"{missing}:1:1: cannot read file: No such file or directory"]
    assert info.value.problems[0].path == ""
    path.write_text("")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.problems[0].message.startswith("the file is empty")
    assert info.value.problems[0].path == ""


def test_health_and_access_log_sections_nulls_and_an_admin_on_port_0() -> None:
    config = parse_config(textwrap.dedent("""\
        listen: 127.0.0.1:0
        admin: 127.0.0.1:0
        admin_token: ~
        access_log: {format: json, path: /tmp/access.log}
        health: {consecutive_failures: 2, ejection: 1s, max_ejection: 1m, max_ejected_share: 0.25,
                 retry_budget: 0.1, retry_burst: 3, check_interval: 2s, check_timeout: 500ms,
                 rise: 4, fall: 5}
        pools: {a: {backends: [unix:/b]}}
        """), "f.yaml")
    assert config.source == "f.yaml" and config.admin_token is None
    assert config.admin is not None and config.admin.port == 0  # port 0 twice: no clash
    assert config.access_log is not None
    assert (config.access_log.format, config.access_log.path) == ("json", "/tmp/access.log")
    health = config.health
    assert (health.consecutive_failures, health.ejection, health.max_ejection) == (2, 1, 60)
    assert (health.max_ejected_share, health.retry_budget, health.retry_burst) == (0.25, 0.1, 3)
    assert (health.check_interval, health.check_timeout, health.rise, health.fall) == (
        2, 0.5, 4, 5)
    assert parse_config("listen: 127.0.0.1:0\naccess_log: ~\npools: {a: {backends: [unix:/b]}}\n"
                        ).access_log is None
    with pytest.raises(KeyError, match="nowhere"):
        config.pool("nowhere")
    with pytest.raises(ConfigError) as info:
        parse_config("listen: unix:/a\nadmin: unix:/a\npools: {a: {backends: [unix:/b]}}\n", "f")
    assert [str(p) for p in info.value.problems] == [
        "f:2:8: admin: unix:/a is also a public listener"]


def test_wrong_shapes_are_located_and_checking_goes_on_after_each() -> None:
    found = problems("""\
        listen: {a: 1}
        trusted_proxies: {a: 1}
        access_log: {format: xml}
        health: {check_path: /X-ready}
        admin_token: "0123456789 abcdef"
        pools:
          a:
            backends: {x: 1}
            spill_to: {b: 1}
            colour: red
          b:
            backends: [http://127.0.0.1:1, http://127.0.0.1:1, http://127.0.0.1:1]
            spill_to: [{x: 1}, a]
          c:
            backends: [http://127.0.0.1:3]
          d:
            backends: [http://127.0.0.1:4]
            spill_to: nowhere
        """)
    assert [line.removeprefix("config/balancer.yaml:") for line in found] == [
        "1:9: listen: expected a list, got a mapping",
        "1:9: listen: at least one listen address is required",
        "2:18: trusted_proxies: expected a list, got a mapping",
        "3:22: access_log.format: unknown value 'xml' (expected one of: text, combined, json)",
        "5:14: admin_token: an admin token must be a string of at least 16 printable "
        "characters without spaces",
        "8:15: pools.a.backends: expected a list, got a mapping",
        "9:15: pools.a.spill_to: expected a list, got a mapping",
        "10:5: pools.a.colour: unknown key 'colour' (expected one of: backends, kind, "
        "max_connections, max_idle, max_inflight, max_queue, max_tunnels, policy, queue_timeout, "
        "spill_to)",
        "12:36: pools.b.backends[1]: 127.0.0.1:1 is listed twice in this pool",
        "12:56: pools.b.backends[2]: 127.0.0.1:1 is listed twice in this pool",
        "13:16: pools.b.spill_to[0]: expected a single value, got a mapping",
        "18:15: pools.d.spill_to[0]: no pool named 'nowhere' (defined: a, b, c, d)",
    ]


def test_the_default_file_name_and_every_listen_item_checked() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("listen: [nope, 127.0.0.1:1, 127.0.0.1:1]\n"
                     "pools: {a: {backends: [unix:/b]}}\n")
    assert [str(p) for p in info.value.problems] == [
        "<config>:1:10: listen[0]: 'nope' is not a listen address (expected host:port or "
        "unix:/path)",
        "<config>:1:29: listen[2]: 127.0.0.1:1 is listed twice",
    ]


def test_a_pool_that_is_not_a_mapping_does_not_hide_the_next_pools_errors() -> None:
    found = problems("""\
        listen: 127.0.0.1:1
        pools:
          a: [http://127.0.0.1:1]
          b: {backends: [http://127.0.0.1:2], spill_to: nowhere}
        """)
    assert [line.removeprefix("config/balancer.yaml:") for line in found] == [
        "3:6: pools.a: expected a mapping, got a list",
        "4:49: pools.b.spill_to[0]: no pool named 'nowhere' (defined: b)",
    ]
