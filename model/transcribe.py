"""Samples -> text, words and confidences in this process: `model.pipeline`'s steps with a
recognizer run here (windows of all utterances in batches of similar lengths) and the core's
decoders (greedy, or beam search with the model's language model and lexicon).

The CLI (`python -m model transcribe`), `python -m training evaluate` and `pseudo-label` and the
fine-tuning evaluation transcribe with `Transcriber`; the server runs the same steps with its own
batcher and beam-search processes (`service.pipeline`), so the same audio gives the same text and
word times whichever way it comes. Imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from .audio import AudioSource
from .decoding import LM_ALPHA, LM_BETA, BeamSearchDecoder, Decoded
from .lexicon import read_lexicon
from .options import DecodeOptions, Decoder, choose_decoder
from .package import package_lexicon, package_lm, tuned_lm_weights
from .pipeline import Decoders, Pipeline, Transcript, UnusableLogits, Windowing, check_finite, run
from .recognizer import Recognizer
from .windows import plan_batches

__all__ = [
    "DecodeOptions",
    "ModelDecoding",
    "Transcriber",
    "Transcript",
    "UnusableLogits",
    "Windowing",
    "model_decoding",
]


class ModelDecoding(NamedTuple):
    """What a model's beam search is built with (`model_decoding`)."""

    lm: str | Path | None
    lexicon: tuple[str, ...] | None
    lm_alpha: float
    lm_beta: float


def model_decoding(
    model: str | Path,
    lm: str | Path | None = None,
    no_lm: bool = False,
    lexicon: str | Path | None = None,
    no_lexicon: bool = False,
    lm_alpha: float | None = None,
    lm_beta: float | None = None,
) -> ModelDecoding:
    """The language model, lexicon words and LM weights to decode `model` with: those given, else a model
    folder's own (lm.arpa, lexicon.txt, and lm.json's weights whenever its lm.arpa is the LM), unless
    turned off; weights neither given nor in the folder are LM_ALPHA and LM_BETA. ValueError if the
    lexicon or lm.json is unreadable (LexiconError is one)."""
    folder = Path(model).expanduser()
    lm = None if no_lm else lm or package_lm(folder)
    lexicon = None if no_lexicon else lexicon or package_lexicon(folder)
    alpha, beta = tuned_lm_weights(folder, lm) or (LM_ALPHA, LM_BETA)
    return ModelDecoding(
        lm,
        read_lexicon(lexicon) if lexicon else None,
        alpha if lm_alpha is None else lm_alpha,
        beta if lm_beta is None else lm_beta,
    )


class Transcriber:
    """A recognizer and its decoders (`model.pipeline.Decoders`: greedy, and beam search with `lm`,
    a KenLM model, if given, within `lexicon`'s words, if given), run in this process. Call `close`
    when done, or use it as a context manager."""

    def __init__(
        self,
        recognizer: Recognizer,
        lm: str | Path | None = None,
        lm_alpha: float = LM_ALPHA,
        lm_beta: float = LM_BETA,
        windowing: Windowing = Windowing(),
        max_batch_size: int = 8,
        lexicon: tuple[str, ...] | None = None,
    ):
        self.recognizer = recognizer
        self.lm, self.lm_alpha, self.lm_beta, self.lexicon = lm, lm_alpha, lm_beta, lexicon
        self.windowing = windowing
        self.max_batch_size = max_batch_size if recognizer.padding_exact else 1
        self.pipeline = Pipeline(recognizer, lm is not None, windowing)
        self.decoders = Decoders(recognizer.vocab, recognizer.frame_seconds, lm, lm_alpha, lm_beta, lexicon)

    def __enter__(self) -> Transcriber:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        self.decoders.close()

    def beam_search(self) -> BeamSearchDecoder:
        """The beam-search decoder, built (and its language model loaded) on the first call;
        DecoderStartError says why it could not be."""
        return self.decoders.beam_search()

    def infer(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        """The pipeline's `infer` seam, here: the pieces in runs of similar lengths, at most
        `max_batch_size` each -> their (frames, vocab) logits, in order."""
        results: list[np.ndarray | None] = [None] * len(pieces)
        for chosen in plan_batches([len(piece) for piece in pieces], self.max_batch_size):
            for index, rows in zip(chosen, self.recognizer.logits([pieces[index] for index in chosen])):
                results[index] = rows
        return results

    def logits(self, utterances: list[np.ndarray]) -> list[np.ndarray]:
        """Each utterance's (frames, vocab) logits: long ones in windows, stitched; the windows of all
        of them in batches of similar lengths."""
        return run(self.pipeline.logits_steps(utterances), self.infer, self.decoders.decode)

    def decode(self, logits: np.ndarray, options: DecodeOptions = DecodeOptions()) -> tuple[Decoded, Decoder]:
        """One utterance's logits -> (text and words, marked by `options.min_confidence`; the decoder
        used). UnusableLogits if they are not finite."""
        check_finite(logits)
        decoder = choose_decoder(options, self.lm is not None)
        return self.decoders.decode(logits, options).mark(options.min_confidence), decoder

    def transcribe(self, samples: np.ndarray, options: DecodeOptions = DecodeOptions()) -> Transcript:
        """Samples at the recognizer's rate (at least one frame's worth) -> transcript."""
        return self.transcribe_batch([samples], options)[0]

    def transcribe_batch(
        self, utterances: list[np.ndarray], options: DecodeOptions = DecodeOptions()
    ) -> list[Transcript]:
        return run(self.pipeline.transcribe_steps(utterances, options), self.infer, self.decoders.decode)

    def transcribe_file(self, source: AudioSource, options: DecodeOptions = DecodeOptions()) -> Transcript:
        return self.transcribe(self.recognizer.read(source), options)
