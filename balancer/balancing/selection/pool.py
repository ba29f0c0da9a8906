"""A pool as selection sees it: its backends (fixed, then discovered), their static weights,
its selector and the pools it spills to.

Pure. Built by the Runtime, once per config generation (or DNS change): the backend list,
the selector (chosen by the pool's `policy`) and the spill pools are fixed then; only the
selector's own state (a round-robin turn) changes afterwards.
"""

from dataclasses import InitVar, dataclass, field

from balancer.balancing.discovery import Discovered
from balancer.balancing.selection.selectors import Selector
from balancer.config.addresses import Address
from balancer.config.model import PoolConfig


@dataclass(slots=True)
class Pool:
    """The backends of one pool (fixed, then discovered) and how to choose among them."""

    config: PoolConfig
    selector: Selector
    discovered: InitVar[Discovered | None] = None  # what DNS discovery has found so far
    static_weight: dict[Address, float] = field(default_factory=dict)
    backends: tuple[Address, ...] = ()
    unresolved: tuple[str, ...] = ()  # discovered names with no address yet
    # the `spill_to` pools, in order (set by the Runtime once every pool exists)
    spill: tuple["Pool", ...] = field(default=(), compare=False)

    def __post_init__(self, discovered: Discovered | None) -> None:
        found = discovered or {}
        weights = {address: self.config.weight_of(i)
                   for i, address in enumerate(self.config.backends)}
        unresolved = []
        for target in self.config.discover:
            addresses = found.get(target.key)
            if not addresses:
                unresolved.append(target.key)
                continue
            for address in addresses:
                weights.setdefault(address, target.weight)  # a fixed entry keeps its weight
        self.static_weight = weights
        self.backends = tuple(weights)
        self.unresolved = tuple(unresolved)

    @property
    def name(self) -> str:
        return self.config.name

    def __repr__(self) -> str:
        return f"<Pool {self.name} [{len(self.backends)} backends]>"
