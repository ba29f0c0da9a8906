"""The cgroup CPU quota (balancer.ops.cgroup) over fake cgroup file trees, v2 and v1, and what
uses it: `--workers auto` and the backends' cpu_utilization denominator."""

import os
from pathlib import Path

import pytest

from backends.load import Counters, LoadMeter
from balancer.ops.cgroup import available_cpus, cpu_quota, worker_count

CORES = len(os.sched_getaffinity(0))


def tree(root: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root)


@pytest.mark.parametrize(("files", "quota"), [
    # v2 in a container (cgroup namespace): the path is / and the mount is the cgroup itself
    ({"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "150000 100000\n"}, 1.5),
    ({"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "max 100000\n"}, None),
    # v2 on a host: the process's cgroup and its ancestors; the smallest limit wins
    ({"proc/self/cgroup": "0::/kubepods/pod1/c1\n",
      "sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "400000 100000\n",
      "sys/fs/cgroup/kubepods/pod1/cpu.max": "50000 100000\n",
      "sys/fs/cgroup/kubepods/cpu.max": "max 100000\n"}, 0.5),
    # v1 mounted under the name the process's cgroup line gives
    ({"proc/self/cgroup": "3:cpuacct,cpu:/\n",
      "sys/fs/cgroup/cpuacct,cpu/cpu.cfs_quota_us": "300000\n",
      "sys/fs/cgroup/cpuacct,cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
    # v1: cfs quota and period, -1 = none; under the combined cpu,cpuacct mount
    ({"proc/self/cgroup": "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "200000\n",
      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 2.0),
    ({"proc/self/cgroup": "1:cpu:/\n", "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
      "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"}, None),
    # nothing readable: no limit
    ({"proc/self/cgroup": "0::/\n"}, None),
    ({}, None),
    ({"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "lots\n"}, None),
])
def test_cpu_quota(tmp_path: Path, files: dict[str, str], quota: float | None) -> None:
    assert cpu_quota(tree(tmp_path, files)) == quota


@pytest.mark.parametrize(("cpu_max", "cpus", "workers"), [
    ("50000 100000", 0.5, 1),     # under one CPU: still one worker
    ("150000 100000", 1.5, 1),    # whole CPUs only: a second worker would be throttled
    ("100000 100000", 1.0, 1),
    ("max 100000", CORES, CORES),  # no quota: the cores
    (f"{(CORES + 4) * 100000} 100000", CORES, CORES),  # a quota above the cores: the cores
])
def test_workers_auto_and_available_cpus_follow_the_quota(
    tmp_path: Path, cpu_max: str, cpus: float, workers: int,
) -> None:
    root = tree(tmp_path, {"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": cpu_max})
    assert available_cpus(root) == cpus
    assert worker_count(root) == workers


def test_backend_cpu_utilization_is_relative_to_the_quota(tmp_path: Path) -> None:
    root = tree(tmp_path, {"proc/self/cgroup": "0::/\n",
                           "sys/fs/cgroup/cpu.max": "50000 100000"})
    meter = LoadMeter(Counters(), workers=1, cgroup_root=root)
    assert meter._cores == min(0.5, CORES)
