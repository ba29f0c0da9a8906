"""Learning from REAL backends under contention: a route that burns CPU is never `io`.

The runners serve the demo app as subprocesses; a GIL-bound view is hammered with more
concurrent requests than the backend has threads, so most of each request's wall time is
spent waiting for the GIL (or for a core), and every report is folded into a CostModel as
the balancer does.
"""

import asyncio
from collections.abc import Callable

import pytest

from balancer.costs import CostModel
from balancer.feedback import LoadReport
from balancer.routing_config import Learning
from tests.test_backends import BackendProcess, report_of, start_backend  # noqa: F401


async def hammer(backend: BackendProcess, path: str, concurrency: int,
                 rounds: int) -> list[LoadReport]:
    reports: list[LoadReport] = []
    async with backend.session() as session:
        async def one() -> None:
            async with session.get(f"http://b{path}") as resp:
                assert resp.status == 200
                reports.append(report_of(resp))

        for _ in range(rounds):
            await asyncio.gather(*(one() for _ in range(concurrency)))
    return reports


def learn(reports: list[LoadReport], template: str, threshold: float | None) -> list[str]:
    costs = CostModel(Learning(), cpu_threshold_ms=threshold, io_threshold=0.5)
    classes = []
    for now, report in enumerate(reports):
        route = costs.observe_report(template, report, float(now))
        assert route is not None
        classes.append(route.learned_class)
    return classes


@pytest.mark.parametrize(("kind", "threads"), [("threaded", "8"), ("async", "16")])
async def test_a_gil_bound_route_on_a_contended_backend_is_never_learned_io(
    start_backend: Callable[..., BackendProcess], kind: str, threads: str,  # noqa: F811
) -> None:
    backend = start_backend(kind, "--threads", threads)
    reports = await hammer(backend, "/cpu/spin?ms=40", concurrency=24, rounds=2)
    walls = [r.wall_ms or 0 for r in reports]
    cpus = [r.cpu_ms or 0 for r in reports]
    assert max(walls) >= 3 * max(cpus), "the backend was not contended: the test proves nothing"
    io_shares = [(r.io_ms or 0) / ((r.io_ms or 0) + (r.cpu_ms or 1)) for r in reports]
    assert sorted(io_shares)[len(io_shares) // 2] < 0.3, io_shares   # wall - cpu would be > 0.6
    assert "io" not in learn(reports, "GET /cpu/spin?ms", threshold=100)   # under a 100 ms bar
    assert set(learn(reports, "GET /cpu/spin?ms", threshold=10)) == {"heavy_cpu"}


@pytest.mark.parametrize("kind", ["threaded", "async", "multiprocess"])
async def test_a_waiting_route_is_still_learned_io(
    start_backend: Callable[..., BackendProcess], kind: str,  # noqa: F811
) -> None:
    backend = start_backend(kind, "--threads", "8", "--workers", "2")
    reports = await hammer(backend, "/io/sleep?ms=20", concurrency=2, rounds=6)
    classes = learn(reports, "GET /io/sleep?ms", threshold=None)
    assert classes[-1] == "io", [(r.cpu_ms, r.io_ms, r.wall_ms) for r in reports]
