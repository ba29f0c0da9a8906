"""`watch: true`: a balancer process reloads when its config file's content changes, however
the file system changed it (a Kubernetes ConfigMap's `..data` symlink swap, an editor's or
git's atomic rename), exactly as on SIGHUP: a bad file is refused, the old config serves."""

import asyncio
import os
from pathlib import Path

import aiohttp

from balancer.ops.config_file import load_config
from balancer.ops.filewatch import file_digest, watch_file
from tests.helpers import (
    BackendFactory,
    Process,
    ProcessFactory,
    free_port,
    one_pool_config,
    wait_for,
)


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
    tmp_path: Path, balancer_process: ProcessFactory, backend_factory: BackendFactory,
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
    tmp_path: Path, balancer_process: ProcessFactory, backend_factory: BackendFactory,
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
    tmp_path: Path, balancer_process: ProcessFactory, backend_factory: BackendFactory,
) -> None:
    first, second = await backend_factory("first"), await backend_factory("second")
    path = tmp_path / "balancer.yaml"
    port = free_port()
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


def test_file_digest_is_the_digest_a_loaded_config_has(tmp_path: Path) -> None:
    path = tmp_path / "balancer.yaml"
    path.write_bytes(one_pool_config("http://127.0.0.1:1").encode().replace(b"\n", b"\r\n"))
    assert file_digest(str(path)) == load_config(str(path)).digest


async def test_with_watch_off_no_change_reloads_and_turning_it_on_starts_from_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "balancer.yaml"
    path.write_text("a")
    on, changes, polls = [False], [], [0]

    def is_on() -> bool:
        polls[0] += 1
        return on[0]

    task = asyncio.get_running_loop().create_task(
        watch_file(str(path), is_on, lambda: changes.append(path.read_text()),
                   file_digest(str(path)), poll=0.01))
    try:
        await wait_for(lambda: polls[0] >= 1, what="the first poll")  # "a" read: the baseline
        path.write_text("b")
        await wait_for(lambda: polls[0] >= 5, what="five polls with watch off")
        assert changes == []
        on[0] = True  # as a reload to `watch: true` would: that reload read "b" already
        await wait_for(lambda: polls[0] >= 10, what="five polls with watch on")
        assert changes == []
        path.write_text("c")
        await wait_for(lambda: changes == ["c"], what="the change to be seen")
        seen_at = polls[0]
        await wait_for(lambda: polls[0] >= seen_at + 5, what="five more polls")
        assert changes == ["c"]  # once per change, not once per poll
    finally:
        task.cancel()


async def test_a_change_made_before_the_watch_starts_is_seen(tmp_path: Path) -> None:
    """The baseline is the config loaded, not the file when the task first runs."""
    path = tmp_path / "balancer.yaml"
    path.write_text("a")
    loaded = file_digest(str(path))
    path.write_text("b")  # between loading and the watch's first poll
    changes: list[str] = []
    task = asyncio.get_running_loop().create_task(
        watch_file(str(path), lambda: True, lambda: changes.append(path.read_text()), loaded,
                   poll=0.01))
    try:
        await wait_for(lambda: changes == ["b"], what="the early change to be seen")
    finally:
        task.cancel()
