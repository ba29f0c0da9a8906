"""`python -m balancer` is the same as the `balancer` console script."""

import signal

# SIGUSR1 (reopen the access log) before the handler is in place must not end the process
# (its default action): a worker that is still starting opens the log afresh anyway
signal.signal(signal.SIGUSR1, signal.SIG_IGN)

from balancer.cli import main  # noqa: E402

raise SystemExit(main())
