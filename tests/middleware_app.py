"""A user's own app (no EchoNext) in the load-report middleware, for test_middleware.py.

`wsgi` and `asgi` serve the same routes: `/light` (tiny JSON), `/cpu?ms=N` (burns N ms of
this thread's CPU, holding the GIL), `/io?ms=N` (waits N ms without CPU).
"""

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from backends.middleware import LoadReportASGI, LoadReportWSGI


def _ms(query: str, default: int) -> int:
    values = parse_qs(query).get("ms")
    return int(values[0]) if values else default


def burn(ms: float) -> None:
    deadline = time.thread_time() + ms / 1000
    while time.thread_time() < deadline:
        pass


def plain_wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
    if path == "/cpu":
        burn(_ms(query, 30))
    elif path == "/io":
        time.sleep(_ms(query, 30) / 1000)
    elif path != "/light":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    body = json.dumps({"path": path}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def plain_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path, query = scope["path"], scope["query_string"].decode()
    status = 200
    if path == "/cpu":
        burn(_ms(query, 30))
    elif path == "/io":
        await asyncio.sleep(_ms(query, 30) / 1000)
    elif path != "/light":
        status = 404
    body = json.dumps({"path": path}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


wsgi = LoadReportWSGI(plain_wsgi)
asgi = LoadReportASGI(plain_asgi)
