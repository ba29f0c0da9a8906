"""`balancer run --workers 2`: real processes sharing a port, a supervisor that restarts a
crashed worker, validates reloads once, aggregates metrics and passes SIGTERM on."""

import asyncio
import os
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from balancer.cli import workers_from_arg
from tests.helpers import (
    BackendFactory,
    Process,
    ProcessFactory,
    free_port,
    one_pool_config,
    wait_for,
)

READY = r"serving with 2 workers"


def _config(backend: str, port: int) -> str:
    return (f"listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:0\n"
            f"pools:\n  default:\n    backends: [{backend}]\n"
            "watch: false\n")  # these tests reload by SIGHUP and POST /reload only


def _start(tmp_path: Path, backend: str, balancer_process: ProcessFactory,
           port: int | None = None) -> tuple[Process, Path]:
    """`balancer run --workers 2` on a named port; returns it and its config file."""
    config = tmp_path / "lb.yaml"
    config.write_text(_config(backend, port or free_port()))
    return balancer_process(config, "--workers", "2", ready=READY), config


async def _worker_prefixes(url: str, count: int) -> set[str]:
    """The request-id prefixes (one per process) of `count` requests on new connections."""
    prefixes = set()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(count):
            async with session.get(f"{url}/x") as resp:
                assert resp.status == 200
                prefixes.add(resp.headers["X-Request-Id"].split("-")[0])
    return prefixes


async def _status(session: aiohttp.ClientSession, lb: Process) -> dict[str, object]:
    async with session.get(f"{lb.admin_url}/status") as resp:
        assert resp.status == 200
        document: dict[str, object] = await resp.json()
        return document


