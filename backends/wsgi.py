"""The WSGI host around an EchoNext app: health, load, load reports, and correct responses.

`call_app` runs the app once and returns a response that any server accepts, fixing what
EchoNext 0.7.17 gets wrong at the WSGI boundary:
- it calls `start_response(status=..., headers=...)` by keyword (a2wsgi refuses that);
- it sends bare `404` / `405` status lines: the reason phrase is added;
- it copies the request's Host, Accept and User-Agent into the response, as None when the
  request had none (waitress, gunicorn and cheroot then answer 500): those are dropped;
- a view that raises (propagated by backends.echonext) becomes a 500 with a short body.
`WSGIHost` serves `GET /__health` and `GET /__load` itself and adds the load report header.
"""

import io
import json
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from backends.load import HEADER, LoadMeter

log = logging.getLogger("backends")

Headers = list[tuple[str, str]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ECHOED = frozenset({"host", "accept", "user-agent"})


def fix_status(status: str) -> tuple[str, int]:
    """`404` → `404 Not Found`; returns the status line and its code."""
    code_text, _, reason = str(status).strip().partition(" ")
    code = int(code_text)
    if not reason:
        try:
            reason = HTTPStatus(code).phrase
        except ValueError:
            reason = "Unknown"
    return f"{code} {reason}", code


def fix_headers(headers: Iterable[tuple[str, Any]]) -> Headers:
    return [(str(name), str(value)) for name, value in headers
            if value is not None and str(name).lower() not in ECHOED]


def call_app(app: WSGIApp, environ: dict[str, Any]) -> "Outcome":
    """Run the app once; returns (status line, code, headers, body), never raises."""
    captured: dict[str, Any] = {}

    def start_response(status: str | None = None, headers: Any = None,
                       exc_info: Any = None) -> Callable[[bytes], None]:
        captured["status"], captured["headers"] = status, headers or []
        return lambda data: None

    try:
        result = app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, code = fix_status(captured["status"])
        return status, code, fix_headers(captured["headers"]), body
    except Exception:
        return server_error(environ)


Outcome = tuple[str, int, Headers, bytes]


def server_error(environ: dict[str, Any]) -> Outcome:
    """Log the exception being handled; the 500 response that replaces the view's."""
    log.exception("view failed: %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
    body = b"500 internal server error: the view raised an exception\n"
    return "500 Internal Server Error", 500, [("Content-Type", "text/plain; charset=utf-8")], body


def health_body() -> bytes:
    return b'{"status": "ok"}'


class WSGIHost:
    """Serves an EchoNext app over WSGI (threaded and multiprocess runners)."""

    def __init__(self, app: WSGIApp, meter: LoadMeter) -> None:
        self.app = app
        self.meter = meter

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/__health":
            return _plain(start_response, "200 OK", health_body())
        if path == "/__load":
            return _plain(start_response, "200 OK", json.dumps(self.meter.document()).encode())
        started = self.meter.begin()
        raw = environ["wsgi.input"].read() if environ.get("CONTENT_LENGTH") not in (None, "", "0") \
            or environ.get("HTTP_TRANSFER_ENCODING") else b""
        environ["echonext.body"] = raw
        environ["wsgi.input"] = io.BytesIO(raw)
        status, code, headers, body = call_app(self.app, environ)
        headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        headers.append((HEADER, self.meter.end(started, code)))
        start_response(status, headers)
        return [body]


def _plain(start_response: Callable[..., Any], status: str, body: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]
