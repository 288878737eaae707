"""WER/CER of a CTC model on a labelled manifest: greedy, and with beam search over a KenLM model
(within the model's lexicon, when it has one), and how many transcripts fall below a confidence.

Utterances are transcribed by `model.transcribe`, as the CLI and the server transcribe them. The
fine-tuning loop scores its evaluations with `hypotheses` and `score` too.
"""

from __future__ import annotations

import numpy as np

from model.ctc import normalize_text
from model.decoding import MIN_CONFIDENCE, BeamOptions, Decoded
from model.transcribe import DecodeOptions, Transcriber

from .manifest import Entry
from .metrics import error_rates

CHUNK = 64  # utterances read and decoded at a time: a large manifest is never held in memory whole


def transcripts(
    transcriber: Transcriber, utterances: list[np.ndarray], beam: BeamOptions = BeamOptions()
) -> list[dict[str, Decoded]]:
    """Each utterance decoded: {"greedy": ..., "beam": ... (when the transcriber has a language model)}."""
    rows = []
    for logits in transcriber.logits(utterances):
        row = {"greedy": transcriber.decode(logits, DecodeOptions("greedy"))[0]}
        if transcriber.lm is not None:
            row["beam"] = transcriber.decode(logits, DecodeOptions("beam", beam))[0]
        rows.append(row)
    return rows


def hypotheses(
    transcriber: Transcriber, utterances: list[np.ndarray], beam: BeamOptions = BeamOptions()
) -> list[dict[str, str]]:
    """Each utterance's text: {"greedy": ..., "beam": ... (when the transcriber has a language model)}."""
    return [
        {decoder: decoded.text for decoder, decoded in row.items()}
        for row in transcripts(transcriber, utterances, beam)
    ]


def score(references: list[str], rows: list[dict[str, str]]) -> dict:
    """{"utterances": n, "greedy": rates, "beam": rates (when the rows have beam texts)}."""
    report = {"utterances": len(references)}
    for decoder in rows[0] if rows else ():
        report[decoder] = error_rates(references, [row[decoder] for row in rows])
    return report


def labelled(entries: list[Entry]) -> list[Entry]:
    chosen = [entry for entry in entries if entry.text]
    if not chosen:
        raise ValueError("the manifest has no transcribed entries to score")
    return chosen


def low_confidence(references: list[str], decoded: list[Decoded], min_confidence: float) -> dict:
    """The share of transcripts less confident than `min_confidence` ("all"), and of the correct ones
    ("correct": what that threshold would wrongly reject)."""
    right = [normalize_text(reference) == normalize_text(item.text) for reference, item in zip(references, decoded)]
    below = [item.confidence < min_confidence for item in decoded]
    return {
        "min_confidence": min_confidence,
        "all": round(float(np.mean(below)), 4),
        "correct": round(float(np.mean([low for low, ok in zip(below, right) if ok])), 4) if any(right) else None,
    }


def evaluate(
    transcriber: Transcriber,
    entries: list[Entry],
    beam: BeamOptions = BeamOptions(),
    min_confidence: float = MIN_CONFIDENCE,
) -> dict:
    """{"utterances": n, "greedy": rates, "beam": rates (with a language model), "details": [...]}; each
    decoder's rates with "low_confidence" (`low_confidence`)."""
    entries = labelled(entries)
    rows = []
    for first in range(0, len(entries), CHUNK):
        chunk = entries[first : first + CHUNK]
        rows += transcripts(transcriber, [transcriber.recognizer.read(entry.audio) for entry in chunk], beam)
    references = [entry.text for entry in entries]
    report = score(references, [{decoder: decoded.text for decoder, decoded in row.items()} for row in rows])
    for decoder in rows[0]:
        report[decoder]["low_confidence"] = low_confidence(references, [row[decoder] for row in rows], min_confidence)
    report["details"] = []
    for entry, row in zip(entries, rows):
        detail = {"audio": str(entry.audio), "reference": entry.text}
        for decoder, decoded in row.items():
            detail[decoder] = decoded.text
            detail[f"{decoder}_confidence"] = round(decoded.confidence, 4)
        report["details"].append(detail)
    return report
