"""Fake backends for tests: an aiohttp echo app (echo, health, status, slow, download, upload
and websocket routes) and a raw TCP backend for misbehaviour aiohttp would not produce. The
fixtures that start them on port 0 and clean them up are in conftest.py. Also h11 helpers for
raw handlers (h11_request, h11_ok)."""

import asyncio
import hashlib
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import h11
from aiohttp import WSMsgType, web

NAME = web.AppKey("name", str)
REPORT = web.AppKey("report", str)
HEALTHY = web.AppKey("healthy", list)  # [bool]: what /__health answers
SEEN = web.AppKey("seen", list)  # [str]: the `id` query value of each /slow request received


# -- an echo backend (aiohttp) ---------------------------------------------------------------

async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    headers = {"X-Backend": request.app[NAME]}
    if request.app[REPORT]:  # a load report, as an EchoNext backend sends with every response
        headers["endpoint-load-metrics"] = request.app[REPORT]
    elif "cpu" in request.query:  # report a cost, as an EchoNext backend would
        headers["endpoint-load-metrics"] = (
            f"TEXT cpu_utilization=0.1, request_cost.cpu_ms={request.query['cpu']}, "
            f"request_cost.wall_ms={request.query.get('wall', request.query['cpu'])}")
    return web.json_response({
        "method": request.method,
        "path_qs": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_len": len(body),
        "body_sha": hashlib.sha256(body).hexdigest(),
        "transfer_encoding": request.headers.get("Transfer-Encoding"),
    }, headers=headers)


async def _health(request: web.Request) -> web.Response:
    return web.Response(status=200 if request.app[HEALTHY][0] else 503, text="health\n")


async def _status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    return web.Response(status=code, body=None if code in (204, 304) else b"status\n")


async def _slow(request: web.Request) -> web.Response:
    request.app[SEEN].append(request.query.get("id", ""))
    await asyncio.sleep(float(request.query.get("s", "5")))
    return web.Response(text="slow\n", headers={"X-Backend": request.app[NAME]})


async def _download(request: web.Request) -> web.StreamResponse:
    total = int(request.query["bytes"])
    response = web.StreamResponse()
    if request.query.get("length") == "1":
        response.content_length = total
    await response.prepare(request)
    block = b"x" * 65536
    sent = 0
    while sent < total:
        piece = block[: min(len(block), total - sent)]
        await response.write(piece)
        sent += len(piece)
    await response.write_eof()
    return response


async def _upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({"size": size, "sha": digest.hexdigest()})


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str("echo:" + msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def echo_app(name: str = "echo", report: str = "") -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app[NAME] = name
    app[REPORT] = report
    app[HEALTHY] = [True]
    app[SEEN] = []
    app.router.add_get("/__health", _health)
    app.router.add_route("*", "/status/{code}", _status)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/download", _download)
    app.router.add_post("/upload", _upload)
    app.router.add_get("/ws", _ws)
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


class Backend:
    """A started echo backend: `url` is what a config lists."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self.runner = runner
        self.url = url

    def set_healthy(self, healthy: bool) -> None:
        self.runner.app[HEALTHY][0] = healthy

    @property
    def seen(self) -> list[str]:
        return self.runner.app[SEEN]


KINDS = ["async", "threaded", "multiprocess"]  # the demo backend runners (backends serve --kind)


@dataclass
class BackendProcess:
    """A demo backend (`python -m backends serve`) as a process on a unix socket."""

    proc: subprocess.Popen[bytes]
    socket: str
    stdout: Path

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.socket))


# -- a raw TCP backend, for misbehaviour aiohttp would not produce ------------------------------

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawBackend:
    """A started raw backend: each connection runs its handler; `connections` counts them."""

    def __init__(self, server: asyncio.Server) -> None:
        self.server = server
        self.port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    """For raw handlers: the request head, up to its blank line."""
    return await reader.readuntil(b"\r\n\r\n")


async def h11_request(reader: asyncio.StreamReader, conn: h11.Connection) -> h11.Request | None:
    """The next request head on a connection, parsed by h11 (its body is read and dropped);
    None when the client closed."""
    request = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None


def h11_ok(conn: h11.Connection, body: bytes) -> bytes:
    """A whole keep-alive 200 response, serialised by h11 (so `conn` can go on to the next)."""
    return b"".join(conn.send(event) or b"" for event in (
        h11.Response(status_code=200, headers=[("Content-Length", str(len(body)))]),
        h11.Data(data=body), h11.EndOfMessage()))
