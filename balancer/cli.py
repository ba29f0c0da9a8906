"""`balancer run -c FILE` and `balancer check -c FILE`: the only place errors become exit codes.

Exit codes: 0 success, 2 invalid config (each problem as `file:line:col: message` on stderr).
"""

import argparse
import asyncio
import logging
import sys

from balancer.config import Config, load_config
from balancer.yamltree import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="balancer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve with a config file")
    run.add_argument("-c", "--config", required=True, help="YAML config file")
    run.add_argument("--workers", default="1", help="worker processes (only 1 for now)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check", help="validate a config file and exit")
    check.add_argument("-c", "--config", required=True, help="YAML config file")
    return parser


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
    config = _load(args.config)
    if config is None:
        return 2
    if args.command == "check":
        backends = sum(len(pool.backends) for pool in config.pools)
        print(f"{args.config}: ok ({len(config.listen)} listener(s), {len(config.pools)} pool(s), "
              f"{backends} backend(s), digest {config.digest})")
        return 0
    if args.workers != "1":
        print("balancer: --workers other than 1 is not supported yet", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s balancer[%(process)d] %(levelname)s %(message)s")
    from balancer.server import serve

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        return asyncio.run(serve(config, args.config))
    return uvloop.run(serve(config, args.config))
