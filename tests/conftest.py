"""Shared fixtures: real backends and balancers on port 0, cleaned up after each test."""

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import NoReturn

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from hypothesis import HealthCheck, settings

from balancer.config.parse import parse_config
from balancer.ops.server import Balancer

ROOT = Path(__file__).resolve().parent.parent

# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE: `ci` (the default) keeps `make test`
# bounded; `fuzz` runs the same properties much longer. Tests that set no max_examples of
# their own take the profile's.
settings.register_profile("ci", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=20_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
NAME = web.AppKey("name", str)
REPORT = web.AppKey("report", str)
HEALTHY = web.AppKey("healthy", list)  # [bool]: what /__health answers
SEEN = web.AppKey("seen", list)  # [str]: the `id` query value of each /slow request received


UNDER_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def missing_prerequisite(reason: str) -> NoReturn:
    """A test that cannot run here: skipped on a developer's machine, a failure under CI (where
    nothing may skip silently; the set-up must provide what the test needs)."""
    if UNDER_CI:
        pytest.fail(f"{reason}; CI is set, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll `predicate` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that leaves bodies as sent (no automatic decompression)."""
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        yield client


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
    """A started backend: `url` is what a config lists."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self.runner = runner
        self.url = url

    def set_healthy(self, healthy: bool) -> None:
        self.runner.app[HEALTHY][0] = healthy

    @property
    def seen(self) -> list[str]:
        return self.runner.app[SEEN]


@pytest.fixture
async def backend_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Backend]]]:
    runners: list[web.AppRunner] = []

    async def make(name: str = "echo", unix: bool = False, report: str = "") -> Backend:
        runner = web.AppRunner(echo_app(name, report), access_log=None)
        await runner.setup()
        runners.append(runner)
        if unix:
            path = str(tmp_path / f"{name}-{len(runners)}.sock")
            await web.UnixSite(runner, path).start()
            return Backend(runner, f"unix:{path}")
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return Backend(runner, f"http://127.0.0.1:{port}")

    yield make
    for runner in runners:
        await runner.cleanup()


# -- a raw TCP backend, for misbehaviour aiohttp would not produce ------------------------------

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawBackend:
    def __init__(self, server: asyncio.Server) -> None:
        self.server = server
        self.port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0


@pytest.fixture
async def raw_backend_factory() -> AsyncIterator[Callable[[RawHandler], Awaitable[RawBackend]]]:
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()

    async def make(handler: RawHandler) -> RawBackend:
        holder: list[RawBackend] = []

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            holder[0].connections += 1
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)  # type: ignore[arg-type]
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                tasks.discard(task)  # type: ignore[arg-type]

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        servers.append(server)
        holder.append(RawBackend(server))
        return holder[0]

    yield make
    for server in servers:
        server.close()
    for task in list(tasks):
        task.cancel()
    for server in servers:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


# -- an in-process balancer ----------------------------------------------------------------------

class Running:
    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer
        self.url = f"http://{balancer.public_addresses[0]}"
        self.admin_url = f"http://{balancer.admin_address}" if balancer.admin_address else ""


@pytest.fixture
async def balancer_factory() -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    started: list[Balancer] = []

    async def make(yaml_text: str, path: str | None = None) -> Running:
        config = parse_config(yaml_text, path or "test.yaml")
        balancer = Balancer(config, path)
        await balancer.start()
        started.append(balancer)
        return Running(balancer)

    yield make
    for balancer in started:
        await balancer.stop()


def one_pool_config(*backends: str, extra: str = "") -> str:
    lines = "\n".join(f"      - {url}" for url in backends)
    return (f"listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n{extra}"
            f"pools:\n  default:\n    backends:\n{lines}\n")


# -- the balancer as a subprocess ------------------------------------------------------------------

class Process:
    def __init__(self, proc: subprocess.Popen[str], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.url = ""
        self.admin_url = ""

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            if self.proc.poll() is not None:
                raise AssertionError(f"balancer exited {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} in log after {timeout}s:\n{self.log()}")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)


@pytest.fixture
def balancer_process(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    procs: list[Process] = []

    def start(config_path: Path, *args: str, ready: str = r"serving config generation") -> Process:
        log_path = tmp_path / f"balancer-{len(procs)}.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "balancer", "run", "-c", str(config_path), *args],
                stdout=log_file, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
            )
        process = Process(proc, log_path)
        procs.append(process)
        process.wait_for_log(ready)
        match = re.search(r"INFO listening on (\S+)", process.log())
        assert match is not None
        process.url = f"http://{match.group(1)}"
        admin = re.search(r"admin listening on ((?!unix:)\S+)", process.log())
        process.admin_url = f"http://{admin.group(1)}" if admin else ""
        return process

    yield start
    for process in procs:
        with contextlib.suppress(ProcessLookupError):  # the balancer and any workers it left
            os.killpg(process.proc.pid, signal.SIGKILL)
        process.proc.wait(10)
