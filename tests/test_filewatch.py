"""`watch: true`: a balancer process reloads when its config file's content changes, however
the file system changed it (a Kubernetes ConfigMap's `..data` symlink swap, an editor's or
git's atomic rename), exactly as on SIGHUP: a bad file is refused, the old config serves."""

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from balancer.filewatch import file_digest
from tests.conftest import Backend, Process, one_pool_config
from tests.test_workers import _free_port

StartProcess = Callable[..., Process]
StartBackend = Callable[..., Awaitable[Backend]]


async def served_by(session: aiohttp.ClientSession, process: Process) -> str:
    async with session.get(f"{process.url}/x") as response:
        assert response.status == 200
        return response.headers["X-Backend"]


def replace_atomically(path: Path, text: str) -> None:
    """As editors and `git checkout` do: write a new file, rename it over the old one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


async def test_a_configmap_symlink_swap_reloads(
    tmp_path: Path, balancer_process: StartProcess, backend_factory: StartBackend,
    session: aiohttp.ClientSession,
) -> None:
    first, second = await backend_factory("first"), await backend_factory("second")
    # a ConfigMap volume: balancer.yaml -> ..data/balancer.yaml, ..data -> ..<timestamp>
    mount = tmp_path / "config"
    (mount / "..2026_01_01").mkdir(parents=True)
    (mount / "..2026_01_01" / "balancer.yaml").write_text(one_pool_config(first.url))
    (mount / "..data").symlink_to("..2026_01_01")
    (mount / "balancer.yaml").symlink_to("..data/balancer.yaml")
    process = balancer_process(mount / "balancer.yaml")
    assert await served_by(session, process) == "first"

    (mount / "..2026_01_02").mkdir()
    (mount / "..2026_01_02" / "balancer.yaml").write_text(one_pool_config(second.url))
    (mount / "..data_tmp").symlink_to("..2026_01_02")
    os.replace(mount / "..data_tmp", mount / "..data")  # what the kubelet does
    process.wait_for_log(r"reloaded config: generation 2", timeout=10)
    assert await served_by(session, process) == "second"


async def test_an_atomic_rename_reloads_and_a_bad_file_is_refused(
    tmp_path: Path, balancer_process: StartProcess, backend_factory: StartBackend,
    session: aiohttp.ClientSession,
) -> None:
    first, second = await backend_factory("first"), await backend_factory("second")
    path = tmp_path / "balancer.yaml"
    path.write_text(one_pool_config(first.url))
    process = balancer_process(path)
    replace_atomically(path, one_pool_config(second.url))
    process.wait_for_log(r"reloaded config: generation 2", timeout=10)
    assert await served_by(session, process) == "second"
    replace_atomically(path, "listen: [\n")
    process.wait_for_log(r"reload refused, keeping generation 2: \S*balancer.yaml:\d+:\d+",
                         timeout=10)
    assert await served_by(session, process) == "second"
    assert process.log().count("changed: reloading") == 2  # once per change, not per poll


async def test_the_supervisor_watches_for_its_workers(
    tmp_path: Path, balancer_process: StartProcess, backend_factory: StartBackend,
) -> None:
    first, second = await backend_factory("first"), await backend_factory("second")
    path = tmp_path / "balancer.yaml"
    port = _free_port()
    path.write_text(one_pool_config(first.url).replace("127.0.0.1:0\n", f"127.0.0.1:{port}\n", 1))
    process = balancer_process(path, "--workers", "2", ready=r"serving with 2 workers")
    replace_atomically(path, path.read_text().replace(first.url, second.url))
    process.wait_for_log(r"reload passed to 2 workers: generation 2", timeout=15)
    assert process.log().count("changed: reloading") == 1  # the supervisor's, not each worker's


def test_file_digest_follows_symlinks_and_is_none_for_a_missing_file(tmp_path: Path) -> None:
    target = tmp_path / "a.yaml"
    target.write_text("x")
    (tmp_path / "link.yaml").symlink_to(target)
    assert file_digest(str(tmp_path / "link.yaml")) == file_digest(str(target)) is not None
    assert file_digest(str(tmp_path / "missing.yaml")) is None
