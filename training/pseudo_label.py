"""`python -m training pseudo-label`: self-training's labels. A fine-tuned model transcribes unlabeled
audio (beam search with a KenLM model when given, else greedy); utterances it is confident about
become a labelled manifest, optionally joined with the real labels to fine-tune on both.

Three confidences of a transcript, each 0-1 (`CONFIDENCES`):
- `posterior`: the probability CTC gives the transcript's text, all alignments summed (the forward
  algorithm), as a geometric mean per word: P(text | audio) ** (1 / words). Two spellings the model
  hesitates between share the probability, so a doubtful transcript scores low even when every
  frame's best token is probable.
- `nbest`: the best transcript's share of the beam search's n best (a softmax of their scores, the
  language model's included); beam search only.
- `words`: the mean over words of each word's mean best-token probability (the server's word
  confidence). Frames of a misspelt word are often each confident, so it separates right from
  wrong labels poorly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from model.ctc import CTCVocabulary, text_log_likelihood
from model.decoding import MAX_ALTERNATIVES, BeamOptions, Decoded, log_softmax
from model.transcribe import DecodeOptions, Transcriber

from .manifest import Entry

CONFIDENCES = ("posterior", "nbest", "words")


@dataclass
class Labelled:
    entry: Entry  # the audio with its transcript
    scores: dict[str, float]  # confidence name -> 0-1 (`nbest` only after beam search)
    reference: str | None = None  # the manifest's own text, if it had one (kept for measuring, never as a label)


def confidence_scores(vocab: CTCVocabulary, logits: np.ndarray, decoded: Decoded) -> dict[str, float]:
    """The transcript's confidences (0 for an empty one)."""
    words = decoded.text.split()
    if not words:
        return {name: 0.0 for name in CONFIDENCES if name != "nbest" or decoded.alternatives}
    log_likelihood = text_log_likelihood(log_softmax(logits), vocab.encode(decoded.text), vocab.blank_id)
    scores = {"posterior": math.exp(log_likelihood / len(words)),
              "words": sum(word.confidence for word in decoded.words) / max(len(decoded.words), 1)}
    if decoded.alternatives:
        best = decoded.alternatives[0].score
        scores["nbest"] = 1.0 / sum(math.exp(alternative.score - best) for alternative in decoded.alternatives)
    return {name: round(value, 6) for name, value in scores.items()}


def pseudo_label(transcriber: Transcriber, entries: list[Entry], beam: BeamOptions = BeamOptions()
                 ) -> list[Labelled]:
    """Every entry transcribed, with its confidences."""
    beam = dataclasses.replace(beam, alternatives=MAX_ALTERNATIVES)  # the n best, for the `nbest` confidence
    vocab = transcriber.recognizer.vocab
    results = []
    for entry in tqdm(entries, unit="utt", dynamic_ncols=True):
        logits = transcriber.logits([transcriber.recognizer.read(entry.audio)])[0]
        # Beam search over the language model when there is one; without, the best path (the n best of
        # a search with no LM add little and cost much).
        decoded, _ = transcriber.decode(logits, DecodeOptions("beam" if transcriber.lm is not None else "greedy", beam))
        results.append(Labelled(Entry(entry.audio, entry.duration, decoded.text),
                                confidence_scores(vocab, logits, decoded), entry.text or None))
    return results


def confident(labelled: list[Labelled], min_confidence: float, confidence: str = "posterior") -> list[Entry]:
    return [item.entry for item in labelled if item.entry.text and item.scores[confidence] >= min_confidence]
