"""Tables and the shift plot of bench/mixed/scenarios.py, from its raw JSON.

usage: python bench/mixed/render.py RESULTS.json  (rewrites RESULTS.md and RESULTS.png)
"""

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

STRATEGIES = ["balancer", "expert", "rr", "lc"]
LABELS = {"balancer": "balancer, no rules, defaults", "expert": "HAProxy path ACLs (expert)",
          "rr": "HAProxy roundrobin", "lc": "HAProxy leastconn"}
CPU_SHARE_PER_RPS = 0.10 * 0.050  # /cpu: 10 % of requests x 50 ms
OVERHEAD_SATURATED_US = 101.1  # bench/results/overhead.md, balancer, 64 connections (issue: 83)


def med(values: list[float]) -> float:
    values = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b <= 0:
        return "n/a"
    return f"{a / b:.2f}x"


def render(results: dict[str, Any]) -> str:
    args = results["args"]
    cores = results["cores"] or 1
    lines = [f"# bench/mixed scenarios ({results['started']}, {cores} cores, "
             f"src `{results['src']}`)",
             "",
             f"{args['reps']} repetition(s), interleaved; medians. Measured runs of "
             f"{args['duration']} s after {args['warmup']} s warm-up; cold runs {args['cold']} s; "
             f"shift runs {args['shift']} s (shift at a third). Load average before / after: "
             f"{', '.join(f'{x:.1f}' for x in results['loadavg_before'])} / "
             f"{', '.join(f'{x:.1f}' for x in results.get('loadavg_after', [0, 0, 0]))} "
             "(a shared machine: other sessions' load adds noise).", ""]
    for rate, result in results["rates"].items():
        rps = float(rate)
        share = rps * CPU_SHARE_PER_RPS / cores * 100
        lines += [f"## {rps:g} req/s offered (/cpu's CPU ~{share:.0f} % of {cores} cores)", "",
                  "### 1. Warm, no rules, default settings, beside the expert and the floor", "",
                  "| strategy | /json p99 ms | /io p99 ms | /cpu p99 ms | /cpu ok req/s | errors "
                  "| proxy CPU µs/req |", "|---|---:|---:|---:|---:|---:|---:|"]
        figures: dict[str, dict[str, float]] = {}
        for name in STRATEGIES:
            rows = result.get(name, [])
            if not rows:
                continue
            f = {"json": med([r["/json"]["p99"] for r in rows]),
                 "io": med([r["/io"]["p99"] for r in rows]),
                 "cpu": med([r["/cpu"]["p99"] for r in rows]),
                 "cpu_rps": med([r["/cpu"]["rps"] for r in rows]),
                 "errors": med([sum(r[k]["errors"] for k in ("/json", "/io", "/cpu"))
                                for r in rows]),
                 "cpu_us": med([r["cpu_us"] for r in rows])}
            figures[name] = f
            lines.append(f"| {LABELS[name]} | {fmt(f['json'])} | {fmt(f['io'])} | "
                         f"{fmt(f['cpu'])} | {fmt(f['cpu_rps'])} | {fmt(f['errors'], 0)} | "
                         f"{fmt(f['cpu_us'], 0)} |")
        b, e = figures.get("balancer"), figures.get("expert")
        if b and e:
            lines += ["", f"- balancer / expert: /json p99 **{ratio(b['json'], e['json'])}**, "
                      f"/io p99 **{ratio(b['io'], e['io'])}** (target ≤ 1.2x); /cpu throughput "
                      f"{ratio(b['cpu_rps'], e['cpu_rps'])} (target ≥ 1x); errors "
                      f"{fmt(b['errors'], 0)} (target 0)",
                      f"- 5. proxy CPU per request at this paced load: balancer "
                      f"{fmt(b['cpu_us'], 0)} µs, HAProxy (expert) {fmt(e['cpu_us'], 0)} µs: "
                      f"**{ratio(b['cpu_us'], e['cpu_us'])}** (target ≤ 2x); saturated, "
                      f"64 connections (bench/results/overhead.md): {OVERHEAD_SATURATED_US} µs"]
        last = result.get("balancer", [{}])[-1].get("routes", [])
        if last:
            lines += ["- what the balancer learned (last repetition): " + "; ".join(
                f"`{r['route']}` {r['class']} (cpu {r['cpu_ms']:.1f} ms, io_share "
                f"{r['io_share']:.2f}, {'confident' if r['confident'] else 'not confident'})"
                for r in last if not r["route"].startswith("GET /shift"))]
        cold = result.get("cold", [])
        if cold and b:
            first = med([r["first3_json"] for r in cold])
            lines += ["", "### 2. Cold start (balancer restarted just before the run)", "",
                      "| /json p99 first 3 s | /json p99 after | warm /json p99 | first 3 s / "
                      "warm (target ≤ 3x) | /io p99 first 3 s | errors |",
                      "|---:|---:|---:|---:|---:|---:|",
                      f"| {fmt(first)} | {fmt(med([r['rest_json'] for r in cold]))} | "
                      f"{fmt(b['json'])} | **{ratio(first, b['json'])}** | "
                      f"{fmt(med([r['first3_io'] for r in cold]))} | "
                      f"{fmt(med([r['errors'] for r in cold]), 0)} |"]
        lines += ["", "### 3. Cost shift (/shift: 1 ms, then 50 ms from a third of the run)", "",
                  "| strategy | /json p99 steady | 3 s after shift | later | after / steady "
                  "(target ≤ 3x) | later / steady (target ≤ 1.2x) | /io p99 steady / after / "
                  "later | /shift p99 later | errors |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name in ("balancer", "expert"):
            rows = result.get(f"shift_{name}", [])
            if not rows:
                continue
            g = {k: med([r[k] for r in rows]) for k in
                 ("steady_json", "after3_json", "later_json", "steady_io", "after3_io",
                  "later_io", "later_shift", "errors")}
            lines.append(
                f"| {LABELS[name]} | {fmt(g['steady_json'])} | {fmt(g['after3_json'])} | "
                f"{fmt(g['later_json'])} | {ratio(g['after3_json'], g['steady_json'])} | "
                f"{ratio(g['later_json'], g['steady_json'])} | {fmt(g['steady_io'])} / "
                f"{fmt(g['after3_io'])} / {fmt(g['later_io'])} | {fmt(g['later_shift'])} | "
                f"{fmt(g['errors'], 0)} |")
        learned = [r for row in result.get("shift_balancer", []) for r in row.get("route", [])]
        if learned:
            lines += ["", "- /shift as the balancer had learned it at the end of each run: " +
                      "; ".join(f"{r['class']} (cpu {r['cpu_ms']:.1f} ms)" for r in learned)]
        lines.append("")
    if "demo" in results:
        lines += ["## 4. The demo (`make run` config, rules removed), after "
                  f"{args['demo_requests']} requests per route", "",
                  "| route | expert's class | learned class | confidence | confident | samples "
                  "| cpu ms | io share | p99 ms | errors |",
                  "|---|---|---|---:|---|---:|---:|---:|---:|---:|"]
        for r in results["demo"]:
            match = "" if r.get("class") == r["expert"] else " ✗"
            lines.append(
                f"| `{r['route']}` | {r['expert']} | {r.get('class', 'n/a')}{match} | "
                f"{r.get('confidence', float('nan'))} | {r.get('confident', 'n/a')} | "
                f"{r.get('samples', 0)} | {r.get('cpu_ms', float('nan'))} | "
                f"{r.get('io_share', float('nan'))} | {fmt(r['p99'])} | {r['errors']} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed (pip install -e .[bench]); no plot written")
        return
    rates = list(results["rates"])
    shift_s = float(results["args"]["shift"])
    fig, axes = plt.subplots(len(rates), 1, figsize=(9, 3.6 * len(rates)), squeeze=False)
    for ax, rate in zip(axes[:, 0], rates, strict=True):
        result = results["rates"][rate]
        for name, color in (("balancer", "tab:blue"), ("expert", "tab:red")):
            rows = result.get(f"shift_{name}", [])
            if not rows:
                continue
            for kind, style, route in ((0, "-", "/json"), (1, ":", "/io")):
                series = rows[0]["series"]  # the first repetition
                bins: dict[int, list[float]] = {}
                for t, k, latency in series:
                    if k == kind:
                        bins.setdefault(int(t * 2), []).append(latency)
                xs = sorted(bins)
                ys = [sorted(bins[x])[min(len(bins[x]) - 1, int(0.99 * len(bins[x])))]
                      for x in xs]
                ax.plot([x / 2 for x in xs], ys, style, color=color,
                        label=f"{name} {route} p99")
        ax.axvline(shift_s / 3, color="grey", linestyle="--", label="/shift turns heavy")
        ax.set_yscale("log")
        ax.set_xlabel("seconds into the run")
        ax.set_ylabel("p99 per 0.5 s, ms")
        ax.set_title(f"Cost shift at {float(rate):g} req/s (first repetition)")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")


if __name__ == "__main__":
    source = Path(sys.argv[1])
    data = json.loads(source.read_text())
    source.with_suffix(".md").write_text(render(data))
    plot(data, source.with_suffix(".png"))
