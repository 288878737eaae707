"""Batching across requests: a bounded queue, and one worker thread per model that runs batches.

`Batcher.infer` is the server's implementation of the pipeline's `infer` seam (`model.pipeline`).
Requests wait at most `max_wait_ms` for company; a batch holds at most `max_batch_size`
utterances (or chunks of long ones). What was gathered runs as the core plans batches
(`model.windows.plan_batches`): in groups of similar length, so padding costs little, and each
run holding at most `max_batch_samples` samples, padding included: inference memory grows with
the samples of a run (a 40 s window takes ~0.3 GB), so that bound is what bounds the server's peak. The event
loop never blocks on inference, and a full queue is refused at once (the caller answers 503)
instead of growing memory.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
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


class Batcher:
    def __init__(
        self,
        engine: OnnxRecognizer,
        max_batch_size: int,
        max_wait_ms: float,
        capacity: int,
        on_batch=None,
        name: str = "model",
        max_batch_samples: int | None = None,
    ):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_batch_samples = max_batch_samples  # None: no bound; a longer utterance runs alone
        self.max_wait = max_wait_ms / 1000
        self.capacity = capacity
        self.on_batch = on_batch  # called with (batch size, inference seconds) after each batch
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self.requests = 0  # admitted and not finished; only the event loop's thread changes it
        self._thread = threading.Thread(target=self._work, name=f"inference-{name}", daemon=True)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.ident is None:  # never started
            return
        self._queue.put(None)
        self._thread.join(timeout=30)

    async def infer(self, utterances: list[np.ndarray]) -> list[Inference]:
        """Logits for each utterance (or chunk), batched with whatever else is waiting.

        Admission counts requests, not chunks, so an hour of audio is as welcome as a second. A
        long request's chunks enter the queue a batch at a time, so requests that arrive after
        it wait for one of its batches, not for all of them.
        """
        if self.requests >= self.capacity:
            raise QueueFull(f"the inference queue is full ({self.capacity} requests)")
        self.requests += 1
        try:
            results: list[Inference] = []
            for first in range(0, len(utterances), self.max_batch_size):
                results += await self._infer_now(utterances[first : first + self.max_batch_size])
            return results
        finally:
            self.requests -= 1

    async def _infer_now(self, utterances: list[np.ndarray]) -> list[Inference]:
        loop = asyncio.get_running_loop()
        items = [_Item(samples, loop.create_future(), loop, time.perf_counter()) for samples in utterances]
        for item in items:
            self._queue.put(item)
        return list(await asyncio.gather(*(item.future for item in items)))

    def _next_batch(self) -> list[_Item] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch_size:
            try:
                item = self._queue.get(timeout=max(deadline - time.perf_counter(), 0))
            except queue.Empty:
                break
            if item is None:  # stop after this batch
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _work(self) -> None:
        while self._run_next():
            pass

    def _run_next(self) -> bool:
        """Run what is waiting (False: stop). Its locals go when it returns: the thread holds no
        request's audio (a window is a view of the whole recording) while it waits for the next."""
        batch = self._next_batch()
        if batch is None:
            return False
        batch = [item for item in batch if not item.future.cancelled()]
        for run in plan_batches([len(item.samples) for item in batch], self.max_batch_size, self.max_batch_samples):
            self._run([batch[index] for index in run])
        return True

    def _run(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        try:
            logits = self.engine.logits([item.samples for item in batch])
        except Exception as error:  # a failed batch fails its requests, never the worker
            for item in batch:
                item.loop.call_soon_threadsafe(_settle, item.future, None, error)
            return
        finished = time.perf_counter()
        if self.on_batch:
            self.on_batch(len(batch), finished - started)
        for item, rows in zip(batch, logits):
            result = Inference(rows, (started - item.enqueued) * 1000, (finished - started) * 1000, len(batch))
            item.loop.call_soon_threadsafe(_settle, item.future, result, None)


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():  # the request was cancelled (client gone) while its batch ran
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
