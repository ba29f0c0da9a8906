"""Proxy header duties (RFC 9110 section 7.6) on raw header bytes."""

import pytest

from balancer.http.headers import (
    ForwardedRequest,
    UnsupportedCoding,
    close_delimited_coding,
    forward_request,
    forward_response,
    origin_form,
    response_head,
)


def head_lines(head: bytes) -> list[bytes]:
    return head.split(b"\r\n")[1:-2]


def fwd(
    headers: list[tuple[bytes, bytes]], *, trusted: bool = False, method: str = "GET"
) -> ForwardedRequest:
    if not any(name.lower() == b"host" for name, _ in headers):
        headers = [*headers, (b"Host", b"h")]
    return forward_request(method, b"/a?b=1", headers, client_ip="10.1.2.3",
                           trusted_client=trusted, new_request_id="new-1")


def test_request_line_and_plain_headers_pass_through() -> None:
    out = fwd([(b"Host", b"example.com"), (b"Accept", b"*/*"), (b"X-Custom", b"v")])
    assert out.head.startswith(b"GET /a?b=1 HTTP/1.1\r\n")
    lines = head_lines(out.head)
    assert lines[:3] == [b"Host: example.com", b"Accept: */*", b"X-Custom: v"]
    assert b"X-Forwarded-For: 10.1.2.3" in lines
    assert b"X-Forwarded-Proto: http" in lines
    assert b"X-Forwarded-Host: example.com" in lines
    assert b"Via: 1.1 echonext-balancer" in lines
    assert b"X-Request-Id: new-1" in lines
    assert out.head.endswith(b"\r\n\r\n")


def test_hop_by_hop_headers_and_those_connection_names_are_removed() -> None:
    out = fwd([(b"Host", b"h"), (b"Connection", b"keep-alive, X-Secret"), (b"Keep-Alive", b"5"),
               (b"TE", b"trailers"), (b"Trailer", b"X"), (b"Upgrade", b"h2c"),
               (b"Proxy-Authorization", b"Basic x"), (b"Proxy-Connection", b"close"),
               (b"X-Secret", b"s"), (b"X-Kept", b"k")])
    lines = head_lines(out.head)
    names = {line.split(b":")[0].lower() for line in lines}
    for dropped in (b"connection", b"keep-alive", b"te", b"trailer", b"upgrade",
                    b"proxy-authorization", b"proxy-connection", b"x-secret"):
        assert dropped not in names
    assert b"X-Kept: k" in lines
    assert out.upgrade is None  # Upgrade without Connection: upgrade is not an upgrade


def test_untrusted_client_forwarded_headers_are_replaced() -> None:
    out = fwd([(b"X-Forwarded-For", b"6.6.6.6"), (b"X-Forwarded-Proto", b"https"),
               (b"X-Forwarded-Host", b"evil"), (b"Host", b"h")])
    lines = head_lines(out.head)
    assert b"X-Forwarded-For: 10.1.2.3" in lines
    assert b"X-Forwarded-Proto: http" in lines
    assert b"X-Forwarded-Host: h" in lines
    assert not any(b"6.6.6.6" in line or b"evil" in line for line in lines)


