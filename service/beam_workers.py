"""Beam search for the server, in worker processes: the core's decode entry point
(`model.pipeline.Decoders`), with the language model loaded once in each worker. `BeamSearch.decode`
is the server's implementation of the pipeline's `decode` seam for beam search.

Beam search runs in `decode_workers` processes, one search at a time each, behind a bounded
queue. A search waits at most `decode_timeout_seconds` for a worker and runs at most as long:
a worker still searching then is killed and restarted, as is one that dies (killed, out of
memory); a search whose worker died is sent once more to its replacement, one that outlives its
deadline fails.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import wait

import numpy as np

from model.decoding import Decoded, DecoderStartError, SearchUnavailable
from model.options import DecodeOptions
from model.pipeline import Decoders

log = logging.getLogger("service")

WORKER_START_SECONDS = 600  # loading a large ARPA file can take minutes
RESTART_BACKOFF_SECONDS = (1, 2, 5, 10, 30)  # between failed restarts of a worker


class DecoderUnavailable(Exception):
    """A beam search could not be done now: queue full, no worker free in time, or worker died. Retry."""


class _WorkerDied(Exception):
    """The worker process stopped while it held a search."""


class SearchTooLong(Exception):
    """A beam search ran past its deadline: the same search would again."""


def _worker_main(connection, decoders: Decoders) -> None:
    """A worker process: build the beam search once, then answer one search per message until None."""
    # The parent decides when workers stop: a Ctrl-C or a SIGTERM sent to the whole process group
    # must not kill the searches that a graceful shutdown is still waiting for.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        decoders.beam_search()
    except DecoderStartError as error:
        connection.send(("error", str(error)))
        return
    connection.send(("ready", os.getpid()))
    while True:
        try:
            job = connection.recv()
        except EOFError:  # the server is gone
            return
        if job is None:
            return
        logits, options = job
        try:
            connection.send(("ok", decoders.decode(logits, options)))
        except SearchUnavailable as error:  # the request's fault (flashlight asked where it cannot run)
            connection.send(("refused", str(error)))
        except Exception as error:
            connection.send(("error", f"{type(error).__name__}: {error}"))


class DecodeWorker:
    """One beam-search process. Its methods block: call them from threads, not the event loop."""

    def __init__(self, decoders: Decoders, on_restart=None):
        self._args = (decoders,)  # what each (re)started process builds its beam search from
        self._context = multiprocessing.get_context("spawn")  # the server's threads must not be forked
        self.on_restart = on_restart  # called after each restart of a dead worker
        self.lock = threading.Lock()  # one search, start or stop at a time
        self.process = None
        self.connection = None
        self.ready = False  # the decoder is built: set by start

    @property
    def alive(self) -> bool:
        """The process runs and has built its decoder: not while it starts or restarts."""
        return self.ready and self.process is not None and self.process.is_alive()

    def start(self) -> None:
        """Start the process and wait until its decoder is built; DecoderStartError says why not."""
        self.ready = False
        parent, child = self._context.Pipe()
        self.process = self._context.Process(
            target=_worker_main, args=(child, *self._args), daemon=True, name="beam-search"
        )
        self.process.start()
        child.close()
        self.connection = parent
        try:
            if not wait([parent, self.process.sentinel], WORKER_START_SECONDS) or not parent.poll():
                raise EOFError
            kind, value = parent.recv()
        except (EOFError, OSError):
            self.kill()
            raise DecoderStartError(f"the worker exited (code {self.process.exitcode}) while loading") from None
        if kind != "ready":
            self.process.join()
            raise DecoderStartError(value)
        self.ready = True

    def restart(self) -> None:
        """Replace a dead process (call with the lock held)."""
        log.warning("beam-search worker %s exited with code %s; restarting it", self.process.pid, self.process.exitcode)
        self.start()
        if self.on_restart:
            self.on_restart()

    def search(self, job: tuple, timeout: float) -> Decoded:
        """Run one search; SearchTooLong if it outlives `timeout` (its worker is then restarted). A
        worker that dies during the search (killed, out of memory) is restarted and the search sent
        once more within what is left of `timeout`; DecoderUnavailable if it dies again."""
        deadline = time.monotonic() + timeout
        with self.lock:
            try:
                return self._search_once(job, timeout, timeout)
            except _WorkerDied as died:  # the second try starts its replacement (`_search_once`)
                log.warning("%s; searching again on its replacement", died)
            try:
                return self._search_once(job, max(0.0, deadline - time.monotonic()), timeout)
            except _WorkerDied as died:
                raise DecoderUnavailable(f"{died} during this request, twice; it is being restarted") from None
            except SearchTooLong:  # the time left after the first worker died was too short: not the search's fault
                raise DecoderUnavailable(
                    "the beam-search worker stopped during this request and its replacement could not "
                    f"finish within the {timeout:g} s limit; it is being restarted"
                ) from None

    def _search_once(self, job: tuple, seconds: float, limit: float) -> Decoded:
        """One try of `search` (lock held) given `seconds` of the `limit`; _WorkerDied if the process
        stops before answering."""
        if not self.alive:  # died while idle: this search need not fail for it
            self._replace()
        try:
            self.connection.send(job)
        except OSError:  # died between that check and the send (a broken pipe): it never had this job
            self.process.join()
            self._replace()
            self.connection.send(job)
        if not wait([self.connection, self.process.sentinel], seconds):
            self.kill()
            raise SearchTooLong(
                f"beam search took longer than this server's limit of {limit:g} s, and "
                "would again; ask for decoder=greedy, a smaller beam_width, fewer hotwords, or "
                "send shorter audio"
            )
        try:
            kind, value = self.connection.recv()
        except (EOFError, OSError):
            self.process.join()
            raise _WorkerDied(f"the beam-search worker stopped (exit code {self.process.exitcode})") from None
        if kind == "refused":
            raise SearchUnavailable(value)
        if kind != "ok":
            raise RuntimeError(value)
        return value

    def _replace(self) -> None:
        """Restart a dead process (lock held), or DecoderUnavailable when it cannot start."""
        try:
            self.restart()
        except DecoderStartError as error:
            raise DecoderUnavailable(f"the beam-search worker could not restart: {error}") from None

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
        if self.process is not None:
            self.process.join()

    def stop(self) -> None:
        with self.lock:
            if self.alive:
                try:
                    self.connection.send(None)
                except OSError:
                    pass
                self.process.join(timeout=5)
            self.kill()


class BeamSearch:
    """Beam search in a pool of worker processes, each building `decoders`' beam search (and loading
    its language model) once."""

    def __init__(
        self, decoders: Decoders, workers: int, queue_capacity: int = 16, timeout: float = 30.0, on_restart=None
    ):
        self.workers = [DecodeWorker(decoders, on_restart) for _ in range(workers)]
        self.queue_capacity = queue_capacity
        self.timeout = timeout
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="beam-search")
        self._idle: asyncio.Queue[DecodeWorker] = asyncio.Queue()
        self._waiting = 0
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="beam-search-watch", daemon=True)

    @property
    def alive(self) -> int:
        """Workers running, with their decoder built."""
        return sum(worker.alive for worker in self.workers)

    def start(self) -> None:
        """Start every worker (and load the language model) now rather than on the first request."""
        for worker in self.workers:
            worker.start()
            self._idle.put_nowait(worker)  # before the server takes requests: no loop is waiting yet
        self._watcher.start()

    async def decode(self, logits: np.ndarray, options: DecodeOptions) -> Decoded:
        """One utterance's (frames, vocab) logits, beam-searched in a worker with `options` (decoder
        "beam"). DecoderUnavailable or SearchTooLong if it cannot be done now, SearchUnavailable if
        the search asked for cannot run with this model."""
        worker = await self._acquire()
        search = asyncio.get_running_loop().run_in_executor(
            self._threads, worker.search, (logits, options), self.timeout
        )
        # The worker goes back to the idle queue when its search ends, even if this request was
        # cancelled meanwhile (client gone): the shield keeps that cancellation off the search.
        search.add_done_callback(lambda _: self._idle.put_nowait(worker))
        return await asyncio.shield(search)

    async def _acquire(self) -> DecodeWorker:
        if self._idle.empty() and self._waiting >= self.queue_capacity:
            raise DecoderUnavailable(f"the beam-search queue is full ({self.queue_capacity} requests waiting)")
        self._waiting += 1
        try:
            # Not wait_for: on Python 3.11 a request cancelled (client gone) just as a worker is
            # handed to it loses that worker for good; a cancelled Queue.get leaves it queued.
            async with asyncio.timeout(self.timeout):
                return await self._idle.get()
        except TimeoutError:
            raise DecoderUnavailable(f"no beam-search worker was free within {self.timeout:g} s") from None
        finally:
            self._waiting -= 1

    def _watch(self) -> None:
        """Restart a dead worker soon after it dies, not when the next search finds it dead, so that
        /ready sees it come back and the restart happens while nobody waits."""
        failures = 0
        while not self._stopping.wait(0.5):
            for worker in self.workers:
                if worker.alive or not worker.lock.acquire(blocking=False):  # a search holds it: it restarts it
                    continue
                try:
                    if not worker.alive and not self._stopping.is_set():
                        worker.restart()
                        failures = 0
                except DecoderStartError as error:
                    log.error("beam-search worker could not restart: %s", error)
                    self._stopping.wait(RESTART_BACKOFF_SECONDS[min(failures, len(RESTART_BACKOFF_SECONDS) - 1)])
                    failures += 1
                finally:
                    worker.lock.release()

    def close(self) -> None:
        self._stopping.set()
        for worker in self.workers:
            worker.stop()
        self._threads.shutdown(wait=False, cancel_futures=True)


def check_decoder(decoders: Decoders) -> None:
    """Build the beam search once in a worker, as serving will; DecoderStartError says why not."""
    worker = DecodeWorker(decoders)
    try:
        worker.start()
    finally:
        worker.stop()
