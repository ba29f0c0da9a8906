"""The access log as operators rotate it: reopened on SIGUSR1 (logrotate's postrotate), also
with workers, and a SIGUSR1 during a worker's restart harms nothing. Its lines:
tests/unit/test_access_log.py; in-process: tests/integration/test_access_log.py."""

import asyncio
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.fakes import Backend
from tests.helpers import (
    COMBINED,
    BackendFactory,
    ProcessFactory,
    free_port,
    one_pool_config,
)


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200


def _wait_for_lines(path: Path, count: int, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {count} lines after {timeout}s")


def rotation(tmp_path: Path, backend: Backend, start: ProcessFactory, processes: int,
             *args: str) -> Iterator[None]:
    """Lines, then mv + SIGUSR1, then lines: the new ones are in a new file."""
    log_path, rotated = tmp_path / "access.log", tmp_path / "access.log.1"
    config = tmp_path / "lb.yaml"
    port = free_port()
    config.write_text(one_pool_config(
        backend.url, extra=f"access_log: {{format: combined, path: '{log_path}'}}\n",
        listen=f"127.0.0.1:{port}"))
    lb = start(config, *args, ready=r"serving with 2 workers" if args else "serving config")
    yield
    for _ in range(4):
        _get(f"{lb.url}/before")
    _wait_for_lines(log_path, 4)
    os.rename(log_path, rotated)
    lb.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 15
    while not log_path.exists():  # every process opens the new file at once, empty
        assert time.monotonic() < deadline, "SIGUSR1 did not create a new access log"
        time.sleep(0.02)
    lb.wait_for_log(r"(?s)" + ".*".join(["access log reopened"] * processes))
    for _ in range(4):
        _get(f"{lb.url}/after")
    new = _wait_for_lines(log_path, 4)
    old = rotated.read_text().splitlines()
    assert all(COMBINED.match(line) for line in old + new)
    assert all(" /before " in line for line in old) and len(old) == 4
    assert all(" /after " in line for line in new) and len(new) == 4
    assert lb.proc.poll() is None


async def test_sigusr1_reopens_the_access_log(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory("b")
    steps = rotation(tmp_path, backend, balancer_process, 1)
    next(steps)
    await _in_thread(steps)


async def test_sigusr1_reopens_the_access_log_of_every_worker(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory("b")
    steps = rotation(tmp_path, backend, balancer_process, 2, "--workers", "2")
    next(steps)
    await _in_thread(steps)


async def _in_thread(steps: Iterator[None]) -> None:
    """The blocking part (urllib, sleeps on files) off the loop the backend runs on."""
    await asyncio.to_thread(lambda: next(steps, None))


async def test_sigusr1_while_a_worker_restarts_does_not_kill_it(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    """logrotate may signal at any moment: SIGUSR1 reaches no worker before its handler is
    in (the supervisor passes it to ready workers only; a starting one ignores it)."""
    backend = await backend_factory("b")
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(
        backend.url, extra=f"access_log: {{path: '{tmp_path / 'access.log'}'}}\n",
        listen=f"127.0.0.1:{free_port()}"))
    lb = balancer_process(config, "--workers", "2", ready=r"serving with 2 workers")
    pid = int(lb.wait_for_log(r"worker 1 started \(pid (\d+)\)").group(1))
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while not re.search(rf"worker 1 started \(pid (?!{pid}\))", lb.log()):
        assert time.monotonic() < deadline, lb.log()
        lb.signal(signal.SIGUSR1)
        await asyncio.sleep(0.005)
    for _ in range(300):  # through the new worker's start (bounded: 300 signals)
        lb.signal(signal.SIGUSR1)
        await asyncio.sleep(0.005)
    assert "exited with signal SIGUSR1" not in lb.log()
