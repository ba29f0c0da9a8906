"""bench/backends: req/s and latency of each demo route on each runner (wrk, this machine).

Each runner hosts the demo app on its own port (async: 16 view threads; threaded: waitress,
8 threads; multiprocess: gunicorn, 2 workers); wrk drives one route at a time.

usage: python bench/backends/run.py [--duration 5] [--connections 16]
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backends.demo import sample_image  # noqa: E402
from backends.probe import is_healthy  # noqa: E402
from bench.common import free_port  # noqa: E402

RUNNERS = {"async": ["--threads", "16"], "threaded": ["--threads", "8"],
           "multiprocess": ["--workers", "2"]}
ROUTES = ["/api/items?id=42", "/db/query?user=7", "/render/page?name=Books",
          "POST /process/image"]
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}



def wrk(url: str, args: argparse.Namespace, script: Path | None) -> tuple[float, float, int]:
    cmd = ["wrk", "-t2", f"-c{args.connections}", f"-d{args.duration}s", "--latency", url]
    if script is not None:
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.MULTILINE)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99_ms = float(p99.group(1)) * _UNITS[p99.group(2)] if p99 else float("nan")
    return rps, p99_ms, int(errors.group(1)) if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--output", default=str(ROOT / "bench/results/backends.md"))
    args = parser.parse_args()
    subprocess.run(["sh", str(ROOT / "scripts/ensure-debs.sh"), "wrk:wrk"], check=False)
    work = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    image = work / "image.pgm"
    image.write_bytes(sample_image())
    script = work / "post.lua"
    script.write_text(f'wrk.method = "POST"\nlocal f = io.open("{image}", "rb")\n'
                      'wrk.body = f:read("*a")\nf:close()\n'
                      'wrk.headers["Content-Type"] = "image/x-portable-graymap"\n')
    rows = []
    for kind, extra in RUNNERS.items():
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "backends", "serve", "--kind", kind,
                                 "--listen", f"127.0.0.1:{port}", *extra,
                                 "--log-file", str(work / f"{kind}.log")],
                                cwd=ROOT, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while not is_healthy(f"http://127.0.0.1:{port}"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} did not start")
                time.sleep(0.1)
            for route in ROUTES:
                post = route.startswith("POST ")
                path = route.removeprefix("POST ")
                url = f"http://127.0.0.1:{port}{path}"
                wrk(url, argparse.Namespace(duration=1, connections=args.connections),
                    script if post else None)  # warm-up
                rps, p99, errors = wrk(url, args, script if post else None)
                rows.append((route, kind, rps, p99, errors))
                print(f"{kind:13} {route:28} {rps:9.0f} req/s  p99 {p99:8.1f} ms  "
                      f"errors {errors}", flush=True)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
    lines = [f"# bench/backends: wrk -t2 -c{args.connections} -d{args.duration}s per route, "
             f"{os.cpu_count()} cores", "", "| route | runner | req/s | p99 ms | errors |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| `{r}` | {k} | {rps:,.0f} | {p99:.1f} | {e} |" for r, k, rps, p99, e in rows]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
