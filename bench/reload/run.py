"""bench/reload: how long from SIGHUP to the new config serving, for a 50-rule file.

The balancer (1 worker, then 2 workers) runs in front of an nginx backend with two pools and
50 routing rules; each reload swaps two configs that move one route between the pools. The
clock starts just before the signal is sent and stops when a request (polled back to back
on a keep-alive connection) shows the new pool in its X-Balancer-Decision header. With
workers, the supervisor's own figure is reported too: from its SIGHUP to every worker
serving the new digest (it validates the file first). The balancer's in-process figure
(read, validate, build and swap) is read from /status.

usage: python bench/reload/run.py [--reloads 40] [--rules 50]
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.common import Stack, free_port, wait_listening  # noqa: E402
from bench.overhead.run import ensure_tools, nginx_conf  # noqa: E402


def config_text(port: int, admin: int, backend: int, rules: int, moved_to: str) -> str:
    filler = "\n".join(f'    - {{path: "/r{i}/**", class: io}}' for i in range(rules - 1))
    return f"""\
listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
trusted_proxies: [127.0.0.1]  # explain is shown to trusted clients only
watch: false  # reloads by SIGHUP only: the measured clock starts at the signal
pools:
  io:    {{kind: async,    backends: [http://127.0.0.1:{backend}]}}
  light: {{kind: threaded, backends: [http://127.0.0.1:{backend}]}}
routing:
  classes: {{io: io, light_cpu: light, heavy_cpu: light}}
  default_class: io
  explain: true
  rules:
{filler}
    - {{path: "/moved/**", class: {moved_to}, pin: true}}
"""


def pool_of(conn: http.client.HTTPConnection) -> str:
    conn.request("GET", "/moved/x")
    response = conn.getresponse()
    response.read()
    match = re.search(r"pool=(\w+)", response.getheader("X-Balancer-Decision", ""))
    return match.group(1) if match else ""


def measure(stack: Stack, work: Path, backend: int, args: argparse.Namespace,
            workers: int) -> dict[str, list[float]]:
    port, admin = free_port(), free_port()
    configs = {pool: config_text(port, admin, backend, args.rules, cls)
               for pool, cls in (("io", "io"), ("light", "light_cpu"))}
    path = work / f"reload-{workers}.yaml"
    path.write_text(configs["io"])
    proc = stack.start([sys.executable, "-m", "balancer", "run", "-c", str(path),
                        "--workers", str(workers), "--log-level", "warning"],
                       f"balancer-{workers}")
    wait_listening(port)
    wait_listening(admin)
    time.sleep(0.5)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    observed: list[float] = []
    for index in range(args.reloads):
        expected = "light" if index % 2 == 0 else "io"
        path.write_text(configs[expected])
        started = time.perf_counter()
        os.kill(proc.pid, signal.SIGHUP)
        while pool_of(conn) != expected:
            if time.perf_counter() - started > 10:
                raise RuntimeError(f"reload {index} not serving after 10 s")
        observed.append((time.perf_counter() - started) * 1000)
        time.sleep(0.1)
    status = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    status.request("GET", "/status")
    reloads = json.loads(status.getresponse().read())["reloads"]
    assert all(r["ok"] for r in reloads), reloads
    return {"observed": observed, "internal": [r["ms"] for r in reloads]}


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"{statistics.median(ordered):.1f} | {p90:.1f} | {ordered[-1]:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=40)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--output", default=str(ROOT / "bench/results/reload.md"))
    args = parser.parse_args()
    if "nginx" not in ensure_tools():
        print("bench/reload needs nginx (apt-get install nginx-light)")
        return 1
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    stack = Stack(work)
    results = {}
    try:
        backend = free_port()
        stack.start([nginx, "-c", str(nginx_conf(work, "backend", backend, ""))], "backend")
        wait_listening(backend)
        for workers in (1, 2):
            results[workers] = measure(stack, work, backend, args, workers)
            print(f"{workers} worker(s) done", flush=True)
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"# bench/reload: {args.reloads} reloads of a {args.rules}-rule file, "
        f"{os.cpu_count()} cores",
        "",
        "| what | median ms | p90 ms | max ms |",
        "|---|---:|---:|---:|",
        f"| 1 worker: SIGHUP → a request served by the new config | "
        f"{summary(results[1]['observed'])} |",
        f"| 1 worker: read + validate + build + swap (in process) | "
        f"{summary(results[1]['internal'])} |",
        f"| 2 workers: SIGHUP → a request served by the new config | "
        f"{summary(results[2]['observed'])} |",
        f"| 2 workers: supervisor validates, signals, every worker serving | "
        f"{summary(results[2]['internal'])} |",
        "",
        "Target: under 50 ms for a 50-rule file (signal to the new config serving).",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.output).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
