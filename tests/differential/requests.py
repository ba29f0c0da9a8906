"""Generated client requests (hypothesis), as raw bytes with what the balancer must do with them.

A `RequestSpec` is drawn without a tag; `render` puts a fresh tag in its target (and in an
X-Test-Id header) when it is sent, so that shrinking replays the same request with a new tag.
`kind` is what the balancer may do: "plain" must be forwarded; "either" may be forwarded
(exactly) or refused with a 4xx; "reject" must be refused (4xx, or 501 for an unknown
transfer coding) and nothing of it may reach the backend.
"""

import string
from dataclasses import dataclass

from hypothesis import strategies as st

PLACEHOLDER = b"\x00TAG\x00"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")
HOSTS = (b"a", b"example.test", b"Example.COM:8080", b"127.0.0.1:1", b"[::1]:80", b"x-y.z")
PATH_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@"
QUERY_CHARS = PATH_CHARS + "/?%"
VALUE_CHARS = string.ascii_letters + string.digits + " -_.;=/,"
EXTRA_NAMES = ("User-Agent", "Accept", "X-Extra", "Cookie", "Cache-Control", "X-Forwarded-For",
               "Via", "TE", "Keep-Alive", "Proxy-Connection", "X-Request-Id")
CONNECTION_TOKENS = ("keep-alive", "close", "content-length", "transfer-encoding", "host",
                     "x-forwarded-for", "x-forwarded-proto", "x-request-id", "x-test-id",
                     "x-extra", "te", "upgrade", "via", "expect", "user-agent")
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: internal\r\n\r\n"


@dataclass(frozen=True)
class RequestSpec:
    method: str
    version: str                 # "1.1" or "1.0"
    kind: str                    # "plain", "either" or "reject"
    line_target: bytes           # as on the request line (PLACEHOLDER for the tag)
    target: bytes                # the origin-form target the backend must see
    host: bytes | None           # the Host the backend must see; None: the client sent none
    headers: tuple[bytes, ...]   # header lines, spelled and ordered, without CRLF
    wire_body: bytes             # the body bytes as sent (framed)
    body: bytes                  # the body the backend must receive
    persistent: bool             # the client asked to keep the connection open
    expect_continue: bool
    upgrade: bytes | None
    why: str                     # the features that make it "either" or "reject"

    def render(self, tag: str) -> "Rendered":
        t = tag.encode()
        head = b"%s %s HTTP/%s\r\n" % (self.method.encode(), self.line_target.replace(
            PLACEHOLDER, t), self.version.encode())
        head += b"".join(line.replace(PLACEHOLDER, t) + b"\r\n" for line in self.headers)
        return Rendered(self, tag, self.target.replace(PLACEHOLDER, t),
                        head + b"\r\n" + self.wire_body)


@dataclass(frozen=True)
class Rendered:
    spec: RequestSpec
    tag: str
    target: bytes
    raw: bytes


# -- spelling ---------------------------------------------------------------------------------

def _spell(name: str, style: int) -> bytes:
    if style == 0:
        return name.lower().encode()
    if style == 1:
        return "-".join(part.capitalize() for part in name.split("-")).encode()
    if style == 2:
        return name.upper().encode()
    return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(name)).encode()


SPELLING = st.integers(0, 3)
# (a tab after a Transfer-Encoding value gets a 400 from aiohttp: refused, not forwarded,
# so not drawn here)
OWS = st.sampled_from([(b" ", b""), (b"", b""), (b"\t", b""), (b"  ", b" ")])


@st.composite
def header_line(draw: st.DrawFn, name: str, value: bytes) -> bytes:
    before, after = draw(OWS)
    return _spell(name, draw(SPELLING)) + b":" + before + value + after


@st.composite
def targets(draw: st.DrawFn, absolute: bool) -> tuple[bytes, bytes, bytes | None]:
    """(request-line target, origin-form target, authority or None)."""
    path = draw(st.text(PATH_CHARS, max_size=10)).encode()
    query = draw(st.none() | st.text(QUERY_CHARS, max_size=10))
    origin = b"/d/" + PLACEHOLDER + b"/" + path
    if query is not None:
        origin += b"?" + query.replace("%", "%25").encode()
    if not absolute:
        return origin, origin, None
    authority = draw(st.sampled_from([b"origin.test", b"Origin.Test:8080", b"10.0.0.1"]))
    return b"http://" + authority + origin, origin, authority


