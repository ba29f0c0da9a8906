"""The load-report middleware under each real server (gunicorn, waitress, uvicorn, granian),
behind a real balancer: the balancer learns each route's cost from the user's own server."""

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from backends.load import HEADER
from balancer.balancing.load_report import parse_load_report
from tests.helpers import ROOT, BalancerFactory, Running, free_port, one_pool_config

APP = "tests.middleware_app"


def _command(server: str, port: int) -> list[str]:
    python = sys.executable
    if server == "gunicorn":
        return [python, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", f"{APP}:wsgi"]
    if server == "waitress":
        return [python, "-m", "waitress", f"--listen=127.0.0.1:{port}", "--threads=4",
                f"{APP}:wsgi"]
    if server == "uvicorn":
        return [python, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning", f"{APP}:asgi"]
    interface = server.removeprefix("granian-")
    return [python, "-m", "granian", "--interface", interface, "--host", "127.0.0.1",
            "--port", str(port), f"{APP}:{interface}"]


ROUTING = ("routing:\n  cpu_threshold: 20ms\n"
           "  classes: {io: default, light_cpu: default, heavy_cpu: default}\n")
SERVERS = ["gunicorn", "waitress", "uvicorn", "granian-wsgi", "granian-asgi"]


def _has(server: str) -> bool:
    return importlib.util.find_spec(server.split("-")[0]) is not None


@pytest.fixture
def user_server(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Starts the user's own server command on a free port; returns its base URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(server: str) -> str:
        for _attempt in range(3):  # a free port can be taken before the server binds it
            port = free_port()
            with open(tmp_path / f"{server}.log", "ab") as log:
                proc = subprocess.Popen(_command(server, port), cwd=ROOT, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**os.environ, "PYTHONPATH": str(ROOT)})
            procs.append(proc)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        return f"http://127.0.0.1:{port}"
                time.sleep(0.05)
        raise AssertionError(f"{server} did not start:\n{(tmp_path / f'{server}.log').read_text()}")

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


async def _routes(session: aiohttp.ClientSession, running: Running) -> dict[str, Any]:
    async with session.get(running.admin_url + "/status") as resp:
        document = await resp.json()
    return {route["route"]: route for route in document["routes"]}


@pytest.mark.parametrize("server", SERVERS)
async def test_the_balancer_learns_costs_from_the_users_own_server(
    server: str,
    user_server: Callable[[str], str],
    balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    if not _has(server):
        pytest.skip(f"{server} is not installed")
    url = user_server(server)
    async with session.get(url + "/__health") as resp:
        assert resp.status == 200
        assert (await resp.json()) == {"status": "ok"}
    async with session.get(url + "/__load") as resp:
        assert resp.status == 200
        assert "named_metrics.inflight" in await resp.json()
    async with session.get(url + "/cpu?ms=5") as resp:  # straight to the server: the report
        report = parse_load_report(resp.headers[HEADER])
        assert report is not None and report.cpu_ms is not None and report.wall_ms is not None
        assert report.cpu_ms >= 4.0

    running = await balancer_factory(one_pool_config(url, extra=ROUTING))
    for _ in range(8):
        for target in ("/cpu?ms=40", "/io?ms=40", "/light"):
            async with session.get(running.url + target) as resp:
                assert resp.status == 200
                assert HEADER not in resp.headers  # the balancer keeps the report to itself
                await resp.read()
    routes = await _routes(session, running)
    cpu, io, light = routes["GET /cpu?ms"], routes["GET /io?ms"], routes["GET /light"]
    assert cpu["samples"] >= 8 and io["samples"] >= 8 and light["samples"] >= 8
    assert cpu["cpu_ms"] >= 30, cpu  # burned 40 ms of its thread's CPU each time
    assert io["cpu_ms"] < 10 and io["io_share"] > 0.7, io  # waited 40 ms, almost no CPU
    assert light["cpu_ms"] < 10, light
    assert cpu["class"] == "heavy_cpu" and io["class"] == "io", (cpu, io)


def test_a_generator_app_gets_its_report_and_ends_its_request() -> None:
    """WSGI apps may call start_response inside their iterable: the report still goes out, and
    the in-flight count goes back to zero (no leaked request) whether or not it started."""
    from backends.middleware import LoadReportWSGI

    def lazy(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"ok"

    def never_starts(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return []

    for app in (lazy, never_starts):
        wrapped = LoadReportWSGI(app)
        seen: list[list[tuple[str, str]]] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None, seen: list[Any] = seen) -> None:
            seen.append(headers)

        result = wrapped({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, start_response)
        body = b"".join(result)
        close = getattr(result, "close", None)
        if close is not None:
            close()
        assert wrapped.meter.counters.snapshot()[0] == 0
        if app is lazy:
            assert body == b"ok"
            assert any(name == HEADER for name, _ in seen[0])


async def test_asgi_app_that_raises_ends_its_request() -> None:
    from backends.middleware import LoadReportASGI

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        return None

    wrapped = LoadReportASGI(broken)
    with pytest.raises(RuntimeError):
        await wrapped({"type": "http", "method": "GET", "path": "/x"}, receive, send)
    assert wrapped.meter.counters.snapshot()[0] == 0  # counted down at once, in a finally
