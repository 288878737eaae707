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

Labelling runs on the bulk path (model.bulk): local worker processes (`--workers`) or a Ray cluster
(`--ray`), and every utterance's transcript and confidences go to a JSONL file (`--scores-out`,
default `<out>.scores.jsonl`) that a rerun continues instead of starting over. The labelled
manifest is then the confident rows of that file, so a new threshold costs no transcription.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.bulk import InProcess, Inputs, Journal, LocalPool, TranscribeTask, run_bulk
from model.bulk.inputs import manifest_items
from model.bulk.task import read_source
from model.ctc import CTCVocabulary, text_log_likelihood
from model.decoding import MAX_ALTERNATIVES, BeamOptions, Decoded, log_softmax
from model.loading import load_recognizer
from model.transcribe import DecodeOptions, Transcriber

from .manifest import Entry, write_manifest

CONFIDENCES = ("posterior", "nbest", "words")


def confidence_scores(vocab: CTCVocabulary, logits: np.ndarray, decoded: Decoded) -> dict[str, float]:
    """The transcript's confidences (0 for an empty one)."""
    words = decoded.text.split()
    if not words:
        return {name: 0.0 for name in CONFIDENCES if name != "nbest" or decoded.alternatives}
    log_likelihood = text_log_likelihood(log_softmax(logits), vocab.encode(decoded.text), vocab.blank_id)
    scores = {
        "posterior": math.exp(log_likelihood / len(words)),
        "words": sum(word.confidence for word in decoded.words) / max(len(decoded.words), 1),
    }
    if decoded.alternatives:
        best = decoded.alternatives[0].score
        scores["nbest"] = 1.0 / sum(math.exp(alternative.score - best) for alternative in decoded.alternatives)
    return {name: round(value, 6) for name, value in scores.items()}


@dataclass(frozen=True)
class PseudoLabelTask(TranscribeTask):
    """A bulk worker's job: an utterance's transcript (beam search's n best, for `nbest`) and its
    confidences, as the fields `text`, `duration` and one per confidence name."""

    def run(self, state: Transcriber, source: str) -> dict:
        samples = state.recognizer.read(read_source(source))
        logits = state.logits([samples])[0]
        decoded, _ = state.decode(logits, self.options)
        return {
            "text": decoded.text,
            "duration": round(len(samples) / state.recognizer.sampling_rate, 3),
            **confidence_scores(state.recognizer.vocab, logits, decoded),
        }

    def settings(self) -> dict:
        return {**super().settings(), "task": "pseudo-label"}


def confident(rows: list[dict], min_confidence: float, confidence: str = "posterior") -> list[dict]:
    """The rows whose transcript is not empty and at least `min_confidence` confident."""
    return [row for row in rows if "error" not in row and row["text"] and row[confidence] >= min_confidence]


def label(args, transcriber: Transcriber, real: list[Entry]) -> int:
    """`python -m training pseudo-label` once its options are checked and its model (`transcriber`)
    loaded: transcribe what the scores file lacks, then write the confident rows, after `real`, to --out."""
    scores = args.scores_out or args.out.with_name(args.out.stem + ".scores.jsonl")
    searched = BeamOptions(args.beam_width, beam_search=args.beam_search)
    beam = dataclasses.replace(searched, alternatives=MAX_ALTERNATIVES)  # for `nbest`
    task = PseudoLabelTask(
        str(Path(args.model).resolve()) if Path(args.model).exists() else args.model,
        transcriber.lm and str(Path(transcriber.lm).resolve()),
        transcriber.lm_alpha,
        transcriber.lm_beta,
        transcriber.lexicon,
        # beam search over the LM when there is one; without, the best path (the n best of a
        # search with no LM add little and cost much)
        DecodeOptions(None if transcriber.lm else "greedy", beam),
        loader=load_recognizer,
    )
    if args.ray:
        try:
            from cluster.ray_pool import RayPool  # only with --ray: Ray is an optional extra
        except ImportError as error:
            raise ValueError(str(error)) from None

        backend = RayPool(args.ray, args.workers)
    else:
        backend = LocalPool(args.workers) if (args.workers or 1) > 1 else InProcess()
    with Journal(scores, task.settings()) as journal:
        summary = run_bulk(Inputs(manifest=args.manifest), task, backend, journal)
    print(summary.line(), file=sys.stderr)
    with open(scores, encoding="utf-8") as handle:
        rows = {row["audio"]: row for row in map(json.loads, handle)}
    ordered = [rows[item.key] for item in manifest_items(args.manifest) if item.key in rows]  # the manifest's order
    kept = [
        Entry(args.manifest.parent / row["audio"], row["duration"], row["text"])
        for row in confident(ordered, args.min_confidence, args.confidence)
    ]
    write_manifest(real + kept, args.out)
    hours = sum(entry.duration for entry in kept) / 3600
    failed = sum("error" in row for row in ordered)
    print(
        f"{args.out}: {len(kept)} of {len(ordered)} utterances kept ({hours:.2f} h) at {args.confidence} "
        f"confidence >= {args.min_confidence}"
        + (f", with {len(real)} real labels" if real else "")
        + (f"; {failed} could not be transcribed (see {scores})" if failed else "")
    )
    return 0
