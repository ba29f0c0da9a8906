"""Header rewriting for a reverse proxy (RFC 9110 section 7.6), on raw header bytes.

Pure. `forward_request` turns the client's request head into the one sent upstream, and
`forward_response` turns the backend's response head into the one sent to the client:
hop-by-hop headers (Connection and the headers it names, Keep-Alive, TE, Trailer,
Transfer-Encoding, Upgrade unless upgrading, Proxy-*) are dropped; X-Forwarded-For is
appended (from trusted proxies) or replaced; X-Forwarded-Proto/Host set; Via added;
X-Request-Id passed through when well-formed, or replaced by a new one, and returned.

Rules that keep a backend from reading a request differently from the balancer (issue 11):
- the balancer writes the framing of every forwarded request itself (Content-Length or
  `Transfer-Encoding: chunked`), and Connection can never nominate the framing, Host or a
  header the balancer sets (RFC 9112 section 6.3, CVE-2022-31813's class of bug);
- a header name with `_` that reads as one the balancer sets (`X_Forwarded_For`) is dropped,
  since some servers map `-` and `_` to the same variable; so are `SCRIPT_NAME` and
  `PATH_INFO`, which gunicorn believes from the balancer's address;
- only the upgrade protocols in `upgrades` (default websocket) are forwarded as upgrades.
"""

import re
from collections.abc import Iterable
from http import HTTPStatus

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
})
LOAD_REPORT_HEADER = b"endpoint-load-metrics"
VIA = b"1.1 echonext-balancer"
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")
# what the balancer writes into every forwarded request itself
SET_BY_BALANCER = frozenset({
    b"content-length", b"transfer-encoding", b"host", b"x-forwarded-for", b"x-forwarded-proto",
    b"x-forwarded-host", b"via", b"x-request-id", b"connection", b"upgrade",
})
UPGRADES = frozenset({b"websocket"})
# ... and the CGI variables a WSGI server takes from a trusted front end (gunicorn believes
# SCRIPT_NAME from 127.0.0.1 and unix sockets, i.e. from the balancer: the client would pick
# the PATH_INFO it routes, not the path the classifier matched)
_NOT_WITH_UNDERSCORES = SET_BY_BALANCER | {b"x-balancer-token", b"script-name", b"path-info"}

Headers = Iterable[tuple[bytes, bytes]]


class UnsupportedCoding(ValueError):
    """A transfer coding the balancer does not implement (501, RFC 9112 section 6.1)."""


class ForwardedRequest:
    """The upstream request head and what the proxy must know to send the body."""

    __slots__ = ("chunked", "content_length", "declined_upgrade", "expect_continue",
                 "explain_token", "head", "host", "request_id", "target", "upgrade")

    def __init__(self) -> None:
        self.head = b""
        self.target = b""  # set when the request target was rewritten (absolute-form)
        self.request_id = ""
        self.host: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.upgrade: bytes | None = None
        self.declined_upgrade = False  # asked for a protocol not in `upgrades`
        self.expect_continue = False
        self.explain_token: bytes | None = None  # X-Balancer-Token: never forwarded


# uri-host [":" port] (RFC 9110 section 7.2, RFC 3986 section 3.2.2): an IP literal, or a
# reg-name / IPv4 of unreserved, %-escapes and sub-delims; empty when no authority was given
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")
_ABSOLUTE = re.compile(rb"(?i:https?)://([A-Za-z0-9._~\-]+(?::\d{1,5})?|\[[0-9A-Fa-f:.]+\]"
                       rb"(?::\d{1,5})?)([/?][^#]*)?")


