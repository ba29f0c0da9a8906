"""Process lifecycle on real subprocesses: `drain: 0s` stops at once, a SIGHUP at any moment of
start-up is a reload (never a death), one instance per port in single-process mode, and
concurrent reloads leave no listener behind."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from balancer.config.parse import parse_config
from balancer.ops.config_file import load_config
from balancer.ops.server import Balancer
from balancer.ops.supervisor import Supervisor
from tests.fakes import read_request_head
from tests.helpers import (
    ROOT,
    ProcessFactory,
    RawBackendFactory,
    free_port,
    one_pool_config,
)


async def test_drain_0s_stops_at_once_with_a_slow_request_in_flight(
    tmp_path: Path, raw_backend_factory: RawBackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    received = asyncio.Event()

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        received.set()
        await asyncio.Event().wait()  # cancelled when the test ends

    backend = await raw_backend_factory(never_answers)
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(backend.url, extra="timeouts: {drain: 0s}\n"))
    lb = balancer_process(config)
    async with aiohttp.ClientSession() as session:
        slow = asyncio.ensure_future(session.get(f"{lb.url}/held"))
        await asyncio.wait_for(received.wait(), 10)
        lb.signal(signal.SIGTERM)
        # drain 0s: no wait for the request (its answer never comes, and the backend_response
        # timeout is 30 s); aiohttp took a timeout of 0 as "no limit"
        assert await asyncio.to_thread(lb.proc.wait, 20) == 0
        with pytest.raises(aiohttp.ClientError):
            async with await slow as resp:
                await resp.read()
    assert "SIGTERM: draining (up to 0s)" in lb.log()


class Spawned:
    """`python -X importtime -m balancer run …`: stderr (import times, then the log) is read
    line by line as it comes, so a test can act the moment a given module is imported."""

    def __init__(self, config: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "balancer", "run", "-c", str(config),
             *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text()):
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} after {timeout}s:\n{self.log()}")
            time.sleep(0.005)

    def log(self) -> str:
        return "".join(line for line in self.lines if not line.startswith("import time:"))

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


def _sighup_from_the_first_import_until_ready(spawned: Spawned, ready: str) -> int:
    """SIGHUP every few ms from the moment balancer.cli is imported (the handlers come much
    later: after the config is read and every listener bound) until `ready` is logged."""
    spawned.wait_for(r"\| +balancer\.cli\n")
    sent = 0
    deadline = time.monotonic() + 30
    while not re.search(ready, spawned.log()):
        assert spawned.proc.poll() is None, (
            f"exited {spawned.proc.returncode} after {sent} SIGHUP(s):\n{spawned.log()}")
        assert time.monotonic() < deadline, spawned.log()
        spawned.proc.send_signal(signal.SIGHUP)
        sent += 1
        time.sleep(0.005)
    return sent


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_at_any_moment_of_start_up_is_a_reload_never_a_death(
    tmp_path: Path, workers: str,
) -> None:
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config("http://127.0.0.1:9", listen=f"127.0.0.1:{free_port()}"))
    ready = r"serving with 2 workers" if workers == "2" else r"serving config generation 1"
    for _ in range(3):
        spawned = Spawned(config, "--workers", workers)
        try:
            sent = _sighup_from_the_first_import_until_ready(spawned, ready)
            assert sent >= 1
            # the SIGHUPs that arrived before the handlers are one reload, done once serving
            spawned.wait_for(r"reloaded config: generation 2|reload passed to 2 workers")
            assert spawned.proc.poll() is None
            assert "exited with signal" not in spawned.log()
            spawned.proc.send_signal(signal.SIGTERM)
            assert spawned.proc.wait(30) == 0, spawned.log()
        finally:
            spawned.kill()


def test_a_worker_still_starting_is_not_killed_by_the_supervisors_reload(
    tmp_path: Path,
) -> None:
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config("http://127.0.0.1:9", listen=f"127.0.0.1:{free_port()}"))
    spawned = Spawned(config, "--workers", "2")

    def count(pattern: str) -> int:
        return len(re.findall(pattern, spawned.log()))

    try:
        spawned.wait_for(r"serving with 2 workers")
        for round_ in range(1, 4):
            pid = int(re.findall(r"worker 1 started \(pid (\d+)\)", spawned.log())[-1])
            os.kill(pid, signal.SIGKILL)
            # the replacement: SIGHUP the supervisor the moment it is spawned
            starts = count(r"worker 1 started")
            deadline = time.monotonic() + 30
            while count(r"worker 1 started") == starts:
                assert time.monotonic() < deadline and spawned.proc.poll() is None
                time.sleep(0.002)
            spawned.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while count(r"reload passed to 2 workers") < round_:
                assert time.monotonic() < deadline and spawned.proc.poll() is None, spawned.log()
                time.sleep(0.01)
            assert "exited with signal SIGHUP" not in spawned.log()
        assert not re.search(r"reload passed to 2 workers: .*; worker", spawned.log())
        spawned.proc.send_signal(signal.SIGTERM)
        assert spawned.proc.wait(30) == 0, spawned.log()
    finally:
        spawned.kill()


def _run_to_exit(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancer", "run", "-c", str(config), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_second_instance_on_the_same_ports_exits_1_instead_of_sharing_them(
    tmp_path: Path, workers: str, balancer_process: ProcessFactory,
) -> None:
    public, admin, other = free_port(), free_port(), free_port()
    first = tmp_path / "first.yaml"
    first.write_text(one_pool_config("http://127.0.0.1:9", listen=f"127.0.0.1:{public}").replace(
        "admin: 127.0.0.1:0", f"admin: 127.0.0.1:{admin}"))
    ready = r"serving with 2 workers" if workers == "2" else r"serving config generation"
    balancer_process(first, "--workers", workers, ready=ready)
    same_admin = tmp_path / "same-admin.yaml"
    same_admin.write_text(first.read_text().replace(f":{public}", f":{other}"))
    for config, port in ((first, public), (same_admin, admin)):
        result = _run_to_exit(config, "--workers", workers)
        assert result.returncode == 1, result.stderr
        assert f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr
        assert "Address already in use" in result.stderr
        assert "Traceback" not in result.stderr




class Overlap:
    """Wraps a reload step: how many run at the same time (at most)."""

    def __init__(self, step: Callable[..., Awaitable[object]]) -> None:
        self.step = step
        self.running = 0
        self.most = 0

    async def __call__(self, *args: object) -> object:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.01)  # the step awaits (binding, waiting for the workers)
            return await self.step(*args)
        finally:
            self.running -= 1


async def test_reloads_of_a_balancer_run_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(one_pool_config("http://127.0.0.1:9"))
    balancer = Balancer(parse_config(path.read_text(), str(path)), str(path))
    await balancer.start()
    try:
        overlap = Overlap(balancer._swap)
        monkeypatch.setattr(balancer, "_swap", overlap)
        outcomes = await asyncio.gather(*(balancer.reload() for _ in range(4)))
        assert all(o.ok for o in outcomes)
        assert [o.generation for o in outcomes] == [2, 3, 4, 5]
        assert overlap.most == 1
    finally:
        await balancer.stop()


async def test_reloads_of_a_supervisor_run_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(one_pool_config("http://127.0.0.1:9", listen=f"127.0.0.1:{free_port()}"))
    supervisor = Supervisor(load_config(str(path)), str(path), 2, "info")

    async def every_worker_serves_it(digest: str) -> list[str]:
        return []

    overlap = Overlap(every_worker_serves_it)
    monkeypatch.setattr(supervisor, "_await_digest", overlap)
    outcomes = await asyncio.gather(*(supervisor.reload() for _ in range(4)))
    assert all(o.ok for o in outcomes)
    assert overlap.most == 1
    await supervisor.stop()
