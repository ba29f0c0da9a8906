"""`python -m backends serve --kind KIND --app MODULE:ATTR --listen ADDR`: host one backend.

KIND is async, threaded or multiprocess (see backends/runners).
"""

import argparse
import logging
import os
import sys

from backends.runners import KINDS, Listen, ServeOptions, runner


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backends")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="host an EchoNext app")
    serve.add_argument("--kind", required=True, choices=list(KINDS))
    serve.add_argument("--app", default="backends.demo:app", help="MODULE:ATTR")
    serve.add_argument("--listen", required=True, help="host:port or unix:/path")
    serve.add_argument("--workers", type=int, default=2, help="processes (multiprocess)")
    serve.add_argument("--threads", type=int, default=8, help="threads (threaded, async)")
    serve.add_argument("--slowdown", type=float, default=1.0,
                       help="make the demo's work F times slower (imbalance benchmarks)")
    serve.add_argument("--slowdown-on-signal", type=float, default=0.0, metavar="F",
                       help="SIGUSR1 makes the demo's work F times slower from then on "
                            "(threaded and async runners)")
    serve.add_argument("--log-file", help="append stdout and stderr here")
    serve.add_argument("--nice", type=int, default=0,
                       help="lower the CPU priority by N (e.g. 10 for a heavy-CPU pool, so it "
                            "uses spare CPU without starving latency-sensitive pools)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.log_file:
        fd = os.open(args.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {args.kind}[%(process)d] %(levelname)s %(message)s")
    os.environ["ECHONEXT_SLOWDOWN"] = str(args.slowdown)
    if args.slowdown_on_signal > 0:
        os.environ["ECHONEXT_SLOWDOWN_ON_SIGNAL"] = str(args.slowdown_on_signal)
    if args.nice:
        os.nice(args.nice)  # before any worker is forked: every process of the instance
    try:
        listen = Listen.parse(args.listen)
    except ValueError as exc:
        print(f"backends: {exc}", file=sys.stderr)
        return 2
    options = ServeOptions(app=args.app, listen=listen, workers=args.workers,
                           threads=args.threads)
    logging.getLogger("backends").info("serving %s (%s) on %s", args.app, args.kind, listen)
    runner(args.kind)(options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
