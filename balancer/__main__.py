"""`python -m balancer` is the same as the `balancer` console script."""

from balancer.cli import main

raise SystemExit(main())