def origin_form(target: bytes) -> tuple[bytes, bytes | None]:
    """(origin-form target, authority or None). An absolute-form target (RFC 9112 section
    3.2.2) becomes its path and query, and its authority replaces the Host header; anything
    but origin-form, `*` or an http(s) absolute URI raises ValueError, as does a #fragment
    (RFC 9112 section 3.2 has none; servers disagree on what it leaves of the path)."""
    if b"#" in target:
        raise ValueError("a request target has no #fragment")
    if target.startswith(b"/") or target == b"*":
        return target, None
    match = _ABSOLUTE.fullmatch(target)
    if match is None:
        raise ValueError("request target is not a path or an http(s) URI")
    rest = match.group(2) or b"/"
    return (rest if rest.startswith(b"/") else b"/" + rest), match.group(1)


def _tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def forward_request(
    method: str,
    target: bytes,
    headers: Headers,
    *,
    client_ip: str,
    trusted_client: bool,
    new_request_id: str,
    proto: bytes = b"http",
    http10: bool = False,
    upgrades: frozenset[bytes] = UPGRADES,
) -> ForwardedRequest:
    """Build the upstream head; raises ValueError for a request a backend could misread
    (UnsupportedCoding for a transfer coding other than chunked before chunked). `upgrades`:
    the protocols (lower case) an Upgrade may ask for.

    Four steps: sort the client's headers (validating the framing and Host as they come),
    settle the framing and Host, choose the upgrade, write the upstream head."""
    out = ForwardedRequest()
    target, authority = origin_form(target)
    if authority is not None:
        out.target = target
    seen = _sort_headers(out, headers, authority, trusted_client=trusted_client, http10=http10)
    if out.chunked or authority is not None or out.host is None:  # (else nothing to settle)
        _settle_framing_and_host(out, seen, authority, http10=http10)
    if seen.upgrade is not None:
        _choose_upgrade(out, seen, upgrades)
    out.head = _upstream_head(out, seen, method, target, client_ip, new_request_id, proto)
    return out


class _Sorted:
    """The client's headers, sorted by what the balancer does with them."""

    __slots__ = ("forwarded_for", "forwarded_host", "forwarded_proto", "kept", "named",
                 "request_id", "upgrade", "via")

    def __init__(self) -> None:
        self.kept: list[tuple[bytes, bytes, bytes]] = []  # (lower name, name, value) to forward
        self.named: set[bytes] = set()  # what Connection nominates as hop-by-hop
        self.forwarded_for: list[bytes] = []
        self.forwarded_proto: bytes | None = None
        self.forwarded_host: bytes | None = None
        self.via: list[bytes] = []
        self.request_id: bytes | None = None
        self.upgrade: bytes | None = None  # the Upgrade header, if any


# the headers the balancer reads (or drops) and writes itself, besides hop-by-hop, framing, Host
_TAKEN = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via",
                    b"x-request-id", b"expect", b"x-balancer-token"})


def _sort_headers(
    out: ForwardedRequest, headers: Headers, authority: bytes | None, *, trusted_client: bool,
    http10: bool,
) -> _Sorted:
    """Drop hop-by-hop headers (noting what Connection names), check and take the framing
    and Host, take the headers the balancer writes itself, drop `_` aliases of those, keep
    the rest. Ordinary headers cost no call here: this loop runs for every request."""
    seen = _Sorted()
    keep = seen.kept.append
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"connection":
                seen.named |= _tokens(value)
            elif lname == b"transfer-encoding":
                _transfer_encoding(out, value, http10=http10)
            elif lname == b"upgrade":
                seen.upgrade = value
        elif lname == b"content-length":
            _content_length(out, value)  # written by the balancer from the length it read
        elif lname == b"host":
            _host(out, value)
            if authority is None:  # else replaced by the absolute URI's authority
                keep((lname, name, value))
        elif lname in _TAKEN:
            _take(out, seen, lname, value, trusted_client=trusted_client)
        elif b"_" not in lname or lname.replace(b"_", b"-") not in _NOT_WITH_UNDERSCORES:
            keep((lname, name, value))
    return seen


