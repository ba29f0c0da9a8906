"""bench/mixed scenarios: the learning balancer beside the expert, on the issue's workload.

One run, on the same backend processes (our runners hosting bench/mixed/mixed_app.py: threaded
8 threads, multiprocess 2 workers at nice 10, async 16 threads; not the demo the defaults were
tuned for), paced open loop (bench/common.open_loop_records) at two rates, the heavy route's
CPU at ~35 % and ~65 % of the machine's cores, repetitions interleaved; figures are medians.
Mix: 45 % GET /json (tiny), 45 % GET /io (20 ms wait), 10 % GET /cpu (~50 ms GIL-bound CPU).

In front of the same backends:
  balancer  the balancer, no rules, default settings (only `classes` maps classes to pools)
  expert    HAProxy with path ACLs: /io -> async, /cpu -> multiprocess, the rest -> threaded
  rr, lc    HAProxy roundrobin / leastconn over the three (the floor)
Scenarios:
  1 warm     each strategy: warm-up, then a measured run: light and I/O p99, heavy
             throughput, errors; the proxy's CPU per request (from /proc, psutil)
  2 cold     the balancer restarted, then at once the mix: light p99 of the first 3 s
  3 shift    a new route /shift (5 % of requests, taken from /json) burns 1 ms for the first
             third of the run, then 50 ms like /cpu; the expert sends it to the threaded
             backend (it was cheap when the ACLs were written)
  4 demo     the `make run` config with its rules removed, demo backends; after N requests
             per route, each route's learned class and confidence from /status
`--src DIR` runs the balancer and the backends of another checkout (e.g. after a merge).

usage: python bench/mixed/scenarios.py [--quick] [--src DIR] [--rates 140,260] [--reps 3]
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
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    Stack,
    free_port,
    haproxy_config,
    haproxy_routes_config,
    open_loop_records,
    tree_cpu_seconds,
    wait_healthy,
    wait_listening,
)
from bench.mixed.render import STRATEGIES, plot, render  # noqa: E402

HERE = Path(__file__).resolve().parent
CPU_MS = 50  # mixed_app's /cpu
J, IO, C = 0, 1, 2
PLAN = [J, IO, J, IO, J, IO, J, IO, J, C, IO, J, IO, J, IO, J, IO, J, IO, C]  # 9 / 9 / 2 of 20
SHIFT_SLOT = 17  # a /json slot: /shift takes 1 of 20 (5 %) in the shift scenario
ROUTE_NAMES = ["/json", "/io", "/cpu", "/shift"]
RUNNER_ARGS = {"async": ["--threads", "16"], "threaded": ["--threads", "8"],
               "multiprocess": ["--workers", "2"]}  # + --nice (10, as `make run`)
Record = tuple[float, int, float, int, str]  # as open_loop_records returns


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def med(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def window(records: list[Record], kinds: set[int], start: float, end: float) -> list[float]:
    """Latencies (ms) of successful requests of `kinds` scheduled in [start, end) seconds."""
    if not records:
        return []
    t0 = min(ended - latency for ended, _, latency, _, _ in records)
    return [latency * 1000 for ended, kind, latency, status, _ in records
            if kind in kinds and status == 200 and start <= ended - latency - t0 < end]


@dataclass
class System:
    """The backends, the balancer and the three HAProxy configs in front of them."""

    stack: Stack
    work: Path
    src: Path
    urls: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Any] = field(default_factory=dict)
    balancer_cfg: Path = Path()
    admin: str = ""
    nice: int = 10

    def env(self) -> dict[str, str]:
        paths = [str(self.src), str(HERE)]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}

    def start_backends(self, app: str, prefix: str) -> dict[str, int]:
        ports = {kind: free_port() for kind in RUNNER_ARGS}
        for kind, port in ports.items():
            self.stack.start([sys.executable, "-m", "backends", "serve", "--kind", kind,
                              "--app", app, "--listen", f"127.0.0.1:{port}",
                              *RUNNER_ARGS[kind],
                              *(["--nice", str(self.nice)] if kind == "multiprocess" else [])],
                             f"{prefix}-{kind}", cwd=self.src,
                             env=self.env())
        for port in ports.values():
            wait_healthy(f"http://127.0.0.1:{port}", timeout=60)
        return ports

    def start_balancer(self, name: str = "balancer") -> None:
        proc = self.stack.start([sys.executable, "-m", "balancer", "run", "-c",
                                 str(self.balancer_cfg), "--log-level", "warning"], name,
                                cwd=self.src, env=self.env())
        self.procs["balancer"] = proc
        wait_listening(int(self.urls["balancer"].rsplit(":", 1)[1]), timeout=30)
        wait_listening(int(self.admin.rsplit(":", 1)[1]), timeout=30)

    def restart_balancer(self) -> None:
        self.stack.stop_one(self.procs["balancer"])
        self.start_balancer("balancer-restarted")


def balancer_yaml(port: int, admin: str, ports: dict[str, int]) -> str:
    """No rules and no thresholds: the defaults; `classes` only names the pools."""
    return (f"listen: 127.0.0.1:{port}\nadmin: {admin.removeprefix('http://')}\npools:\n"
            f"  io:    {{kind: async,        backends: [http://127.0.0.1:{ports['async']}]}}\n"
            f"  light: {{kind: threaded,     backends: [http://127.0.0.1:{ports['threaded']}]}}\n"
            f"  heavy: {{kind: multiprocess, backends: [http://127.0.0.1:{ports['multiprocess']}]}}\n"
            "routing:\n  classes: {io: io, light_cpu: light, heavy_cpu: heavy}\n")


def start_system(stack: Stack, work: Path, src: Path, haproxy: str, nice: int) -> System:
    system = System(stack, work, src, nice=nice)
    ports = system.start_backends("mixed_app:app", "mixed")
    port, admin = free_port(), free_port()
    system.urls["balancer"] = f"http://127.0.0.1:{port}"
    system.admin = f"http://127.0.0.1:{admin}"
    system.balancer_cfg = work / "balancer.yaml"
    system.balancer_cfg.write_text(balancer_yaml(port, system.admin, ports))
    system.start_balancer()
    servers = {"threaded": ports["threaded"], "async": ports["async"],
               "multiprocess": ports["multiprocess"]}
    configs = {
        "expert": lambda p: haproxy_routes_config(
            p, servers, [("/io", "async"), ("/cpu", "multiprocess")], "threaded"),
        "rr": lambda p: haproxy_config(p, list(servers.values()), balance="roundrobin"),
        "lc": lambda p: haproxy_config(p, list(servers.values()), balance="leastconn"),
    }
    for name, make in configs.items():
        hport = free_port()
        (work / f"{name}.cfg").write_text(make(hport))
        system.procs[name] = stack.start([haproxy, "-db", "-f", str(work / f"{name}.cfg")],
                                         f"haproxy-{name}")
        system.urls[name] = f"http://127.0.0.1:{hport}"
        wait_listening(hport)
    return system


def targets(base: str, tag: str = "") -> list[tuple[str, str, bytes | None]]:
    shift = f"{base}/shift?{tag}=1&ms="
    return [("GET", base + "/json", None), ("GET", base + "/io", None),
            ("GET", base + "/cpu", None), ("GET", shift + "1", None),
            ("GET", shift + str(CPU_MS), None)]


def measured(system: System, name: str, rate: float, seconds: float,
             **kwargs: Any) -> tuple[list[Record], float]:
    """Run the plan against strategy `name`; returns the records and its CPU µs/request."""
    proc = system.procs[name]
    before = tree_cpu_seconds(proc.pid)
    records = open_loop_records(targets(system.urls[name]), rate, seconds, **kwargs)
    used = tree_cpu_seconds(proc.pid) - before
    return records, used / max(len(records), 1) * 1e6


def plan_pick(i: int, elapsed: float) -> int:
    return PLAN[i % len(PLAN)]


def status_routes(system: System) -> list[dict[str, Any]]:
    with urllib.request.urlopen(system.admin + "/status", timeout=10) as resp:
        return list(json.load(resp)["routes"])


def warm(system: System, rate: float, args: argparse.Namespace,
         result: dict[str, Any], rep: int) -> None:
    order = STRATEGIES[rep % 4:] + STRATEGIES[:rep % 4]
    for name in order:
        open_loop_records(targets(system.urls[name]), rate, args.warmup, pick=plan_pick)
        records, cpu_us = measured(system, name, rate, args.duration, pick=plan_pick)
        t0 = min(ended - latency for ended, _, latency, _, _ in records)
        row: dict[str, Any] = {"cpu_us": cpu_us}
        for kind, route in enumerate(ROUTE_NAMES[:3]):
            lat = window(records, {kind}, 0, args.duration)
            row[route] = {
                "p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99),
                "rps": sum(1 for ended, k, _, status, _ in records
                           if k == kind and status == 200 and ended - t0 <= args.duration)
                / args.duration,
                "errors": sum(1 for _, k, _, status, _ in records if k == kind and status != 200),
            }
        if name == "balancer":
            row["routes"] = status_routes(system)
        result.setdefault(name, []).append(row)
        print(f"  warm {name}: /json p99 {row['/json']['p99']:.1f} ms, /io p99 "
              f"{row['/io']['p99']:.1f} ms, /cpu {row['/cpu']['rps']:.1f}/s, "
              f"{cpu_us:.0f} µs/req", flush=True)


def cold(system: System, rate: float, args: argparse.Namespace, result: dict[str, Any]) -> None:
    system.restart_balancer()
    records = open_loop_records(targets(system.urls["balancer"]), rate, args.cold,
                                pick=plan_pick)
    row = {"first3_json": percentile(window(records, {J}, 0, 3), 0.99),
           "first3_io": percentile(window(records, {IO}, 0, 3), 0.99),
           "rest_json": percentile(window(records, {J}, 3, args.cold), 0.99),
           "errors": sum(1 for r in records if r[3] != 200)}
    result.setdefault("cold", []).append(row)
    print(f"  cold: /json p99 first 3 s {row['first3_json']:.1f} ms, after "
          f"{row['rest_json']:.1f} ms", flush=True)


def shift(system: System, rate: float, args: argparse.Namespace, result: dict[str, Any],
          rep: int) -> None:
    at = args.shift / 3
    for name in (["balancer", "expert"] if rep % 2 == 0 else ["expert", "balancer"]):
        tag = f"s{chr(97 + rep)}{chr(97 + int(rate) % 26)}"  # a new route every run

        def pick(i: int, elapsed: float) -> int:
            kind = PLAN[i % len(PLAN)]
            if i % len(PLAN) == SHIFT_SLOT:
                return 3 if elapsed < at else 4
            return kind

        records = open_loop_records(targets(system.urls[name], tag), rate, args.shift, pick=pick)
        t0 = min(ended - latency for ended, _, latency, _, _ in records)
        series = [(ended - latency - t0, kind, latency * 1000) for ended, kind, latency, status, _
                  in records if status == 200]
        row = {
            "steady_json": percentile(window(records, {J}, 3, at), 0.99),
            "after3_json": percentile(window(records, {J}, at, at + 3), 0.99),
            "later_json": percentile(window(records, {J}, at + 3, args.shift), 0.99),
            "steady_io": percentile(window(records, {IO}, 3, at), 0.99),
            "after3_io": percentile(window(records, {IO}, at, at + 3), 0.99),
            "later_io": percentile(window(records, {IO}, at + 3, args.shift), 0.99),
            "later_shift": percentile(window(records, {4}, at + 3, args.shift), 0.99),
            "errors": sum(1 for r in records if r[3] != 200),
            "series": series,
        }
        if name == "balancer":
            row["route"] = [r for r in status_routes(system) if tag in r["route"]]
        result.setdefault(f"shift_{name}", []).append(row)
        print(f"  shift {name}: /json p99 steady {row['steady_json']:.1f}, 3 s after "
              f"{row['after3_json']:.1f}, later {row['later_json']:.1f} ms; errors "
              f"{row['errors']}", flush=True)


DEMO_ROUTES = [("GET", "/api/items?id=42", "io"), ("GET", "/db/query?user=7", "io"),
               ("GET", "/render/page?name=Books", "light_cpu"),
               ("POST", "/process/image", "heavy_cpu")]


def demo(stack: Stack, work: Path, src: Path, per_route: int,
         nice: int) -> list[dict[str, Any]]:
    """`make run`'s config with its rules removed; demo backends; N requests per route."""
    sys.path.insert(0, str(src))
    from backends.demo import sample_image

    system = System(stack, work, src, nice=nice)
    ports = system.start_backends("backends.demo:app", "demo")
    port, admin = free_port(), free_port()
    system.urls["balancer"] = f"http://127.0.0.1:{port}"
    system.admin = f"http://127.0.0.1:{admin}"
    system.balancer_cfg = work / "demo.yaml"
    config = (src / "config/balancer.yaml").read_text()
    config = config.split("  rules:")[0]  # the rules are the last key of routing
    for old, new in ((":8080", f":{port}"), (":9901", f":{admin}"),
                     (":8101", f":{ports['async']}"), (":8201", f":{ports['threaded']}"),
                     (":8301", f":{ports['multiprocess']}")):
        config = config.replace(old, new)
    system.balancer_cfg.write_text(config)
    system.start_balancer("demo-balancer")
    image = sample_image()
    plan = [(method, system.urls["balancer"] + path, image if method == "POST" else None)
            for method, path, _ in DEMO_ROUTES]
    records = open_loop_records(plan, 20.0, per_route * len(plan) / 20.0)
    routes = status_routes(system)
    rows = []
    for (method, path, expert), kind in zip(DEMO_ROUTES, range(len(plan)), strict=True):
        template_start = f"{method} {path.split('?')[0]}"
        learned = next((r for r in routes if r["route"].startswith(template_start)), {})
        lat = [latency * 1000 for _, k, latency, status, _ in records
               if k == kind and status == 200]
        rows.append({"route": f"{method} {path}", "expert": expert, **learned,
                     "p99": percentile(lat, 0.99),
                     "errors": sum(1 for r in records if r[1] == kind and r[3] != 200)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (minutes, 1 rep)")
    parser.add_argument("--src", "--balancer-src", type=Path, default=ROOT,
                        help="checkout whose balancer and backends run (default: this one)")
    parser.add_argument("--rates", default="140,260",
                        help="offered req/s; /cpu's CPU = rate x 10 %% x 50 ms")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--cold", type=float, default=10.0)
    parser.add_argument("--shift", type=float, default=30.0)
    parser.add_argument("--demo-requests", type=int, default=200)
    parser.add_argument("--nice", type=int, default=10,
                        help="CPU niceness of the multiprocess backend (`make run`: 10)")
    parser.add_argument("--label", default="", help="e.g. before / after, in the output names")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/mixed-scenarios")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.duration, args.warmup, args.cold, args.shift = 1, 6.0, 2.0, 6.0, 12.0
        args.demo_requests = 40
    src = args.src.resolve()
    subprocess.run(["sh", str(ROOT / "scripts/ensure-debs.sh"), "haproxy:haproxy"], check=False)
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        print("bench/mixed: HAProxy is needed (scripts/ensure-debs.sh could not install it)")
        return 1
    rates = [float(r) for r in args.rates.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-scenarios-"))
    stack = Stack(work)
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()},
                               "src": str(src), "cores": os.cpu_count(),
                               "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "loadavg_before": os.getloadavg(), "rates": {}}
    try:
        system = start_system(stack, work, src, haproxy, args.nice)
        for rep in range(args.reps):
            for rate in (rates if rep % 2 == 0 else rates[::-1]):
                print(f"rep {rep + 1}, {rate:g} req/s", flush=True)
                result = results["rates"].setdefault(str(rate), {})
                warm(system, rate, args, result, rep)
                cold(system, rate, args, result)
                shift(system, rate, args, result, rep)
        stack.stop()
        stack = Stack(work)
        print("demo", flush=True)
        results["demo"] = demo(stack, work, src, args.demo_requests, args.nice)
    finally:
        stack.stop()
        results["loadavg_after"] = os.getloadavg()
        suffix = f"-{args.label}" if args.label else ""
        out = args.output.with_name(args.output.name + suffix)
        out.with_suffix(".json").write_text(json.dumps(results))
        print(f"raw results in {out.with_suffix('.json')}")
        shutil.rmtree(work, ignore_errors=True)
    (out.with_suffix(".md")).write_text(render(results))
    plot(results, out.with_suffix(".png"))
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
