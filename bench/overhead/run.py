"""bench/overhead: what proxying one request costs, the balancer beside nginx, HAProxy and a
naive aiohttp proxy, all in front of the same backend (an nginx worker answering 100 bytes
of JSON from memory, so that the backend costs as little as possible).

Rounds are interleaved (every target once per round, the order rotating) and each figure
is the median over rounds. CPU per request is the proxy's own user+system time (all its
processes, from /proc via psutil) divided by the requests wrk completed.

usage: python bench/overhead/run.py [--rounds 3] [--duration 5] [--connections 64]
       [--only NAME ...] [--baseline DIR]   (DIR: e.g. `git worktree add /tmp/before HEAD~5`)
"""

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.common import free_port, haproxy_config, wait_listening  # noqa: E402

BODY = '{"id":42,"name":"widget","price":12.5,"tags":["a","b"],"stock":100,"ok":true,"x":"xx"}'
BODY = (BODY + " " * 100)[:100]




@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    results: list[dict[str, float]] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        if self.proc is None:
            return 0.0
        root = psutil.Process(self.proc.pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total


def nginx_conf(work: Path, name: str, port: int, body: str) -> Path:
    path = work / f"{name}.conf"
    path.write_text(f"""
worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/{name}-body;
  proxy_temp_path {work}/{name}-proxy;
  keepalive_requests 10000000;
  {body}
  server {{ listen 127.0.0.1:{port}; {_nginx_location(body)} }}
}}
""")
    return path


def _nginx_location(body: str) -> str:
    if "upstream" in body:
        return ("location / { proxy_pass http://backend; proxy_http_version 1.1; "
                "proxy_set_header Connection \"\"; }")
    return f"location / {{ default_type application/json; return 200 '{BODY}'; }}"


def haproxy_conf(work: Path, port: int, backend: int) -> Path:
    path = work / "haproxy.cfg"
    path.write_text(haproxy_config(port, [backend]))
    return path


def start(cmd: list[str], work: Path, name: str, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                            start_new_session=True)


_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(port: int, duration: float, connections: int) -> tuple[int, float, dict[str, float]]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
         f"http://127.0.0.1:{port}/api/items?id=42"],
        capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", out)
    latency = {f"p{m[0]}": float(m[1]) * _UNITS[m[2]] for m in _LATENCY.findall(out)}
    latency["errors"] = float(errors.group(1)) if errors else 0.0
    if socket_errors:
        latency["errors"] += sum(int(g) for g in socket_errors.groups())
    return requests, rps, latency


def measure(target: Target, args: argparse.Namespace) -> None:
    run_wrk(target.port, 1, args.connections)  # warm-up, not counted
    before = target.cpu_seconds()
    requests, rps, latency = run_wrk(target.port, args.duration, args.connections)
    cpu = target.cpu_seconds() - before
    target.results.append({
        "rps": rps, "p50": latency.get("p50", 0.0), "p99": latency.get("p99", 0.0),
        "errors": latency["errors"],
        "cpu_us": cpu * 1e6 / requests if target.proc is not None else 0.0,
    })


