"""Every error the balancer answers itself has one body format and, when written raw, one head:
the bytes each refusal had before they were built in one place (replies.error_text and
replies.closing_reply)."""

import re

import pytest

from balancer.http.errors import (
    BadRequest,
    HeadTimeout,
    HeadTooLarge,
    NoBackend,
    ProxyError,
    UriTooLong,
    VersionNotSupported,
)
from balancer.proxy.replies import closing_reply, error_text

BODIES = [
    (HeadTooLarge("the request head is over 100 bytes"),
     "431 request header fields too large: the request head is over 100 bytes (request id r1)\n"),
    (HeadTooLarge("too many header lines"),
     "431 request header fields too large: too many header lines (request id r1)\n"),
    (HeadTimeout("the request head did not arrive within 2.5s"),
     "408 request timeout: the request head did not arrive within 2.5s (request id r1)\n"),
    (UriTooLong("the request line is over 8190 bytes"),
     "414 uri too long: the request line is over 8190 bytes (request id r1)\n"),
    (BadRequest("Invalid method encountered"),
     "400 bad request: Invalid method encountered (request id r1)\n"),
    (VersionNotSupported("HTTP/2.0"),
     "505 HTTP version not supported (HTTP/1.0 and HTTP/1.1 are): HTTP/2.0 (request id r1)\n"),
    (NoBackend(), "503 no backend available (request id r1)\n"),  # no detail: not repeated
    (NoBackend("pool p has no backends"),
     "503 no backend available: pool p has no backends (request id r1)\n"),
]


@pytest.mark.parametrize(("error", "body"), BODIES, ids=[b for _, b in BODIES])
def test_the_error_body_names_status_reason_detail_and_request_id(
    error: ProxyError, body: str,
) -> None:
    assert error_text(error, "r1") == body


HEADS = [
    (HeadTooLarge("x"), b"431 Request Header Fields Too Large"),
    (HeadTimeout("x"), b"408 Request Timeout"),
    (UriTooLong("x"), b"414 URI Too Long"),
    (BadRequest("x"), b"400 Bad Request"),
    (VersionNotSupported("x"), b"505 HTTP Version Not Supported"),
]


@pytest.mark.parametrize(("error", "status_line"), HEADS, ids=[s.decode() for _, s in HEADS])
def test_a_raw_refusal_is_http11_closing_plain_text_with_its_length_and_request_id(
    error: ProxyError, status_line: bytes,
) -> None:
    head, body = closing_reply(error, "r1")
    assert body == error_text(error, "r1").encode()
    pattern = (rb"HTTP/1\.1 " + re.escape(status_line) + rb"\r\nConnection: close\r\n"
               rb"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n"
               rb"Content-Type: text/plain; charset=utf-8\r\n"
               rb"Content-Length: " + str(len(body)).encode() + rb"\r\n"
               rb"X-Request-Id: r1\r\n\r\n")
    assert re.fullmatch(pattern, head), head
