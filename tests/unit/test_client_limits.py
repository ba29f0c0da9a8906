"""The rules behind two client-side limits (attack round 2): the minimum average rate of a
streamed request body (`limits.min_body_rate`, balancer/http/body_rate.py) and the cap on
client connections (`limits.max_client_connections`), and their config errors, located."""

import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balancer.config.parse import parse_config
from balancer.config.units import parse_rate
from balancer.config.yamltree import ConfigError
from balancer.http.body_rate import body_wait
from balancer.proxy.client import connection_cap

CONFIG = """\
listen: 127.0.0.1:8080
pools:
  default:
    backends: [http://127.0.0.1:8101]
limits:
"""


def problems(limits: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(CONFIG + textwrap.indent(limits, "  "), "config/balancer.yaml")
    return [str(p) for p in info.value.problems]


def test_the_defaults_are_on_and_generous() -> None:
    limits = parse_config(CONFIG.removesuffix("limits:\n"), "b.yaml").limits
    assert limits.min_body_rate == 500  # Apache mod_reqtimeout's default MinRate
    assert limits.max_client_connections == 16_384


@pytest.mark.parametrize(("raw", "rate"), [
    ("500B/s", 500), ("10KiB/s", 10240), ("1MB/s", 1_000_000), ("500B", 500), ("2KiB", 2048),
    (" 500 B/s ", 500), (0, 0), (750, 750), ("0", 0),
])
def test_a_rate_reads_as_bytes_a_second(raw: object, rate: int) -> None:
    assert parse_rate(raw) == rate


@pytest.mark.parametrize("raw", ["fast", "500B/m", "500/h", "-1B/s", "1.5.5B/s", True, 1.5, None])
def test_a_bad_rate_says_what_is_expected(raw: object) -> None:
    with pytest.raises(ValueError, match=r"is not a rate"):
        parse_rate(raw)


def test_the_new_limits_are_read_and_their_errors_located() -> None:
    config = parse_config(CONFIG + "  min_body_rate: 10KiB/s\n  max_client_connections: 3\n",
                          "b.yaml")
    assert (config.limits.min_body_rate, config.limits.max_client_connections) == (10240, 3)
    assert problems("min_body_rate: fast\nmax_client_connections: 0\n") == [
        "config/balancer.yaml:6:18: limits.min_body_rate: 'fast' is not a rate "
        "(expected e.g. 500B/s, 10KiB/s)",
        "config/balancer.yaml:7:27: limits.max_client_connections: 0 is too small (minimum 1)",
    ]
    assert problems("max_client_connections: lots\n") == [
        "config/balancer.yaml:6:27: limits.max_client_connections: 'lots' is not a whole "
        "number"]


def test_a_body_at_the_rate_waits_the_idle_bound() -> None:
    # 10s of slack, 500 B/s: after 100 s, 45000 bytes are 45s + 10s ahead of the clock
    assert body_wait(started=0, received=45_000, now=40.0, idle=10.0, min_rate=500) \
        == (10.0, False)


def test_a_trickled_body_is_cut_after_the_slack() -> None:
    # one byte every 9.9 s (never idle for 10 s): due at 10 s + 2 ms per byte
    assert body_wait(started=0, received=1, now=9.9, idle=10.0, min_rate=500) \
        == pytest.approx((0.102, True))
    assert body_wait(started=0, received=2, now=19.8, idle=10.0, min_rate=500) == (0.0, True)


def test_no_minimum_rate_leaves_the_idle_bound() -> None:
    assert body_wait(started=0, received=0, now=1e6, idle=10.0, min_rate=0) == (10.0, False)


@given(received=st.integers(0, 10**9), elapsed=st.floats(0, 1e6), rate=st.integers(1, 10**7),
       idle=st.floats(0.001, 3600))
def test_the_wait_is_never_over_idle_nor_negative_and_cuts_only_the_slow(
        received: int, elapsed: float, rate: int, idle: float) -> None:
    wait, by_rate = body_wait(100.0, received, 100.0 + elapsed, idle, rate)
    assert 0 <= wait <= idle
    if wait == 0:  # cut now: it has taken longer than the slack plus its bytes' allowance
        assert by_rate and elapsed >= idle + received / rate - 1e-6
    if elapsed + idle <= idle + received / rate:  # ahead of the rate by idle or more
        assert (wait, by_rate) == (idle, False)


@pytest.mark.parametrize(("configured", "open_files", "cap"), [
    (16_384, None, 16_384),      # no open-files limit: as configured
    (16_384, 1_048_576, 16_384),  # a container's usual limit: as configured
    (16_384, 20_000, 15_000),     # a quarter left for backend connections, logs, listeners
    (16_384, 1024, 768),          # a shell's usual limit
    (16_384, 300, 44),            # at least 256 descriptors left
    (3, 1024, 3),
    (16_384, 1, 1),               # never 0: the balancer must admit someone
])
def test_the_connection_cap_leaves_descriptors_for_the_rest(
        configured: int, open_files: int | None, cap: int) -> None:
    assert connection_cap(configured, open_files) == cap


def test_a_minimum_rate_of_one_byte_a_second_is_a_rate() -> None:
    # 1 B/s, 10 s of slack, nothing received after 10 s: due now
    assert body_wait(started=0, received=0, now=10.0, idle=10.0, min_rate=1) == (0.0, True)


def test_a_body_exactly_on_its_allowance_waits_the_idle_bound_not_the_rate() -> None:
    # nothing received yet at the start, or 5000 bytes at 500 B/s 10 s in: due in `idle`
    assert body_wait(started=0, received=0, now=0.0, idle=10.0, min_rate=500) == (10.0, False)
    assert body_wait(started=0, received=5000, now=10.0, idle=10.0, min_rate=500) \
        == (10.0, False)