def ensure_tools() -> set[str]:
    wanted = ["wrk:wrk", "nginx:nginx-light", "haproxy:haproxy"]
    subprocess.run(["sh", str(ROOT / "scripts/ensure-debs.sh"), *wanted], check=False)
    return {cmd.split(":")[0] for cmd in wanted
            if shutil.which(cmd.split(":")[0]) or Path(f"/usr/sbin/{cmd.split(':')[0]}").exists()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", nargs="*", help="targets to run (default: all)")
    parser.add_argument("--baseline", help="a checkout of another version (git worktree) to "
                                           "run as one more target, for before/after figures")
    parser.add_argument("--output", default=str(ROOT / "bench/results/overhead.md"))
    args = parser.parse_args()

    tools = ensure_tools()
    if "wrk" not in tools or "nginx" not in tools:
        print("bench/overhead needs wrk and nginx (apt-get install wrk nginx-light)")
        return 1
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    procs: list[subprocess.Popen[bytes]] = []
    targets: list[Target] = []
    try:
        backend_port = free_port()
        procs.append(start([nginx, "-c", str(nginx_conf(work, "backend", backend_port, ""))],
                           work, "backend"))
        wait_listening(backend_port)
        targets.append(Target("direct (backend)", backend_port))

        port = free_port()
        config = work / "balancer.yaml"
        config.write_text(f"listen: 127.0.0.1:{port}\npools:\n  default:\n"
                          f"    backends: [http://127.0.0.1:{backend_port}]\n")
        proc = start([sys.executable, "-m", "balancer", "run", "-c", str(config),
                      "--log-level", "warning"], work, "balancer")
        targets.append(Target("balancer", port, proc))

        port = free_port()
        config = work / "balancer-workers.yaml"
        config.write_text(f"listen: 127.0.0.1:{port}\npools:\n  default:\n"
                          f"    backends: [http://127.0.0.1:{backend_port}]\n")
        proc = start([sys.executable, "-m", "balancer", "run", "-c", str(config),
                      "--workers", "2", "--log-level", "warning"], work, "balancer-workers")
        targets.append(Target("balancer, 2 workers", port, proc))

        if args.baseline:  # the same balancer config, served by another checkout's code
            port = free_port()
            config = work / "balancer-baseline.yaml"
            config.write_text(f"listen: 127.0.0.1:{port}\npools:\n  default:\n"
                              f"    backends: [http://127.0.0.1:{backend_port}]\n")
            proc = start([sys.executable, "-m", "balancer", "run", "-c", str(config),
                          "--log-level", "warning"], work, "balancer-baseline",
                         cwd=Path(args.baseline))
            targets.append(Target(f"balancer (baseline {Path(args.baseline).name})", port,
                                  proc))

        port = free_port()
        rules = "\n".join(f'    - {{path: "/r{i}/**", class: io}}' for i in range(49))
        config = work / "balancer-rules.yaml"
        config.write_text(
            f"listen: 127.0.0.1:{port}\npools:\n  default:\n"
            f"    backends: [http://127.0.0.1:{backend_port}]\n"
            "routing:\n  classes: {io: default, light_cpu: default, heavy_cpu: default}\n"
            f"  rules:\n{rules}\n    - {{path: \"/api/**\", class: io}}\n")
        proc = start([sys.executable, "-m", "balancer", "run", "-c", str(config),
                      "--log-level", "warning"], work, "balancer-rules")
        targets.append(Target("balancer, 50 rules", port, proc))

        port = free_port()
        upstream = f"upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 128; }}"
        proc = start([nginx, "-c", str(nginx_conf(work, "nginx-proxy", port, upstream))],
                     work, "nginx-proxy")
        targets.append(Target("nginx", port, proc))

        if "haproxy" in tools:
            port = free_port()
            haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
            proc = start([haproxy, "-db", "-f", str(haproxy_conf(work, port, backend_port))],
                         work, "haproxy")
            targets.append(Target("haproxy", port, proc))
        else:
            print("note: haproxy could not be installed; skipped")

        port = free_port()
        proc = start([sys.executable, str(ROOT / "bench/overhead/naive_proxy.py"), str(port),
                      f"http://127.0.0.1:{backend_port}"], work, "naive")
        targets.append(Target("naive aiohttp proxy", port, proc))

        procs += [t.proc for t in targets if t.proc is not None]  # all stopped at the end
        if args.only:
            targets = [t for t in targets if any(o in t.name for o in args.only)]
        for target in targets:
            try:
                wait_listening(target.port)
            except RuntimeError:
                logs = "\n".join(p.read_text()[-2000:] for p in work.glob("*.log"))
                logs += "\n".join(p.read_text()[-2000:] for p in work.glob("*.err"))
                raise RuntimeError(f"{target.name} did not start:\n{logs}") from None
        for round_index in range(args.rounds):
            order = targets[round_index % len(targets):] + targets[:round_index % len(targets)]
            for target in order:
                measure(target, args)
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
        report = render(targets, args)
        print(report)
        Path(args.output).write_text(report)
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def median(target: Target, key: str) -> float:
    return statistics.median(r[key] for r in target.results)


def render(targets: list[Target], args: argparse.Namespace) -> str:
    lines = [
        f"# bench/overhead: {args.connections} connections, {args.rounds} interleaved rounds of "
        f"{args.duration:g}s, medians; {os.cpu_count()} cores",
        "",
        "| target | req/s | p50 ms | p99 ms | errors | proxy CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for t in targets:
        cpu = f"{median(t, 'cpu_us'):.1f}" if t.proc is not None else "(backend only)"
        lines.append(f"| {t.name} | {median(t, 'rps'):,.0f} | {median(t, 'p50'):.2f} | "
                     f"{median(t, 'p99'):.2f} | {median(t, 'errors'):.0f} | {cpu} |")
    by_name = {t.name: t for t in targets}
    lines.append("")
    if "balancer" in by_name and "balancer, 50 rules" in by_name:
        ruled = median(by_name["balancer, 50 rules"], "cpu_us")
        plain = median(by_name["balancer"], "cpu_us")
        lines.append(f"- 50 routing rules (the matching one last) add {ruled / plain - 1:+.1%} "
                     "CPU per request")
    if "balancer" in by_name:
        mine = median(by_name["balancer"], "cpu_us")
        for other in ("nginx", "haproxy", "naive aiohttp proxy"):
            if other in by_name:
                theirs = median(by_name[other], "cpu_us")
                lines.append(f"- balancer / {other} CPU per request: {mine / theirs:.2f}x")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
