"""bench/mixed: cost-aware routing against round-robin, HAProxy leastconn and one sync server.

The demo service runs once as three backends (async: uvicorn, 16 view threads; threaded:
waitress, 8 threads; multiprocess: gunicorn, 2 workers at nice 10, as `make run` starts it).
In front of the same processes:
  (a) the balancer with cost-aware routing (the three pools, config/balancer.yaml's rules);
  (b) the balancer, round-robin over all three backends;
  (c) HAProxy, leastconn over all three backends;
  (d) no proxy: every request to the threaded server alone (the seed's "sync" baseline).
Load: an open-loop generator (bench/common.open_loop_plan: each request sent at its scheduled
time whatever came before, latency counted from that time, so no coordinated omission) at a
fixed offered rate of the mix, interleaved evenly: 30 % /api/items, 30 % /db/query (60 %
I/O-bound), 30 % /render/page, 10 % POST /process/image. Each strategy gets a warm-up (which
lets (a) learn) and is measured in interleaved rounds; figures are medians.

Then the seed table: each workload alone, closed-loop (wrk), through (a) and on (d).

usage: python bench/mixed/run.py [--rate 120] [--duration 20] [--rounds 2]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backends.demo import sample_image  # noqa: E402
from bench.common import (  # noqa: E402
    Stack,
    free_port,
    haproxy_config,
    open_loop_plan,
    wait_healthy,
    wait_listening,
)

MIX = [  # (route, class, share of the offered rate)
    ("GET /api/items?id=42", "io", 0.30),
    ("GET /db/query?user=7", "io", 0.30),
    ("GET /render/page?name=Books", "light_cpu", 0.30),
    ("POST /process/image", "heavy_cpu", 0.10),
]
ROUTING = """\
routing:
  cpu_threshold: 100ms
  io_threshold: 0.5
  classes: {io: io, light_cpu: light, heavy_cpu: heavy}
  default_class: light_cpu
  rules:
    - {path: "/api/**", class: io}
    - {path: "/render/**", class: light_cpu}
    - {path: "/process/**", methods: [POST], class: heavy_cpu}
