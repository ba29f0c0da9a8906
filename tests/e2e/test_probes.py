"""Admin `/livez` and `/readyz`, the probes the Kubernetes manifests (deploy/kubernetes/) use:
liveness stays 200 while draining, readiness is 503 before the first config is served and from
SIGTERM on; neither needs the admin token (a kubelet has none)."""

import asyncio
import signal
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from balancer.config.parse import parse_config
from balancer.ops.admin import build_admin_app
from balancer.ops.server import Balancer
from tests.helpers import (
    BackendFactory,
    BalancerFactory,
    ProcessFactory,
    free_port,
    one_pool_config,
)

TOKEN = "probe-test-token-0123456789"


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as resp:
        return resp.status, await resp.text()


async def test_readyz_is_503_before_the_first_config_is_served_livez_is_200() -> None:
    balancer = Balancer(parse_config(one_pool_config("http://127.0.0.1:9")))  # not started
    async with TestClient(TestServer(build_admin_app(balancer))) as client:
        resp = await client.get("/readyz")
        assert (resp.status, await resp.text()) == (503, "starting\n")
        resp = await client.get("/livez")
        assert (resp.status, await resp.text()) == (200, "alive\n")


async def test_probes_answer_without_the_admin_token(
    backend_factory: BackendFactory,
    balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory()
    lb = await balancer_factory(one_pool_config(backend.url, extra=f"admin_token: {TOKEN}\n"))
    assert await _get(session, f"{lb.admin_url}/livez") == (200, "alive\n")
    assert await _get(session, f"{lb.admin_url}/readyz") == (200, "ready\n")
    assert (await _get(session, f"{lb.admin_url}/status"))[0] == 401  # the rest still needs it


async def test_probes_answer_any_host_without_a_token(
    backend_factory: BackendFactory,
    balancer_factory: BalancerFactory,
    session: aiohttp.ClientSession,
) -> None:
    """The admin guard refuses a Host that does not name the admin listener (DNS rebinding);
    a probe is answered whatever the Host (a kubelet sends the Pod's address)."""
    backend = await backend_factory()
    lb = await balancer_factory(one_pool_config(backend.url))
    foreign = {"Host": "probe.example"}
    for path, answer in (("/livez", "alive\n"), ("/readyz", "ready\n")):
        async with session.get(f"{lb.admin_url}{path}", headers=foreign) as resp:
            assert (resp.status, await resp.text()) == (200, answer)
    async with session.get(f"{lb.admin_url}/status", headers=foreign) as resp:
        assert resp.status == 403  # the rest is still guarded


async def test_sigterm_grace_readyz_503_livez_200(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory()
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(
        backend.url, extra=f"admin_token: {TOKEN}\ntimeouts: {{grace: 3s, drain: 2s}}\n"))
    lb = balancer_process(config)
    async with aiohttp.ClientSession() as session:
        assert await _get(session, f"{lb.admin_url}/readyz") == (200, "ready\n")
        lb.signal(signal.SIGTERM)
        await asyncio.to_thread(lb.wait_for_log, r"SIGTERM: grace period")
        assert await _get(session, f"{lb.admin_url}/readyz") == (503, "draining\n")
        assert await _get(session, f"{lb.admin_url}/livez") == (200, "alive\n")
        async with session.get(f"{lb.url}/x") as resp:  # still serving meanwhile
            assert resp.status == 200
    assert await asyncio.to_thread(lb.proc.wait, 15) == 0


async def test_with_workers_the_supervisor_answers_the_probes(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory()
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(
        backend.url, extra=f"admin_token: {TOKEN}\ntimeouts: {{grace: 3s, drain: 2s}}\n",
        listen=f"127.0.0.1:{free_port()}"))  # workers share it
    lb = balancer_process(config, "--workers", "2", ready=r"serving with 2 workers")
    async with aiohttp.ClientSession() as session:
        assert await _get(session, f"{lb.admin_url}/livez") == (200, "alive\n")
        assert await _get(session, f"{lb.admin_url}/readyz") == (200, "ready\n")
        lb.signal(signal.SIGTERM)
        await asyncio.to_thread(lb.wait_for_log, r"SIGTERM: stopping 2 workers")
        assert await _get(session, f"{lb.admin_url}/readyz") == (503, "draining\n")
        assert await _get(session, f"{lb.admin_url}/livez") == (200, "alive\n")
    assert await asyncio.to_thread(lb.proc.wait, 20) == 0