async def test_two_workers_share_the_port_and_metrics_add_up(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory("b")
    lb, _ = _start(tmp_path, backend.url, balancer_process)
    assert len(await _worker_prefixes(lb.url, 60)) == 2, "both workers serve"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{lb.admin_url}/metrics") as resp:
            text = await resp.text()
        served = re.search(r'balancer_requests_total\{class="none",pool="default",'
                           r'status_class="2xx"\} (\S+)', text)
        assert served is not None and float(served.group(1)) == 60.0, text
        assert "balancer_workers 2.0" in text
        assert 'balancer_config_generation{worker="0"} 1.0' in text
        assert 'balancer_config_generation{worker="1"} 1.0' in text
        status = await _status(session, lb)
        workers = status["workers"]
        assert isinstance(workers, list) and [w["running"] for w in workers] == [True, True]
        async with session.get(f"{lb.admin_url}/") as resp:
            assert resp.status == 200 and "<title>echonext-balancer" in await resp.text()


async def test_a_killed_worker_is_restarted_and_serving_goes_on(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory("b")
    lb, _ = _start(tmp_path, backend.url, balancer_process)
    async with aiohttp.ClientSession() as session:
        workers = (await _status(session, lb))["workers"]
        assert isinstance(workers, list)
        victim = workers[1]["pid"]
        os.kill(victim, signal.SIGKILL)
        await asyncio.to_thread(lb.wait_for_log, rf"worker 1 \(pid {victim}\) exited with "
                                r"signal SIGKILL .*; restarting")
        await _worker_prefixes(lb.url, 10)  # asserts: 10 new connections answered 200 meanwhile

        async def restarted() -> bool:
            status = await _status(session, lb)
            pids = [w["pid"] for w in status["workers"]]  # type: ignore[attr-defined]
            running = [w["running"] for w in status["workers"]]  # type: ignore[attr-defined]
            return victim not in pids and all(running)

        for _ in range(300):
            if await restarted():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("worker 1 was not restarted")
        async with session.get(f"{lb.admin_url}/metrics") as resp:
            assert 'balancer_worker_restarts{worker="1"} 1.0' in await resp.text()
    assert len(await _worker_prefixes(lb.url, 60)) == 2


async def test_supervisor_reports_a_bad_file_once_and_signals_no_worker(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    first, second = await backend_factory("first"), await backend_factory("second")
    port = free_port()
    lb, config = _start(tmp_path, first.url, balancer_process, port)
    config.write_text(_config(second.url, port).replace("backends:", "backendz:"))
    lb.signal(signal.SIGHUP)
    await asyncio.to_thread(lb.wait_for_log, r"no worker signalled.*lb\.yaml:5:5: "
                            r"pools\.default\.backendz: unknown key")
    async with aiohttp.ClientSession() as session:
        status = await _status(session, lb)
        assert [w["generation"] for w in status["workers"]] == [1, 1]  # type: ignore[attr-defined]

        new_admin = free_port()  # the good file also moves the admin listener
        config.write_text(_config(second.url, port).replace(
            "admin: 127.0.0.1:0", f"admin: 127.0.0.1:{new_admin}"))
        async with session.post(f"{lb.admin_url}/reload") as resp:
            outcome = await resp.json()
        assert resp.status == 200 and outcome["ok"] and outcome["generation"] == 2, outcome
        lb.admin_url = f"http://127.0.0.1:{new_admin}"
        status = await _status(session, lb)
        assert [w["generation"] for w in status["workers"]] == [2, 2]  # type: ignore[attr-defined]
        assert len(re.findall(r"reloaded config: generation 2", lb.log())) == 2
        # signals are handled in order: a worker sent the bad file would have refused it
        # (and said so) before this good reload
        assert len(re.findall(r"unknown key 'backendz'", lb.log())) == 1
        assert "reload refused, keeping generation" not in lb.log()
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as fresh:
            for _ in range(20):
                async with fresh.get(f"{lb.url}/x") as resp:
                    assert resp.headers["X-Backend"] == "second"


async def test_sigterm_stops_every_worker_and_exits_0(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory,
) -> None:
    backend = await backend_factory("b")
    lb, _ = _start(tmp_path, backend.url, balancer_process)
    async with aiohttp.ClientSession() as session:
        workers = (await _status(session, lb))["workers"]
        pids = [w["pid"] for w in workers]  # type: ignore[attr-defined]
        slow = asyncio.ensure_future(session.get(f"{lb.url}/slow?s=1"))
        await wait_for(lambda: len(backend.seen) == 1, what="the slow request at the backend")
        lb.signal(signal.SIGTERM)
        async with await slow as resp:
            assert resp.status == 200
    assert await asyncio.to_thread(lb.proc.wait, 20) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_port_0_and_unix_listeners_cannot_be_shared_by_workers(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "lb.yaml"
    config.write_text("listen: [127.0.0.1:0, unix:/tmp/x.sock]\n"
                      "pools:\n  default:\n    backends: [http://127.0.0.1:1]\n")
    result = subprocess.run([sys.executable, "-m", "balancer", "run", "-c", str(config),
                             "--workers", "2"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "port 0 would give each of the 2 workers a different port" in result.stderr
    assert "a unix socket cannot be shared by 2 workers" in result.stderr


def test_workers_auto_is_the_cpu_count() -> None:
    assert workers_from_arg("auto") == len(os.sched_getaffinity(0))
    assert workers_from_arg("3") == 3
    with pytest.raises(ValueError):
        workers_from_arg("0")


async def test_the_supervisors_admin_listener_has_the_same_guard(
    tmp_path: Path, backend_factory: BackendFactory,
    balancer_process: ProcessFactory, session: aiohttp.ClientSession,
) -> None:
    backend = await backend_factory("b")
    config = tmp_path / "lb.yaml"
    config.write_text(one_pool_config(backend.url, listen=f"127.0.0.1:{free_port()}"))
    lb = balancer_process(config, "--workers", "2", ready=r"serving with 2 workers")
    async with session.post(f"{lb.admin_url}/reload",
                            headers={"Origin": "http://evil.example"}) as resp:
        assert resp.status == 403
    async with session.get(f"{lb.admin_url}/status", headers={"Host": "evil.example"}) as resp:
        assert resp.status == 403
    async with session.get(f"{lb.admin_url}/status") as resp:
        assert resp.status == 200
        assert (await resp.json())["generation"] == 1
    lb.signal(signal.SIGTERM)
