"""CTC decoding for the server: greedy, or beam search with a KenLM model in worker processes.

Both return the same shape of result: the text and its words with start and end (seconds)
and a confidence (the mean probability of the best token over the word's frames).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.ctc import CTCVocabulary


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

_decoder = None  # one per worker process, holding the language model


def _labels(vocab: CTCVocabulary) -> list[str]:
    """pyctcdecode's alphabet: the blank is "", the word delimiter a space."""
    labels = []
    for index in range(len(vocab)):
        token = vocab.tokens.get(index, vocab.unk_token)
        labels.append("" if token == vocab.pad_token else " " if token == vocab.word_delimiter_token else token)
    return labels


def _start_worker(labels: list[str], lm: str | None, alpha: float, beta: float) -> None:
    global _decoder
    from pyctcdecode import build_ctcdecoder  # CTC beam search with KenLM scoring and hotwords

    _decoder = build_ctcdecoder(labels, kenlm_model_path=lm, alpha=alpha, beta=beta)


def _beam(log_probs: np.ndarray, beam_width: int, hotwords: list[str] | None, hotword_weight: float):
    text, _, word_frames, _, _ = _decoder.decode_beams(log_probs, beam_width=beam_width, hotwords=hotwords,
                                                       hotword_weight=hotword_weight)[0]
    return text, [(word, start, end) for word, (start, end) in word_frames]


class BeamSearch:
    """Beam search in a pool of processes, each loading the language model once."""

    def __init__(self, vocab: CTCVocabulary, lm: Path | None, alpha: float, beta: float, workers: int):
        # spawn: the server has threads (onnxruntime, the batcher) that must not be forked mid-flight.
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_worker,
                                        initargs=(_labels(vocab), str(lm) if lm else None, alpha, beta))
        self.workers = workers
        self.vocab = vocab

    def warm_up(self) -> None:
        """Start every worker (and load the language model) now rather than on the first request."""
        blank = np.full((4, len(self.vocab)), -10.0, dtype=np.float32)
        blank[:, self.vocab.blank_id] = 0.0
        for future in [self.pool.submit(_beam, blank, 4, None, 0.0) for _ in range(self.workers)]:
            future.result()

    async def decode(self, logits: np.ndarray, frame_seconds: float, beam_width: int, hotwords: list[str] | None,
                     hotword_weight: float) -> Decoded:
        import asyncio

        log_probs = log_softmax(logits.astype(np.float32))
        text, spans = await asyncio.wrap_future(
            self.pool.submit(_beam, log_probs, beam_width, hotwords or None, hotword_weight))
        return Decoded(text, _words(spans, np.exp(log_probs.max(axis=-1)), frame_seconds))

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
