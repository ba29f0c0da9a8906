"""Attack round (after issue 11): credentials that are not UTF-8 (a Bearer token or the login
cookie with bytes like 0xFF) are simply wrong: 401, not a 500 with an ERROR traceback per
request (anyone who reaches the admin listener could fill the log)."""

import logging

import pytest

from tests.helpers import BalancerFactory, Running, one_pool_config, raw_exchange

TOKEN = "0123456789abcdef0123"


@pytest.mark.parametrize("credential", [
    b"Authorization: Bearer \xff\xfe", b"Authorization: Bearer caf\xc3\xa9\xff",
    b"Cookie: balancer_admin=\xff",
])
async def test_credentials_that_are_not_utf8_are_401_without_a_traceback(
    balancer_factory: BalancerFactory, caplog: pytest.LogCaptureFixture, credential: bytes,
) -> None:
    lb: Running = await balancer_factory(one_pool_config(
        "http://127.0.0.1:1", extra=f'admin_token: "{TOKEN}"\n'))
    caplog.set_level(logging.INFO)
    received, _ = await raw_exchange(
        lb.admin_url, b"GET /status HTTP/1.1\r\nHost: localhost\r\n%b\r\nConnection: close"
                      b"\r\n\r\n" % credential)
    assert received.startswith(b"HTTP/1.1 401 "), received[:200]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    received, _ = await raw_exchange(  # (the right token still works)
        lb.admin_url, b"GET /status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %b\r\n"
                      b"Connection: close\r\n\r\n" % TOKEN.encode())
    assert received.startswith(b"HTTP/1.1 200 ")
