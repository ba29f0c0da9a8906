"""bench/threshold: how much a co-located CPU route of X ms per request hurts light requests.

Justifies the floor of `cpu_threshold: auto` (balancer/balancing/costs.py
AUTO_FLOOR_MS). One threaded
backend (waitress, 8 threads, the demo app); tiny JSON requests (`GET /api/items`) paced at
--json-rate, and beside them a GIL-bound route (`GET /cpu/spin?ms=X`) paced so that it always
burns the same --cpu-share of a core (rate = share / X): the same CPU in bigger or smaller
pieces. Light p50/p99 per X, in interleaved rounds, medians. Open loop (bench/common).

usage: python bench/threshold/run.py [--rounds 2] [--seconds 8]
"""

import argparse
import statistics
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.common import Stack, free_port, open_loop, summarize, wait_healthy  # noqa: E402

SIZES_MS = [0, 2, 5, 10, 20, 50]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--json-rate", type=float, default=50)
    parser.add_argument("--cpu-share", type=float, default=0.3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        stack = Stack(Path(work))
        port = free_port()
        stack.start([sys.executable, "-m", "backends", "serve", "--kind", "threaded",
                     "--threads", "8", "--listen", f"127.0.0.1:{port}"], "threaded")
        try:
            wait_healthy(f"http://127.0.0.1:{port}")
            base = f"http://127.0.0.1:{port}"
            open_loop(f"{base}/api/items?id=1", 50, 1)  # warm up
            figures: dict[int, list[dict[str, float]]] = {size: [] for size in SIZES_MS}
            for _ in range(args.rounds):
                for size in SIZES_MS:
                    figures[size].append(measure(base, size, args))
        finally:
            stack.stop()
    print("| CPU route, ms per request | its rate, req/s | light p50 ms | light p99 ms |")
    print("|---:|---:|---:|---:|")
    for size in SIZES_MS:
        rate = args.cpu_share * 1000 / size if size else 0
        p50 = statistics.median(f["p50"] for f in figures[size])
        p99 = statistics.median(f["p99"] for f in figures[size])
        print(f"| {size or 'none'} | {rate:.0f} | {p50:.1f} | {p99:.1f} |")


def measure(base: str, size: int, args: argparse.Namespace) -> dict[str, float]:
    burner = None
    if size:
        rate = args.cpu_share * 1000 / size
        burner = threading.Thread(target=open_loop, args=(f"{base}/cpu/spin?ms={size}", rate,
                                                           args.seconds))
        burner.start()
    results = open_loop(f"{base}/api/items?id=1", args.json_rate, args.seconds)
    if burner is not None:
        burner.join()
    return summarize(results, args.seconds)


if __name__ == "__main__":
    main()
