"""How a model's inference is laid out on the CPU: how many ONNX Runtime sessions, each with how
many threads.

One session keeps about one core busy on the short inputs a server sees (a second of speech is a
few milliseconds of work in many small parallel sections), while independent single-thread
sessions scale with the cores: so by default a model gets one single-thread session per core,
each running batches from the model's one queue (`service.batching`). The cores counted are the
ones this process may use (`model.cpu.usable_cores`: its CPU affinity, and a container's CPU quota).
"""

from __future__ import annotations

from dataclasses import dataclass

from model.cpu import usable_cores


@dataclass(frozen=True)
class SessionLayout:
    """A model's ONNX Runtime sessions: `threads[i]` intra-op threads for session i, and `wide` threads
    for one more session that runs a batch when it is the only work (0: none; `service.batching`)."""

    threads: tuple[int, ...]
    wide: int = 0

    @property
    def sessions(self) -> int:
        return len(self.threads)

    def __str__(self) -> str:
        """E.g. "2 sessions x 1 thread", "3 sessions x 2/1/1 threads" when they differ, and
        "+ 1 x 2 threads for lone requests" with a wide session."""
        threads = self.threads
        each = str(threads[0]) if len(set(threads)) == 1 else "/".join(map(str, threads))
        text = f"{len(threads)} session{'s' * (len(threads) > 1)} x {each} thread{'s' * (max(threads) > 1)}"
        return text + (f" + 1 x {self.wide} threads for lone requests" if self.wide else "")


def session_layout(
    provider: str, sessions: int, threads: int, cores: int | None = None, wide: bool = True
) -> SessionLayout:
    """The sessions for the `--sessions`, `--threads` and `--wide-session` settings (0: chosen).

    `threads` is what a model's inference may use in all (0: the usable cores); it is shared out
    among the sessions, each getting at least one. On the CPU, `sessions` 0 means one single-thread
    session per thread; on a GPU (cuda, tensorrt) one session, whose threads only feed the device.
    `wide`: on the CPU with several sessions, one more with all the threads, for a request that
    comes alone (it would otherwise get one session's share of the cores).
    """
    total = threads or (cores if cores is not None else usable_cores())
    if sessions == 0:
        sessions = total if provider == "cpu" else 1
    share, extra = divmod(total, sessions)
    each = tuple(max(1, share + (index < extra)) for index in range(sessions))
    return SessionLayout(each, total if wide and provider == "cpu" and total > max(each) else 0)
