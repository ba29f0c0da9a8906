"""Tiny apps that answer with the path their server routes, for
tests/e2e/test_routing_differential.py.

`python -m tests.routing_echo SERVER FD` serves on the listening socket inherited as FD (bound
to port 0 by the test, which reads the port back), with SERVER one of: uvicorn-httptools,
uvicorn-h11, waitress, gunicorn. The body is the routed path's bytes in hex: for ASGI,
`scope["path"]` (text, encoded as UTF-8); for WSGI, PATH_INFO (bytes carried as latin-1
text, as PEP 3333 says), which is what a framework decodes and matches its routes against.
"""

import socket
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

SERVERS = ("uvicorn-httptools", "uvicorn-h11", "waitress", "gunicorn")


async def asgi_app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                   send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    if scope["type"] != "http":
        return
    body = scope["path"].encode("utf-8", "surrogatepass").hex().encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = environ["PATH_INFO"].encode("latin-1").hex().encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def serve(server: str, fd: int) -> None:
    if server.startswith("uvicorn-"):
        import uvicorn

        uvicorn.run(asgi_app, fd=fd, http=server.removeprefix("uvicorn-"), log_level="error",
                    lifespan="off")
    elif server == "waitress":
        import waitress

        sock = socket.socket(fileno=fd)
        waitress.serve(wsgi_app, sockets=[sock], _quiet=True)
    elif server == "gunicorn":
        from gunicorn.app.base import BaseApplication

        class Application(BaseApplication):  # type: ignore[misc]
            def load_config(self) -> None:
                self.cfg.set("bind", [f"fd://{fd}"])
                self.cfg.set("workers", 1)
                self.cfg.set("loglevel", "error")

            def load(self) -> Callable[..., Iterable[bytes]]:
                return wsgi_app

        Application().run()
    else:
        raise SystemExit(f"unknown server {server!r} (expected one of: {', '.join(SERVERS)})")


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
