"""Helpers the benchmark scripts share: ports and waiting for servers to come up.

(Benchmarks may find a free port and then bind it: a race the tests avoid, harmless here.)
"""

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from backends.probe import is_healthy

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def haproxy_config(port: int, servers: list[int], balance: str = "roundrobin") -> str:
    """An HAProxy 2.x config: one thread, keep-alive both ways, `balance` over the servers."""
    lines = ["global", "  nbthread 1", "  maxconn 4096", "defaults", "  mode http",
             "  timeout connect 5s", "  timeout client 60s", "  timeout server 60s",
             "  option http-keep-alive", "  http-reuse always", "frontend public",
             f"  bind 127.0.0.1:{port}", "  default_backend servers", "backend servers",
             f"  balance {balance}"]
    lines += [f"  server s{i} 127.0.0.1:{server}" for i, server in enumerate(servers)]
    return "\n".join(lines) + "\n"


def haproxy_routes_config(port: int, backends: Mapping[str, int],
                          acls: list[tuple[str, str]], default: str) -> str:
    """An HAProxy config that routes by path prefix, as an expert would write it by hand:
    `acls` is [(path prefix, backend name)], first match wins, else `default`."""
    lines = ["global", "  nbthread 1", "  maxconn 4096", "defaults", "  mode http",
             "  timeout connect 5s", "  timeout client 60s", "  timeout server 60s",
             "  option http-keep-alive", "  http-reuse always", "frontend public",
             f"  bind 127.0.0.1:{port}"]
    for index, (prefix, backend) in enumerate(acls):
        lines += [f"  acl route{index} path_beg {prefix}",
                  f"  use_backend {backend} if route{index}"]
    lines.append(f"  default_backend {default}")
    for name, server in backends.items():
        lines += [f"backend {name}", f"  server {name}0 127.0.0.1:{server}"]
    return "\n".join(lines) + "\n"


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children, from /proc (psutil)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def wait_healthy(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not is_healthy(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not healthy after {timeout}s")
        time.sleep(0.1)


class Stack:
    """The backends and the proxies in front of them; stops everything on exit."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], name: str, *, cwd: Path = ROOT,
              env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.work / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                    start_new_session=True,
                                    env=None if env is None else dict(env))
        self.procs.append(proc)
        return proc

    def stop_one(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM one process group and wait for it (SIGKILL after 15 s)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.procs.remove(proc)

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def open_loop(url: str, rate: float, seconds: float, *, method: str = "GET",
              body: bytes | None = None, timeout: float = 10.0) -> list[tuple[float, int]]:
    """One request kind at a fixed rate; see `open_loop_plan`."""
    return [(latency, status) for _, latency, status in
            open_loop_plan([(method, url, body)], rate, seconds, timeout=timeout)]


def open_loop_plan(plan: list[tuple[str, str, bytes | None]], rate: float, seconds: float, *,
                   timeout: float = 10.0) -> list[tuple[int, float, int]]:
    """An open-loop load: request i (plan[i % len(plan)]: method, url, body) is sent at
    t0 + i/rate whatever came before (no coordinated omission); each latency counts from its
    scheduled time. Returns (plan index, latency seconds, status; 0 for a transport error)."""
    return [(kind, latency, status) for _, kind, latency, status, _ in
            open_loop_records(plan, rate, seconds, timeout=timeout)]


def open_loop_records(plan: list[tuple[str, str, bytes | None]], rate: float, seconds: float,
                      *, timeout: float = 10.0, pick: Callable[[int, float], int] | None = None,
                      ) -> list[tuple[float, int, float, int, str]]:
    """`open_loop_plan`, with more per request: (time.monotonic() when it ended, plan index,
    latency seconds, status, the start of the body or the exception when not 200).
    `pick(i, seconds since the start)` chooses request i's plan index (default i % len)."""
    import asyncio

    import aiohttp

    async def run() -> list[tuple[float, int, float, int, str]]:
        loop = asyncio.get_running_loop()
        results: list[tuple[float, int, float, int, str]] = []
        connector = aiohttp.TCPConnector(limit=0)
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
            async def one(kind: int, scheduled: float) -> None:
                method, target, body = plan[kind]
                text = ""
                try:
                    async with session.request(method, target, data=body) as resp:
                        payload = await resp.read()
                        status = resp.status
                        if status != 200:
                            text = payload[:160].decode("utf-8", "replace").strip()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, text = 0, repr(exc)[:160]
                results.append((time.monotonic(), kind, loop.time() - scheduled, status, text))

            start = loop.time() + 0.05
            tasks = []
            for i in range(int(rate * seconds)):
                scheduled = start + i / rate
                delay = scheduled - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                kind = i % len(plan) if pick is None else pick(i, i / rate)
                tasks.append(asyncio.ensure_future(one(kind, scheduled)))
            await asyncio.gather(*tasks)
        return results

    return asyncio.run(run())


def summarize(results: list[tuple[float, int]], seconds: float) -> dict[str, float]:
    ok = sorted(latency for latency, status in results if status == 200)
    p99 = ok[min(len(ok) - 1, int(0.99 * len(ok)))] * 1000 if ok else float("nan")
    p50 = ok[len(ok) // 2] * 1000 if ok else float("nan")
    return {"rps": len(ok) / seconds, "p50": p50, "p99": p99,
            "errors": float(sum(1 for _, status in results if status != 200))}
