"""The CPUs this process may use: its affinity (taskset, a scheduler's cpuset), bounded by a
container's CPU quota (cgroup v2 `cpu.max`, or v1's `cpu.cfs_quota_us`), which a Kubernetes limit
sets without changing the affinity.

ONNX Runtime's own default (intra-op threads 0) counts the machine's cores and pins one thread to
each, outside the process's affinity: under `taskset -c 0` it still ran on two cores here, and in a
container limited to 2 CPUs on a large host it starts a thread for each of the host's cores. Every
session here is given a count from `usable_cores()` instead.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def usable_cores() -> int:
    """The CPUs this process may keep busy: its affinity, bounded by a container's CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else max(1, cores)


def _cpu_quota() -> float | None:
    """The container's CPU limit in cores, or None when it has none (or /sys cannot say)."""
    try:
        quota, period = (CGROUP / "cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000" or "200000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((CGROUP / "cpu" / "cpu.cfs_quota_us").read_text())  # cgroup v1: -1 when unlimited
        period = int((CGROUP / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None