"""




@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: int = 0
    sent: int = 0


# the mix, interleaved evenly: 3 of 10 each for /api, /db, /render; 1 of 10 for the image
PLAN = [0, 1, 2, 0, 1, 2, 0, 1, 2, 3]


def drive(url: str, args: argparse.Namespace, seconds: int, body: Path) -> dict[str, Sample]:
    image = body.read_bytes()
    plan: list[tuple[str, str, bytes | None]] = []
    for index in PLAN:
        method, path = MIX[index][0].split(" ", 1)
        plan.append((method, url + path, image if method == "POST" else None))
    samples = {route: Sample() for route, _, _ in MIX}
    for position, latency, status in open_loop_plan(plan, args.rate, seconds):
        sample = samples[MIX[PLAN[position]][0]]
        sample.sent += 1
        if status == 200:
            sample.latencies.append(latency)
        else:
            sample.errors += 1
    return samples


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Strategy:
    name: str
    url: str
    rounds: list[dict[str, Sample]] = field(default_factory=list)

    def figure(self, route: str, what: str, seconds: int) -> float:
        values = []
        for result in self.rounds:
            sample = result[route]
            if what == "rps":
                values.append(len(sample.latencies) / seconds)
            elif what == "errors":
                values.append(float(sample.errors))
            else:
                values.append(percentile(sample.latencies, {"p50": 0.5, "p99": 0.99}[what]) * 1000)
        return statistics.median(values)


def start_system(stack: Stack, work: Path, haproxy: str | None) -> list[Strategy]:
    ports = {kind: free_port() for kind in ("async", "threaded", "multiprocess")}
    extra = {"async": ["--threads", "16"], "threaded": ["--threads", "8"],
             "multiprocess": ["--workers", "2", "--nice", "10"]}
    for kind, port in ports.items():
        stack.start([sys.executable, "-m", "backends", "serve", "--kind", kind, "--listen",
                     f"127.0.0.1:{port}", *extra[kind]], kind)
    for port in ports.values():
        wait_healthy(f"http://127.0.0.1:{port}")
    urls = {kind: f"http://127.0.0.1:{port}" for kind, port in ports.items()}
    strategies = []

    aware = free_port()
    (work / "aware.yaml").write_text(
        f"listen: 127.0.0.1:{aware}\npools:\n"
        f"  io: {{kind: async, backends: [{urls['async']}]}}\n"
        f"  light: {{kind: threaded, backends: [{urls['threaded']}]}}\n"
        f"  heavy: {{kind: multiprocess, backends: [{urls['multiprocess']}]}}\n" + ROUTING)
    stack.start([sys.executable, "-m", "balancer", "run", "-c", str(work / "aware.yaml"),
                 "--log-level", "warning"], "aware")
    strategies.append(Strategy("(a) cost-aware balancer", f"http://127.0.0.1:{aware}"))

    rr = free_port()
    (work / "rr.yaml").write_text(
        f"listen: 127.0.0.1:{rr}\npools:\n  all:\n    backends: "
        f"[{urls['async']}, {urls['threaded']}, {urls['multiprocess']}]\n")
    stack.start([sys.executable, "-m", "balancer", "run", "-c", str(work / "rr.yaml"),
                 "--log-level", "warning"], "rr")
    strategies.append(Strategy("(b) balancer round-robin", f"http://127.0.0.1:{rr}"))

    if haproxy is not None:
        port = free_port()
        (work / "haproxy.cfg").write_text(haproxy_config(port, list(ports.values()),
                                                         balance="leastconn"))
        stack.start([haproxy, "-db", "-f", str(work / "haproxy.cfg")], "haproxy")
        strategies.append(Strategy("(c) HAProxy leastconn", f"http://127.0.0.1:{port}"))
    else:
        print("note: HAProxy could not be installed; (c) skipped")
    strategies.append(Strategy("(d) threaded server alone", urls["threaded"]))
    for strategy in strategies:
        wait_listening(int(strategy.url.rsplit(":", 1)[1]))
    return strategies


def seed_table(aware: str, sync: str, body: Path, seconds: int) -> list[tuple[str, float, float]]:
    """Each workload alone, closed-loop: the seed's sync-versus-hybrid comparison."""
    script = body.with_suffix(".lua")
    script.write_text(f'wrk.method = "POST"\nlocal f = io.open("{body}", "rb")\n'
                      'wrk.body = f:read("*a")\nf:close()\n'
                      'wrk.headers["Content-Type"] = "image/x-portable-graymap"\n')
    rows = []
    for route, _, _ in MIX:
        method, path = route.split(" ", 1)
        figures = []
        # the image job takes ~140 ms: few connections, a longer run, and no warm-up backlog
        connections, duration = ("-c4", max(10, seconds)) if method == "POST" else ("-c32", seconds)
        for base in (sync, aware):
            cmd = ["wrk", "-t2", connections, "--timeout", "30s", f"-d{duration}s", base + path]
            if method == "POST":
                cmd[1:1] = ["-s", str(script)]
            subprocess.run([*cmd[:-2], "-d1s", cmd[-1]], capture_output=True, check=True)
            time.sleep(2)  # let what the warm-up left queued drain
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            figures.append(float(out.split("Requests/sec:")[1].split()[0]))
        rows.append((route, figures[0], figures[1]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=60, help="offered requests per second")
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed-seconds", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "bench/results/mixed.md"))
    parser.add_argument("--seed-only", action="store_true",
                        help="reuse the saved strategy results (mixed.json); redo the seed table")
    args = parser.parse_args()
    subprocess.run(["sh", str(ROOT / "scripts/ensure-debs.sh"), "wrk:wrk", "haproxy:haproxy"],
                   check=False)
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                          if Path("/usr/sbin/haproxy").exists() else None)
    work = Path(tempfile.mkdtemp(prefix="bench-mixed-"))
    body = work / "image.pgm"
    body.write_bytes(sample_image())
    stack = Stack(work)
    try:
        strategies = start_system(stack, work, haproxy)
        saved = Path(args.output).with_suffix(".json")
        if args.seed_only and saved.exists():
            for strategy in strategies:
                strategy.rounds = [
                    {route: Sample(s["latencies"], s["errors"], s["sent"])
                     for route, s in result.items()}
                    for result in json.loads(saved.read_text())[strategy.name]]
        for round_index in range(0 if args.seed_only else args.rounds):
            shift = round_index % len(strategies)
            for strategy in strategies[shift:] + strategies[:shift]:
                drive(strategy.url, args, args.warmup, body)
                strategy.rounds.append(drive(strategy.url, args, args.duration, body))
                print(f"round {round_index + 1}: {strategy.name} done", flush=True)
        raw = {s.name: [{route: {"latencies": sample.latencies, "errors": sample.errors,
                                  "sent": sample.sent} for route, sample in result.items()}
                         for result in s.rounds] for s in strategies}
        Path(args.output).with_suffix(".json").write_text(json.dumps(raw))
        seed = seed_table(strategies[0].url, strategies[-1].url, body, args.seed_seconds)
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = render(strategies, seed, args)
    print(report)
    Path(args.output).write_text(report)
    plot(strategies, args, Path(args.output).with_suffix(".png"))
    return 0


