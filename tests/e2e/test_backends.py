"""The three backend runners serving the demo app, as real processes on unix sockets."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from backends.demo import sample_image
from balancer.balancing.load_report import LoadReport
from tests.fakes import KINDS, BackendProcess
from tests.helpers import ROOT, BackendProcessFactory, report_of


@pytest.fixture(params=KINDS)
async def demo(request: pytest.FixtureRequest,
               start_backend: BackendProcessFactory) -> AsyncIterator[BackendProcess]:
    yield start_backend(request.param, "--workers", "2", "--threads", "4")


async def test_demo_routes_answer_correctly(demo: BackendProcess) -> None:
    async with demo.session() as session:
        async with session.get("http://b/api/items?id=7") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("application/json")
            assert (await resp.json())["id"] == 7
        async with session.get("http://b/db/query?user=3") as resp:
            body = await resp.json()
            assert resp.status == 200 and body["user"] == 3 and len(body["orders"]) == 10
            assert report_of(resp).wall_ms >= 15  # type: ignore[operator]  # it waited
        async with session.get("http://b/render/page?name=Books") as resp:
            html = await resp.text()
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html")
            assert "Books department" in html and html.count("<tr class=") == 60
        async with session.post("http://b/process/image", data=sample_image(64)) as resp:
            image = await resp.read()
            assert resp.status == 200 and image.startswith(b"P5\n32 32\n255\n")
            assert len(image) == len(b"P5\n32 32\n255\n") + 32 * 32
        async with session.get("http://b/io/sleep?ms=30") as resp:
            assert (await resp.json()) == {"slept_ms": 30}
        async with session.get("http://b/nope") as resp:
            assert resp.status == 404 and resp.reason == "Not Found"
        async with session.get("http://b/debug/error") as resp:
            assert resp.status == 500 and resp.reason == "Internal Server Error"
            assert "view raised" in await resp.text()


async def test_a_request_without_accept_or_user_agent_is_answered_200(demo: BackendProcess) -> None:
    reader, writer = await asyncio.open_unix_connection(demo.socket)
    writer.write(b"GET /api/items?id=1 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head = response.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200 ok")
    assert b"\r\nuser-agent:" not in head and b"\r\naccept:" not in head


async def test_load_report_is_present_and_sane(demo: BackendProcess) -> None:
    async with demo.session() as session:
        async with session.get("http://b/cpu/spin?ms=50") as resp:
            report = report_of(resp)
        assert 35 <= report.cpu_ms <= 80  # type: ignore[operator]
        assert report.wall_ms >= report.cpu_ms * 0.9  # type: ignore[operator]
        assert report.cpu_utilization is not None and report.eps is not None
        assert report.inflight is not None and report.inflight >= 1
        assert report.queue is not None and report.workers in (2, 4)
        async with session.get("http://b/io/sleep?ms=100") as resp:
            report = report_of(resp)
        assert report.cpu_ms < 20 and report.wall_ms >= 95  # type: ignore[operator]
        async with session.get("http://b/__load") as resp:
            load = await resp.json()
        assert load["requests_total"] >= 2 and "cpu_utilization" in load


async def test_inflight_rises_under_concurrent_load(demo: BackendProcess) -> None:
    async with demo.session() as session:
        async def one() -> float:
            async with session.get("http://b/io/sleep?ms=500") as resp:
                return report_of(resp).inflight or 0

        seen = await asyncio.gather(*(one() for _ in range(6)))
    assert max(seen) >= 2


async def test_waitress_queue_counts_toward_inflight(
    start_backend: BackendProcessFactory,
) -> None:
    backend = start_backend("threaded", "--threads", "2")
    async with backend.session() as session:
        async def one() -> LoadReport:
            async with session.get("http://b/io/sleep?ms=400") as resp:
                return report_of(resp)

        reports = await asyncio.gather(*(one() for _ in range(6)))
    assert max(r.queue or 0 for r in reports) >= 1
    assert max(r.inflight or 0 for r in reports) > 2  # more than the threads that run views


async def test_busy_multiprocess_instance_reports_the_cpu_of_all_its_workers(
    start_backend: BackendProcessFactory,
) -> None:
    """Two workers spin: the reported utilisation is the whole process tree's CPU (not the
    idle master's, not one worker's). Compared with what psutil measures for the tree in the
    same window, so a loaded machine (less CPU for everyone) cannot fail it."""
    backend = start_backend("multiprocess", "--workers", "3")
    tree = psutil.Process(backend.proc.pid)

    def tree_cpu() -> float:
        total = 0.0
        for proc in [tree, *tree.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    async with backend.session() as session:
        busy = [asyncio.ensure_future(session.get("http://b/cpu/spin?ms=2500")) for _ in range(2)]
        start, deadline = tree_cpu(), time.monotonic() + 10
        while tree_cpu() < start + 0.2 and time.monotonic() < deadline:  # the spins have begun
            await asyncio.sleep(0.05)
        reported: list[float] = []
        cpu0, t0 = tree_cpu(), time.monotonic()
        while time.monotonic() < t0 + 1.5:
            async with session.get("http://b/__load") as resp:
                reported.append((await resp.json())["cpu_utilization"])
            await asyncio.sleep(0.1)
        measured = (tree_cpu() - cpu0) / (time.monotonic() - t0) / (os.cpu_count() or 1)
        for future in busy:
            (await future).release()
    mean = sum(reported[3:]) / max(1, len(reported[3:]))  # skip samples from before the window
    assert measured > 0.05, f"the workers did not spin ({measured:.3f})"
    assert mean > 0.6 * measured, f"reported {mean:.3f}, the process tree used {measured:.3f}"


async def test_sigterm_stops_it(demo: BackendProcess) -> None:
    async with demo.session() as session, session.get("http://b/api/items") as resp:
        assert resp.status == 200
    demo.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(demo.proc.wait, 20) == 0


async def test_no_output_on_stdout_per_request(demo: BackendProcess) -> None:
    async with demo.session() as session:
        for i in range(300):
            async with session.get(f"http://b/api/items?id={i}") as resp:
                assert resp.status == 200
    demo.proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(demo.proc.wait, 20)
    assert demo.stdout.read_bytes() == b""


def test_importing_echonext_has_no_side_effects(tmp_path: Path) -> None:
    """No network call, no file written, nothing printed, excepthooks left alone."""
    script = """
