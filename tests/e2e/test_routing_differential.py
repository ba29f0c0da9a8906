"""Routing differential: the path the classifier matches is the path real servers route, or
the balancer refuses the target.

uvicorn (httptools and h11), waitress and gunicorn each run as a real server (a subprocess on
a socket bound to port 0) with an app that answers the path it routes (tests/routing_echo.py).
For a corpus of raw targets and for generated ones, the origin-form target the balancer would
forward is sent to each server: where the classifier accepts the target, every server that
routes it (200) routes exactly the classifier's path. End to end, through a real balancer in
front of each server: a refused target is a 400 that no backend sees, an accepted one reaches
the server unchanged. HYPOTHESIS_PROFILE=fuzz runs many more generated targets.
"""

import asyncio
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balancer.balancing.classify import BadTarget, routed_path
from balancer.config.routing import ENCODED_SLASHES, EncodedSlashes
from balancer.http.headers import origin_form
from tests.helpers import BalancerFactory
from tests.routing_echo import RoutingServer

FUZZ = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
DIFFERENTIAL = settings(max_examples=3_000 if FUZZ else 60, deadline=None, derandomize=not FUZZ,
                        suppress_health_check=[HealthCheck.too_slow,
                                               HealthCheck.function_scoped_fixture])

CORPUS = [
    b"/process/image", b"/process/image#/../../api/items", b"/a#b?c", b"/a?b#c",
    b"/process%2Fimage", b"/process%2fimage", b"/api/..%2F..%2Fprocess/image",
    b"/process%5Cimage", b"/process%5cimage", b"/process\\image", b"/a%252Fb", b"/a%255Cb",
    b"/api/../process/image", b"/api/./x", b"/api/%2e%2e/process", b"/api/%2E/x", b"/..", b"/.",
    b"/a/..", b"/a/%2E%2E", b"/a/.%2e/b", b"/.well-known/x", b"/a/...",
    b"/a//b", b"//api/process/image", b"///x", b"/%2F%2Fx",
    b"/a;b/c", b"/a;/../b", b"/process;x/image", b"/..;/process", b"/a;jsessionid=1/b",
    b"/%25", b"/%zz", b"/%", b"/a%4", b"/%u002f", b"/a+b", b"/a%20b", b"/%00", b"/%0a", b"/%7f",
    b"/%e9", b"/%c3%a9", b"/%C3%A9t%C3%A9", b"/%c0%af", b"/%C0%AE%C0%AE/", b"/%e0%80%af",
    b"/%f0%9f%98%80", b"/%ed%a0%80", b"/\xc3\xa9", b"/\xe9", b"/a\x7fb", b"/a\tb",
    b"/%3F", b"/a%3Fb", b"/%23", b"/a%23b", b"/~user", b"/a|b", b'/a"b', b"/a<b>", b"/a{b}",
    b"/a^b", b"/a`b", b"/a[b]", b"/a@b:c", b"/%7e%41", b"*",
    b"http://h/p%2Fq", b"http://h/p/../q", b"http://h", b"https://h:1/x?y", b"http://h/p#f",
]

PIECES = st.sampled_from([
    "/", "a", "b", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", ";", ";x=1", "%25",
    "%252f", "%255C", "%", "%z", "%c0%af", "%c3%a9", "%e9", "%41", "%00", "%20", "%3f", "%23",
    "#", "?", "?a=/../", "//", "~", "+", "*", "é", "1", "9f86d081884c7d65",
])
SAFE = st.sampled_from(["/", "a", "b", "1", "-", "_", "~", ";", "=", "+", "%41", "%c3%a9", "%20",
                        "%3f", "%25", "%2f", "%5c", ".", "/x", "%00"])
TARGETS = st.lists(SAFE | PIECES | st.characters(min_codepoint=0x21, max_codepoint=0xff),
                   min_size=1, max_size=16).map(lambda parts: ("/" + "".join(parts)).encode())


def classified(target: bytes, encoded_slashes: EncodedSlashes) -> tuple[bytes, str] | None:
    """(origin-form target forwarded, the path the classifier matches), or None when the
    balancer refuses the target. As balancer.proxy does: the target as aiohttp gives it,
    in origin-form, decoded with surrogateescape, without the query."""
    try:
        origin, _ = origin_form(target)
    except ValueError:
        return None
    path = origin.decode("utf-8", "surrogateescape").partition("?")[0]
    try:
        return origin, routed_path(path, encoded_slashes)
    except BadTarget:
        return None


def check_target(servers: list[RoutingServer], target: bytes) -> None:
    for mode in ENCODED_SLASHES:
        seen = classified(target, mode)
        if seen is None:
            continue
        origin, path = seen
        for server in servers:
            routed = server.routes(origin)
            if isinstance(routed, bytes):  # a server that refuses the target routes nothing
                assert routed == path.encode("utf-8"), (
                    f"{target!r} ({mode}): the classifier matches {path!r}, "
                    f"{server.name} routes {routed!r}")


@pytest.mark.parametrize("target", CORPUS, ids=repr)
def test_the_classifier_routes_what_the_servers_route_or_refuses(
    servers: list[RoutingServer], target: bytes,
) -> None:
    check_target(servers, target)


@DIFFERENTIAL
@given(TARGETS)
def test_generated_targets_route_alike_or_are_refused(
    servers: list[RoutingServer], target: bytes,
) -> None:
    check_target(servers, target)


def test_the_bypasses_found_by_the_review_are_refused_by_default() -> None:
    for target in (b"/process/image#/../../api/items", b"/process%2Fimage",
                   b"/api/..%2F..%2Fprocess/image", b"/process%5Cimage"):
        assert classified(target, "reject") is None


# -- end to end, through a real balancer --------------------------------------------------------



async def _raw(url: str, target: bytes) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("encoded_slashes", ENCODED_SLASHES)
async def test_through_the_balancer_a_target_is_refused_or_routed_as_classified(
    servers: list[RoutingServer], balancer_factory: BalancerFactory,
    encoded_slashes: EncodedSlashes,
) -> None:
    backends = "\n".join(f"  {server.name.replace('-', '_')}: "
                         f"{{backends: [http://127.0.0.1:{server.port}]}}" for server in servers)
    for server in servers:
        lb = await balancer_factory(f"""\
listen: 127.0.0.1:0
pools:
{backends}
routing:
  classes: {{light_cpu: {server.name.replace('-', '_')}}}
  encoded_slashes: {encoded_slashes}
  rules:
    - {{path: "/process/**", class: light_cpu}}
""")
        routed = 0
        for target in CORPUS:
            status, body = await _raw(lb.url, target)
            seen = classified(target, encoded_slashes)
            if seen is None:
                assert status == 400 and body.startswith(b"400 bad request"), (target, body)
            elif status == 200:  # (else refused by another check, or by the server)
                assert bytes.fromhex(body.decode()) == seen[1].encode(), (target, server.name)
                routed += 1
        assert routed >= 30, f"only {routed} targets reached {server.name}"


async def test_a_fragment_is_refused_without_routing_too(
    servers: list[RoutingServer], balancer_factory: BalancerFactory,
) -> None:
    lb = await balancer_factory(f"""\
listen: 127.0.0.1:0
pools:
  default: {{backends: [http://127.0.0.1:{servers[0].port}]}}
""")
    assert (await _raw(lb.url, b"/process/image#/../../api/items"))[0] == 400
    assert (await _raw(lb.url, b"/process/image"))[0] == 200
