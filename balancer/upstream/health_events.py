"""The one place that acts on a backend's health transition: counts it, logs it, and restarts
slow start for a backend that comes back.

I/O shell (logging, metrics). The transitions are decided elsewhere, purely, by
`balancing/health.py`'s `BackendHealth`, for three causes:
- FAILURES: passive ejection after consecutive failed requests (the proxy's `_observe`);
- CHECKS: active health checks taking a backend out or bringing it back (`monitor.py`);
- EXPIRY: an ejection's time is over (`monitor.py`'s expiry loop).
Each source hands its transition (or None) to `HealthEvents.on_transition` with its cause, as
pingora's `health_status_change` or Envoy's one callback per detector. Rules:
- every EJECTED counts in `metrics.ejections` (`balancer_backend_ejections`), whatever the
  cause; every RESTORED restarts the backend's stats (slow start, no error rate kept);
- the log lines are one per transition and say why: a passive ejection warns under
  `balancer.proxy` (where it always has), checks and expiry under `balancer.health`.
"""

import logging
from collections.abc import Callable
from typing import Literal

from balancer.balancing.health import EJECTED, RESTORED, BackendHealth, Transition
from balancer.balancing.weights import BackendStats
from balancer.config.addresses import Address
from balancer.config.model import HealthPolicy
from balancer.metrics import Metrics

Cause = Literal["failures", "checks", "expiry"]
FAILURES: Cause = "failures"
CHECKS: Cause = "checks"
EXPIRY: Cause = "expiry"

log = logging.getLogger("balancer.health")
passive_log = logging.getLogger("balancer.proxy")


class HealthEvents:
    """Acts on the transitions of the backends whose stats it is given."""

    def __init__(self, metrics: Metrics, stats: Callable[[Address], BackendStats]) -> None:
        self._metrics = metrics
        self._stats = stats

    def on_transition(self, address: Address, transition: Transition, cause: Cause,
                      health: BackendHealth, policy: HealthPolicy, now: float) -> None:
        """Count, log and restart as `transition` (decided by `health` under `policy`) asks;
        nothing for None."""
        if transition is EJECTED:
            self._metrics.ejections[address.key] += 1
            if cause == FAILURES:
                passive_log.warning("backend %s ejected for %.0fs after %d consecutive failures",
                                    address, health.ejected_until - now,
                                    policy.consecutive_failures)
            else:
                log.warning("backend %s down: %d health checks failed", address, policy.fall)
        elif transition is RESTORED:
            self._stats(address).restart(now)
            if cause == CHECKS:
                log.info("backend %s up: %d health checks passed", address, policy.rise)
            else:
                log.info("backend %s restored after ejection %d", address, health.ejections)