def render(strategies: list[Strategy], seed: list[tuple[str, float, float]],
           args: argparse.Namespace) -> str:
    lines = [f"# bench/mixed: {args.rate} req/s offered, {args.rounds} rounds of "
             f"{args.duration}s (medians), {os.cpu_count()} cores", "",
             "| strategy | route (class) | ok req/s | p50 ms | p99 ms | errors |",
             "|---|---|---:|---:|---:|---:|"]
    for strategy in strategies:
        for route, cls, _ in MIX:
            lines.append(
                f"| {strategy.name} | `{route}` ({cls}) | "
                f"{strategy.figure(route, 'rps', args.duration):.1f} | "
                f"{strategy.figure(route, 'p50', args.duration):.1f} | "
                f"{strategy.figure(route, 'p99', args.duration):.1f} | "
                f"{strategy.figure(route, 'errors', args.duration):.0f} |")
    aware = strategies[0]
    lines += ["", "p99 of the other strategies over the cost-aware balancer's:"]
    for other in strategies[1:]:
        ratios = ", ".join(
            f"{route.split('?')[0]}: "
            f"{other.figure(route, 'p99', 1) / max(aware.figure(route, 'p99', 1), 1e-9):.1f}x"
            for route, _, _ in MIX)
        lines.append(f"- {other.name}: {ratios}")
    lines += ["", "Each workload alone, closed loop (`wrk -c32`), sync = the threaded server "
              "alone, hybrid = the cost-aware balancer over the three pools:", "",
              "| workload | sync req/s | hybrid req/s | hybrid / sync |", "|---|---:|---:|---:|"]
    for route, sync, hybrid in seed:
        ratio = f"{hybrid / sync:.1f}x" if sync else "n/a"
        lines.append(f"| `{route}` | {sync:,.0f} | {hybrid:,.0f} | {ratio} |")
    return "\n".join(lines) + "\n"


def plot(strategies: list[Strategy], args: argparse.Namespace, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed (pip install matplotlib); no plot written")
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(strategies)
    for index, strategy in enumerate(strategies):
        values = [strategy.figure(route, "p99", args.duration) for route, _, _ in MIX]
        xs = [i + index * width for i in range(len(MIX))]
        ax.bar(xs, values, width, label=strategy.name)
    ax.set_yscale("log")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(MIX))])
    ax.set_xticklabels([f"{r.split('?')[0]}\n({c})" for r, c, _ in MIX])
    ax.set_ylabel("p99 latency, ms (log scale)")
    ax.set_title(f"Mixed load at {args.rate} req/s offered, p99 by route and strategy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
