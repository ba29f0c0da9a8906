"""The CPUs a container may use: its cgroup's CPU quota, not the host's core count.

Reads files only, under a `root` (`/` in production, a fake tree in tests): the process's
cgroup from `proc/self/cgroup`, then cgroup v2 `cpu.max` ("max 100000" or "150000 100000")
or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1: none) in that cgroup and its ancestors
(a limit anywhere above applies too). The smallest quota wins; none found means no limit.
Used by `--workers auto` and by the backends' `cpu_utilization` (relative to the quota).
"""

import math
import os
from pathlib import Path

CGROUP_ROOT = "sys/fs/cgroup"


def cpu_quota(root: str = "/") -> float | None:
    """CPUs the cgroup allows (1.5 for "150000 100000"); None when there is no quota."""
    base = Path(root) / CGROUP_ROOT
    limits: list[float] = []
    for hierarchy, controllers, path in _memberships(Path(root)):
        if hierarchy == "0" and not controllers:  # v2: one unified hierarchy
            limits += [q for d in _ancestors(base, path) if (q := _v2(d)) is not None]
        elif "cpu" in controllers.split(","):
            for mount in dict.fromkeys((base / controllers, base / "cpu,cpuacct", base / "cpu")):
                limits += [q for d in _ancestors(mount, path) if (q := _v1(d)) is not None]
    return min(limits, default=None)


def available_cpus(root: str = "/") -> float:
    """The CPUs this process may use: its affinity mask, capped by the cgroup quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    quota = cpu_quota(root)
    return float(cores) if quota is None else min(float(cores), quota)


def worker_count(root: str = "/") -> int:
    """`--workers auto`: one per whole CPU allowed (1.5 CPUs: 1 worker), at least one."""
    return max(1, math.floor(available_cpus(root)))


def _memberships(root: Path) -> list[tuple[str, str, str]]:
    """(hierarchy id, controllers, path) per line of proc/self/cgroup; a cgroup v2 root when
    the file is missing (the process sees only its own cgroup)."""
    try:
        text = (root / "proc/self/cgroup").read_text()
    except OSError:
        return [("0", "", "/")]
    found = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            found.append((parts[0], parts[1], parts[2]))
    return found


def _ancestors(mount: Path, path: str) -> list[Path]:
    """The cgroup's directory and every ancestor up to the mount, those that exist. In a
    cgroup namespace (a container) the path is `/` and the mount is the cgroup itself."""
    parts = [p for p in path.split("/") if p and p != ".."]
    dirs = [mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    return [d for d in dirs if d.is_dir()]


def _v2(directory: Path) -> float | None:
    try:
        quota, _, period = (directory / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or "100000")
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None
