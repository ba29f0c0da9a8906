"""`balancer run -c FILE`, `balancer check -c FILE`, `balancer schema` (the config's JSON Schema)
and `balancer --version`: the only place errors become exit codes.

Exit codes: 0 success (`run`: stopped by SIGTERM/SIGINT, every worker drained); 1 could not
start (an address that cannot be bound, an access log that cannot be opened, a worker that
would not start) or a worker exited non-zero; 2 invalid config or arguments (each problem as
`file:line:col: message` on stderr).
"""

import argparse
import asyncio
import contextlib
import json
import logging
import resource
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from balancer import __version__
from balancer.config.addresses import Address, parse_listen
from balancer.config.model import Config
from balancer.config.schema import config_schema
from balancer.config.yamltree import ConfigError
from balancer.ops.cgroup import worker_count
from balancer.ops.config_file import load_config
from balancer.ops.lifecycle import CannotStart
from balancer.ops.serve import serve
from balancer.ops.supervisor import shared_listen_problems, supervise

LOG_LEVELS = ["debug", "info", "warning", "error"]
OK, FAILED, INVALID = 0, 1, 2  # the exit codes the docstring lists
log = logging.getLogger("balancer")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="balancer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"balancer {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve with a config file")
    run.add_argument("-c", "--config", required=True, help="YAML config file")
    run.add_argument("--workers", default="1",
                     help="worker processes sharing the listeners: N or auto (the CPUs the "
                          "cgroup quota allows, else the core count)")
    run.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    worker = sub.add_parser("worker", help=argparse.SUPPRESS)  # started by the supervisor
    worker.add_argument("-c", "--config", required=True)
    worker.add_argument("--admin", required=True, help="private admin socket, unix:/path")
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    check = sub.add_parser("check", help="validate a config file and exit")
    check.add_argument("-c", "--config", required=True, help="YAML config file")
    sub.add_parser("schema", help="print the config file's JSON Schema (for editors)")
    return parser


def version() -> str:
    """The installed distribution's version (as pip shows it), else the source tree's."""
    from importlib import metadata
    try:
        return metadata.version("echonext-balancer")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return __version__


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s); config not valid", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(config_schema(), indent=2))
        return OK
    if args.command != "check":
        hold_sighup()  # until serve() or supervise() has its handler (then it is a reload)
    config = _load(args.config)
    if config is None:
        return INVALID
    if args.command == "check":
        _print_summary(args.config, config)
        return OK
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s balancer[%(process)d] %(levelname)s %(message)s")
    _raise_open_file_limit()
    if args.command == "worker":
        return _serve(config, args.config, admin=parse_listen(args.admin), worker=args.index)
    return _serve_with_workers(config, args.config, args.workers, args.log_level)


def _print_summary(path: str, config: Config) -> None:
    backends = sum(len(pool.backends) for pool in config.pools)
    names = sum(len(pool.discover) for pool in config.pools)
    discovered = f", {names} discovered name(s)" if names else ""
    print(f"{path}: ok ({len(config.listen)} listener(s), {len(config.pools)} pool(s), "
          f"{backends} backend(s){discovered}, digest {config.digest})")


def _serve_with_workers(config: Config, path: str, workers_arg: str, log_level: str) -> int:
    """`run`: one process, or a supervisor and its workers (`--workers`)."""
    try:
        workers = workers_from_arg(workers_arg)
    except ValueError:
        print(f"balancer: --workers {workers_arg!r}: expected a number >= 1 or auto",
              file=sys.stderr)
        return INVALID
    if workers == 1:
        return _serve(config, path)
    problems = shared_listen_problems(config, workers)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return INVALID
    try:
        clean = _run(supervise(config, path, workers, log_level))
    except CannotStart as exc:
        log.error("%s", exc)
        return FAILED
    return OK if clean else FAILED


def _serve(config: Config, path: str, *, admin: Address | None = None,
           worker: int | None = None) -> int:
    try:
        _run(serve(config, path, admin=admin, worker=worker))
    except CannotStart as exc:
        log.error("%s", exc)
        return FAILED
    return OK


def hold_sighup() -> None:
    """Block SIGHUP (its default action ends the process) until a handler is installed;
    `python -m balancer` does this first thing, the console script from here."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})


def _raise_open_file_limit() -> None:
    """Every client and backend connection is a file descriptor: take all the system allows
    (the soft limit up to the hard one), as nginx's worker_rlimit_nofile does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run[T](main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        return asyncio.run(main)
    return uvloop.run(main)


def workers_from_arg(text: str) -> int:
    """`--workers N` or `auto` (the CPUs allowed: the cgroup quota, else the cores)."""
    if text == "auto":
        return worker_count()
    count = int(text)
    if count < 1:
        raise ValueError("at least 1 worker")
    return count
