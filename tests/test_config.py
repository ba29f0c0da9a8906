"""Config parsing: the minimal file, defaults, and located errors (all of them, not the first)."""

import textwrap

import pytest

from balancer.addresses import Address, parse_backend, parse_listen
from balancer.config import parse_config
from balancer.units import parse_duration, parse_size
from balancer.yamltree import ConfigError

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
        "of: access_log, admin, admin_token, admin_token_file, health, limits, listen, pools, "
        "routing, timeouts, trusted_proxies)",
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
