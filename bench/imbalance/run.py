"""bench/imbalance: one pool of three equal backends, one of them 4x slower.

Three threaded demo backends (waitress, 4 threads each); the third runs with --slowdown 4.
In front of the same processes, in interleaved rounds: the balancer's default selection
(weighted least-request, weights from load reports), the balancer round-robin, and HAProxy
leastconn. Load: an open-loop generator (bench/common.open_loop: each request sent at its
scheduled time whatever came before, latency counted from that time) at a fixed rate of
GET /render/page (a few ms of CPU; 4x that on the slow backend). Then a failover phase with
the default selection: one fast backend is killed (SIGKILL) a third of the way in and
restarted at two thirds; the errors are counted, and the requests the restarted backend
serves afterwards show that traffic came back with no reload.

usage: python bench/imbalance/run.py [--rate 120] [--duration 20] [--rounds 2]
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    Stack,
    free_port,
    haproxy_config,
    open_loop,
    summarize,
    wait_healthy,
    wait_listening,
)

PATH = "/render/page?name=Books"


def load(url: str, rate: int, seconds: int) -> dict[str, float]:
    return summarize(open_loop(url + PATH, rate, seconds), seconds)


def backend_cmd(port: int, slow: bool) -> list[str]:
    return [sys.executable, "-m", "backends", "serve", "--kind", "threaded", "--threads", "4",
            "--listen", f"127.0.0.1:{port}", *(["--slowdown", "4"] if slow else [])]


def scrape(admin: str, pattern: str) -> float:
    """The sum of the samples whose line matches `pattern` in the balancer's /metrics."""
    with urllib.request.urlopen(f"{admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(m) for m in re.findall(rf"^{pattern}\S* ([\d.e+]+)$", text, re.MULTILINE))


def served(admin: str, backend: str) -> float:
    return scrape(admin, rf'balancer_upstream_response_seconds_count{{backend="{backend}"}}')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=60)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "bench/results/imbalance.md"))
    args = parser.parse_args()
    subprocess.run(["sh", str(ROOT / "scripts/ensure-debs.sh"), "haproxy:haproxy"], check=False)
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    work = Path(tempfile.mkdtemp(prefix="bench-imbalance-"))
    stack = Stack(work)
    ports = [free_port() for _ in range(3)]
    results: dict[str, list[dict[str, float]]] = {}
    try:
        procs = [stack.start(backend_cmd(port, slow=i == 2), f"backend-{i}")
                 for i, port in enumerate(ports)]
        for port in ports:
            wait_healthy(f"http://127.0.0.1:{port}")
        backends = ", ".join(f"http://127.0.0.1:{p}" for p in ports)
        targets = {}
        for name, policy in (
                ("balancer default (weighted least-request)", "weighted_least_request"),
                ("balancer round-robin", "round_robin")):
            port, admin = free_port(), free_port()
            config = work / f"{policy}.yaml"
            config.write_text(f"listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin}\n"
                              f"pools:\n  default:\n    policy: {policy}\n"
                              f"    backends: [{backends}]\n"
                              "health: {consecutive_failures: 3, ejection: 2s}\n")
            stack.start([sys.executable, "-m", "balancer", "run", "-c", str(config),
                         "--log-level", "warning"], policy)
            targets[name] = (port, admin)
        port = free_port()
        (work / "haproxy.cfg").write_text(haproxy_config(port, ports, balance="leastconn"))
        stack.start([haproxy, "-db", "-f", str(work / "haproxy.cfg")], "haproxy")
        targets["HAProxy leastconn"] = (port, 0)
        for port, _ in targets.values():
            wait_listening(port)
        names = list(targets)
        for round_index in range(args.rounds):
            for name in names[round_index % 3:] + names[:round_index % 3]:
                url = f"http://127.0.0.1:{targets[name][0]}"
                load(url, args.rate, 3)  # warm-up: weights settle
                results.setdefault(name, []).append(load(url, args.rate, args.duration))
                print(f"round {round_index + 1}: {name} done", flush=True)

        # failover: kill a fast backend a third of the way in, restart it at two thirds
        port, admin = targets[names[0]]
        admin_url = f"http://127.0.0.1:{admin}"
        victim = f"127.0.0.1:{ports[0]}"
        outcome: dict[str, float] = {}

        def chaos() -> None:
            time.sleep(args.duration / 3)
            os.killpg(procs[0].pid, signal.SIGKILL)
            time.sleep(args.duration / 3)
            stack.start(backend_cmd(ports[0], slow=False), "backend-0-restarted")
            wait_healthy(f"http://127.0.0.1:{ports[0]}")
            outcome["before"] = served(admin_url, victim)

        thread = threading.Thread(target=chaos)
        thread.start()
        retries_before = scrape(admin_url, "balancer_retries_total")
        exhausted_before = scrape(admin_url, "balancer_retry_budget_exhausted_total")
        failover = load(f"http://127.0.0.1:{port}", args.rate, args.duration)
        thread.join()
        after = served(admin_url, victim) - outcome.get("before", 0.0)
        failover["retries"] = scrape(admin_url, "balancer_retries_total") - retries_before
        failover["exhausted"] = (scrape(admin_url, "balancer_retry_budget_exhausted_total")
                                 - exhausted_before)
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = render(results, failover, after, args)
    print(report)
    Path(args.output).write_text(report)
    return 0


def render(results: dict[str, list[dict[str, float]]], failover: dict[str, float],
           after: float, args: argparse.Namespace) -> str:
    lines = [f"# bench/imbalance: 3 threaded backends, one 4x slower; {args.rate} req/s of "
             f"GET {PATH}; {args.rounds} rounds of {args.duration}s (medians)", "",
             "| selection | ok req/s | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|"]
    for name, runs in results.items():
        lines.append(f"| {name} | {statistics.median(r['rps'] for r in runs):.1f} | "
                     f"{statistics.median(r['p50'] for r in runs):.1f} | "
                     f"{statistics.median(r['p99'] for r in runs):.1f} | "
                     f"{statistics.median(r['errors'] for r in runs):.0f} |")
    default, rr = list(results)[:2]
    p99 = {n: statistics.median(r["p99"] for r in runs) for n, runs in results.items()}
    lines += ["", f"- p99 round-robin / default: {p99[rr] / p99[default]:.1f}x",
              f"- p99 HAProxy leastconn / default: "
              f"{p99['HAProxy leastconn'] / p99[default]:.1f}x",
              "", f"Failover (default selection, {args.duration}s): a fast backend SIGKILLed at "
              f"{args.duration / 3:.0f}s and restarted at {2 * args.duration / 3:.0f}s: "
              f"{failover['errors']:.0f} errors of {failover['rps'] * args.duration:.0f} ok "
              f"requests; p99 {failover['p99']:.1f} ms; the restarted backend served "
              f"{after:.0f} requests after its restart (no reload). Retries: "
              f"{failover['retries']:.0f} sent to another backend, {failover['exhausted']:.0f} "
              "refused by the retry budget (requests in flight on the killed backend when "
              "it died fail when the budget is spent)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