def test_trusted_client_forwarded_for_is_appended() -> None:
    out = fwd([(b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2"), (b"X-Forwarded-Proto", b"https"),
               (b"Via", b"1.0 edge")], trusted=True)
    lines = head_lines(out.head)
    assert b"X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.1.2.3" in lines
    assert b"X-Forwarded-Proto: https" in lines
    assert b"Via: 1.0 edge, 1.1 echonext-balancer" in lines


@pytest.mark.parametrize(("given", "kept"), [
    (b"abc-123", True), (b"x" * 128, True), (b"x" * 129, False), (b"bad id", False),
    (b"a\xffb", False),
])
def test_request_id_passes_through_only_when_well_formed(given: bytes, kept: bool) -> None:
    out = fwd([(b"X-Request-Id", given)])
    assert out.request_id == (given.decode("latin-1") if kept else "new-1")
    assert head_lines(out.head).count(b"X-Request-Id: " + out.request_id.encode()) == 1


def test_upgrade_is_forwarded_when_connection_names_it() -> None:
    out = fwd([(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"),
               (b"Sec-WebSocket-Key", b"k")])
    lines = head_lines(out.head)
    assert out.upgrade == b"websocket"
    assert b"Connection: upgrade" in lines and b"Upgrade: websocket" in lines
    assert b"Sec-WebSocket-Key: k" in lines


def test_body_framing_facts() -> None:
    out = fwd([(b"Content-Length", b"12")], method="POST")
    assert out.content_length == 12 and not out.chunked
    assert b"Content-Length: 12" in head_lines(out.head)
    out = fwd([(b"Transfer-Encoding", b"chunked"), (b"Expect", b"100-continue")], method="POST")
    assert out.chunked and out.expect_continue
    lines = head_lines(out.head)
    assert lines.count(b"Transfer-Encoding: chunked") == 1
    assert not any(line.lower().startswith(b"expect") for line in lines)


@pytest.mark.parametrize(("headers", "message"), [
    ([(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")],
     "both Content-Length and Transfer-Encoding"),
    ([(b"Content-Length", b"5"), (b"Content-Length", b"6")],
     "invalid or repeated Content-Length"),
    ([(b"Content-Length", b"-5")], "invalid or repeated Content-Length"),
    ([(b"Transfer-Encoding", b"chunked, identity")], "unsupported Transfer-Encoding"),
    ([(b"Transfer-Encoding", b"gzip")], "unsupported Transfer-Encoding"),
    ([(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")],
     "unsupported Transfer-Encoding"),
    ([(b"Host", b"a"), (b"Host", b"b")], "repeated Host header"),
])
def test_ambiguous_framing_is_refused(headers: list[tuple[bytes, bytes]], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        fwd(headers, method="POST")


def test_transfer_codings_and_connection_names_are_split_on_commas_only() -> None:
    out = fwd([(b"Transfer-Encoding", b"chunked"), (b"Connection", b"X-A,X-B"),
               (b"Connection", b"X-C"), (b"X-A", b"1"), (b"X-B", b"2"), (b"X-C", b"3"),
               (b"X-D", b"4")], method="POST")
    assert out.chunked
    lines = head_lines(out.head)
    assert not any(line.startswith((b"X-A", b"X-B", b"X-C")) for line in lines)
    assert b"X-D: 4" in lines
    with pytest.raises(UnsupportedCoding):  # split on the comma: gzip is a coding of its own
        fwd([(b"Transfer-Encoding", b"gzip,chunked")], method="POST")


def test_connection_upgrade_without_an_upgrade_header_upgrades_nothing() -> None:
    out = fwd([(b"Connection", b"upgrade")])
    assert out.upgrade is None
    assert not any(line.lower().startswith(b"upgrade") for line in head_lines(out.head))


def test_client_forwarded_headers_appear_once_each() -> None:
    for trusted in (False, True):
        out = fwd([(b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Host", b"outer"),
                   (b"X-Forwarded-For", b"1.2.3.4")], trusted=trusted)
        lines = head_lines(out.head)
        proto = [line for line in lines if line.lower().startswith(b"x-forwarded-proto")]
        host = [line for line in lines if line.lower().startswith(b"x-forwarded-host")]
        assert proto == [b"X-Forwarded-Proto: https" if trusted else b"X-Forwarded-Proto: http"]
        assert host == [b"X-Forwarded-Host: outer" if trusted else b"X-Forwarded-Host: h"]


def test_absolute_form_keeps_the_headers_after_host_and_errors_are_named() -> None:
    out = forward_request("GET", b"http://origin.example/p", [(b"Host", b"other"),
                          (b"X-After", b"1")], client_ip="10.0.0.1", trusted_client=False,
                          new_request_id="n")
    lines = head_lines(out.head)
    assert b"X-After: 1" in lines and b"Host: origin.example" in lines
    assert b"Host: other" not in lines
    with pytest.raises(ValueError, match=r"^missing Host header$"):
        forward_request("GET", b"/", [], client_ip="10.0.0.1", trusted_client=False,
                        new_request_id="n")
    with pytest.raises(ValueError, match=r"^request target is not a path or an http\(s\) URI$"):
        origin_form(b"ftp://x/")


def test_response_headers_drop_hop_by_hop_and_take_the_load_report() -> None:
    headers, report = forward_response([
        (b"Content-Type", b"text/plain"), (b"Connection", b"keep-alive, X-Internal"),
        (b"Keep-Alive", b"timeout=5"), (b"Transfer-Encoding", b"chunked"),
        (b"X-Internal", b"1"), (b"Content-Length", b"3"), (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"), (b"endpoint-load-metrics", b"TEXT cpu_utilization=0.5"),
    ], "rid-7")
    assert headers == [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"),
                       ("Set-Cookie", "b=2"), ("Via", "1.1 echonext-balancer"),
                       ("X-Request-Id", "rid-7")]
    assert report == b"TEXT cpu_utilization=0.5"


RESPONSE_HOP_BY_HOP = [
    (b"TE", b"trailers"), (b"Trailer", b"X-Sum"), (b"Upgrade", b"h2c"),
    (b"Proxy-Authenticate", b"Basic realm=x"), (b"Proxy-Connection", b"keep-alive"),
    (b"Proxy-Authorization", b"Basic eA=="), (b"X-Kept", b"1"),
]


def test_response_te_trailer_non_101_upgrade_and_proxy_headers_are_dropped() -> None:
    headers, _ = forward_response(RESPONSE_HOP_BY_HOP, "r")
    assert headers == [("X-Kept", "1"), ("Via", "1.1 echonext-balancer"), ("X-Request-Id", "r")]
    head, _ = response_head(200, b"OK", RESPONSE_HOP_BY_HOP, "r", content_length=0,
                            keep_alive=True)
    assert head_lines(head) == [b"X-Kept: 1", b"Via: 1.1 echonext-balancer", b"X-Request-Id: r",
                                b"Content-Length: 0"]


def test_a_backend_via_is_kept_before_ours_and_its_request_id_replaced() -> None:
    headers, _ = forward_response([(b"Via", b"1.0 inner"), (b"X-Request-Id", b"theirs")], "r")
    assert headers == [("Via", "1.0 inner, 1.1 echonext-balancer"), ("X-Request-Id", "r")]


def test_response_headers_in_full_detail() -> None:
    """Two Connection headers, two Via headers, headers after Content-Length and X-Request-Id,
    no load report, extra headers: each kept or dropped as it should be, in order."""
    backend = [(b"Connection", b"X-A"), (b"Connection", b"X-B"), (b"X-A", b"1"), (b"X-B", b"2"),
               (b"Via", b"1.0 a"), (b"Content-Length", b"9"), (b"X-Request-Id", b"theirs"),
               (b"Via", b"1.1 b"), (b"X-Last", b"\xe9")]
    headers, report = forward_response(backend, "r", extra=[(b"X-Extra", b"\xe9")])
    assert report is None
    assert headers == [("X-Last", "\xe9"), ("Via", "1.0 a, 1.1 b, 1.1 echonext-balancer"),
                       ("X-Request-Id", "r"), ("X-Extra", "\xe9")]


def test_an_upgrade_response_still_drops_the_other_connection_names() -> None:
    headers, _ = forward_response([(b"Connection", b"Upgrade, X-Named"), (b"Upgrade", b"ws"),
                                   (b"X-Named", b"1"), (b"TE", b"x")], "r", upgrade=True)
    assert headers == [("Upgrade", "ws"), ("Via", "1.1 echonext-balancer"),
                       ("X-Request-Id", "r"), ("Connection", "upgrade")]


@pytest.mark.parametrize(("status", "reason", "length", "keep_alive", "http10", "expected"), [
    (200, b"Fine", 5, True, False, [b"HTTP/1.1 200 Fine", b"Content-Length: 5"]),
    (404, b"", 0, False, False, [b"HTTP/1.1 404 Not Found", b"Content-Length: 0",
                                 b"Connection: close"]),
    (204, b"", 0, True, True, [b"HTTP/1.1 204 No Content", b"Connection: keep-alive"]),
    (599, b"", None, True, False, [b"HTTP/1.1 599 Unknown"]),
])
def test_response_head_status_line_length_and_connection(
    status: int, reason: bytes, length: int | None, keep_alive: bool, http10: bool,
    expected: list[bytes],
) -> None:
    head, report = response_head(status, reason, [(b"X-B", b"1"), (b"endpoint-load-metrics",
                                 b"TEXT eps=0")], "rid", content_length=length,
                                 keep_alive=keep_alive, http10=http10, extra=[(b"X-E", b"2")])
    assert report == b"TEXT eps=0"
    lines = head.split(b"\r\n")
    assert head.endswith(b"\r\n\r\n")
    assert lines[0] == expected[0]
    assert lines[1:-2] == [b"X-B: 1", b"Via: 1.1 echonext-balancer", b"X-Request-Id: rid",
                           b"X-E: 2", *expected[1:]]


def test_upgrade_response_keeps_upgrade_headers() -> None:
    headers, _ = forward_response([(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                                   (b"Sec-WebSocket-Accept", b"x")], "r", upgrade=True)
    assert ("Upgrade", "websocket") in headers and ("Connection", "upgrade") in headers
    assert ("Sec-WebSocket-Accept", "x") in headers


def test_missing_host_is_refused_on_http11_and_empty_on_http10() -> None:
    with pytest.raises(ValueError, match="missing Host"):
        forward_request("GET", b"/", [], client_ip="1.2.3.4", trusted_client=False,
                        new_request_id="r")
    out = forward_request("GET", b"/", [], client_ip="1.2.3.4", trusted_client=False,
                          new_request_id="r", http10=True)
    # no authority was given: an empty Host says so (RFC 9112 section 3.2); none is invented
    assert b"\r\nHost: \r\n" in out.head
    assert b"localhost" not in out.head
    assert b"X-Forwarded-Host" not in out.head


@pytest.mark.parametrize(("target", "expected"), [
    (b"/a?b=1", (b"/a?b=1", None)),
    (b"*", (b"*", None)),
    (b"http://Example.com/a?b=1", (b"/a?b=1", b"Example.com")),
    (b"HTTPS://h:8443", (b"/", b"h:8443")),
    (b"http://h?x=1", (b"/?x=1", b"h")),
    (b"http://[::1]:80/p", (b"/p", b"[::1]:80")),
])
def test_origin_form_of_request_targets(target: bytes, expected: tuple[bytes, bytes | None],
                                        ) -> None:
    assert origin_form(target) == expected


@pytest.mark.parametrize("target", [b"ftp://h/x", b"http://u@h/x", b"http:///x", b"h/x",
                                    b"http://h:99999999/x", b"http://h/x#frag"])
def test_targets_that_are_neither_paths_nor_http_uris_are_refused(target: bytes) -> None:
    with pytest.raises(ValueError):
        origin_form(target)


def test_absolute_form_replaces_the_host_header_with_the_uri_authority() -> None:
    out = forward_request("GET", b"http://real.example/x", [(b"Host", b"spoofed")],
                          client_ip="10.0.0.1", trusted_client=False, new_request_id="r1")
    assert out.target == b"/x" and out.host == b"real.example"
    assert out.head.startswith(b"GET /x HTTP/1.1\r\n")
    assert b"Host: real.example\r\n" in out.head and b"spoofed" not in out.head


def test_headers_after_the_load_report_are_kept() -> None:
    headers, report = forward_response([(b"endpoint-load-metrics", b"TEXT eps=0"),
                                        (b"X-After", b"1")], "r")
    assert report == b"TEXT eps=0" and ("X-After", "1") in headers


def test_an_origin_form_request_without_a_body_has_plain_facts() -> None:
    out = fwd([])
    assert out.target == b""  # not rewritten: the proxy sends the client's own target
    assert out.expect_continue is False and out.chunked is False
    assert out.content_length is None and out.upgrade is None and out.host == b"h"


@pytest.mark.parametrize("value", [b"chunked", b"gzip, chunked", b"identity"])
def test_transfer_encoding_in_an_http10_request_is_refused(value: bytes) -> None:
    # RFC 9112 section 6.1: a 1.0 hop reads such a body by length, so the framing is faulty
    with pytest.raises(ValueError, match="in an HTTP"):
        forward_request("POST", b"/", [(b"Host", b"a"), (b"Transfer-Encoding", value)],
                        client_ip="1.2.3.4", trusted_client=False, new_request_id="r",
                        http10=True)


@pytest.mark.parametrize(("headers", "expected"), [
    ([], None),                                                        # no Transfer-Encoding
    ([(b"Transfer-Encoding", b"chunked")], None),                      # framed by chunks
    ([(b"transfer-encoding", b"gzip, CHUNKED ")], None),               # chunked last, any case
    ([(b"Transfer-Encoding", b"gzip,chunked")], None),                 # no space after a comma
    ([(b"Transfer-Encoding", b"gzip, br, chunked")], None),            # three codings
    ([(b"Transfer-Encoding", b"gzip")], b"gzip"),                      # ends with the connection
    ([(b"Transfer-Encoding", b"chunked, gzip")], b"chunked, gzip"),    # chunked not last
    ([(b"Transfer-Encoding", b"gzip"), (b"X", b"y"),
      (b"TRANSFER-ENCODING", b"chunked")], None),                      # fields joined in order
    ([(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"br")],
     b"chunked, br"),
    ([(b"Content-Length", b"5")], None),
])
def test_close_delimited_coding_is_a_transfer_encoding_that_does_not_end_in_chunked(
        headers: list[tuple[bytes, bytes]], expected: bytes | None) -> None:
    """RFC 9112 section 6.3: such a response's body ends when the connection closes."""
    assert close_delimited_coding(headers) == expected
