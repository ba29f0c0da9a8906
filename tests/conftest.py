"""Fixtures only: real backends and balancers on port 0, each cleaned up after its test, and
the hypothesis profiles. The fake backends are in fakes.py; what tests share besides fixtures
(wait_for, one_pool_config, the handles and type aliases) in helpers.py."""

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, settings

from backends.probe import is_healthy
from balancer.config.parse import parse_config
from balancer.ops.server import Balancer
from tests.fakes import Backend, BackendProcess, RawBackend, RawHandler, echo_app
from tests.helpers import (
    ROOT,
    BackendFactory,
    BackendProcessFactory,
    BalancerFactory,
    Process,
    ProcessFactory,
    ProxiedFactory,
    RawBackendFactory,
    Running,
    one_pool_config,
)
from tests.recording import Handler, RecordingBackend, answer_ok
from tests.routing_echo import SERVERS, RoutingServer

# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE: `ci` (the default) keeps `make test`
# bounded; `fuzz` runs the same properties much longer. Tests that set no max_examples of
# their own take the profile's.
settings.register_profile("ci", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=20_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that leaves bodies as sent (no automatic decompression)."""
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        yield client


# -- fake backends (tests/fakes.py) ---------------------------------------------------------

@pytest.fixture
async def backend_factory(tmp_path: Path) -> AsyncIterator[BackendFactory]:
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
        port = runner.addresses[0][1]
        return Backend(runner, f"http://127.0.0.1:{port}")

    yield make
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def raw_backend_factory() -> AsyncIterator[RawBackendFactory]:
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


# -- an in-process balancer (helpers.Running) -----------------------------------------------------

@pytest.fixture
async def balancer_factory() -> AsyncIterator[BalancerFactory]:
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


@pytest.fixture
async def proxied(balancer_factory: BalancerFactory) -> AsyncIterator[ProxiedFactory]:
    """A balancer in front of one recording backend (tests/recording.py) with the given
    handler, for two-sided tests."""
    backends: list[RecordingBackend] = []

    async def start(handler: Handler = answer_ok, extra: str = "") -> tuple[Running,
                                                                            RecordingBackend]:
        backend = await RecordingBackend(handler).start()
        backends.append(backend)
        lb = await balancer_factory(one_pool_config(backend.url, extra=extra))
        return lb, backend

    yield start
    for backend in backends:
        await backend.stop()


# -- the balancer as a subprocess ------------------------------------------------------------------

@pytest.fixture
def balancer_process(tmp_path: Path) -> Iterator[ProcessFactory]:
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


# -- real backends as processes ------------------------------------------------------------------

@pytest.fixture
def start_backend(tmp_path: Path) -> Iterator[BackendProcessFactory]:
    """Demo backends (`python -m backends serve --kind KIND`) on unix sockets, killed after."""
    started: list[BackendProcess] = []

    def start(kind: str, *extra: str) -> BackendProcess:
        sock = str(tmp_path / f"{kind}-{len(started)}.sock")
        stdout = tmp_path / f"{kind}-{len(started)}.stdout"
        with open(stdout, "wb") as out, open(tmp_path / f"{kind}.stderr", "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "backends", "serve", "--kind", kind,
                 "--listen", f"unix:{sock}", *extra],
                stdout=out, stderr=err, cwd=tmp_path, start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        backend = BackendProcess(proc, sock, stdout)
        started.append(backend)
        deadline = time.monotonic() + 30
        while not is_healthy(f"unix:{sock}"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{kind} backend did not start: "
                                     f"{(tmp_path / f'{kind}.stderr').read_text()}")
            time.sleep(0.05)
        return backend

    yield start
    for backend in started:
        if backend.proc.poll() is None:
            os.killpg(backend.proc.pid, signal.SIGKILL)
        backend.proc.wait(10)


@pytest.fixture(scope="module")
def servers() -> Iterator[list[RoutingServer]]:
    """One RoutingServer of each of SERVERS, for the module's tests."""
    started = [RoutingServer(name) for name in SERVERS]
    try:
        deadline = time.monotonic() + 30
        for server in started:
            server.wait_ready(deadline)
        yield started
    finally:
        for server in started:
            server.process.terminate()
        for server in started:
            try:
                server.process.wait(10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
