"""Attack round (after issue 11): a Host header that is no `uri-host [":" port]` is a 400
(RFC 9110 section 7.2: a server MUST answer 400 to a Host with an invalid field value), not
forwarded: backends build absolute URLs (redirects, reset links) and X-Forwarded-Host from it,
and `Host: good.example@evil.example` or `a/b` read differently to each URL parser. Before,
every one below reached the backend verbatim. Two-sided: 400 and the backend sees nothing, or
the backend sees exactly the Host sent."""

import pytest

from tests.helpers import ProxiedFactory, raw_exchange


@pytest.mark.parametrize("host", [
    b"a b", b"a/b", b"good.example@evil.example", b"a\\b", b"a?b", b"evil.example/x.internal",
    b"[::1", b"a:80:80", b"a:port", b'a"b', b"a<b>",
])
async def test_an_invalid_host_is_400_and_reaches_nobody(
    proxied: ProxiedFactory, host: bytes,
) -> None:
    lb, backend = await proxied()
    received, closed = await raw_exchange(lb.url, b"GET /h HTTP/1.1\r\nHost: %b\r\n\r\n" % host)
    assert received.startswith(b"HTTP/1.1 400 "), (host, received[:200])
    assert b"Host" in received and closed
    assert backend.links == []


@pytest.mark.parametrize("host", [
    b"a", b"example.com:8080", b"[::1]:80", b"127.0.0.1", b"xn--bcher-kva.example",
    b"under_score.local", b"a.b-c~d", b"", b"%41.example",
])
async def test_a_valid_host_is_forwarded_as_sent(
    proxied: ProxiedFactory, host: bytes,
) -> None:
    lb, backend = await proxied()
    received, _ = await raw_exchange(lb.url, b"GET /h HTTP/1.1\r\nHost: %b\r\n\r\n" % host,
                                     until=b"for /h")
    assert received.startswith(b"HTTP/1.1 200 "), received[:200]
    assert backend.requests[0].header(b"host") == [host]