import socket, sys, threading, os
calls = []
sys.addaudithook(lambda event, args: calls.append(event)
                 if event in ("socket.connect", "socket.getaddrinfo") else None)
hooks = (sys.excepthook, threading.excepthook)
from backends.echonext import import_echonext
import_echonext()
import backends.demo
import logging
assert (sys.excepthook, threading.excepthook) == hooks, "excepthook replaced"
assert not logging.getLogger("pyechonext").handlers
print("CALLS", calls)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "CALLS []\n"  # the only output is the test's own line
    assert list(tmp_path.iterdir()) == []  # no pyechonext.log, nothing else


def test_memory_stays_flat_over_50k_distinct_requests() -> None:
    """history and the body-keyed cache would keep every request; the host keeps none."""
    script = """
import io, gc, psutil
from backends.runners import load_app
from backends.wsgi import WSGIHost
from backends.load import Counters, LoadMeter
host = WSGIHost(load_app("backends.demo:app"), LoadMeter(Counters(), workers=1))
def call(i):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/items", "QUERY_STRING": f"id={i}",
               "wsgi.input": io.BytesIO(b""), "SERVER_NAME": "x", "SERVER_PORT": "80",
               "HTTP_HOST": "x"}
    body = b"".join(host(environ, lambda status, headers: None))
    assert f'"id": {i}'.encode() in body
for i in range(5000):
    call(i)
gc.collect()
before = psutil.Process().memory_info().rss
for i in range(5000, 55000):
    call(i)
gc.collect()
print((psutil.Process().memory_info().rss - before) / 2**20)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    growth_mib = float(result.stdout.strip().splitlines()[-1])
    assert growth_mib < 5, f"RSS grew {growth_mib:.1f} MiB over 50k requests"


async def test_sigusr1_turns_a_backend_slow_mid_run_and_sigusr2_back(
    start_backend: BackendProcessFactory,
) -> None:
    backend = start_backend("threaded", "--threads", "2", "--slowdown-on-signal", "4")

    async def spin_cpu_ms(session: aiohttp.ClientSession) -> float:
        async with session.get("http://b/cpu/spin?ms=20") as resp:
            assert resp.status == 200
            return report_of(resp).cpu_ms or 0.0

    async with backend.session() as session:
        assert await spin_cpu_ms(session) < 50
        backend.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while (cpu_ms := await spin_cpu_ms(session)) < 60:  # 4 x 20 ms of CPU from now on
            assert time.monotonic() < deadline, f"still {cpu_ms} ms of CPU after SIGUSR1"
            await asyncio.sleep(0.05)
        backend.proc.send_signal(signal.SIGUSR2)  # and back
        while (cpu_ms := await spin_cpu_ms(session)) > 50:
            assert time.monotonic() < deadline, f"still {cpu_ms} ms of CPU after SIGUSR2"
            await asyncio.sleep(0.05)
    assert backend.proc.poll() is None  # the signals did not end it
