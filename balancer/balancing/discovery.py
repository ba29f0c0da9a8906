"""DNS discovery's decisions: what a resolution's answer does to a name's set of addresses.

Pure: no sockets, no clock (`now` is passed in). The I/O shell (`balancer.upstream.dns`) asks the
resolver and feeds each answer to `observe`, which returns the step to take: the new set,
what joined and what left, and when to resolve again. The rules it keeps:
- an answer with addresses replaces the set; the next resolution is after the interval, or
  the records' TTL when shorter, never sooner than `MIN_INTERVAL`;
- a failure or an empty answer keeps the last good set (a pool is never emptied by DNS) and
  retries sooner, backing off from `MIN_INTERVAL` to the interval;
- a name that never resolved has no set (`None`): its pool answers 503 naming it.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from balancer.config.addresses import Address

Discovered = Mapping[str, tuple[Address, ...]]  # `name:port` -> the addresses it resolved to

MIN_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Resolved:
    """The addresses a name resolved to (A and AAAA together) and the shortest record TTL."""

    hosts: tuple[str, ...]
    ttl: float


@dataclass(frozen=True, slots=True)
class Failed:
    """No usable answer: the resolver failed, timed out, or the name has no A/AAAA record."""

    reason: str


Answer = Resolved | Failed


@dataclass(frozen=True, slots=True)
class NameState:
    """What is known of one discovered name (`host:port`)."""

    name: str
    port: int
    addresses: tuple[Address, ...] | None = None  # None: never resolved
    next_at: float = 0.0
    failures: int = 0          # in a row; 0 after an answer with addresses
    total_failures: int = 0
    last_error: str = ""
    resolved_at: float | None = None

    @property
    def key(self) -> str:
        return f"{self.name}:{self.port}"


@dataclass(frozen=True, slots=True)
class Step:
    """What one answer changes: the name's new state, the addresses that joined and left."""

    state: NameState
    added: tuple[Address, ...] = ()
    removed: tuple[Address, ...] = ()
    failed: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def observe(state: NameState, answer: Answer, now: float, interval: float) -> Step:
    """The step an answer leads to (see the module's rules)."""
    if isinstance(answer, Resolved) and answer.hosts:
        addresses = tuple(sorted({Address("tcp", host=h, port=state.port) for h in answer.hosts},
                                 key=_order))
        old = set(state.addresses or ())
        new = set(addresses)
        wait = max(MIN_INTERVAL, min(interval, answer.ttl))
        next_state = NameState(state.name, state.port, addresses, now + wait, 0,
                               state.total_failures, state.last_error, now)
        return Step(next_state, tuple(a for a in addresses if a not in old),
                    tuple(sorted(old - new, key=_order)))
    reason = answer.reason if isinstance(answer, Failed) else "no A or AAAA record"
    failures = state.failures + 1
    wait = min(interval, MIN_INTERVAL * 2 ** (failures - 1))
    next_state = NameState(state.name, state.port, state.addresses, now + wait, failures,
                           state.total_failures + 1, reason, state.resolved_at)
    return Step(next_state, failed=True)


def _order(address: Address) -> tuple[int, str]:
    return (":" in address.host, address.host)


def wanted_names(targets: list[tuple[str, int]], known: dict[str, NameState],
                 now: float) -> dict[str, NameState]:
    """The states for a config's names: known ones kept (with their set), new ones due now."""
    states = {}
    for name, port in targets:
        key = f"{name}:{port}"
        states[key] = known.get(key) or NameState(name, port, next_at=now)
    return states
