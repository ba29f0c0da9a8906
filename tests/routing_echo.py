"""Tiny apps that answer with the path their server routes, for
tests/e2e/test_routing_differential.py (RoutingServer runs one; the `servers` fixture all).

`python -m tests.routing_echo SERVER FD` serves on the listening socket inherited as FD (bound
to port 0 by the test, which reads the port back), with SERVER one of: uvicorn-httptools,
uvicorn-h11, waitress, gunicorn. The body is the routed path's bytes in hex: for ASGI,
`scope["path"]` (text, encoded as UTF-8); for WSGI, PATH_INFO (bytes carried as latin-1
text, as PEP 3333 says), which is what a framework decodes and matches its routes against.
"""

import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

SERVERS = ("uvicorn-httptools", "uvicorn-h11", "waitress", "gunicorn")


class RoutingServer:
    """One of SERVERS running this module in a subprocess on a port of its own."""

    def __init__(self, name: str) -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.name = name
        self.port = listener.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.routing_echo", name, str(listener.fileno())],
            pass_fds=[listener.fileno()], cwd=Path(__file__).resolve().parent.parent)
        listener.close()

    def routes(self, target: bytes) -> bytes | int:
        """The path this server routes for `target` (its bytes), or the status it answered."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
            conn.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.") else 0
        return bytes.fromhex(body.decode()) if status == 200 else status

    def wait_ready(self, deadline: float) -> None:
        while True:
            try:
                if self.routes(b"/ready") == b"/ready":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"{self.name} did not start serving")
            time.sleep(0.05)


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
