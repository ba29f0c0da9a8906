"""balancer/config/addresses.py: the listen and backend address forms (TCP, IPv6, unix
sockets), the key that identifies a backend across reloads, and errors that name the
accepted forms."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balancer.config.addresses import Address, parse_backend, parse_listen


@pytest.mark.parametrize(("raw", "address"), [
    ("127.0.0.1:8080", Address("tcp", host="127.0.0.1", port=8080)),
    ("0.0.0.0:0", Address("tcp", host="0.0.0.0", port=0)),        # port 0: a free one
    ("localhost:65535", Address("tcp", host="localhost", port=65535)),
    ("[::1]:8080", Address("tcp", host="::1", port=8080)),          # IPv6 without brackets
    ("[::]:80", Address("tcp", host="::", port=80)),
    (8080, Address("tcp", host="0.0.0.0", port=8080)),              # a bare port: every IPv4
    ("unix:/run/lb.sock", Address("unix", path="/run/lb.sock")),
    ("unix:///run/lb.sock", Address("unix", path="/run/lb.sock")),  # the URL spelling
])
def test_listen_forms(raw: object, address: Address) -> None:
    assert parse_listen(raw) == address


@pytest.mark.parametrize(("raw", "address"), [
    ("http://127.0.0.1:8101", Address("tcp", host="127.0.0.1", port=8101)),
    ("http://backend.internal:80/", Address("tcp", host="backend.internal", port=80)),
    ("http://[::1]:8101//", Address("tcp", host="::1", port=8101)),
    ("unix:/tmp/a.sock", Address("unix", path="/tmp/a.sock")),
    ("unix:///tmp/a.sock", Address("unix", path="/tmp/a.sock")),
])
def test_backend_forms(raw: str, address: Address) -> None:
    assert parse_backend(raw) == address


def test_key_url_and_str_identify_a_backend() -> None:
    tcp = parse_backend("http://[::1]:8101")
    assert (tcp.key, tcp.url, str(tcp)) == ("::1:8101", "http://::1:8101", "::1:8101")
    unix = parse_backend("unix:///tmp/a.sock")
    assert (unix.key, unix.url, str(unix)) == ("unix:/tmp/a.sock", "unix:/tmp/a.sock",
                                               "unix:/tmp/a.sock")
    # the same backend written two ways is one backend (a reload keeps its pool)
    assert parse_backend("unix:/tmp/a.sock") == unix
    assert hash(parse_backend("unix:/tmp/a.sock")) == hash(unix)


LISTEN = "a listen address (expected host:port or unix:/path)"
BACKEND = "a backend address (expected http://host:port or unix:/path)"


@pytest.mark.parametrize(("raw", "message"), [
    ("127.0.0.1", f"'127.0.0.1' is not {LISTEN}"),
    (":8080", f"':8080' is not {LISTEN}"),
    ("host:http", f"'host:http' is not {LISTEN}"),
    ("host:-1", f"'host:-1' is not {LISTEN}"),
    ("host:70000", "'host:70000': port 70000 is out of range (0-65535)"),
    ("unix:run/lb.sock", f"'unix:run/lb.sock' is not {LISTEN} (a unix path must be absolute)"),
    ("unix:/run/\nlb", "'unix:/run/\\nlb': a unix path must have no control characters"),
    (True, f"True is not {LISTEN}"),
    (None, f"None is not {LISTEN}"),
    (1.5, f"1.5 is not {LISTEN}"),
])
def test_a_bad_listen_address_names_the_accepted_forms(raw: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_listen(raw)
    assert str(info.value) == message


@pytest.mark.parametrize(("raw", "message"), [
    ("127.0.0.1:80", f"'127.0.0.1:80' is not {BACKEND}"),        # the scheme is required
    ("https://a:1", f"'https://a:1' is not {BACKEND}"),          # no TLS to backends
    ("http://a", f"'http://a' is not {BACKEND}"),
    ("http://a:1/path", f"'http://a:1/path': a backend address has no path ({BACKEND})"),
    ("http://a:99999", "'http://a:99999': port 99999 is out of range (0-65535)"),
    ("unix:tmp/a.sock", f"'unix:tmp/a.sock' is not {BACKEND} (a unix path must be absolute)"),
    (8080, f"8080 is not {BACKEND}"),
])
def test_a_bad_backend_address_names_the_accepted_forms(raw: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_backend(raw)
    assert str(info.value) == message


@given(host=st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True), port=st.integers(0, 65535))
def test_host_and_port_round_trip(host: str, port: int) -> None:
    assert parse_listen(f"{host}:{port}") == Address("tcp", host=host, port=port)
    assert parse_backend(f"http://{host}:{port}").key == f"{host}:{port}"


@given(st.one_of(st.text(max_size=30), st.integers(), st.none(), st.booleans()))
def test_anything_is_an_address_or_a_value_error(raw: object) -> None:
    for parse in (parse_listen, parse_backend):
        try:
            address = parse(raw)
        except ValueError as exc:
            assert str(exc)
        else:
            assert address.kind in ("tcp", "unix")
            assert 0 <= address.port <= 65535
