"""Who does the work: this process (`InProcess`), or a pool of worker processes on this machine
(`LocalPool`). The Ray backend in the `cluster` package offers the same `results` on a cluster.

A backend yields each item with its output fields, in any order, at least once: a worker that dies
is replaced and its inputs sent again, so an input may come back twice, and the driver keeps the
first. Each worker loads the model once and runs `threads` inference threads, chosen so that all
workers together use the cores once (`threads_per_worker`).
"""

from __future__ import annotations

import multiprocessing
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..cpu import usable_cores
from .inputs import Item
from .task import Task, work

MAX_ATTEMPTS = 3  # an input whose worker died this many times is reported as an error, not retried again
IN_FLIGHT_PER_WORKER = 2  # inputs queued per worker: enough to keep it busy, few to resend if it dies


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Inference threads for each of `workers` processes sharing `cores`: never more threads than cores."""
    return max(1, (cores or usable_cores()) // max(1, workers))


class Backend(ABC):
    """Runs a task over items on some workers."""

    workers: int = 1
    threads: int = 0
    lost: int = 0  # workers that died during the run and were replaced
    by_worker: dict[str, int]  # inputs done per worker (or per node), for the summary

    @abstractmethod
    def results(self, task: Task, items: Iterable[Item]) -> Iterator[tuple[Item, dict]]:
        """Each item with its output fields (or `error`), in any order; an item may come twice."""

    def describe(self) -> str:
        return f"{self.workers} worker(s) x {self.threads or 'all'} thread(s)"

    def close(self) -> None:  # noqa: B027 - a backend with nothing to stop need not say so
        """Stop the workers (after the last result, or on interruption)."""


class InProcess(Backend):
    """The driver's own process: one model, all cores (threads 0) unless told; `state` reuses a model
    the caller already loaded."""

    def __init__(self, threads: int = 0, state: Any = None):
        self.threads, self.state, self.by_worker = threads, state, {}

    def results(self, task: Task, items: Iterable[Item]) -> Iterator[tuple[Item, dict]]:
        state = self.state if self.state is not None else task.load(self.threads)
        for item in items:
            yield item, work(task, state, item.source)
            self.by_worker["this process"] = self.by_worker.get("this process", 0) + 1


# The worker process's state: its task and model, loaded once by `_start_worker`.
_worker: tuple[Task, Any] | None = None


def _start_worker(task: Task, threads: int) -> None:
    global _worker
    _worker = (task, task.load(threads))


def _work(source: str) -> tuple[int, dict]:
    task, state = _worker
    return os.getpid(), work(task, state, source)


class LocalPool(Backend):
    """`workers` processes on this machine, each with its own model and `threads` threads (default:
    the usable cores shared out). A worker that dies (killed, out of memory) takes the inputs queued
    on the pool with it: the pool is rebuilt and they are sent again, up to MAX_ATTEMPTS times each."""

    def __init__(self, workers: int, threads: int | None = None):
        if workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.threads = threads or threads_per_worker(workers)
        self.by_worker = {}
        self._pool: ProcessPoolExecutor | None = None

    def _start(self, task: Task) -> ProcessPoolExecutor:
        # spawn, not fork: the driver may hold inference threads, which a forked child would inherit broken.
        return ProcessPoolExecutor(
            self.workers, multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(task, self.threads)
        )

    def results(self, task: Task, items: Iterable[Item]) -> Iterator[tuple[Item, dict]]:
        pending = iter(items)
        retry: list[Item] = []  # inputs whose worker died, to send again first
        attempts: dict[str, int] = {}
        running: dict[Future, Item] = {}
        self._pool = self._start(task)
        broken_without_result = 0
        while True:
            while len(running) < self.workers * IN_FLIGHT_PER_WORKER:
                item = retry.pop() if retry else next(pending, None)
                if item is None:
                    break
                attempts[item.key] = attempts.get(item.key, 0) + 1
                running[self._pool.submit(_work, item.source)] = item
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = False
            for future in done:
                item = running.pop(future)
                try:
                    pid, fields = future.result()
                except BrokenProcessPool:
                    broken = True
                    if attempts[item.key] >= MAX_ATTEMPTS:
                        yield (
                            item,
                            {"error": f"the worker process died while transcribing this input, {MAX_ATTEMPTS} times"},
                        )
                    else:
                        retry.append(item)
                    continue
                broken_without_result = 0
                attempts.pop(item.key, None)
                self.by_worker[f"pid {pid}"] = self.by_worker.get(f"pid {pid}", 0) + 1
                yield item, fields
            if broken:
                # Every queued input of a broken pool fails with it (which one killed it, if any did, is
                # unknown): send them all again on a new pool, each attempt counted.
                retry.extend(running.values())
                running.clear()
                broken_without_result += 1
                if broken_without_result >= MAX_ATTEMPTS:
                    raise RuntimeError(
                        f"the worker processes died {MAX_ATTEMPTS} times in a row without a result "
                        "(out of memory? the model failing to load?)"
                    )
                self.lost += 1
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._start(task)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
