"""CTC decoding for the server: greedy, or beam search with a KenLM model in worker processes.

Both return the same shape of result: the text and its words with start and end (seconds)
and a confidence (the mean probability of the best token over the word's frames).

Beam search runs in `decode_workers` processes, one search at a time each, behind a bounded
queue. A search waits at most `decode_timeout_seconds` for a worker and runs at most as long:
a worker still searching then is killed and restarted, as is one that dies (killed, out of
memory); either way only the search it held fails.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np

from model.ctc import CTCVocabulary

log = logging.getLogger("service")

WORKER_START_SECONDS = 600  # loading a large ARPA file can take minutes
RESTART_BACKOFF_SECONDS = (1, 2, 5, 10, 30)  # between failed restarts of a worker


@dataclass
class Word:
    word: str
    start: float
    end: float
    confidence: float


@dataclass
class Decoded:
    text: str
    words: list[Word]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _words(spans: list[tuple[str, int, int]], best_probability: np.ndarray, frame_seconds: float) -> list[Word]:
    return [Word(text, round(start * frame_seconds, 3), round(end * frame_seconds, 3),
                 round(float(best_probability[start:end].mean()), 4)) for text, start, end in spans if end > start]


def greedy_decode(vocab: CTCVocabulary, logits: np.ndarray, frame_seconds: float) -> Decoded:
    """Best path: the same text as `model.ctc`, plus words from the emitted tokens' frames."""
    best = logits.argmax(axis=-1)
    spans, current, start, end = [], "", 0, 0
    for span in vocab.token_spans(best):
        if span.token == vocab.word_delimiter_token:
            if current:
                spans.append((current, start, end))
            current = ""
            continue
        if not current:
            start = span.start_frame
        current += span.token.lower() if vocab.do_lower_case else span.token
        end = span.end_frame
    if current:
        spans.append((current, start, end))
    best_probability = np.exp(log_softmax(logits).max(axis=-1))
    return Decoded(vocab.decode_ids(best), _words(spans, best_probability, frame_seconds))


# -- beam search ------------------------------------------------------------------------------------

class DecoderUnavailable(Exception):
    """A beam search could not be done now: queue full, deadline passed or worker died. Retry."""


class DecoderStartError(Exception):
    """A worker could not build its decoder (e.g. a language model KenLM refuses)."""


def labels(vocab: CTCVocabulary) -> list[str]:
    """pyctcdecode's alphabet: the blank is "", the word delimiter a space."""
    alphabet = []
    for index in range(len(vocab)):
        token = vocab.tokens.get(index, vocab.unk_token)
        alphabet.append("" if token == vocab.pad_token else " " if token == vocab.word_delimiter_token else token)
    return alphabet


def _one_line(error: BaseException) -> str:
    """KenLM's errors hold a C++ signature and file offsets; keep what it says is wrong."""
    text = " ".join(str(error).split())
    reason = re.search(r"threw \w+(?: because `.*?'\.|\.)\s*(.+?)\)?$", text)
    return reason.group(1) if reason else text or type(error).__name__


def _worker_main(connection, alphabet: list[str], lm: str | None, alpha: float, beta: float) -> None:
    """A worker process: build the decoder once, then answer one search per message until None."""
    # The parent decides when workers stop: a Ctrl-C or a SIGTERM sent to the whole process group
    # must not kill the searches that a graceful shutdown is still waiting for.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        from pyctcdecode import build_ctcdecoder  # CTC beam search with KenLM scoring and hotwords

        decoder = build_ctcdecoder(alphabet, kenlm_model_path=lm, alpha=alpha, beta=beta)
    except Exception as error:
        connection.send(("error", _one_line(error)))
        return
    connection.send(("ready", os.getpid()))
    while True:
        try:
            job = connection.recv()
        except EOFError:  # the server is gone
            return
        if job is None:
            return
        log_probs, beam_width, hotwords, hotword_weight = job
        try:
            text, _, word_frames, _, _ = decoder.decode_beams(log_probs, beam_width=beam_width, hotwords=hotwords,
                                                              hotword_weight=hotword_weight)[0]
            connection.send(("ok", (text, [(word, start, end) for word, (start, end) in word_frames])))
        except Exception as error:
            connection.send(("error", f"{type(error).__name__}: {error}"))


