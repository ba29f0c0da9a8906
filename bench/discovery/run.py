"""bench/discovery: 3 -> 6 -> 2 backends behind one DNS name under a steady open-loop load.

dnsmasq answers `svc.test` from a hosts file the bench rewrites (tests/dnsmasq.py); the
balancer (a subprocess, `discover: http://svc.test:PORT`, `discovery: {interval: 2s}`)
re-resolves every interval. An open-loop client sends RATE requests/s (each at its scheduled
time, whatever came before) for three phases; each response names its backend. Reported per
phase: requests, failures, the share of each backend once settled, and how long after DNS
served the new set the traffic followed (the last new backend's first response, or the
last response from a backend that left among requests sent after the change).

usage: python bench/discovery/run.py [--rate 200] [--phase 10] [--interval 2]
"""

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.common import Stack, free_port, wait_listening  # noqa: E402
from tests.dnsmasq import DNSMASQ, Dnsmasq  # noqa: E402

HOSTS = [f"127.0.0.{i}" for i in range(2, 8)]
PHASES = [3, 6, 2]

Record = tuple[float, float, int, str]  # (sent, ended, status, backend or error)


async def load(url: str, rate: float, seconds: float, changes: list[tuple[float, int]],
               publish: "Publisher") -> tuple[list[Record], list[float]]:
    """Open loop for `seconds`; at each (offset, count) in `changes` publish `count` hosts
    (in a thread: it waits for dnsmasq to serve them). Returns the records and, per change,
    the monotonic time DNS served the new set."""
    loop = asyncio.get_running_loop()
    records: list[Record] = []
    served_at: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        async def one(scheduled: float) -> None:
            try:
                async with session.get(f"{url}/x") as response:
                    await response.read()
                    backend = response.headers.get("X-Backend", "?")
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, backend = 0, repr(exc)[:80]
            records.append((scheduled, time.monotonic(), status, backend))

        async def changer() -> None:
            for offset, count in changes:
                await asyncio.sleep(max(0.0, start_mono + offset - time.monotonic()))
                await loop.run_in_executor(None, publish, count)
                served_at.append(time.monotonic())

        start = loop.time() + 0.05
        start_mono = time.monotonic() + 0.05
        change_task = asyncio.ensure_future(changer())
        tasks = []
        for i in range(int(rate * seconds)):
            scheduled = start + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(start_mono + i / rate)))
        await asyncio.gather(*tasks, change_task)
    return records, served_at


class Publisher:
    def __init__(self, dns: Dnsmasq) -> None:
        self.dns = dns

    def __call__(self, count: int) -> None:
        self.dns.publish({"svc.test": HOSTS[:count]})


def follow_lag(records: list[Record], served: float, before: set[str], after: set[str]
               ) -> float:
    """Seconds from DNS serving the new set to the traffic following it."""
    later = [r for r in records if r[0] >= served]
    if after - before:  # scale up: the last new backend's first response
        firsts = [min((r[1] for r in later if r[3] == host), default=float("inf"))
                  for host in after - before]
        return max(firsts) - served
    gone = [r[1] for r in later if r[3] in before - after]  # scale down: the last to a gone one
    return (max(gone) - served) if gone else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--phase", type=float, default=10, help="seconds per phase")
    parser.add_argument("--interval", type=float, default=2, help="discovery interval, s")
    parser.add_argument("--out", default=str(ROOT / "bench/results/discovery.md"))
    args = parser.parse_args()
    if DNSMASQ is None:
        sys.exit("dnsmasq is missing: sh scripts/ensure-debs.sh dnsmasq:dnsmasq-base")
    work = Path(tempfile.mkdtemp(prefix="bench-discovery-"))
    stack = Stack(work)
    dns = Dnsmasq(work, ttl=60)  # the interval, shorter than the TTL, sets the pace
    try:
        port, listen, admin = free_port(), free_port(), free_port()
        backends = stack.start([sys.executable, str(ROOT / "bench/discovery/backends.py"),
                                "--port", str(port), *HOSTS], "backends")
        for host in HOSTS:
            wait_listening_on(host, port)
        dns.publish({"svc.test": HOSTS[:PHASES[0]]})
        config = work / "balancer.yaml"
        config.write_text(
            f"listen: 127.0.0.1:{listen}\nadmin: 127.0.0.1:{admin}\n"
            f"resolvers: [{dns.resolver}]\ndiscovery: {{interval: {args.interval:g}s}}\n"
            f"pools:\n  default:\n    policy: least_request\n    backends:\n"
            f"      - {{discover: http://svc.test:{port}}}\n")
        stack.start([sys.executable, "-m", "balancer", "run", "-c", str(config),
                     "--log-level", "warning"], "balancer")
        wait_listening(listen)
        changes = [(args.phase * (i + 1), count) for i, count in enumerate(PHASES[1:])]
        records, served = asyncio.run(load(f"http://127.0.0.1:{listen}", args.rate,
                                           args.phase * len(PHASES), changes,
                                           Publisher(dns)))
        del backends
    finally:
        stack.stop()
        dns.stop()
    report(records, served, args)


def wait_listening_on(host: str, port: int, timeout: float = 15.0) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"no backend on {host}:{port}")


def report(records: list[Record], served: list[float], args: argparse.Namespace) -> None:
    t0 = min(r[0] for r in records)
    bounds = [t0, *served, float("inf")]
    rows = []
    for i, count in enumerate(PHASES):
        phase = [r for r in records if bounds[i] <= r[0] < bounds[i + 1]]
        settle = bounds[i] + (args.interval + 0.5 if i else 0.0)
        settled = Counter(r[3] for r in phase if r[0] >= settle and r[2] == 200)
        total = sum(settled.values()) or 1
        shares = " / ".join(f"{settled[h] / total:.0%}" for h in sorted(settled))
        failed = sum(1 for r in phase if r[2] != 200)
        lag = "" if i == 0 else f"{follow_lag(records, served[i - 1],
                                              set(HOSTS[:PHASES[i - 1]]),
                                              set(HOSTS[:count])):.2f}"
        rows.append(f"| {PHASES[i - 1] if i else '-'} → {count} | {len(phase)} | {failed} | "
                    f"{lag} | {len(settled)} | {shares} |")
    errors = Counter(r[3] for r in records if r[2] != 200)
    text = "\n".join([
        "# bench/discovery: backends behind one DNS name, scaled under load",
        "",
        f"`python bench/discovery/run.py --rate {args.rate:g} --phase {args.phase:g} "
        f"--interval {args.interval:g}`: dnsmasq answers `svc.test` (record TTL 60 s, so the "
        f"{args.interval:g} s discovery interval sets the pace); an open-loop client sends "
        f"{args.rate:g} requests/s for {args.phase:g} s per phase to a balancer (1 worker, "
        "least_request) whose pool is `{discover: http://svc.test:PORT}`; the backends are "
        "aiohttp apps on 127.0.0.2-7, one port, 5 ms each. 'follows after' counts from dnsmasq "
        "serving the new set: to the last new backend's first response (scale up), or to the "
        "last response from a backend that left among requests sent after the change "
        "(scale down: requests in flight finish there).",
        "",
        "| backends | requests | failed | follows after (s) | backends reached once settled "
        "| share each |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        *rows,
        "",
        f"Failed requests over the run: {sum(errors.values())}"
        + (f" ({dict(errors)})" if errors else "") + ".",
        "",
    ])
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
