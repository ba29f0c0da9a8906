"""What tests share besides fixtures and fake backends: waiting on a condition, configs, the
handles the balancer fixtures return (`Running` in-process, `Process` as a subprocess), raw
client exchanges, free ports, and the fixture type aliases. Fixtures live in conftest.py,
fake backends in fakes.py, the h11 recording backend in recording.py."""

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn

import aiohttp
import pytest

from balancer.balancing.load_report import LoadReport, parse_load_report
from balancer.ops.server import Balancer
from tests.fakes import Backend, BackendProcess, RawBackend, RawHandler
from tests.recording import RecordingBackend

ROOT = Path(__file__).resolve().parent.parent
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


def one_pool_config(*backends: str, extra: str = "", listen: str = "127.0.0.1:0") -> str:
    """A config text: the public listener on `listen` (a known address where port 0 will not
    do: see free_port), the admin one on port 0, `extra` top-level lines, and one pool
    `default` of `backends`."""
    lines = "\n".join(f"      - {url}" for url in backends)
    return (f"listen: {listen}\nadmin: 127.0.0.1:0\n{extra}"
            f"pools:\n  default:\n    backends:\n{lines}\n")


def free_port() -> int:
    """A port nothing listens on now (find-then-bind: another process may take it before the
    test binds it, so use port 0 wherever the balancer accepts it). Needed where port 0 will
    not do: `--workers N` rejects port 0 (every worker must bind the same known port), a
    reload that moves a listener to an address the test must know in advance, and an address
    where nothing listens (a refused connect)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def raw_exchange(url: str, data: bytes, *, until: bytes | None = None,
                       timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send raw bytes, read until `until` was received, the balancer closes or `timeout`.
    Returns what came back and whether the connection was closed."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    received = b""
    closed = False
    try:
        async with asyncio.timeout(timeout):
            while until is None or until not in received:
                chunk = await reader.read(65536)
                if not chunk:
                    closed = True
                    break
                received += chunk
    except TimeoutError:
        pass
    except ConnectionResetError:
        closed = True
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return received, closed


# The combined log format as log tools match it (GoAccess' COMBINED, the ELK/Grok
# COMBINEDAPACHELOG, awk recipes): host ident user [time] "request" status bytes "referer" "ua"
COMBINED = re.compile(
    r'^(?P<client>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:'
    r'\d{2}:\d{2}:\d{2} [+-]\d{4})\] "(?P<method>[^ "]+) (?P<target>[^ "]+) '
    r'(?P<protocol>HTTP/\d\.\d)" (?P<status>\d{3}) (?P<bytes>\d+|-) '
    r'"(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)"')


def report_of(resp: aiohttp.ClientResponse) -> LoadReport:
    """The load report a response carries (endpoint-load-metrics); fails without one."""
    report = parse_load_report(resp.headers["endpoint-load-metrics"])
    assert report is not None, resp.headers["endpoint-load-metrics"]
    return report


class Running:
    """An in-process balancer the `balancer_factory` fixture started."""

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer
        self.url = f"http://{balancer.public_addresses[0]}"
        self.admin_url = f"http://{balancer.admin_address}" if balancer.admin_address else ""


def buffered_bytes(lb: Running) -> tuple[int, int]:
    """Bytes the balancer holds in write buffers: (towards clients, towards backends)."""
    return lb.balancer.buffered_bytes()


class Process:
    """The balancer as a subprocess the `balancer_process` fixture started; its output goes
    to `log_path`."""

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


# The fixtures' types, for test signatures.
BackendFactory = Callable[..., Awaitable[Backend]]  # backend_factory(name, unix=, report=)
RawBackendFactory = Callable[[RawHandler], Awaitable[RawBackend]]  # raw_backend_factory
BalancerFactory = Callable[..., Awaitable[Running]]  # balancer_factory(yaml_text, path=None)
ProcessFactory = Callable[..., Process]  # balancer_process(config_path, *args, ready=...)
# proxied(handler=answer_ok, extra=""): a balancer in front of one recording backend
ProxiedFactory = Callable[..., Awaitable[tuple[Running, RecordingBackend]]]
BackendProcessFactory = Callable[..., BackendProcess]  # start_backend(kind, *args)
