"""Logits -> text with word timings: greedy (best path) and beam search with a KenLM model and hotwords.

Both give the same result: the text and its words, each with start and end (seconds) and a
confidence (the mean probability of the best token over the word's frames). Every caller (the
CLI, evaluation, pseudo-labelling, the server's worker processes) decodes here, with the decode
defaults below. Imports no torch; beam search needs pyctcdecode and kenlm, imported when built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .ctc import CTCVocabulary

# The decode defaults, for every caller.
BEAM_WIDTH = 100  # beams kept at each frame
LM_ALPHA = 0.5  # language model weight
LM_BETA = 1.0  # word insertion bonus
HOTWORD_WEIGHT = 10.0  # score bonus of a hotword


@dataclass
class Word:
    word: str
    start: float  # seconds
    end: float  # seconds
    confidence: float  # 0-1


@dataclass
class Decoded:
    text: str
    words: list[Word]


@dataclass(frozen=True)
class BeamOptions:
    """What each beam search may choose; the language model and its weights are the decoder's."""

    beam_width: int = BEAM_WIDTH
    hotwords: tuple[str, ...] = field(default=())
    hotword_weight: float = HOTWORD_WEIGHT


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def words_from_spans(spans: list[tuple[str, int, int]], log_probs: np.ndarray, frame_seconds: float) -> list[Word]:
    """(word, start frame, end frame) spans -> words in seconds, with the mean best-token probability
    over each word's frames as its confidence. log_probs: (frames, vocab)."""
    best_probability = np.exp(log_probs.max(axis=-1))
    return [Word(text, round(start * frame_seconds, 3), round(end * frame_seconds, 3),
                 round(float(best_probability[start:end].mean()), 4)) for text, start, end in spans if end > start]


def greedy_decode(vocab: CTCVocabulary, logits: np.ndarray, frame_seconds: float) -> Decoded:
    """Best path: the text `CTCVocabulary.greedy_decode` gives, plus words from the emitted tokens' frames.
    logits: (frames, vocab)."""
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
    return Decoded(vocab.decode_ids(best), words_from_spans(spans, log_softmax(logits), frame_seconds))


class DecoderStartError(Exception):
    """The beam-search decoder could not be built (e.g. a language model KenLM refuses)."""


def labels(vocab: CTCVocabulary) -> list[str]:
    """pyctcdecode's alphabet: the blank is "", the word delimiter a space."""
    alphabet = []
    for index in range(len(vocab)):
        token = vocab.tokens.get(index, vocab.unk_token)
        alphabet.append("" if token == vocab.pad_token else " " if token == vocab.word_delimiter_token else token)
    return alphabet


def one_line(error: BaseException) -> str:
    """KenLM's errors hold a C++ signature and file offsets; keep what it says is wrong."""
    text = " ".join(str(error).split())
    reason = re.search(r"threw \w+(?: because `.*?'\.|\.)\s*(.+?)\)?$", text)
    return reason.group(1) if reason else text or type(error).__name__


class BeamSearchDecoder:
    """CTC beam search (pyctcdecode) scored with a KenLM model when given, loaded once."""

    def __init__(self, vocab: CTCVocabulary, lm: str | Path | None = None, alpha: float = LM_ALPHA,
                 beta: float = LM_BETA):
        try:
            from pyctcdecode import build_ctcdecoder  # CTC beam search with KenLM scoring and hotwords

            self._decoder = build_ctcdecoder(labels(vocab), kenlm_model_path=str(lm) if lm else None,
                                             alpha=alpha, beta=beta)
        except Exception as error:  # pyctcdecode and KenLM raise many kinds; all mean "cannot decode with this"
            raise DecoderStartError(one_line(error)) from None

    def decode(self, logits: np.ndarray, frame_seconds: float, options: BeamOptions = BeamOptions()) -> Decoded:
        """logits: (frames, vocab), finite."""
        log_probs = log_softmax(logits.astype(np.float32))
        text, _, word_frames, _, _ = self._decoder.decode_beams(
            log_probs, beam_width=options.beam_width, hotwords=list(options.hotwords) or None,
            hotword_weight=options.hotword_weight)[0]
        spans = [(word, start, end) for word, (start, end) in word_frames]
        return Decoded(text, words_from_spans(spans, log_probs, frame_seconds))
