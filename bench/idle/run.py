"""bench/idle: hold 10,000 idle keep-alive client connections open on the balancer; report its
memory per connection, and check that a normal client is still served meanwhile.

Each connection sends one request (so it is a real keep-alive connection the balancer has
parsed a request on), reads the answer and then stays idle. RSS is the balancer process's
resident memory (psutil) before and after; the difference over the connection count is the
cost per idle connection.

usage: python bench/idle/run.py [--connections 10000]
"""

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.common import Stack, free_port, wait_listening  # noqa: E402
from bench.overhead.run import ensure_tools, nginx_conf  # noqa: E402

REQUEST = b"GET /api/items?id=1 HTTP/1.1\r\nHost: bench\r\n\r\n"


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []
    semaphore = asyncio.Semaphore(200)  # connect in waves: the accept queue is finite

    async def one() -> None:
        async with semaphore:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writers.append(writer)

    await asyncio.gather(*(one() for _ in range(count)))
    return writers


async def probe_latency(port: int, samples: int = 50) -> list[float]:
    """Fresh-connection requests while the idle connections are held (ms each)."""
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        await reader.readuntil(b"\r\n\r\n")
        out.append((time.perf_counter() - started) * 1000)
        writer.close()
    return out


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def main_async(args: argparse.Namespace, port: int, pid: int) -> dict[str, float]:
    await probe_latency(port, 20)  # warm-up
    before = rss_mib(pid)
    idle_latency = await probe_latency(port)
    started = time.perf_counter()
    writers = await open_idle(port, args.connections)
    opened = time.perf_counter() - started
    await asyncio.sleep(1.0)
    after = rss_mib(pid)
    held_latency = await probe_latency(port)
    fds = psutil.Process(pid).num_fds()
    for writer in writers:
        writer.close()
    return {"connections": len(writers), "open_s": opened, "rss_before": before,
            "rss_after": after, "kib_per_conn": (after - before) * 1024 / len(writers),
            "fds": fds, "p50_idle": statistics.median(idle_latency),
            "p50_held": statistics.median(held_latency), "max_held": max(held_latency)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--output", default=str(ROOT / "bench/results/idle.md"))
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 100:
        print(f"the open-file limit ({hard}) is below {args.connections} connections")
        return 1
    if "nginx" not in ensure_tools():
        print("bench/idle needs nginx (apt-get install nginx-light)")
        return 1
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    stack = Stack(work)
    try:
        backend, port = free_port(), free_port()
        stack.start([nginx, "-c", str(nginx_conf(work, "backend", backend, ""))], "backend")
        config = work / "balancer.yaml"
        config.write_text(f"listen: 127.0.0.1:{port}\ntimeouts: {{client_idle: 10m}}\n"
                          f"pools:\n  default: {{backends: [http://127.0.0.1:{backend}]}}\n")
        proc = stack.start([sys.executable, "-m", "balancer", "run", "-c", str(config),
                            "--log-level", "warning"], "balancer")
        wait_listening(backend)
        wait_listening(port)
        result = asyncio.run(main_async(args, port, proc.pid))
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = "\n".join([
        f"# bench/idle: {result['connections']:,.0f} idle keep-alive client connections, "
        f"{os.cpu_count()} cores",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| connections opened (one request each, then idle) | {result['connections']:,.0f} |",
        f"| time to open them | {result['open_s']:.1f} s |",
        f"| balancer RSS before / after | {result['rss_before']:.1f} / "
        f"{result['rss_after']:.1f} MiB |",
        f"| **memory per idle connection** | **{result['kib_per_conn']:.1f} KiB** |",
        f"| balancer file descriptors while held | {result['fds']:,} |",
        f"| new-connection request p50, before / while held | {result['p50_idle']:.2f} / "
        f"{result['p50_held']:.2f} ms (max {result['max_held']:.1f}) |",
    ]) + "\n"
    print(report)
    Path(args.output).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