@st.composite
def chunked_body(draw: st.DrawFn, body: bytes, extensions: bool, trailers: bool
                 ) -> tuple[bytes, bool]:
    """The body chunked at drawn points; True if anything beyond plain chunks was used."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=3)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    out = b""
    fancy = False
    for piece in [p for p in pieces if p] + [b""]:
        size = b"%x" % len(piece)
        if extensions and draw(st.booleans()):
            size = draw(st.sampled_from([b"0", b"00"])) + size.upper()
            fancy = True
        ext = b""
        if extensions and draw(st.booleans()):
            ext = draw(st.sampled_from([b";a", b";name=value", b';q="quoted"', b" ;x=1",
                                        b";a;b=c"]))
            fancy = True
        out += size + ext + b"\r\n" + piece + (b"\r\n" if piece else b"")
    if trailers and draw(st.booleans()):
        out += draw(st.sampled_from([b"X-Trailer: 1\r\n", b"X-Sum: abc\r\nX-More: d\r\n"]))
        fancy = True
    return out + b"\r\n", fancy


BODIES = st.one_of(st.binary(max_size=40), st.just(SMUGGLED),
                   st.binary(min_size=1, max_size=8).map(lambda b: b + SMUGGLED))

# Framing of a request body: name -> kind. "cl" and "chunked" are the plain ones.
FRAMINGS = {
    "cl": "plain",
    "chunked": "plain",
    "chunked with extensions or trailers": "either",
    "chunked spelled Chunked": "either",
    "content-length with leading zeros": "either",
    "content-length twice, same value": "either",
    "content-length list, same value": "either",
    "content-length twice, different values": "reject",
    "content-length list, different values": "reject",
    "content-length with a sign": "reject",
    "content-length not a number": "reject",
    "content-length and chunked": "reject",
    "chunked and content-length": "reject",
    "transfer-encoding twice": "reject",
    "chunked, chunked": "reject",
    "chunked, identity": "reject",
    "identity": "reject",
    "chunked, then a coding": "reject",
}


@st.composite
def framed(draw: st.DrawFn, framing: str, body: bytes
           ) -> tuple[list[tuple[str, bytes]], bytes, str]:
    """(framing header fields, wire body, kind)."""
    n = b"%d" % len(body)
    kind = FRAMINGS[framing]
    if framing == "cl":
        return [("Content-Length", n)], body, kind
    if framing.startswith("chunked") and framing not in (
            "chunked and content-length", "chunked, chunked", "chunked, identity",
            "chunked, then a coding"):
        fancy = framing == "chunked with extensions or trailers"
        wire, used = draw(chunked_body(body, extensions=fancy, trailers=fancy))
        coding = b"Chunked" if framing == "chunked spelled Chunked" else b"chunked"
        return [("Transfer-Encoding", coding)], wire, kind if used or not fancy else "plain"
    plain_chunks, _ = draw(chunked_body(body, extensions=False, trailers=False))
    fields: dict[str, list[tuple[str, bytes]]] = {
        "content-length with leading zeros": [("Content-Length", b"00" + n)],
        "content-length twice, same value": [("Content-Length", n), ("Content-Length", n)],
        "content-length list, same value": [("Content-Length", n + b", " + n)],
        "content-length twice, different values": [("Content-Length", n),
                                                    ("Content-Length", b"%d" % (len(body) + 1))],
        "content-length list, different values": [("Content-Length",
                                                   n + b", %d" % (len(body) + 1))],
        "content-length with a sign": [("Content-Length", b"+" + n)],
        "content-length not a number": [("Content-Length", n + b"x")],
        "content-length and chunked": [("Content-Length", n), ("Transfer-Encoding", b"chunked")],
        "chunked and content-length": [("Transfer-Encoding", b"chunked"),
                                       ("Content-Length", b"%d" % len(plain_chunks))],
        "transfer-encoding twice": [("Transfer-Encoding", b"chunked"),
                                    ("Transfer-Encoding", b"chunked")],
        "chunked, chunked": [("Transfer-Encoding", b"chunked, chunked")],
        "chunked, identity": [("Transfer-Encoding", b"chunked, identity")],
        "identity": [("Transfer-Encoding", b"identity"), ("Content-Length", n)],
        "chunked, then a coding": [("Transfer-Encoding", b"chunked, gzip")],
    }
    wire = body if framing.startswith("content-length") or framing == "identity" \
        else plain_chunks
    return fields[framing], wire, kind


def worst(*kinds: str) -> str:
    for kind in ("reject", "either"):
        if kind in kinds:
            return kind
    return "plain"


@st.composite
def requests(
    draw: st.DrawFn,
    *,
    framings: tuple[str, ...] = ("cl", "chunked"),
    version: str = "1.1",
    connection: bool = False,
    host: bool = True,
    expect: bool | None = False,
    upgrade: bool = False,
    absolute: bool | None = None,
    extras: bool = True,
    close_allowed: bool = True,
    extra_fields: st.SearchStrategy[list[tuple[str, bytes]]] | None = None,
) -> RequestSpec:
    """One request; the keyword arguments choose the family of features drawn."""
    why: list[str] = []
    method = draw(st.sampled_from(METHODS if not upgrade else ("GET", "POST")))
    use_absolute = draw(st.booleans()) if absolute is None else absolute
    line_target, target, authority = draw(targets(use_absolute))
    fields: list[tuple[str, bytes]] = [("X-Test-Id", PLACEHOLDER)]
    host_value = draw(st.sampled_from(HOSTS)) if host else None
    if host_value is not None:
        fields.append(("Host", host_value))
    body = draw(BODIES) if method in ("POST", "PUT", "PATCH") or draw(st.booleans()) else b""
    framing = draw(st.sampled_from(framings))
    kind = "plain"
    if body or framing != "cl" or draw(st.booleans()):
        framing_fields, wire_body, kind = draw(framed(framing, body))
        fields += framing_fields
        if kind != "plain":
            why.append(framing)
    else:
        wire_body = b""
    if version == "1.0" and any(n == "Transfer-Encoding" for n, _ in fields):
        kind = "reject"  # RFC 9112 section 6.1: framing of an HTTP/1.0 message is faulty
        why.append("transfer-encoding in HTTP/1.0")
    tokens: list[str] = []
    if connection:
        tokens = draw(st.lists(st.sampled_from(CONNECTION_TOKENS if close_allowed else
                                               tuple(t for t in CONNECTION_TOKENS
                                                     if t != "close")),
                               min_size=1, max_size=4, unique=True))
        if version == "1.0" and not close_allowed and "keep-alive" not in tokens:
            tokens.append("keep-alive")
        why.append("Connection: " + ", ".join(tokens))
        kind = worst(kind, "either")
    elif version == "1.0" and (not close_allowed or draw(st.booleans())):
        tokens = ["keep-alive"]
    elif close_allowed and version == "1.1" and draw(st.integers(0, 4)) == 0:
        tokens = ["close"]
    upgrade_token = None
    if upgrade:
        upgrade_token = draw(st.sampled_from([b"websocket", b"h2c", b"foo/1", b"WebSocket"]))
        if "upgrade" not in tokens:
            tokens.append("upgrade")
        fields.append(("Upgrade", upgrade_token))
        if upgrade_token.lower() == b"websocket" and draw(st.booleans()):
            fields += [("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                       ("Sec-WebSocket-Version", b"13")]
        why.append(f"Upgrade: {upgrade_token.decode()}")
        kind = worst(kind, "either")
    if tokens:
        fields.append(("Connection", b", ".join(
            _spell(t, draw(SPELLING)) for t in tokens)))
    expect_continue = bool(body) and (draw(st.booleans()) if expect is None else expect)
    if expect_continue:
        fields.append(("Expect", b"100-continue"))
    if extras:
        # unique names: aiohttp refuses a repeated User-Agent or Content-Type (a policy)
        for name in draw(st.lists(st.sampled_from(EXTRA_NAMES), max_size=3, unique=True)):
            fields.append((name, draw(st.text(VALUE_CHARS, max_size=12)).strip().encode()))
    if extra_fields is not None:
        fields += draw(extra_fields)
    if method == "HEAD" and kind != "plain":
        method = "GET"  # a refused HEAD gets a 400 with a body (test_requests.py): not here
    ordered = draw(st.permutations(fields))
    lines = tuple(draw(header_line(name, value)) for name, value in ordered)
    lowered = {t.lower() for t in tokens}
    persistent = ("close" not in lowered and
                  (version == "1.1" or "keep-alive" in lowered))
    return RequestSpec(
        method=method, version=version, kind=kind, line_target=line_target, target=target,
        host=authority if authority is not None else host_value, headers=lines,
        wire_body=wire_body, body=body, persistent=persistent,
        expect_continue=expect_continue, upgrade=upgrade_token, why="; ".join(why))


def pipelines(max_size: int = 3, **family: object) -> st.SearchStrategy[list[RequestSpec]]:
    """Up to `max_size` requests of a family on one connection; only the last may end it
    (after a request that ends it, aiohttp refuses the lot: see test_requests.py)."""
    return st.tuples(
        st.lists(requests(close_allowed=False, **family), max_size=max_size - 1),  # type: ignore[arg-type]
        requests(**family),  # type: ignore[arg-type]
    ).map(lambda t: [*t[0], t[1]])
