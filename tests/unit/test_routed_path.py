"""The path the classifier matches is the path the backends route, or the target is refused;
and the classifier's work and route cache are bounded whatever the path."""

import os
import re
import tracemalloc
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balancer.balancing import classify
from balancer.balancing.classify import BadTarget, Classifier, path_template, routed_path
from balancer.config.parse import parse_config
from balancer.config.yamltree import ConfigError
from tests.unit.test_classify import Facts

EXAMPLES = 5_000 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 200
SHIPPED = Path(__file__).resolve().parents[2] / "config" / "balancer.yaml"


@pytest.mark.parametrize(("raw", "path"), [
    ("/api/items/42", "/api/items/42"),
    ("/%61pi/a%20b", "/api/a b"),             # every escape decoded once, as uvicorn/WSGI do
    ("/%c3%a9t%C3%A9", "/été"),
    ("/%252F", "/%2F"),                       # decoded once only (in decode mode)
    ("/a//b", "/a//b"),                       # kept: no server merges inner slashes
    ("/a;b/c;d=1", "/a;b/c;d=1"),             # `;` parameters are part of the segment
    ("/a%3Fb%23c", "/a?b#c"),
    ("/a+b", "/a+b"),
    ("/.well-known/x", "/.well-known/x"),
    ("/a/...", "/a/..."),
    ("*", "*"),
])
def test_the_routed_path_is_the_decoded_path(raw: str, path: str) -> None:
    assert routed_path(raw, "decode") == path


@pytest.mark.parametrize("raw", [
    "/process/image#/../../api/items", "/a#b",  # a fragment: not part of an origin-form target
    "/api/../process/image", "/api/./x", "/a/..", "/.", "/api/%2e%2e/process",  # dot segments
    "/%2E%2E/x", "/a/%2e",
    "//api/process/image",                   # waitress reads `//api` as an authority
    "/%zz", "/a%", "/a%4",                   # malformed escapes (Apache: 400 as well)
    "/%e9", "/%c0%af", "/%C0%AE%C0%AE/",     # not UTF-8 (uvicorn: U+FFFD, WSGI: the byte)
    "/é", "/a b", "/a\tb", "/a\x7fb", "/\x01",  # not printable ASCII (servers disagree)
    "relative",
])
def test_targets_the_backends_may_resolve_differently_are_refused(raw: str) -> None:
    for mode in ("reject", "decode"):
        with pytest.raises(BadTarget):
            routed_path(raw, mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [
    "/process%2Fimage", "/process%2fimage", "/process%5Cimage", "/process\\image",
    "/api/..%2F..%2Fprocess", "/a%252Fb", "/a%25255cb",
])
def test_encoded_slashes_and_backslashes_are_refused_by_default(raw: str) -> None:
    with pytest.raises(BadTarget):
        routed_path(raw)


@pytest.mark.parametrize(("raw", "path"), [
    ("/process%2Fimage", "/process/image"),   # decoded, as all four servers route it
    ("/process%5Cimage", "/process\\image"),  # a literal backslash for them, not a separator
    ("/process\\image", "/process\\image"),
])
def test_encoded_slashes_are_decoded_when_configured(raw: str, path: str) -> None:
    assert routed_path(raw, "decode") == path


def test_decoding_cannot_make_a_dot_segment() -> None:
    with pytest.raises(BadTarget):
        routed_path("/api/..%2F..%2Fprocess/image", "decode")


def _classifier(encoded_slashes: str = "reject") -> Classifier:
    text = SHIPPED.read_text().replace("routing:\n", f"routing:\n  encoded_slashes: "
                                                    f"{encoded_slashes}\n", 1)
    config = parse_config(text, str(SHIPPED))
    assert config.routing is not None
    return Classifier(config.routing)


def test_the_classifier_refuses_or_matches_what_the_backend_runs() -> None:
    with pytest.raises(BadTarget):
        _classifier().classify(Facts(method="POST", path="/process%2Fimage"), None)
    with pytest.raises(BadTarget):
        _classifier().classify(Facts(method="POST", path="/process/image#/../../api/x"), None)
    decided = _classifier("decode").classify(Facts(method="POST", path="/process%2Fimage"), None)
    assert decided.request_class == "heavy_cpu"


