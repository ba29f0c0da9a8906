"""The choose step: which backend a request goes to, the same for every policy.

Pure (`now` is passed in). In order:
1. a backend of the request's pool under the pool's in-flight cap, by the pool's selector,
   among the backends not in `exclude` (those a retry has already tried) and not ejected
   (all of them when all are: panic, `balancer.balancing.health.available`);
2. else, every backend being at its cap, one of the first `spill_to` pool with room (the
   same rules there);
3. else, with `over_cap`, a backend of the request's pool anyway (the selector's pick with
   no cap): the request queues there. Without it, None: the caller waits in the pool's
   queue for room.
Exclusion applies in every step: a request that has tried every backend of its pool can
still go to a spill pool with room; else it gets None, even with `over_cap` (nothing left).
"""

from collections.abc import Sequence

from balancer.balancing.health import available
from balancer.balancing.selection.pool import Pool
from balancer.balancing.selection.selectors import BackendView
from balancer.config.addresses import Address

Chosen = tuple[Pool, Address, bool]  # (the pool it is in, the backend, spilled)


def choose(pool: Pool, view: BackendView, now: float, exclude: Sequence[Address] = (),
           over_cap: bool = True, request_class: str | None = None) -> Chosen | None:
    """(pool, backend, spilled) by the steps above, or None. `request_class` picks the
    latency estimates least_latency compares."""
    address = pick(pool, view, now, pool.config.inflight_cap, exclude, request_class)
    if address is not None:
        return pool, address, False
    for other in pool.spill:
        address = pick(other, view, now, other.config.inflight_cap, exclude, request_class)
        if address is not None:
            return other, address, True
    if not over_cap:
        return None
    address = pick(pool, view, now, None, exclude, request_class)
    return (pool, address, False) if address is not None else None


def pick(pool: Pool, view: BackendView, now: float, cap: int | None,
         exclude: Sequence[Address] = (), request_class: str | None = None) -> Address | None:
    """A backend of this pool under `cap` in flight (any, with None), not in `exclude`."""
    backends: Sequence[Address] = pool.backends
    if exclude:
        backends = [a for a in backends if a not in exclude]
        if not backends:
            return None
    backends = available(backends, view.health, now)
    return pool.selector.pick(backends, pool.static_weight, view, now, cap, request_class)
