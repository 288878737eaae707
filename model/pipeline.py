"""The steps of transcription, for every caller: samples -> windows -> logits (inferred in batches)
-> stitched -> decoded -> `Transcript`.

Two steps are left to the caller, as seams: `infer(pieces)` (samples -> logits, one array per
piece) and `decode(logits, options)` (one utterance's logits -> `Decoded`; `options.decoder` is
already chosen). Either may be a plain function or a coroutine function: `run` drives the steps
with plain ones (the CLI, evaluation: `model.transcribe.Transcriber`), `run_async` awaits what
they return (the server: its cross-request batcher infers, its beam-search processes decode).
The steps themselves are written once, as a generator that yields `Infer` and `Decode` requests
and is sent their results, so the same audio gives the same text whichever way it comes.

`Decoders` is the core's one decode entry point (greedy, and beam search with a model's language
model and lexicon), which the seams' implementations call. Imports no torch.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import AudioError, check_duration
from .ctc import CTCVocabulary
from .decoding import (
    LM_ALPHA,
    LM_BETA,
    Alternative,
    BeamSearchDecoder,
    Decoded,
    Search,
    Word,
    greedy_decode,
    letters,
)
from .options import DecodeOptions, Decoder
from .phrases import in_alphabet_case
from .recognizer import Recognizer
from .windows import CHUNK_SECONDS, CONTEXT_SECONDS, Window, plan_windows, stitch


@dataclass(frozen=True)
class Windowing:
    """Long audio runs in windows of `chunk_seconds`, each with `context_seconds` of context each side."""

    chunk_seconds: float = CHUNK_SECONDS
    context_seconds: float = CONTEXT_SECONDS


@dataclass
class Timings:
    """Milliseconds one transcription spent: waiting to be inferred, inferring, decoding."""

    queue: float = 0.0
    inference: float = 0.0
    decode: float = 0.0


@dataclass
class Transcript:
    """One utterance's transcription: what every caller returns."""

    text: str
    words: list[Word]
    duration: float  # seconds of audio
    decoder: Decoder
    alternatives: list[Alternative] | None = None  # beam search's n best, best first; None unless asked for
    confidence: float = 0.0  # the weakest word's (0 with no word): see `Decoded.confidence`
    model: str = ""  # the model's name, where a caller serves several
    timings: Timings = field(default_factory=Timings)
    beam_search: Search | None = None  # the beam search that ran (pyctcdecode or flashlight); None: greedy

    def decoding_fields(self) -> dict[str, str]:
        """How it was decoded, as every response names it: `decoder`, and `beam_search` after a beam search."""
        return {"decoder": self.decoder, **({"beam_search": self.beam_search} if self.beam_search is not None else {})}

    def to_dict(self) -> dict:
        """As the server answers: words and alternatives as objects, `alternatives` only when asked for."""
        body = asdict(self)
        if self.alternatives is None:
            del body["alternatives"]
        return body


class UnusableLogits(AudioError):
    """The model's output is not finite: nothing a decoder can read."""


def check_finite(logits: np.ndarray) -> None:
    """Beam search fails on NaN, and greedy decoding reads noise from it: refuse such logits."""
    if not np.isfinite(logits).all():
        raise UnusableLogits(
            "the model's output for this audio is not finite; the audio may be damaged or far out of the usual range"
        )


def window_samples(
    samples: np.ndarray, recognizer: Recognizer, windowing: Windowing
) -> tuple[list[Window], list[np.ndarray]]:
    """One utterance's windows, and the samples of each (views, not copies)."""
    rate = recognizer.sampling_rate
    windows = plan_windows(
        len(samples), recognizer.config, int(windowing.chunk_seconds * rate), int(windowing.context_seconds * rate)
    )
    return windows, [samples[window.start : window.end] for window in windows]


@dataclass(frozen=True)
class Infer:
    """A step the caller does: these pieces' logits, (frames_i, vocab) each, in order."""

    pieces: list[np.ndarray]


@dataclass(frozen=True)
class Decode:
    """A step the caller does: one utterance's logits (frames, vocab), decoded with `options`
    (decoder chosen, beam width filled in)."""

    logits: np.ndarray
    options: DecodeOptions


Steps = Generator[Infer | Decode, Any, Any]


