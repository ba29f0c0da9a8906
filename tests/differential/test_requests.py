"""Generated client requests through a real balancer to a recording backend: the two-sided
invariant of check.py holds for every example (see requests.py for what is drawn).

Each family that found an issue-11 defect names the item and keeps its minimal reproducer as an
explicit example (all failed before the framing fix, 500fc5b). Defects found here that are not
in issue 11 are xfail(strict) with "new finding" in the reason: they fail on every run until
fixed, then XPASS (strict: the suite turns red until the marker is removed).
"""

import dataclasses

from hypothesis import example, given
from hypothesis import strategies as st

from tests.differential.check import exchange, no_underscore_twins
from tests.differential.harness import Harness
from tests.differential.profiles import profile
from tests.differential.requests import (
    FRAMINGS,
    PLACEHOLDER,
    SMUGGLED,
    RequestSpec,
    pipelines,
    requests,
    worst,
)


def spec(*headers: bytes, method: str = "GET", body: bytes = b"", version: str = "1.1",
         kind: str = "either", why: str = "example", persistent: bool = True,
         expect: bool = False, upgrade: bytes | None = None, host: bytes | None = b"a",
         wire_body: bytes | None = None) -> RequestSpec:
    """A hand-written request: the minimal reproducers of known defects."""
    target = b"/d/" + PLACEHOLDER + b"/"
    host_line = (b"Host: " + host,) if host is not None else ()
    return RequestSpec(
        method=method, version=version, kind=kind, line_target=target, target=target,
        host=host, headers=(*host_line, b"X-Test-Id: " + PLACEHOLDER, *headers),
        wire_body=body if wire_body is None else wire_body, body=body, persistent=persistent,
        expect_continue=expect, upgrade=upgrade, why=why)


PLAIN = spec(kind="plain", why="")


@profile()
@given(requests(absolute=None, expect=None))
def test_plain_requests_in_any_header_order_spelling_and_whitespace(
        harness: Harness, request_spec: RequestSpec) -> None:
    exchange(harness, [request_spec])


@profile()
@given(requests(framings=tuple(FRAMINGS)))
def test_body_framings_valid_and_conflicting_are_forwarded_exactly_or_refused(
        harness: Harness, request_spec: RequestSpec) -> None:
    exchange(harness, [request_spec])


@profile()
@given(pipelines(4, framings=("cl", "chunked"), expect=None))
def test_pipelined_requests_each_get_their_own_answer_in_order(
        harness: Harness, specs: list[RequestSpec]) -> None:
    exchange(harness, specs)


@profile()
@given(pipelines(2, connection=True, framings=("cl", "chunked")))
@example([spec(b"Connection: content-length", b"Content-Length: %d" % len(SMUGGLED),
               method="POST", body=SMUGGLED, why="Connection: content-length")])
@example([spec(b"Connection: host", why="Connection: host")])
def test_connection_naming_any_header_never_changes_framing_or_host(
        harness: Harness, specs: list[RequestSpec]) -> None:
    """Issue 11 item 1 (smuggling through Connection)."""
    exchange(harness, specs)


@profile(0.5)
@given(pipelines(2, version="1.0", framings=("cl",)))
def test_http10_requests_with_host(harness: Harness, specs: list[RequestSpec]) -> None:
    exchange(harness, specs)


@profile(0.3)
@given(pipelines(2, version="1.0", framings=("chunked",)))
@example([spec(b"Transfer-Encoding: chunked", version="1.0", kind="reject", persistent=False,
               wire_body=b"0\r\n\r\n", why="transfer-encoding in HTTP/1.0")])
def test_http10_requests_with_transfer_encoding_are_refused(
        harness: Harness, specs: list[RequestSpec]) -> None:
    """RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing (was forwarded)."""
    exchange(harness, specs)


@profile(0.5)
@given(pipelines(2, version="1.0", host=False, framings=("cl",), absolute=False))
@example([spec(version="1.0", host=None, persistent=False, why="HTTP/1.0 without Host")])
def test_http10_without_host_never_gets_a_host_it_did_not_send(
        harness: Harness, specs: list[RequestSpec]) -> None:
    """Issue 11 item 12 (HTTP/1.0 without Host was forwarded with Host: localhost)."""
    exchange(harness, specs)


@profile(0.5)
@given(pipelines(2, version="1.0", expect=True, framings=("cl",)))
@example([spec(b"Expect: 100-continue", b"Content-Length: 2", method="POST", body=b"ab",
               version="1.0", persistent=False, expect=True, why="HTTP/1.0 Expect")])
def test_http10_clients_get_no_interim_responses(harness: Harness, specs: list[RequestSpec]
                                                 ) -> None:
    """Issue 11 item 12 (100 Continue was sent to HTTP/1.0 clients)."""
    exchange(harness, specs)


@profile(0.5)
@given(st.sampled_from([b"gzip", b"deflate", b"x-custom", b"compress, gzip"]),
       st.binary(min_size=1, max_size=20))
