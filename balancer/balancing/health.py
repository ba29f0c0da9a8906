"""Backend health, passive (outlier ejection on request failures) and active (checks), and
the retry budget.

Pure (`now` is passed in). Decide, then do: `observe`, `observe_check` and `poll` return the
transition (`EJECTED`, `RESTORED` or None) and the caller logs it and updates metrics. Rules:
- `consecutive_failures` backend faults in a row (refused, reset, timed out, invalid
  response) eject a backend for `ejection` x the number of times it has been ejected (capped
  at `max_ejection`); once that time has passed it is used again (and ramps up again);
  a backend that fails again before serving anything since (still down) is ejected for
  `ejection` only: the longer times are for one that flaps (serves, then fails), else an
  outage of a few `ejection`s would keep it out for as long again once it is back;
- at most `max_ejected_share` of a pool is ejected at once; past that, failures are counted
  but nobody more is ejected;
- with active checks on (`check_interval`), `fall` failed checks in a row take a backend out
  (down) until `rise` pass in a row, whatever its passive state; the I/O shell
  (`balancer.upstream.monitor`) runs the checks;
- a pool whose backends are all unavailable uses all of them (panic), as Envoy does: an
  ejected backend is a guess, a 503 to every client is a certainty.
"""

from collections.abc import Callable, Sequence
from typing import Literal

from balancer.config.model import HealthPolicy

Transition = Literal["ejected", "restored"] | None
EJECTED: Transition = "ejected"
RESTORED: Transition = "restored"


class BackendHealth:
    """One backend's health: ejected for a while by request failures (passive), down by
    failed checks (active); `is_ejected` is either."""

    __slots__ = ("checks_failed", "checks_passed", "down", "ejected_until", "ejections",
                 "failures", "served")

    def __init__(self) -> None:
        self.failures = 0
        self.ejections = 0
        self.ejected_until = 0.0
        self.served = True         # a success since the last ejection ended
        self.down = False          # taken out by active checks
        self.checks_passed = 0
        self.checks_failed = 0

    def __repr__(self) -> str:
        return (f"<BackendHealth failures={self.failures} ejections={self.ejections} "
                f"ejected_until={self.ejected_until:.1f}>")

    def is_ejected(self, now: float) -> bool:
        """Not to be used now: ejected by passive health, or down by active checks."""
        return self.down or now < self.ejected_until

    def observe_check(self, ok: bool, policy: HealthPolicy) -> Transition:
        """One active check: `fall` failures in a row take it out, `rise` passes bring it back."""
        if ok:
            self.checks_passed += 1
            self.checks_failed = 0
            if self.down and self.checks_passed >= policy.rise:
                self.down = False
                return RESTORED
            return None
        self.checks_failed += 1
        self.checks_passed = 0
        if not self.down and self.checks_failed >= policy.fall:
            self.down = True
            return EJECTED
        return None

    def observe(self, failed: bool, now: float, policy: HealthPolicy,
                may_eject: bool = True) -> Transition:
        """One outcome of a request to this backend."""
        if not failed:
            self.failures = 0
            if not now < self.ejected_until:
                self.served = True
            if self.ejections and not now < self.ejected_until:
                self.ejections = max(0, self.ejections - 1)  # forgiven, slowly
            return None
        self.failures += 1
        if self.failures >= policy.consecutive_failures and not now < self.ejected_until \
                and may_eject:
            self.ejections += 1
            times = self.ejections if self.served else 1
            self.ejected_until = now + min(policy.ejection * times, policy.max_ejection)
            self.failures = 0
            self.served = False
            return EJECTED
        return None

    def poll(self, now: float) -> Transition:
        """RESTORED once, when the ejection time has passed."""
        if self.ejected_until and now >= self.ejected_until:
            self.ejected_until = 0.0
            return RESTORED
        return None


def may_eject(healths: Sequence[BackendHealth], now: float, policy: HealthPolicy) -> bool:
    """Whether one more backend of this pool may be ejected."""
    ejected = sum(1 for h in healths if h.is_ejected(now))
    return ejected + 1 <= policy.max_ejected_share * len(healths)


def available[T](candidates: Sequence[T], health: Callable[[T], BackendHealth],
                 now: float) -> Sequence[T]:
    """The candidates not ejected; all of them when none is left (panic)."""
    usable = [c for c in candidates if not health(c).is_ejected(now)]
    return usable if usable else candidates


class RetryBudget:
    """Retries may be at most `retry_budget` of requests (a token bucket, in requests)."""

    __slots__ = ("exhausted", "tokens")

    def __init__(self, policy: HealthPolicy) -> None:
        self.tokens = policy.retry_burst
        self.exhausted = 0

    def on_request(self, policy: HealthPolicy) -> None:
        self.tokens = min(policy.retry_burst, self.tokens + policy.retry_budget)

    def try_retry(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.exhausted += 1
        return False
