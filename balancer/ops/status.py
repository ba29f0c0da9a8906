"""The single process's `/status` document (JSON-ready), from the live state it is handed.

I/O shell, but it only reads: the runtime (config, pools, weights), the backend table (health,
stats, connections), the learned route costs, the discovered names and the reloads. The
supervisor's `/status` merges its workers' documents (balancer.ops.aggregate).
"""

from collections.abc import Iterable, Mapping
from typing import Any

from balancer.balancing.costs import CostModel
from balancer.balancing.discovery import NameState
from balancer.balancing.runtime import Runtime
from balancer.balancing.selection.pool import Pool
from balancer.config.addresses import Address
from balancer.ops.reloads import ReloadOutcome
from balancer.upstream.backends import BackendTable
from balancer.upstream.connections import Connections


def status_document(runtime: Runtime, backends: BackendTable, costs: CostModel, *, now: float,
                    listen: list[str], client_connections: int,
                    discovery: Iterable[NameState],
                    reloads: Iterable[ReloadOutcome]) -> dict[str, Any]:
    """`now`: the backend table's clock (ejections and report ages are measured on it)."""
    connections = backends.connections()
    return {
        "generation": runtime.generation,
        "digest": runtime.config.digest,
        "config": runtime.config.source,
        "listen": listen,
        "client_connections": client_connections,
        "pools": [pool_entry(pool, runtime, backends, connections, now)
                  for pool in runtime.pools.values()],
        "routes": route_entries(costs),
        "discovery": [discovery_entry(state, now) for state in discovery],
        "reloads": [outcome.as_dict() for outcome in reloads],
    }


def pool_entry(pool: Pool, runtime: Runtime, backends: BackendTable,
               connections: Mapping[Address, Connections], now: float) -> dict[str, Any]:
    weights = runtime.weights(pool, backends, now)
    return {"name": pool.name, "kind": pool.config.kind,
            "backends": [backend_entry(address, weight, backends, connections.get(address), now)
                         for address, weight in zip(pool.backends, weights, strict=True)],
            "unresolved": list(pool.unresolved)}


def backend_entry(address: Address, weight: float, backends: BackendTable,
                  connections: Connections | None, now: float) -> dict[str, Any]:
    health = backends.health(address)
    stats = backends.stats(address)
    report = stats.report
    return {
        "address": address.url,
        "healthy": not health.is_ejected(now),
        "state": "down" if health.down else "ejected" if health.is_ejected(now) else "up",
        "ejections": health.ejections,
        "weight": round(weight, 4),
        "error_rate": round(stats.error_rate, 4),
        "last_report": None if report is None else {
            "cpu_utilization": report.cpu_utilization, "rps": report.rps,
            "eps": report.eps, **{f"named.{k}": v for k, v in report.named.items()}},
        "report_age_s": None if stats.report_at == float("-inf")
        else round(now - stats.report_at, 3),
        "inflight": connections.inflight if connections else 0,
        "open_connections": connections.open_count if connections else 0,
        "idle_connections": connections.idle_count if connections else 0,
    }


def route_entries(costs: CostModel) -> list[dict[str, Any]]:
    """The learned routes, the most sampled first."""
    return [
        {"route": r.template, "class": r.learned_class, "cpu_ms": round(r.cpu_ms, 3),
         "io_share": round(r.io_share, 3), "samples": r.samples,
         "confidence": round(costs.confidence(r), 3), "confident": costs.is_confident(r)}
        for r in sorted(costs.routes(), key=lambda r: -r.samples)
    ]


def discovery_entry(state: NameState, now: float) -> dict[str, Any]:
    return {"name": state.key, "addresses": None if state.addresses is None
            else [a.url for a in state.addresses], "failures": state.total_failures,
            "last_error": state.last_error or None,
            "next_in_s": round(max(0.0, state.next_at - now), 3)}
