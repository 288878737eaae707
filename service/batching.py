"""Batching across requests: a bounded queue, a dispatcher thread that gathers batches from it, and
one worker thread per inference session of a model that runs them.

`Batcher.infer` is the server's implementation of the pipeline's `infer` seam (`model.pipeline`).
While a session is free, the dispatcher takes what is queued at once and hands it to the free
session of lowest index: a lone request waits for nobody, and requests that queue while the
sessions are busy form the next batch with no added wait. It waits for more only while requests
are arriving faster than half a batch's inference time (`Arrivals`), and then about two of their
gaps at a time, never past `max_wait_ms` after its first request arrived. A batch holds at most
`max_batch_size` utterances (or chunks of long ones). What was gathered runs as the core plans
batches (`model.windows.plan_batches`): in groups of similar length, so padding costs little, and
each run holding at most `max_batch_samples` samples, padding included: inference memory grows
with the samples of a run (a 40 s window takes ~0.3 GB), so that bound is what bounds the
server's peak (per session). The event loop never blocks on inference, and a full queue is
refused at once (the caller answers 503) instead of growing memory.

A model may also have a wide session (`wide`: one with every core's thread). A batch that is all
the work there is — every session idle, nothing else queued — runs on it, and the other sessions
wait with it (they share its cores): one client gets every core, while many get a session each.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.onnx import OnnxRecognizer
from model.windows import plan_batches


class QueueFull(Exception):
    """The inference queue holds as many requests as it may."""


@dataclass
class Inference:
    logits: np.ndarray  # (frames, vocab)
    queue_ms: float
    inference_ms: float
    batch_size: int


@dataclass
class _Item:
    samples: np.ndarray
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float


class Arrivals:
    """When requests reached the queue lately, to tell whether more are on their way.

    A client that sends one request after another is never "arriving" in this sense: its next
    request comes only after its last was answered, a whole inference apart, so waiting for
    company would only add to its latency."""

    def __init__(self, keep: int = 4):
        self._times: deque[float] = deque(maxlen=keep + 1)  # perf_counter seconds of the latest arrivals
        self._lock = threading.Lock()  # recorded on the event loop's thread, read by the dispatcher

    def record(self, now: float) -> None:
        with self._lock:
            self._times.append(now)

    def gap(self, now: float) -> float | None:
        """Mean seconds between the latest arrivals while they keep coming; None when fewer than
        two arrived, or none came for twice that gap (they have stopped)."""
        with self._lock:
            times = list(self._times)
        if len(times) < 2:
            return None
        gap = (times[-1] - times[0]) / (len(times) - 1)
        return gap if now - times[-1] <= 2 * gap else None


class Batcher:
    """One model's queue and the threads that run it: a dispatcher that gathers batches, and one
    worker per engine (ONNX Runtime session) that runs the batches handed to it, so every session
    works while there is work."""

    def __init__(
        self,
        engines: OnnxRecognizer | Sequence[OnnxRecognizer],
        max_batch_size: int,
        max_wait_ms: float,
        capacity: int,
        on_batch=None,
        name: str = "model",
        max_batch_samples: int | None = None,
        wide: OnnxRecognizer | None = None,
    ):
        self.engines = list(engines) if isinstance(engines, Sequence) else [engines]
        self.wide = wide  # runs a batch that is all the work there is; session index len(engines)
        self.max_batch_size = max_batch_size
        self.max_batch_samples = max_batch_samples  # None: no bound; a longer utterance runs alone
        self.max_wait = max_wait_ms / 1000
        self.capacity = capacity
        self.on_batch = on_batch  # called with (batch size, inference seconds, session index) after each batch
        self._runners = self.engines + ([wide] if wide is not None else [])
        self.batches = [0] * len(self._runners)  # batches each session ran, the wide one last (each writes its own)
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._arrivals = Arrivals()
        # Seconds a batch takes, smoothed; until one ran, max_wait (gather within the bound).
        self._inference_seconds: float | None = None
        self.requests = 0  # admitted and not finished; only the event loop's thread changes it
        # One dispatcher gathers batches while a session is free and hands each to the free session
        # of lowest index: a lone request always runs on session 0, whose weights are warm in the
        # caches (alternating sessions made one client's requests ~1.5x slower).
        self._idle = [True] * len(self.engines)
        self._free = threading.Condition()
        self._inboxes: list[queue.SimpleQueue[list[_Item] | None]] = [queue.SimpleQueue() for _ in self._runners]
        self._threads = [threading.Thread(target=self._dispatch, name=f"batching-{name}", daemon=True)] + [
            threading.Thread(target=self._work, args=(index,), name=f"inference-{name}-{index}", daemon=True)
            for index in range(len(self._runners))
        ]

    @property
    def depth(self) -> int:
        """Utterances (or chunks) waiting for a session."""
        return self._queue.qsize()

    @property
    def sessions(self) -> int:
        return len(self.engines)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Finish what is queued, then stop the dispatcher and every session's worker."""
        if self._threads[0].ident is None:  # never started
            return
        self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=30)

    async def infer(self, utterances: list[np.ndarray]) -> list[Inference]:
        """Logits for each utterance (or chunk), batched with whatever else is waiting.

        Admission counts requests, not chunks, so an hour of audio is as welcome as a second. A
        long request's chunks enter the queue a batch per session at a time, so it keeps every
        session busy, and requests that arrive after it wait for one of its batches, not for all.
        """
        if self.requests >= self.capacity:
            raise QueueFull(f"the inference queue is full ({self.capacity} requests)")
        self.requests += 1
        try:
            groups = [
                utterances[first : first + self.max_batch_size]
                for first in range(0, len(utterances), self.max_batch_size)
            ]
            results: list[Inference] = []
            for wave in range(0, len(groups), self.sessions):
                for answered in await asyncio.gather(
                    *(self._infer_now(group) for group in groups[wave : wave + self.sessions])
                ):
                    results += answered
            return results
        finally:
            self.requests -= 1

    async def _infer_now(self, utterances: list[np.ndarray]) -> list[Inference]:
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        items = [_Item(samples, loop.create_future(), loop, now) for samples in utterances]
        self._arrivals.record(now)
        for item in items:
            self._queue.put(item)
        return list(await asyncio.gather(*(item.future for item in items)))

    def _next_batch(self) -> list[_Item] | None:
        """The next batch (None: stop): the first request to come, with what queued meanwhile, and
        more only while requests are arriving (`_worth_waiting`)."""
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = first.enqueued + self.max_wait
        while len(batch) < self.max_batch_size:
            try:
                item = self._queue.get_nowait()  # queued while the sessions were busy: no wait
            except queue.Empty:
                wait = self._worth_waiting(deadline)
                if wait <= 0:
                    break
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    break
            if item is None:  # stop after this batch
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _worth_waiting(self, deadline: float) -> float:
        """Seconds to wait for one more request: none unless requests are arriving faster than
        half a batch's inference time (one more then shares a run instead of waiting for the
        next); then twice their gap (at least half a millisecond), never past `deadline`."""
        now = time.perf_counter()
        gap = self._arrivals.gap(now)
        inference = self._inference_seconds if self._inference_seconds is not None else self.max_wait
        if gap is None or gap >= inference / 2:
            return 0.0
        return min(deadline - now, max(2 * gap, 0.0005))

    def _dispatch(self) -> None:
        while self._dispatch_next():
            pass
        for inbox in self._inboxes:
            inbox.put(None)

    def _dispatch_next(self) -> bool:
        """Once a session is free, gather the next batch and hand it to the free session of lowest
        index (False: stop). While every session is busy requests queue, to form the next batch."""
        with self._free:
            self._free.wait_for(lambda: any(self._idle))
        batch = self._next_batch()
        if batch is None:
            return False
        with self._free:  # only the dispatcher makes a session busy: one is still free
            if self.wide is not None and all(self._idle) and self._queue.empty():
                session = len(self.engines)  # all the work there is: every core runs it
                self._idle = [False] * len(self.engines)
            else:
                session = self._idle.index(True)
                self._idle[session] = False
        self._inboxes[session].put(batch)
        return True

    def _work(self, session: int) -> None:
        while self._run_next(session):
            with self._free:
                if session == len(self.engines):  # the wide session: the cores it held are free again
                    self._idle = [True] * len(self.engines)
                else:
                    self._idle[session] = True
                self._free.notify()

    def _run_next(self, session: int) -> bool:
        """Run the next batch handed to session `session` (False: stop). Its locals go when it
        returns: the thread holds no request's audio (a window is a view of the whole recording)
        while it waits for the next."""
        batch = self._inboxes[session].get()
        if batch is None:
            return False
        batch = [item for item in batch if not item.future.cancelled()]
        for run in plan_batches([len(item.samples) for item in batch], self.max_batch_size, self.max_batch_samples):
            self._run([batch[index] for index in run], session)
        return True

    def _run(self, batch: list[_Item], session: int) -> None:
        started = time.perf_counter()
        try:
            logits = self._runners[session].logits([item.samples for item in batch])
        except Exception as error:  # a failed batch fails its requests, never the worker
            for item in batch:
                item.loop.call_soon_threadsafe(_settle, item.future, None, error)
            return
        finished = time.perf_counter()
        seconds = finished - started
        previous = self._inference_seconds  # the workers' updates may interleave: an estimate either way
        self._inference_seconds = seconds if previous is None else 0.8 * previous + 0.2 * seconds
        self.batches[session] += 1
        if self.on_batch:
            self.on_batch(len(batch), seconds, session)
        for item, rows in zip(batch, logits):
            result = Inference(rows, (started - item.enqueued) * 1000, seconds * 1000, len(batch))
            item.loop.call_soon_threadsafe(_settle, item.future, result, None)


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():  # the request was cancelled (client gone) while its batch ran
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
