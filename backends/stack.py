"""`python -m backends.stack -c config/balancer.yaml`: the whole system in one command.

Starts one demo backend per backend address in the config (the runner its pool's `kind`
names; threaded when a pool has none), waits until each answers `/__health`, then runs the
balancer in the foreground. Ctrl-C (SIGINT) or SIGTERM stops the balancer and every backend,
and nothing is left behind: a child that has not exited after the grace period is killed.
Backend output goes to `.run/logs/`.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from backends.probe import is_healthy
from balancer.config.model import Config
from balancer.config.yamltree import ConfigError
from balancer.ops.config_file import load_config

LOGS = Path(".run/logs")
# The heavy-CPU (multiprocess) pool runs at a lower CPU priority: it takes whatever CPU the
# latency-sensitive pools leave, and never starves them (see README, "Cost-aware routing").
DEFAULTS = {"async": ["--threads", "16"], "threaded": ["--threads", "8"],
            "multiprocess": ["--workers", "2", "--nice", "10"]}


def backend_commands(config: Config, app: str) -> list[tuple[str, list[str]]]:
    commands = []
    for pool in config.pools:
        kind = pool.kind or "threaded"
        for address in pool.backends:
            listen = address.url.removeprefix("http://")
            name = f"{pool.name}-{kind}-{listen.replace('/', '_').replace(':', '_')}"
            commands.append((name, [sys.executable, "-m", "backends", "serve", "--kind", kind,
                                    "--app", app, "--listen", listen, *DEFAULTS[kind],
                                    "--log-file", str(LOGS / f"{name}.log")]))
    return commands


def stop_all(procs: list[subprocess.Popen[bytes]], grace: float = 12.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backends.stack", description=__doc__)
    parser.add_argument("-c", "--config", default="config/balancer.yaml")
    parser.add_argument("--app", default="backends.demo:app")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    LOGS.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for name, command in backend_commands(config, args.app):
            print(f"stack: starting {name}: log in {LOGS / name}.log", flush=True)
            procs.append(subprocess.Popen(command, start_new_session=True))
        urls = [a.url for pool in config.pools for a in pool.backends]
        deadline = time.monotonic() + 60
        while not stopping and not all(is_healthy(url) for url in urls):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                print("stack: a backend did not start; see .run/logs/", file=sys.stderr)
                return 1
            time.sleep(0.1)
        if stopping:
            return 0
        print("stack: backends healthy; starting the balancer", flush=True)
        balancer = subprocess.Popen([sys.executable, "-m", "balancer", "run", "-c", args.config],
                                    start_new_session=True)
        procs.insert(0, balancer)
        while not stopping and balancer.poll() is None:
            time.sleep(0.1)
        return balancer.returncode or 0 if not stopping else 0
    finally:
        print("stack: stopping", flush=True)
        stop_all(procs)


if __name__ == "__main__":
    raise SystemExit(main())
