"""bench/soak: ten minutes at a steady rate over all demo routes, with one backend restarted
and one config reload every minute; then: errors (those it can attribute to a restart, and
any others), the balancer's memory growth after warm-up, and its file descriptors.

Backends: two async (pool io), one threaded (light), one multiprocess (heavy, nice 10), the
demo app, behind the balancer with the shipped routing rules and active health checks.
Load: an open-loop generator (requests sent at their scheduled times, whatever came back) at
--rate req/s, cycling /api/items, /db/query, /render/page, /api/items, /db/query,
/render/page, ..., POST /process/image (10 % of requests). Every minute (from 0:30) one
backend, in turn, gets SIGTERM and is started again; every minute (from 1:00) the config
file is rewritten (alternating two valid versions) and the balancer gets SIGHUP. An error
counts as attributable when it happens between a backend's SIGTERM and 3 s after it is
healthy again. Memory and descriptors are sampled every 5 s; growth is measured from the
end of the first minute (warm-up) to the end.

usage: python bench/soak/run.py [--duration 600] [--rate 30]
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    Stack,
    free_port,
    open_loop_records,
    wait_healthy,
    wait_listening,
)

KINDS = {"a1": "async", "a2": "async", "t1": "threaded", "m1": "multiprocess"}


def config_text(ports: dict[str, int], port: int, admin: int, explain: bool) -> str:
    return f"""\
listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
watch: false  # reloads by SIGHUP only (counted)
timeouts: {{connect: 1s, backend_response: 15s}}
health: {{check_interval: 1s, rise: 1, fall: 1}}
pools:
  io:    {{kind: async,        backends: [http://127.0.0.1:{ports['a1']}, http://127.0.0.1:{ports['a2']}]}}
  light: {{kind: threaded,     backends: [http://127.0.0.1:{ports['t1']}]}}
  heavy: {{kind: multiprocess, backends: [http://127.0.0.1:{ports['m1']}]}}
routing:
  cpu_threshold: 100ms
  io_threshold: 0.5
  classes: {{io: io, light_cpu: light, heavy_cpu: heavy}}
  default_class: light_cpu
  explain: {'true' if explain else 'false'}
  rules:
    - {{path: "/api/**", class: io}}
    - {{path: "/db/**", class: io}}
    - {{path: "/render/**", class: light_cpu}}
    - {{path: "/process/**", methods: [POST], class: heavy_cpu}}
"""


def load(url: str, rate: float, seconds: float, image: bytes,
         results: list[tuple[float, int, float, int, str]], started: float) -> None:
    """The open-loop load; `results` gets (seconds since `started`, kind, latency, status,
    error text) per request."""
    plan: list[tuple[str, str, bytes | None]] = [
        ("GET", url + "/api/items?id=7", None), ("GET", url + "/db/query?customer=42", None),
        ("GET", url + "/render/page?name=Books", None)] * 3
    plan.append(("POST", url + "/process/image", image))
    for ended, kind, latency, status, text in open_loop_records(plan, rate, seconds,
                                                                 timeout=30):
        results.append((ended - started, kind, latency, status, text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--output", default=str(ROOT / "bench/results/soak.md"))
    args = parser.parse_args()
    from backends.demo import sample_image

    image = sample_image()
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    stack = Stack(work)
    ports = {name: free_port() for name in KINDS}
    port, admin = free_port(), free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start_backend(name: str) -> None:
        kind = KINDS[name]
        extra = {"async": ["--threads", "16"], "threaded": ["--threads", "8"],
                 "multiprocess": ["--workers", "2", "--nice", "10"]}[kind]
        procs[name] = stack.start([sys.executable, "-m", "backends", "serve", "--kind", kind,
                                   "--listen", f"127.0.0.1:{ports[name]}", *extra], name)

    windows: list[tuple[float, float, str]] = []
    samples: list[tuple[float, float, int]] = []
    reloads = 0
    try:
        for name in KINDS:
            start_backend(name)
        for name in KINDS:
            wait_healthy(f"http://127.0.0.1:{ports[name]}", timeout=60)
        path = work / "balancer.yaml"
        path.write_text(config_text(ports, port, admin, True))
        balancer = stack.start([sys.executable, "-m", "balancer", "run", "-c", str(path),
                                "--log-level", "warning"], "balancer")
        wait_listening(port)
        started = time.monotonic()
        results: list[tuple[float, int, float, int, str]] = []
        loader = threading.Thread(target=load, args=(f"http://127.0.0.1:{port}", args.rate,
                                                     args.duration, image, results, started))
        loader.start()
        proc = psutil.Process(balancer.pid)
        order = list(KINDS)
        next_restart, next_reload, next_sample, turn = 30.0, 60.0, 0.0, 0
        while loader.is_alive():
            now = time.monotonic() - started
            if now >= next_sample:
                samples.append((now, proc.memory_info().rss / 2**20, proc.num_fds()))
                next_sample += 5.0
            if now >= next_restart and now < args.duration - 15:
                name = order[turn % len(order)]
                turn += 1
                killed = time.monotonic() - started
                os.killpg(procs[name].pid, signal.SIGTERM)
                procs[name].wait(30)
                start_backend(name)
                wait_healthy(f"http://127.0.0.1:{ports[name]}", timeout=60)
                windows.append((killed, time.monotonic() - started + 3.0, name))
                print(f"{killed:6.1f}s restarted {name}", flush=True)
                next_restart += 60.0
            if now >= next_reload:
                reloads += 1
                path.write_text(config_text(ports, port, admin, reloads % 2 == 0))
                balancer.send_signal(signal.SIGHUP)
                print(f"{now:6.1f}s reload {reloads}", flush=True)
                next_reload += 60.0
            time.sleep(0.2)
        loader.join()
        samples.append((time.monotonic() - started, proc.memory_info().rss / 2**20,
                        proc.num_fds()))
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)

    errors = [r for r in results if r[3] != 200]
    attributed = [r for r in errors if any(a <= r[0] <= b for a, b, _ in windows)]
    others = [r for r in errors if r not in attributed]
    warm = [s for s in samples if s[0] >= min(60.0, args.duration / 4)]
    rss_start, rss_end = warm[0][1], warm[-1][1]
    fds = [s[2] for s in warm]
    ok = sorted(r[2] * 1000 for r in results if r[3] == 200)
    lines = [
        f"# bench/soak: {args.duration:.0f} s at {args.rate:g} req/s, {len(windows)} backend "
        f"restarts, {reloads} reloads; {os.cpu_count()} cores",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| requests sent | {len(results):,} |",
        f"| errors attributable to a restart | {len(attributed)} |",
        f"| **other errors** | **{len(others)}** |",
        f"| latency p50 / p99 (ok requests) | {statistics.median(ok):.1f} / "
        f"{ok[int(0.99 * (len(ok) - 1))]:.1f} ms |",
        f"| balancer RSS after warm-up → end | {rss_start:.1f} → {rss_end:.1f} MiB "
        f"({(rss_end / rss_start - 1) * 100:+.1f} %) |",
        f"| balancer RSS max | {max(s[1] for s in warm):.1f} MiB |",
        f"| balancer file descriptors after warm-up: min / max / end | {min(fds)} / "
        f"{max(fds)} / {fds[-1]} |",
        "",
        "Restarts (SIGTERM → healthy again + 3 s): " + ", ".join(
            f"{name} {a:.0f}-{b:.0f} s" for a, b, name in windows),
    ]
    if others:
        lines += ["", "Errors not attributable to a restart:", ""]
        lines += [f"- {t:.1f} s, kind {k}, status {s}: {text}" for t, k, _, s, text in others[:20]]
    if attributed:
        statuses: dict[int, int] = {}
        for r in attributed:
            statuses[r[3]] = statuses.get(r[3], 0) + 1
        lines += ["", "Attributable errors by status: " + ", ".join(
            f"{status or 'transport'}: {count}" for status, count in sorted(statuses.items()))]
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.output).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
