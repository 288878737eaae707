"""How a model's inference is laid out on the CPU: how many ONNX Runtime sessions, each with how
many threads.

One session keeps about one core busy on the short inputs a server sees (a second of speech is a
few milliseconds of work in many small parallel sections), while independent single-thread
sessions scale with the cores: so by default a model gets one single-thread session per core,
each running batches from the model's one queue (`service.batching`). The cores counted are the
ones this process may use: its CPU affinity, and a container's CPU quota (cgroup v2 `cpu.max`,
or v1's `cpu.cfs_quota_us`), which a Kubernetes limit sets without changing the affinity.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SessionLayout:
    """A model's ONNX Runtime sessions: `threads[i]` intra-op threads for session i."""

    threads: tuple[int, ...]

    @property
    def sessions(self) -> int:
        return len(self.threads)

    def __str__(self) -> str:
        """E.g. "2 sessions x 1 thread", or "3 sessions x 2/1/1 threads" when they differ."""
        threads = self.threads
        each = str(threads[0]) if len(set(threads)) == 1 else "/".join(map(str, threads))
        return f"{len(threads)} session{'s' * (len(threads) > 1)} x {each} thread{'s' * (max(threads) > 1)}"


def session_layout(provider: str, sessions: int, threads: int, cores: int | None = None) -> SessionLayout:
    """The sessions for the `--sessions` and `--threads` settings (0: chosen).

    `threads` is what a model's inference may use in all (0: the usable cores); it is shared out
    among the sessions, each getting at least one. On the CPU, `sessions` 0 means one single-thread
    session per thread; on a GPU (cuda, tensorrt) one session, whose threads only feed the device.
    """
    total = threads or (cores if cores is not None else usable_cores())
    if sessions == 0:
        sessions = total if provider == "cpu" else 1
    share, extra = divmod(total, sessions)
    return SessionLayout(tuple(max(1, share + (index < extra)) for index in range(sessions)))
