"""bench/imbalance: one pool of three equal backends, one of them 4x slower.

Three threaded demo backends (waitress, 4 threads each); the third runs with --slowdown 4.
In front of the same processes, in interleaved rounds (the order rotates each round, so a
noisy neighbour on the machine hits every selection alike): the balancer with each policy
(least_latency, weighted_least_request, least_request) and HAProxy leastconn. Load: an
open-loop generator (bench/common.open_loop: each request sent at its scheduled time
whatever came before, latency counted from that time) of GET /render/page (a few ms of CPU;
4x that on the slow backend), at each rate of a sweep. `--rates 120,250,auto`: `auto` is
the highest rate (in steps of `--step`) at which HAProxy leastconn keeps p99 under 100 ms,
found first with short runs.

Adaptation: three more backends, all equal until the third gets SIGUSR1 in the middle of
a run (--slowdown-on-signal 4; SIGUSR2 before each run makes it fast again): p99 of the
requests scheduled in the 5 s after the change against the steady state before it.

Failover (least_latency): one fast backend is killed (SIGKILL) a third of the way in and
restarted at two thirds, in each round; the errors are counted, and the requests the
restarted backend serves afterwards show that traffic came back with no reload.

usage: python bench/imbalance/run.py [--rates 120,250,auto] [--duration 12] [--rounds 3]
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
    open_loop_records,
    summarize,
    wait_healthy,
    wait_listening,
)

PATH = "/render/page?name=Books"
POLICIES = ("least_latency", "weighted_least_request", "least_request")
HAPROXY = "HAProxy leastconn"
WARMUP = 3
Targets = dict[str, tuple[int, int]]  # name -> (public port, admin port; 0: none)


def load(url: str, rate: int, seconds: float) -> dict[str, float]:
    return summarize(open_loop(url + PATH, rate, seconds), seconds)


def backend_cmd(port: int, slow: bool = False, on_signal: bool = False) -> list[str]:
    return [sys.executable, "-m", "backends", "serve", "--kind", "threaded", "--threads", "4",
            "--listen", f"127.0.0.1:{port}", *(["--slowdown", "4"] if slow else []),
            *(["--slowdown-on-signal", "4"] if on_signal else [])]


def scrape(admin: str, pattern: str) -> float:
    """The sum of the samples whose line matches `pattern` in the balancer's /metrics."""
    with urllib.request.urlopen(f"{admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(m) for m in re.findall(rf"^{pattern}\S* ([\d.e+]+)$", text, re.MULTILINE))


def served(admin: str, backend: str) -> float:
    return scrape(admin, rf'balancer_upstream_response_seconds_count{{backend="{backend}"}}')


def start_targets(stack: Stack, work: Path, ports: list[int], label: str,
                  haproxy: str) -> Targets:
    backends = ", ".join(f"http://127.0.0.1:{p}" for p in ports)
    targets: Targets = {}
    for policy in POLICIES:
        port, admin = free_port(), free_port()
        config = work / f"{label}-{policy}.yaml"
        config.write_text(f"listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin}\n"
                          f"pools:\n  default:\n    policy: {policy}\n"
                          f"    backends: [{backends}]\n"
                          "health: {consecutive_failures: 3, ejection: 2s}\n")
        stack.start([sys.executable, "-m", "balancer", "run", "-c", str(config),
                     "--log-level", "warning"], f"{label}-{policy}")
        targets[policy] = (port, admin)
    port = free_port()
    (work / f"{label}-haproxy.cfg").write_text(haproxy_config(port, ports, balance="leastconn"))
    stack.start([haproxy, "-db", "-f", str(work / f"{label}-haproxy.cfg")], f"{label}-haproxy")
    targets[HAPROXY] = (port, 0)
    for port, _ in targets.values():
        wait_listening(port)
    return targets


def rotated(names: list[str], round_index: int) -> list[str]:
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def highest_rate(url: str, start: int, step: int, seconds: float) -> tuple[int, list[str]]:
    """The highest rate, from `start` up (or down, when `start` is already too much) in
    `step`s, at which p99 stays under 100 ms."""
    notes: list[str] = []

    def passes(rate: int) -> bool:
        load(url, rate, 2)
        p99 = load(url, rate, seconds)["p99"]
        notes.append(f"{rate}: {p99:.0f} ms")
        print(f"search: {rate} req/s p99 {p99:.1f} ms", flush=True)
        return p99 < 100

    rate = start
    if not passes(rate):
        while rate > step:
            rate -= step
            if passes(rate):
                return rate, notes
        return rate, notes
    while rate + step <= 2000 and passes(rate + step):
        rate += step
    return rate, notes


def adaptation_run(url: str, rate: int, seconds: float, slow_pid: int) -> dict[str, float]:
    """A run in which the slow-on-signal backend turns 4x slower at half time."""
    os.kill(slow_pid, signal.SIGUSR2)  # fast again
    load(url, rate, WARMUP)
    half = seconds / 2
    switched: list[float] = []

    def switch() -> None:
        time.sleep(half)
        switched.append(time.monotonic())
        os.kill(slow_pid, signal.SIGUSR1)

    thread = threading.Thread(target=switch)
    started = time.monotonic()
    thread.start()
    records = open_loop_records([("GET", url + PATH, None)], rate, seconds)
    thread.join()
    change = switched[0] if switched else started + half
    steady, after = [], []
    for ended, _, latency, status, _ in records:
        sent = ended - latency
        if status != 200:
            continue
        if started + 2 <= sent < change:
            steady.append(latency)
        elif change <= sent < change + 5:
            after.append(latency)
    return {"steady": p99_ms(steady), "after": p99_ms(after),
            "errors": float(sum(1 for r in records if r[3] != 200))}


def p99_ms(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000 if ordered \
        else float("nan")


def failover_round(stack: Stack, procs: list[subprocess.Popen[bytes]], ports: list[int],
                   target: tuple[int, int], rate: int, seconds: float,
                   round_index: int) -> dict[str, float]:
    """Kill backend 0 a third of the way in, restart it at two thirds."""
    port, admin = target
    admin_url = f"http://127.0.0.1:{admin}"
    victim = f"127.0.0.1:{ports[0]}"
    outcome: dict[str, float] = {}

    def chaos() -> None:
        time.sleep(seconds / 3)
        os.killpg(procs[0].pid, signal.SIGKILL)
        time.sleep(seconds / 3)
        procs[0] = stack.start(backend_cmd(ports[0]), f"backend-0-restarted-{round_index}")
        wait_healthy(f"http://127.0.0.1:{ports[0]}")
        outcome["before"] = served(admin_url, victim)

    load(f"http://127.0.0.1:{port}", rate, WARMUP)
    thread = threading.Thread(target=chaos)
    thread.start()
    retries_before = scrape(admin_url, "balancer_retries_total")
    exhausted_before = scrape(admin_url, "balancer_retry_budget_exhausted_total")
    result = load(f"http://127.0.0.1:{port}", rate, seconds)
    thread.join()
    time.sleep(1)
    result["after"] = served(admin_url, victim) - outcome.get("before", 0.0)
    result["retries"] = scrape(admin_url, "balancer_retries_total") - retries_before
    result["exhausted"] = (scrape(admin_url, "balancer_retry_budget_exhausted_total")
                           - exhausted_before)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="120,250,auto")
    parser.add_argument("--step", type=int, default=50, help="of the search for `auto`")
    parser.add_argument("--duration", type=float, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--adapt-rate", type=int, default=250)
    parser.add_argument("--adapt-duration", type=float, default=20)
    parser.add_argument("--failover-rate", type=int, default=120)
    parser.add_argument("--failover-duration", type=float, default=18)
    parser.add_argument("--output", default=str(ROOT / "bench/results/imbalance.md"))
    args = parser.parse_args()
    subprocess.run(["sh", str(ROOT / "scripts/ensure-debs.sh"), "haproxy:haproxy"], check=False)
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    work = Path(tempfile.mkdtemp(prefix="bench-imbalance-"))
    stack = Stack(work)
    ports = [free_port() for _ in range(3)]
    adapt_ports = [free_port() for _ in range(3)]
    sweep: dict[int, dict[str, list[dict[str, float]]]] = {}
    adapt: dict[str, list[dict[str, float]]] = {}
    failover: list[dict[str, float]] = []
    search: list[str] = []
    try:
        procs = [stack.start(backend_cmd(port, slow=i == 2), f"backend-{i}")
                 for i, port in enumerate(ports)]
        adapt_procs = [stack.start(backend_cmd(port, on_signal=i == 2), f"adapt-{i}")
                       for i, port in enumerate(adapt_ports)]
        for port in ports + adapt_ports:
            wait_healthy(f"http://127.0.0.1:{port}")
        targets = start_targets(stack, work, ports, "sweep", haproxy)
        adapt_targets = start_targets(stack, work, adapt_ports, "adapt", haproxy)
        rates: list[int] = []
        for item in args.rates.split(","):
            if item == "auto":
                start = max(rates, default=250) + args.step
                found, search = highest_rate(f"http://127.0.0.1:{targets[HAPROXY][0]}",
                                             start, args.step, 6)
                if found not in rates:
                    rates.append(found)
            else:
                rates.append(int(item))
        names = list(targets)
        for rate in rates:
            for round_index in range(args.rounds):
                for name in rotated(names, round_index):
                    url = f"http://127.0.0.1:{targets[name][0]}"
                    load(url, rate, WARMUP)
                    result = load(url, rate, args.duration)
                    sweep.setdefault(rate, {}).setdefault(name, []).append(result)
                    print(f"{rate} req/s round {round_index + 1}: {name} p99 "
                          f"{result['p99']:.1f} ms", flush=True)
        adapt_names = ["least_latency", "weighted_least_request", HAPROXY]
        for round_index in range(args.rounds):
            for name in rotated(adapt_names, round_index):
                url = f"http://127.0.0.1:{adapt_targets[name][0]}"
                result = adaptation_run(url, args.adapt_rate, args.adapt_duration,
                                        adapt_procs[2].pid)
                adapt.setdefault(name, []).append(result)
                print(f"adaptation round {round_index + 1}: {name} {result}", flush=True)
        for round_index in range(args.rounds):
            failover.append(failover_round(stack, procs, ports, targets["least_latency"],
                                           args.failover_rate, args.failover_duration,
                                           round_index))
            print(f"failover round {round_index + 1}: {failover[-1]}", flush=True)
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = render(sweep, adapt, failover, search, args)
    print(report)
    Path(args.output).write_text(report)
    return 0


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def render(sweep: dict[int, dict[str, list[dict[str, float]]]],
           adapt: dict[str, list[dict[str, float]]], failover: list[dict[str, float]],
           search: list[str], args: argparse.Namespace) -> str:
    lines = [f"# bench/imbalance: 3 threaded backends (4 threads), one 4x slower; GET {PATH}",
             "", f"Open loop; {args.rounds} interleaved rounds of {args.duration:g}s (after "
             f"{WARMUP}s of warm-up) per rate; medians, with (min-max) over the rounds. "
             "`vs leastconn`: HAProxy leastconn's p99 / this p99 (above 1: better).", ""]
    if search:
        lines += [f"Highest rate with HAProxy leastconn p99 < 100 ms (6 s runs): "
                  f"{', '.join(search)}.", ""]
    lines += ["| rate | selection | ok req/s | p50 ms | p99 ms | vs leastconn | errors |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    verdicts = []
    for rate, results in sweep.items():
        p99 = {n: statistics.median(r["p99"] for r in runs) for n, runs in results.items()}
        for name, runs in results.items():
            lines.append(
                f"| {rate} | {name} | {statistics.median(r['rps'] for r in runs):.1f} | "
                f"{statistics.median(r['p50'] for r in runs):.1f} | "
                f"{spread([r['p99'] for r in runs])} | {p99[HAPROXY] / p99[name]:.2f}x | "
                f"{sum(r['errors'] for r in runs):.0f} |")
        verdicts.append((rate, p99[HAPROXY] / p99["least_latency"]))
    top = max(sweep) if sweep else 0
    lines += ["", "Targets (least_latency, the default):"]
    for rate, ratio in verdicts:
        goal = 1.5 if rate == top else 1.0
        lines.append(f"- {rate} req/s: p99 {ratio:.2f}x lower than leastconn (target "
                     f"≥ {goal:g}x): {'met' if ratio >= goal else 'NOT met'}")
    lines += ["", f"## Adaptation: the third backend turns 4x slower at "
              f"{args.adapt_duration / 2:g}s of {args.adapt_duration:g}s, {args.adapt_rate} "
              "req/s", "",
              "| selection | steady p99 ms | p99 ms, 5 s after | after / steady | errors |",
              "|---|---:|---:|---:|---:|"]
    for name, runs in adapt.items():
        ratios = [r["after"] / r["steady"] for r in runs]
        lines.append(f"| {name} | {spread([r['steady'] for r in runs])} | "
                     f"{spread([r['after'] for r in runs])} | {spread(ratios)} | "
                     f"{sum(r['errors'] for r in runs):.0f} |")
    if "least_latency" in adapt:
        ratio = statistics.median(r["after"] / r["steady"] for r in adapt["least_latency"])
        lines += ["", f"Target: within 2x of steady: {ratio:.2f}x, "
                  f"{'met' if ratio <= 2 else 'NOT met'}."]
    if failover:
        lines += ["", f"## Failover (least_latency, {args.failover_rate} req/s, "
                  f"{args.failover_duration:g}s per round)", "",
                  f"A fast backend SIGKILLed at {args.failover_duration / 3:.0f}s and restarted "
                  f"at {2 * args.failover_duration / 3:.0f}s, in each of {len(failover)} rounds: "
                  f"p99 {spread([r['p99'] for r in failover])} ms; errors per round "
                  f"{[int(r['errors']) for r in failover]}; the restarted backend served "
                  f"{[int(r['after']) for r in failover]} requests after its restart (no "
                  f"reload); retries sent to another backend "
                  f"{[int(r['retries']) for r in failover]}, refused by the retry budget "
                  f"{[int(r['exhausted']) for r in failover]}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