class Pipeline:
    """The transcription steps for one model: `recognizer` gives the audio and frame arithmetic (it is
    not run here: `infer` runs it), `has_lm` and `beam_width` the decoder choice and default width."""

    def __init__(
        self,
        recognizer: Recognizer,
        has_lm: bool = False,
        windowing: Windowing = Windowing(),
        beam_width: int | None = None,
        name: str = "",
    ):
        self.recognizer = recognizer
        self.has_lm = has_lm
        self.windowing = windowing
        self.beam_width = beam_width
        self.name = name

    def resolve(self, options: DecodeOptions) -> DecodeOptions:
        """`options` as `decode` gets them: the decoder chosen by the one rule, the width filled in."""
        return options.resolved(self.has_lm, self.beam_width)

    def logits_steps(self, utterances: list[np.ndarray]) -> Steps:
        """Each utterance's (frames, vocab) logits: long ones in windows, the windows of all of them
        inferred in one request, stitched back."""
        plans = [window_samples(samples, self.recognizer, self.windowing) for samples in utterances]
        results = yield Infer([piece for _, pieces in plans for piece in pieces])
        stitched, start = [], 0
        for windows, _ in plans:
            stitched.append(stitch(windows, results[start : start + len(windows)]))
            start += len(windows)
        return stitched

    def transcribe_steps(self, utterances: list[np.ndarray], options: DecodeOptions = DecodeOptions()) -> Steps:
        """Samples at the recognizer's rate (each at least one frame's worth: AudioError if not) ->
        one `Transcript` each. UnusableLogits (an AudioError) for a model output that is not finite."""
        rate = self.recognizer.sampling_rate
        for samples in utterances:
            check_duration(samples, self.recognizer.min_samples, rate)
        resolved = self.resolve(options)
        transcripts = []
        for samples, logits in zip(utterances, (yield from self.logits_steps(utterances))):
            check_finite(logits)
            decoded = (yield Decode(logits, resolved)).mark(options.min_confidence)
            asked = resolved.decoder == "beam" and bool(resolved.beam.alternatives)
            transcripts.append(
                Transcript(
                    decoded.text,
                    decoded.words,
                    round(len(samples) / rate, 3),
                    resolved.decoder,
                    decoded.alternatives if asked else None,
                    round(decoded.confidence, 4),
                    self.name,
                    beam_search=decoded.search,
                )
            )
        return transcripts


def run(steps: Steps, infer: Callable, decode: Callable) -> Any:
    """Drive `steps` with plain functions: `infer(pieces) -> list of logits`, `decode(logits, options)
    -> Decoded`. Returns what the steps return; a transcript's timings are measured here."""
    timings, result = Timings(), None
    while True:
        try:
            step = steps.send(result)
        except StopIteration as done:
            return _with_timings(done.value, timings)
        started = time.perf_counter()
        result = _take(step, infer, decode)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: say so here, not in a warning later
            raise TypeError("run() takes plain infer and decode functions; await run_async() for coroutines")
        _count(timings, step, started)


async def run_async(steps: Steps, infer: Callable, decode: Callable) -> Any:
    """Drive `steps` with functions that may be coroutine functions (each result is awaited if it
    can be). The steps themselves run on the event loop: `infer` and `decode` keep the work off it."""
    timings, result = Timings(), None
    while True:
        try:
            step = steps.send(result)
        except StopIteration as done:
            return _with_timings(done.value, timings)
        started = time.perf_counter()
        result = _take(step, infer, decode)
        if inspect.isawaitable(result):
            result = await result
        _count(timings, step, started)


def _take(step: Infer | Decode, infer: Callable, decode: Callable) -> Any:
    return infer(step.pieces) if isinstance(step, Infer) else decode(step.logits, step.options)


def _count(timings: Timings, step: Infer | Decode, started: float) -> None:
    spent = (time.perf_counter() - started) * 1000
    if isinstance(step, Infer):
        timings.inference += spent
    else:
        timings.decode += spent


def _with_timings(value: Any, timings: Timings) -> Any:
    """Transcripts carry the time their transcription took (decoding shared out evenly)."""
    if isinstance(value, list) and value and all(isinstance(item, Transcript) for item in value):
        for item in value:
            item.timings = Timings(0.0, round(timings.inference, 3), round(timings.decode / len(value), 3))
    return value


class Decoders:
    """One model's decoders: greedy, and beam search (with `lm`, a KenLM model, if given, and within
    `lexicon`'s words, if given), built on first use and kept. `decode` is the core's one decode
    entry point: every caller's `decode` seam ends here, in its own process or in a worker's."""

    def __init__(
        self,
        vocab: CTCVocabulary,
        frame_seconds: float,
        lm: str | Path | None = None,
        lm_alpha: float = LM_ALPHA,
        lm_beta: float = LM_BETA,
        lexicon: tuple[str, ...] | None = None,
    ):
        self.vocab, self.frame_seconds = vocab, frame_seconds
        self.lm, self.lm_alpha, self.lm_beta, self.lexicon = lm, lm_alpha, lm_beta, lexicon
        self._beam: BeamSearchDecoder | None = None

    def close(self) -> None:
        """Let the beam search and its language model go (built again if decoding goes on)."""
        self._beam = None

    def beam_search(self) -> BeamSearchDecoder:
        """The beam-search decoder, built (and its language model loaded) on the first call;
        DecoderStartError says why it could not be."""
        if self._beam is None:
            self._beam = BeamSearchDecoder(self.vocab, self.lm, self.lm_alpha, self.lm_beta, self.lexicon)
        return self._beam

    def decode(self, logits: np.ndarray, options: DecodeOptions) -> Decoded:
        """One utterance's (frames, vocab) finite logits -> text and words, unmarked. `options.decoder`
        None: the one rule chooses (`model.options.choose_decoder`)."""
        options = options.resolved(self.lm is not None)
        if options.decoder == "greedy":
            return greedy_decode(self.vocab, logits, self.frame_seconds)
        beam = options.beam
        if beam.hotwords:  # the search matches the model's letter case
            beam = dataclasses.replace(beam, hotwords=in_alphabet_case(beam.hotwords, letters(self.vocab)))
        return self.beam_search().decode(logits, self.frame_seconds, beam)
