"""`RayPool`: a `model.bulk` backend whose workers are Ray actors spread over a cluster.

Ray Core actors, not Ray Data: each actor loads the model once and then takes input after input,
so the model never reloads per file; the driver keeps two calls queued on each actor (short
files batched into a call, so the per-call overhead is shared), writes
every result itself (so the output stays exactly-once and resumable: see model.bulk.journal), and
needs nothing beyond `ray` itself. A killed actor is restarted by Ray (`max_restarts`), and the
inputs it held are sent again, to whichever actor is free, up to MAX_ATTEMPTS times. With no
`workers` given there is one actor per cluster CPU, and actors are added as nodes join.

Actors read the audio where they run: paths must be visible on every node (a shared or identical
file system), or be http(s) URLs; the model likewise (a path every node sees, or a Hub id).
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from model.bulk.inputs import Item
from model.bulk.pool import MAX_ATTEMPTS, Backend
from model.bulk.task import Task, work

try:
    import ray
    from ray.exceptions import RayActorError, RayError
except ImportError:  # pragma: no cover - exercised where Ray is not installed
    raise ImportError("--ray needs Ray: pip install 'w2v-asr[ray]' (the same Ray and Python on every node)") from None

IN_FLIGHT_PER_WORKER = 2  # calls queued per actor: one running, one waiting, so it never idles on the driver
# Inputs per call: as many as take about CALL_SECONDS (short files share a call's overhead, long ones go
# alone, so a dead worker's retry stays small), at most MAX_CHUNK.
CALL_SECONDS = 0.5
MAX_CHUNK = 16
GROW_SECONDS = 10.0  # how often the driver looks for new nodes' CPUs (when `workers` was not given)
WAIT_SECONDS = 1.0  # the longest the driver sleeps waiting for results
CONNECT_SECONDS = 10.0  # how long the head's port may take to answer
PROBE_SECONDS = 0.5  # how often a dead worker is asked whether Ray has restarted it


def check_reachable(address: str) -> None:
    """ConnectionError, at once, if nothing listens at HOST:PORT (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray takes 'auto' or HOST:PORT of the cluster's head, not {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as error:
        raise ConnectionError(
            f"no Ray cluster answers at {address} ({error}); start one with `ray start --head` "
            "or give the head's address"
        ) from None


class BulkWorker:
    """One Ray actor: a task's model, loaded once, transcribing the inputs it is sent."""

    def __init__(self, task: Task, threads: int):
        self.task, self.state = task, task.load(threads)
        context = ray.get_runtime_context()
        self.name = f"node {context.get_node_id()[:8]}"

    def ready(self) -> str:
        """Answers once the actor is up (again): the driver's probe of a restarted worker."""
        return self.name

    def run(self, sources: list[str]) -> tuple[str, list[dict], float]:
        """Each source's output fields, the node that did them, and the seconds they took."""
        started = time.perf_counter()
        results = [work(self.task, self.state, source) for source in sources]
        return self.name, results, time.perf_counter() - started


class RayPool(Backend):
    """Connects to the cluster at `address` ('auto', or HOST:PORT of the head) on creation, so a wrong
    address fails before any work. `workers`: actors to start (default: one per `threads` cluster CPUs,
    growing as nodes join); each runs `threads` inference threads and reserves as many CPUs."""

    def __init__(self, address: str, workers: int | None = None, threads: int = 1):
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.requested, self.threads, self.by_worker = workers, threads, {}
        if address != "auto":
            check_reachable(address)
        ray.init(address=address, logging_level=logging.WARNING)
        self.workers = self._target()
        self._actors: list[Any] = []

    def describe(self) -> str:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        return (
            f"{self.workers} Ray worker(s) x {self.threads} thread(s) on a cluster of {nodes} node(s), {cpus} CPU(s)"
            + ("" if self.requested else ", more as nodes join")
        )

    def _target(self) -> int:
        return self.requested or max(1, int(ray.cluster_resources().get("CPU", 0) // self.threads))

    def results(self, task: Task, items: Iterable[Item]) -> Iterator[tuple[Item, dict]]:
        pending = iter(items)
        remote = ray.remote(num_cpus=self.threads, max_restarts=-1, max_task_retries=0)(BulkWorker)
        retry: list[Item] = []
        attempts: dict[str, int] = {}
        running: dict[Any, tuple[int, list[Item]]] = {}  # call -> (actor, its inputs)
        load: list[int] = []  # calls queued per actor
        down: dict[int, Any] = {}  # actors that died -> the probe that says they are back (Ray restarts them)
        probed: dict[int, float] = {}  # when each down actor was last probed
        grown = 0.0
        per_input = CALL_SECONDS  # seconds an input takes a worker (a running mean); one input per call at first
        while True:
            if time.monotonic() - grown > GROW_SECONDS:
                grown = time.monotonic()
                self.workers = self._target() if self.requested is None else self.requested
                while len(self._actors) < self.workers:
                    self._actors.append(remote.options(scheduling_strategy="SPREAD").remote(task, self.threads))
                    load.append(0)
            for actor, handle in enumerate(self._actors):
                while actor not in down and load[actor] < IN_FLIGHT_PER_WORKER:
                    chunk = self._take(retry, pending, max(1, min(MAX_CHUNK, int(CALL_SECONDS / per_input))))
                    if not chunk:
                        break
                    for item in chunk:
                        attempts[item.key] = attempts.get(item.key, 0) + 1
                    running[handle.run.remote([item.source for item in chunk])] = (actor, chunk)
                    load[actor] += 1
            if not running and not retry:
                return
            for actor in down:
                if down[actor] is None and time.monotonic() - probed[actor] > PROBE_SECONDS:
                    down[actor], probed[actor] = self._actors[actor].ready.remote(), time.monotonic()
            probes = {probe: actor for actor, probe in down.items() if probe is not None}
            if not running and not probes:  # every worker down, none due for a probe yet
                time.sleep(PROBE_SECONDS / 5)
                continue
            ready, _ = ray.wait([*running, *probes], num_returns=1, timeout=WAIT_SECONDS)
            for call in ready:
                if call in probes:
                    self._probed(probes[call], call, down, probed)
                    continue
                actor, chunk = running.pop(call)
                load[actor] -= 1
                try:
                    name, results, seconds = ray.get(call)
                except RayActorError as error:
                    if error.actor_init_failed:
                        raise RuntimeError(f"a Ray worker could not load the model: {error}") from None
                    if actor not in down:  # counted once per death, however many calls it took with it
                        down[actor], probed[actor] = None, 0.0
                        self.lost += 1
                        print(
                            f"a Ray worker died; Ray restarts it and its inputs are sent again "
                            f"({' '.join(str(error).split())[:200]})",
                            file=sys.stderr,
                        )
                    for item in chunk:
                        if attempts[item.key] >= MAX_ATTEMPTS:
                            yield (
                                item,
                                {"error": f"the worker died while transcribing this input, {MAX_ATTEMPTS} times"},
                            )
                        else:
                            retry.append(item)
                    continue
                except RayError as error:  # the call itself failed (not the input: `work` catches those)
                    for item in chunk:
                        yield item, {"error": f"the cluster failed this input: {' '.join(str(error).split())[:300]}"}
                    continue
                per_input = 0.8 * per_input + 0.2 * seconds / len(results)
                self.by_worker[name] = self.by_worker.get(name, 0) + len(results)
                for item, fields in zip(chunk, results):
                    attempts.pop(item.key, None)
                    yield item, fields

    @staticmethod
    def _take(retry: list[Item], pending: Iterator[Item], count: int) -> list[Item]:
        """Up to `count` inputs: those to send again first, then new ones."""
        chunk = []
        while len(chunk) < count:
            item = retry.pop() if retry else next(pending, None)
            if item is None:
                break
            chunk.append(item)
        return chunk

    def _probed(self, actor: int, probe: Any, down: dict[int, Any], probed: dict[int, float]) -> None:
        """A restarted worker answered (it takes work again), or is not back yet (asked again later)."""
        try:
            ray.get(probe)
        except RayActorError as error:
            if error.actor_init_failed:
                raise RuntimeError(f"a Ray worker could not load the model: {error}") from None
            down[actor] = None  # still restarting
            return
        del down[actor]

    def close(self) -> None:
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if ray.is_initialized():
            ray.shutdown()
