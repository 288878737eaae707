"""What a bulk worker does with one input: load the model once, then transcribe input after input.

A task is pickled to every worker, a local process or a cluster node, so it holds plain settings
(a model reference, decoding options) and each worker builds its own model from them. Workers read
the audio themselves (a path they can see, or an http(s) URL they can reach), so audio never
passes through the driver.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..audio import AudioError
from ..decoding import LM_ALPHA, LM_BETA
from ..hub import resolve_model
from ..onnx import MODEL_FILE, OnnxRecognizer
from ..package import package_onnx
from ..recognizer import Recognizer
from ..transcribe import DecodeOptions, Transcriber, Transcript, choose_decoder
from .inputs import is_url

FETCH_SECONDS = 60  # how long a worker waits for an audio URL before giving up on that input

# The thread pools of the numeric libraries: pinned before a worker loads anything, so N workers on
# N cores run one thread each instead of N each.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class Task(ABC):
    """One kind of work on one audio input: `load` once per worker, then `run` per input."""

    @abstractmethod
    def load(self, threads: int) -> Any:
        """The worker's state (its model), using `threads` threads for inference (0: one per core)."""

    @abstractmethod
    def run(self, state: Any, source: str) -> dict:
        """The output fields for the audio at `source` (a path or URL); raise for an input that fails."""

    @abstractmethod
    def settings(self) -> dict:
        """What the results depend on, as JSON: a rerun into the same output must have the same."""


def work(task: Task, state: Any, source: str) -> dict:
    """`task.run`, with a failure turned into an `error` field: one bad input never stops a run."""
    try:
        return task.run(state, source)
    except AudioError as error:
        return {"error": str(error)}
    except Exception as error:  # noqa: BLE001 - whatever one input does, the others go on
        return {"error": f"{type(error).__name__}: {error}"}


def limit_threads(threads: int) -> None:
    """Pin the numeric libraries of this (worker) process to `threads` threads (0: leave them be)."""
    if threads <= 0:
        return
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if "torch" in sys.modules:  # a PyTorch model's worker: its pool is already set up by then
        sys.modules["torch"].set_num_threads(threads)


def read_source(source: str) -> str | bytes:
    """A path as it is (the audio reader opens it), or the bytes an http(s) URL serves."""
    if not is_url(source):
        return source
    try:
        with urllib.request.urlopen(source, timeout=FETCH_SECONDS) as response:
            return response.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise AudioError(f"could not fetch '{source}': {reason}") from None


def export_folder(reference: str | Path) -> Path | None:
    """The ONNX export a model reference has (an export folder, or a shipped model folder's onnx/)."""
    folder = package_onnx(resolve_model(reference))
    return folder if (folder / MODEL_FILE).is_file() else None


def load_bulk_recognizer(
    reference: str | Path, threads: int = 0, loader: Callable[[str], Recognizer] | None = None
) -> Recognizer:
    """The recognizer bulk workers run: the model's ONNX export when it has one (the server's engine,
    no torch, `threads` intra-op threads), else what `loader` makes of the reference (PyTorch)."""
    folder = export_folder(reference)
    if folder is not None:
        return OnnxRecognizer(folder, threads=threads)
    if loader is None:
        raise ValueError(
            f"model '{reference}' has no ONNX export (model.onnx): export it with `python -m export "
            "onnx`, or install torch to run its checkpoint"
        )
    return loader(str(reference))


def transcript_fields(result: Transcript, word_timestamps: bool = False, alternatives: bool = False) -> dict:
    """A transcript as the JSON output's fields (the CLI's `--json` lines and bulk output lines)."""
    fields = {
        "text": result.text,
        "confidence": round(result.confidence, 4),
        "duration": result.duration,
        **result.decoding_fields(),  # the decoder, and which beam search ran (pyctcdecode or flashlight)
    }
    if word_timestamps:
        fields["words"] = [asdict(word) for word in result.words]
    if alternatives:
        fields["alternatives"] = [asdict(alternative) for alternative in result.alternatives]
    return fields


@dataclass(frozen=True)
class TranscribeTask(Task):
    """Transcribe with a model and decoder as `python -m model transcribe` does."""

    model: str  # a reference every worker resolves: a path all of them see, or a Hub id
    lm: str | None = None  # KenLM model (beam search) at a path every worker sees
    lm_alpha: float = LM_ALPHA
    lm_beta: float = LM_BETA
    lexicon: tuple[str, ...] | None = None  # beam search's words
    options: DecodeOptions = field(default_factory=DecodeOptions)
    word_timestamps: bool = False  # each word's start, end and confidence, as `words`
    alternatives: bool = False  # the beam search's n best, as `alternatives`
    loader: Callable[[str], Recognizer] | None = None  # for a model with no ONNX export (PyTorch); pickled by name

    def load(self, threads: int) -> Transcriber:
        limit_threads(threads)
        transcriber = Transcriber(
            load_bulk_recognizer(self.model, threads, self.loader),
            self.lm,
            self.lm_alpha,
            self.lm_beta,
            lexicon=self.lexicon,
        )
        if choose_decoder(self.options, self.lm is not None) == "beam":
            transcriber.beam_search()  # the language model loads now, once, not on the first input
        return transcriber

    def run(self, state: Transcriber, source: str) -> dict:
        return transcript_fields(
            state.transcribe_file(read_source(source), self.options), self.word_timestamps, self.alternatives
        )

    def settings(self) -> dict:
        lexicon = None
        if self.lexicon is not None:  # a digest: a lexicon may hold a million words
            lexicon = hashlib.sha256("\n".join(self.lexicon).encode()).hexdigest()[:16]
        return {
            "task": "transcribe",
            "model": self.model,
            "lm": self.lm and str(self.lm),
            "lm_alpha": self.lm_alpha,
            "lm_beta": self.lm_beta,
            "lexicon": lexicon,
            "options": asdict(self.options),
            "word_timestamps": self.word_timestamps,
            "alternatives": self.alternatives,
        }