def _transfer_encoding(out: ForwardedRequest, value: bytes, *, http10: bool) -> None:
    """Only `chunked`, in one Transfer-Encoding header, and never in an HTTP/1.0 request."""
    if http10:  # RFC 9112 section 6.1: faulty framing (a 1.0 hop reads by length)
        raise ValueError("Transfer-Encoding in an HTTP/1.0 request")
    codings = [c.strip().lower() for c in value.split(b",")]
    if codings[-1] != b"chunked" or out.chunked:
        raise ValueError("unsupported Transfer-Encoding")
    if len(codings) > 1:
        raise UnsupportedCoding("transfer codings other than chunked are not implemented")
    out.chunked = True


def _content_length(out: ForwardedRequest, value: bytes) -> None:
    if out.content_length is not None or not value.strip().isdigit():
        raise ValueError("invalid or repeated Content-Length")
    out.content_length = int(value)


def _host(out: ForwardedRequest, value: bytes) -> None:
    if out.host is not None:
        raise ValueError("repeated Host header")
    if not _HOST.fullmatch(value):  # RFC 9110 section 7.2: 400
        raise ValueError("invalid Host header")
    out.host = value


def _take(
    out: ForwardedRequest, seen: _Sorted, lname: bytes, value: bytes, *, trusted_client: bool
) -> None:
    """A header in _TAKEN: believed (X-Forwarded-* from a trusted client only), never
    forwarded as sent."""
    if lname == b"x-forwarded-for":
        if trusted_client:
            seen.forwarded_for.append(value)
    elif lname == b"x-forwarded-proto":
        seen.forwarded_proto = value if trusted_client else None
    elif lname == b"x-forwarded-host":
        seen.forwarded_host = value if trusted_client else None
    elif lname == b"via":
        seen.via.append(value)
    elif lname == b"x-request-id":
        if _REQUEST_ID.fullmatch(value):
            seen.request_id = value
    elif lname == b"expect":
        out.expect_continue = value.strip().lower() == b"100-continue"
    else:  # x-balancer-token
        out.explain_token = value


def _settle_framing_and_host(
    out: ForwardedRequest, seen: _Sorted, authority: bytes | None, *, http10: bool
) -> None:
    """One framing at most; the Host is the absolute URI's authority, else the header, which
    only an HTTP/1.0 request may lack (it is then sent empty)."""
    if out.chunked and out.content_length is not None:
        raise ValueError("both Content-Length and Transfer-Encoding")
    if authority is not None:
        out.host = authority
        seen.kept.append((b"host", b"Host", authority))
    if out.host is None:
        if not http10:
            raise ValueError("missing Host header")  # RFC 9112 section 3.2
        # an HTTP/1.0 request names no authority: the upstream HTTP/1.1 request says so with
        # an empty Host (RFC 9112 section 3.2), rather than inventing one
        seen.kept.append((b"host", b"Host", b""))


def _choose_upgrade(out: ForwardedRequest, seen: _Sorted, upgrades: frozenset[bytes]) -> None:
    """An upgrade needs `Connection: upgrade` too, and only the protocols in `upgrades`."""
    if seen.upgrade is not None and b"upgrade" in seen.named:
        if _tokens(seen.upgrade) <= upgrades:
            out.upgrade = seen.upgrade
        else:
            out.declined_upgrade = True


def _upstream_head(
    out: ForwardedRequest, seen: _Sorted, method: str, target: bytes, client_ip: str,
    new_request_id: str, proto: bytes,
) -> bytes:
    """The request line, the kept headers but those Connection names (it can never name
    the framing, Host or one the balancer sets), then the balancer's own headers and the
    framing, written by the balancer itself."""
    dropped = seen.named - SET_BY_BALANCER
    parts = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for lname, name, value in seen.kept:
        if lname not in dropped:
            parts += (name, b": ", value, b"\r\n")
    out.request_id = (seen.request_id or new_request_id.encode()).decode("ascii")
    seen.forwarded_for.append(client_ip.encode("ascii"))
    parts += (b"X-Forwarded-For: ", b", ".join(seen.forwarded_for), b"\r\n",
              b"X-Forwarded-Proto: ", seen.forwarded_proto or proto, b"\r\n")
    host = seen.forwarded_host or out.host
    if host:
        parts += (b"X-Forwarded-Host: ", host, b"\r\n")
    seen.via.append(VIA)
    parts += (b"Via: ", b", ".join(seen.via), b"\r\n",
              b"X-Request-Id: ", out.request_id.encode("ascii"), b"\r\n")
    if out.upgrade is not None:
        parts += (b"Connection: upgrade\r\nUpgrade: ", out.upgrade, b"\r\n")
    if out.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif out.content_length is not None:
        parts.append(b"Content-Length: %d\r\n" % out.content_length)
    parts.append(b"\r\n")
    return b"".join(parts)