@example(b"gzip", b"abc")
def test_a_coding_before_chunked_is_refused(harness: Harness, coding: bytes, body: bytes) -> None:
    """Issue 11 item 12 (gzip, chunked was accepted and the gzip coding dropped)."""
    chunks = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    exchange(harness, [spec(b"Transfer-Encoding: " + coding + b", chunked", method="POST",
                            body=body, wire_body=chunks, kind="reject",
                            why=f"Transfer-Encoding {coding.decode()}, chunked: a coding")])


@profile(0.5)
@given(st.tuples(requests(upgrade=True, close_allowed=False, framings=("cl",)),
                 requests(framings=("cl",))).map(list))
@example([spec(b"Connection: upgrade", b"Upgrade: h2c", why="Upgrade: h2c"), PLAIN])
@example([spec(b"Connection: Upgrade", b"Upgrade: websocket", b"Content-Length: 5",
               method="POST", body=b"hello", why="Upgrade: websocket with a body")])
def test_declined_upgrade_requests_keep_their_body_and_the_connection(
        harness: Harness, specs: list[RequestSpec]) -> None:
    """Issue 11 item 9 (upgrade bytes lost; a request pipelined after it unanswered)."""
    exchange(harness, specs)


UNDERSCORED = st.lists(st.tuples(
    st.sampled_from(["X_Forwarded_For", "X_Forwarded_Proto", "X_Forwarded_Host", "X_Request_Id",
                     "x_forwarded_for", "X-Forwarded_For"]),
    st.sampled_from([b"6.6.6.6", b"https", b"forged", b"internal"])), min_size=1, max_size=3)


@profile(0.5)
@given(requests(extra_fields=UNDERSCORED))
@example(spec(b"X_Forwarded_For: 6.6.6.6", why="X_Forwarded_For"))
def test_underscore_spellings_of_the_headers_the_balancer_sets_never_reach_the_backend(
        harness: Harness, request_spec: RequestSpec) -> None:
    """Issue 11 item 11. Dropping such a header or refusing the request (4xx) are both fine."""
    either = dataclasses.replace(request_spec, kind=worst(request_spec.kind, "either"))
    exchange(harness, [either], extra=no_underscore_twins)


@profile(0.3)
@given(requests(framings=("cl",), connection=False, close_allowed=True).filter(
    lambda s: not s.persistent), requests(framings=("cl",)))
@example(spec(b"Connection: close", kind="plain", persistent=False, why="Connection: close"),
         PLAIN)
def test_a_request_that_closes_the_connection_is_answered_whatever_follows(
        harness: Harness, closing: RequestSpec, after: RequestSpec) -> None:
    """RFC 9112 section 9.6 (was a 400: llhttp's "Data after Connection: close")."""
    exchange(harness, [closing, after])


@profile(0.3)
@given(st.sampled_from([b"Content-Length: 0\r\nContent-Length: 0",
                        b"Content-Length: 1, 2", b"Transfer-Encoding: identity"]))
@example(b"Content-Length: 0\r\nContent-Length: 0")
def test_a_refused_head_request_gets_no_body(harness: Harness, fields: bytes) -> None:
    """RFC 9110 section 9.3.2 (the 400 to a malformed HEAD had a body)."""
    exchange(harness, [spec(fields, method="HEAD", kind="either", why="malformed HEAD")])


@profile(0.3)
@given(requests(framings=("cl",), close_allowed=False),
       requests(framings=tuple(f for f, kind in FRAMINGS.items() if kind == "reject")))
@example(PLAIN, spec(b"Content-Length: 1", b"Content-Length: 2", method="POST", body=b"ab",
                     kind="reject", why="content-length twice, different values"))
def test_a_valid_request_is_answered_whatever_is_pipelined_after_it(
        harness: Harness, valid: RequestSpec, malformed: RequestSpec) -> None:
    """Was the malformed one's 400 only (aiohttp parsed the whole read before dispatching)."""
    exchange(harness, [valid, malformed])


@profile(0.3)
@given(st.sampled_from([b"\x00", b"x", b"ab"]))
@example(b"\x00")
def test_a_refused_request_after_a_head_with_a_body_gets_its_body(
        harness: Harness, body: bytes) -> None:
    """Found by the test above: the 400 to a request glued to the body of a HEAD before it
    announced its body and sent none (the HEAD guess read the HEAD's request line); what looks
    like a HEAD now gets `Content-Length: 0` and no body, framed right whatever the method."""
    exchange(harness, [
        spec(b"Content-Length: %d" % len(body), method="HEAD", body=body, kind="plain",
             why="HEAD with a body"),
        spec(b"Content-Length: 0, 1", kind="reject", why="content-length list, different values"),
    ])


@profile(0.3)
@given(requests(framings=("cl",)))
@example(PLAIN)
def test_a_client_that_half_closes_after_its_request_still_gets_the_answer(
        harness: Harness, request_spec: RequestSpec) -> None:
    """Was forwarded and executed, but never answered (aiohttp closed on EOF)."""
    exchange(harness, [request_spec], half_close=True)