def test_encoded_slashes_is_a_located_choice() -> None:
    text = SHIPPED.read_text().replace("routing:\n", "routing:\n  encoded_slashes: allow\n", 1)
    with pytest.raises(ConfigError, match=r"balancer.yaml:\d+:\d+: routing.encoded_slashes"):
        parse_config(text, str(SHIPPED))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.text(st.sampled_from("/%2fFcC5e.é;a0\\#?") | st.characters(), max_size=40),
       st.sampled_from(["reject", "decode"]))
def test_a_routed_path_is_what_urllib_decodes_or_a_refusal(raw: str, mode: str) -> None:
    try:
        path = routed_path(raw, mode)  # type: ignore[arg-type]
    except BadTarget:
        return
    assert path == unquote_to_bytes(raw).decode("utf-8")
    assert "/./" not in path + "/" and "/../" not in path + "/"


def test_the_template_looks_at_a_bounded_number_of_segments() -> None:
    """The per-segment work (the collapsing regexes) is bounded, however many segments."""
    template = path_template("/1" * 4000)
    assert template.count("/") <= classify.MAX_TEMPLATE_SEGMENTS + 1
    assert template.startswith("/{n}/{n}/") and template.endswith("/**")
    assert path_template("/a/1/b") == "/a/{n}/b"


def test_the_route_cache_is_bounded_in_entries_and_key_size() -> None:
    classifier = _classifier()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(9_000):  # under the old 10,000-entry cache that was 100 MiB
            path = f"/api/{i}/" + "b" * (4000 + i % 4000)
            classifier.classify(Facts(method="GET", path=path), None)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(classifier._cache) <= classify.CACHE_SIZE
    assert all(len(path) <= classify.MAX_CACHED_PATH for _, path in classifier._cache)
    assert grown < 16 * 2**20, f"the route cache grew by {grown / 2**20:.1f} MiB"


@settings(max_examples=EXAMPLES * 5, deadline=None)
@given(st.text(st.sampled_from("%=3Dd0aAfFzZ/\\_~"), max_size=24).map(str.encode)
       | st.binary(max_size=24).map(lambda b: bytes(c for c in b if 0x21 <= c < 0x7F)))
def test_percent_decoding_is_unquote_or_none_for_a_stray_percent(raw: bytes) -> None:
    """The C-speed decoder (quoted-printable in disguise) against urllib's."""
    decoded = classify._percent_decoded(raw)
    if re.fullmatch(rb"(?:[^%]|%[0-9A-Fa-f]{2})*", raw):
        assert decoded == unquote_to_bytes(raw)
    else:
        assert decoded is None


# -- mutation testing, after merging round 3 (bench/results/mutation.md) ---------------------

@pytest.mark.parametrize(("raw", "mode", "message"), [
    ("a/b", "reject", "request path must start with a single /"),
    ("/a#b", "reject", "a request target has no #fragment (RFC 9112 section 3.2)"),
    ("/a\x7fb", "reject", "request path has a byte outside printable ASCII"),
    ("/a\\b", "reject", "request path has a backslash"),
    ("/a%zz", "reject", "request path has a % that starts no %-escape"),
    ("/a%2Fb", "reject", "request path has an encoded slash or backslash"),
    ("/a%255cb", "reject", "request path has an encoded slash or backslash"),
    ("/a%ffb", "reject", "request path does not decode to UTF-8"),
    ("/%2Fx", "decode", "request path must start with a single /"),
    ("/a/../b", "reject", "request path has a dot segment (. or ..)"),
    ("/a\\..\\b", "decode", "request path has a dot segment (. or ..)"),
])
def test_each_refusal_says_why(raw: str, mode: str, message: str) -> None:
    with pytest.raises(BadTarget) as refused:
        routed_path(raw, mode)  # type: ignore[arg-type]
    assert str(refused.value) == message


def test_an_escaped_percent_that_encodes_no_separator_is_allowed() -> None:
    assert routed_path("/a%2541") == "/a%41"
