"""`python -m balancer` is the same as the `balancer` console script."""

import signal

# Before anything else (the imports below take a while): a SIGHUP that arrives before the
# reload handler is installed waits, blocked, and is then handled as a reload (cli,
# balancer.ops.lifecycle).
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
# SIGUSR1 (reopen the access log) before the handler is in place must not end the process
# (its default action): a worker that is still starting opens the log afresh anyway
signal.signal(signal.SIGUSR1, signal.SIG_IGN)

from balancer.cli import main  # noqa: E402

raise SystemExit(main())