def _response_headers(
    headers: Headers, *, upgrade: bool
) -> tuple[list[tuple[bytes, bytes]], bytes | None, bytes]:
    """The end-to-end response headers, the load report taken out, and the Via value."""
    named: set[bytes] = set()
    kept: list[tuple[bytes, bytes, bytes]] = []
    report = None
    via = b""
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"connection":
                named |= _tokens(value)
            elif upgrade and lname == b"upgrade":
                kept.append((lname, name, value))
            continue
        if lname == b"content-length" or lname == b"x-request-id":
            continue
        if lname == LOAD_REPORT_HEADER:
            report = value
            continue
        if lname == b"via":
            via += value + b", "
            continue
        kept.append((lname, name, value))
    out = [(name, value) for lname, name, value in kept
           if lname not in named or (upgrade and lname == b"upgrade")]
    return out, report, via + VIA


def forward_response(
    headers: Headers, request_id: str, *, upgrade: bool = False, extra: Headers = ()
) -> tuple[list[tuple[str, str]], bytes | None]:
    """Client-side response headers (str, for aiohttp) and the load report taken out of them.

    Content-Length is dropped too: the caller gives aiohttp the length (or the body) itself.
    """
    kept, report, via = _response_headers(headers, upgrade=upgrade)
    out = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in kept]
    out.append(("Via", via.decode("latin-1")))
    out.append(("X-Request-Id", request_id))
    out += [(name.decode("latin-1"), value.decode("latin-1")) for name, value in extra]
    if upgrade:
        out.append(("Connection", "upgrade"))
    return out, report


_NO_LENGTH = frozenset({204, *range(100, 200)})


def response_head(
    status: int,
    reason: bytes,
    headers: Headers,
    request_id: str,
    *,
    content_length: int | None,
    keep_alive: bool,
    http10: bool = False,
    extra: Headers = (),
    transfer_coding: bytes | None = None,
) -> tuple[bytes, bytes | None]:
    """The serialised head of a response, and the load report. Its body is framed by
    `content_length`, else by `transfer_coding` (`chunked`, or codings that end with the
    connection), else by the end of the connection."""
    kept, report, via = _response_headers(headers, upgrade=False)
    parts = [b"HTTP/1.1 %d %b\r\n" % (status, reason or _reason(status))]
    for name, value in kept:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"Via: ", via, b"\r\nX-Request-Id: ", request_id.encode("ascii"), b"\r\n")
    for name, value in extra:
        parts += (name, b": ", value, b"\r\n")
    if content_length is not None and status not in _NO_LENGTH:
        parts.append(b"Content-Length: %d\r\n" % content_length)
    elif transfer_coding is not None:
        parts += (b"Transfer-Encoding: ", transfer_coding, b"\r\n")
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif http10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), report


def close_delimited_coding(headers: Headers) -> bytes | None:
    """The Transfer-Encoding of a response whose codings do not end with chunked (its body
    ends with the connection, RFC 9112 section 6.3), else None."""
    value = None
    for name, field in headers:
        if name.lower() == b"transfer-encoding":
            value = field if value is None else value + b", " + field
    if value is None or value.rsplit(b",", 1)[-1].strip().lower() == b"chunked":
        return None
    return value


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"
