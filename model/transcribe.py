"""Samples -> text, words and confidences, for every caller: long-audio windows, batches of
similar lengths through any recognizer, then greedy or beam-search decoding.

The CLI (`python -m model transcribe`), `python -m training evaluate` and `pseudo-label`, the
fine-tuning evaluation and the server all transcribe with these pieces, so the same audio gives
the same text and word times whichever way it comes. Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .audio import AudioError, AudioSource, check_duration
from .decoding import (LM_ALPHA, LM_BETA, MIN_CONFIDENCE, Alternative, BeamOptions, BeamSearchDecoder, Decoded, Word,
                       greedy_decode)
from .lexicon import read_lexicon
from .package import package_lexicon, package_lm
from .recognizer import Recognizer
from .windows import CHUNK_SECONDS, CONTEXT_SECONDS, Window, length_groups, plan_windows, stitch

Decoder = Literal["greedy", "beam"]


@dataclass(frozen=True)
class Windowing:
    """Long audio runs in windows of `chunk_seconds`, each with `context_seconds` of context each side."""

    chunk_seconds: float = CHUNK_SECONDS
    context_seconds: float = CONTEXT_SECONDS


@dataclass(frozen=True)
class DecodeOptions:
    """How one utterance is decoded. `decoder` None: beam search when there is a language model,
    else greedy. Words less confident than `min_confidence` are marked low_confidence."""

    decoder: Decoder | None = None
    beam: BeamOptions = field(default_factory=BeamOptions)
    min_confidence: float = MIN_CONFIDENCE


@dataclass
class Transcript:
    text: str
    words: list[Word]
    duration: float  # seconds of audio
    decoder: Decoder
    alternatives: list[Alternative] = field(default_factory=list)  # beam search's n best, when asked for
    confidence: float = 0.0  # the weakest word's (0 with no word): see `Decoded.confidence`


class UnusableLogits(AudioError):
    """The model's output is not finite: nothing a decoder can read."""


def choose_decoder(requested: Decoder | None, beam_by_default: bool) -> Decoder:
    """The decoder a request gets: what it asks for, else beam search when `beam_by_default` (there is
    a language model, or the request needs beam search), else greedy."""
    return requested or ("beam" if beam_by_default else "greedy")


def model_decoding(model: str | Path, lm: str | Path | None = None, no_lm: bool = False,
                   lexicon: str | Path | None = None, no_lexicon: bool = False
                   ) -> tuple[str | Path | None, tuple[str, ...] | None]:
    """The language model and lexicon words to decode `model` with: those given, else a model folder's
    own (lm.arpa, lexicon.txt), unless turned off. LexiconError (a ValueError) if the lexicon is unreadable."""
    folder = Path(model).expanduser()
    lm = None if no_lm else lm or package_lm(folder)
    lexicon = None if no_lexicon else lexicon or package_lexicon(folder)
    return lm, read_lexicon(lexicon) if lexicon else None


def check_finite(logits: np.ndarray) -> None:
    """Beam search fails on NaN, and greedy decoding reads noise from it: refuse such logits."""
    if not np.isfinite(logits).all():
        raise UnusableLogits("the model's output for this audio is not finite; the audio may be damaged or far "
                             "out of the usual range")


def window_samples(samples: np.ndarray, recognizer: Recognizer, windowing: Windowing
                   ) -> tuple[list[Window], list[np.ndarray]]:
    """One utterance's windows, and the samples of each (views, not copies)."""
    rate = recognizer.sampling_rate
    windows = plan_windows(len(samples), recognizer.config, int(windowing.chunk_seconds * rate),
                           int(windowing.context_seconds * rate))
    return windows, [samples[window.start:window.end] for window in windows]


class Transcriber:
    """A recognizer and its decoders: greedy, and beam search (with `lm`, a KenLM model, if given, and
    within `lexicon`'s words, if given), built on first use and kept. Call `close` when done, or use it
    as a context manager."""

    def __init__(self, recognizer: Recognizer, lm: str | Path | None = None, lm_alpha: float = LM_ALPHA,
                 lm_beta: float = LM_BETA, windowing: Windowing = Windowing(), max_batch_size: int = 8,
                 lexicon: tuple[str, ...] | None = None):
        self.recognizer = recognizer
        self.lm, self.lm_alpha, self.lm_beta, self.lexicon = lm, lm_alpha, lm_beta, lexicon
        self.windowing = windowing
        self.max_batch_size = max_batch_size if recognizer.padding_exact else 1
        self._beam: BeamSearchDecoder | None = None

    def __enter__(self) -> Transcriber:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        self._beam = None

    def beam_search(self) -> BeamSearchDecoder:
        """The beam-search decoder, built (and its language model loaded) on the first call;
        DecoderStartError says why it could not be."""
        if self._beam is None:
            self._beam = BeamSearchDecoder(self.recognizer.vocab, self.lm, self.lm_alpha, self.lm_beta, self.lexicon)
        return self._beam

    def logits(self, utterances: list[np.ndarray]) -> list[np.ndarray]:
        """Each utterance's (frames, vocab) logits: long ones in windows, stitched; the windows of all
        of them in batches of similar lengths."""
        plans = [window_samples(samples, self.recognizer, self.windowing) for samples in utterances]
        pieces = [piece for _, samples in plans for piece in samples]
        results: list[np.ndarray | None] = [None] * len(pieces)
        for group in length_groups([len(piece) for piece in pieces]):
            for first in range(0, len(group), self.max_batch_size):
                chosen = group[first:first + self.max_batch_size]
                for index, rows in zip(chosen, self.recognizer.logits([pieces[index] for index in chosen])):
                    results[index] = rows
        stitched, start = [], 0
        for windows, _ in plans:
            stitched.append(stitch(windows, results[start:start + len(windows)]))
            start += len(windows)
        return stitched

    def decode(self, logits: np.ndarray, options: DecodeOptions = DecodeOptions()) -> tuple[Decoded, Decoder]:
        """One utterance's logits -> (text and words, the decoder used)."""
        check_finite(logits)
        decoder = choose_decoder(options.decoder, self.lm is not None)
        frame_seconds = self.recognizer.frame_seconds
        if decoder == "greedy":
            decoded = greedy_decode(self.recognizer.vocab, logits, frame_seconds)
        else:
            decoded = self.beam_search().decode(logits, frame_seconds, options.beam)
        return decoded.mark(options.min_confidence), decoder

    def transcribe(self, samples: np.ndarray, options: DecodeOptions = DecodeOptions()) -> Transcript:
        """Samples at the recognizer's rate (at least one frame's worth) -> transcript."""
        return self.transcribe_batch([samples], options)[0]

    def transcribe_batch(self, utterances: list[np.ndarray], options: DecodeOptions = DecodeOptions()
                         ) -> list[Transcript]:
        rate = self.recognizer.sampling_rate
        for samples in utterances:
            check_duration(samples, self.recognizer.min_samples, rate)
        transcripts = []
        for samples, logits in zip(utterances, self.logits(utterances)):
            decoded, decoder = self.decode(logits, options)
            transcripts.append(Transcript(decoded.text, decoded.words, round(len(samples) / rate, 3), decoder,
                                          decoded.alternatives, decoded.confidence))
        return transcripts

    def transcribe_file(self, source: AudioSource, options: DecodeOptions = DecodeOptions()) -> Transcript:
        return self.transcribe(self.recognizer.read(source), options)