class DecodeWorker:
    """One beam-search process. Its methods block: call them from threads, not the event loop."""

    def __init__(self, alphabet: list[str], lm: Path | None, alpha: float, beta: float, on_restart=None):
        self._args = (alphabet, str(lm) if lm else None, alpha, beta)
        self._context = multiprocessing.get_context("spawn")  # the server's threads must not be forked
        self.on_restart = on_restart  # called after each restart of a dead worker
        self.lock = threading.Lock()  # one search, start or stop at a time
        self.process = None
        self.connection = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def start(self) -> None:
        """Start the process and wait until its decoder is built; DecoderStartError says why not."""
        parent, child = self._context.Pipe()
        self.process = self._context.Process(target=_worker_main, args=(child, *self._args), daemon=True,
                                             name="beam-search")
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

    def restart(self) -> None:
        """Replace a dead process (call with the lock held)."""
        log.warning("beam-search worker %s exited with code %s; restarting it", self.process.pid,
                    self.process.exitcode)
        self.start()
        if self.on_restart:
            self.on_restart()

    def search(self, job: tuple, timeout: float) -> tuple[str, list]:
        """Run one search; DecoderUnavailable if the process dies or the search outlives `timeout`."""
        with self.lock:
            if not self.alive:  # died while idle: this search need not fail for it
                try:
                    self.restart()
                except DecoderStartError as error:
                    raise DecoderUnavailable(f"the beam-search worker could not restart: {error}") from None
            self.connection.send(job)
            if not wait([self.connection, self.process.sentinel], timeout):
                self.kill()
                raise DecoderUnavailable(f"beam search took longer than {timeout:g} s; the worker was stopped "
                                         "(ask for a smaller beam_width, fewer hotwords, or decoder=greedy)")
            try:
                kind, value = self.connection.recv()
            except (EOFError, OSError):
                self.process.join()
                raise DecoderUnavailable(f"the beam-search worker stopped (exit code {self.process.exitcode}) "
                                         "during this request; it is being restarted") from None
        if kind != "ok":
            raise RuntimeError(value)
        return value

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
    """Beam search in a pool of worker processes, each loading the language model once."""

    def __init__(self, vocab: CTCVocabulary, lm: Path | None, alpha: float, beta: float, workers: int,
                 queue_capacity: int = 16, timeout: float = 30.0, on_restart=None):
        self.workers = [DecodeWorker(labels(vocab), lm, alpha, beta, on_restart) for _ in range(workers)]
        self.queue_capacity = queue_capacity
        self.timeout = timeout
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="beam-search")
        self._idle: asyncio.Queue[DecodeWorker] = asyncio.Queue()
        self._waiting = 0
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="beam-search-watch", daemon=True)

    @property
    def alive(self) -> int:
        """Workers whose process is running now."""
        return sum(worker.alive for worker in self.workers)

    def start(self) -> None:
        """Start every worker (and load the language model) now rather than on the first request."""
        for worker in self.workers:
            worker.start()
            self._idle.put_nowait(worker)  # before the server takes requests: no loop is waiting yet
        self._watcher.start()

    async def decode(self, logits: np.ndarray, frame_seconds: float, beam_width: int, hotwords: list[str] | None,
                     hotword_weight: float) -> Decoded:
        worker = await self._acquire()
        search = asyncio.get_running_loop().run_in_executor(
            self._threads, _search, worker, logits, frame_seconds, beam_width, hotwords, hotword_weight, self.timeout)
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


def _search(worker: DecodeWorker, logits: np.ndarray, frame_seconds: float, beam_width: int,
            hotwords: list[str] | None, hotword_weight: float, timeout: float) -> Decoded:
    """One search on `worker`, with its inputs and outputs prepared here, off the event loop."""
    log_probs = log_softmax(logits.astype(np.float32))
    text, spans = worker.search((log_probs, beam_width, hotwords or None, hotword_weight), timeout)
    return Decoded(text, _words(spans, np.exp(log_probs.max(axis=-1)), frame_seconds))


def check_decoder(vocab: CTCVocabulary, lm: Path | None, alpha: float, beta: float) -> None:
    """Build the beam-search decoder once in a worker, as serving will; DecoderStartError says why not."""
    worker = DecodeWorker(labels(vocab), lm, alpha, beta)
    try:
        worker.start()
    finally:
        worker.stop()
