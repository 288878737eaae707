"""WER/CER of a CTC model on a labelled manifest: greedy, and with beam search over a KenLM model.

Utterances are transcribed by `model.transcribe`, as the CLI and the server transcribe them. The
fine-tuning loop scores its evaluations with `hypotheses` and `score` too.
"""

from __future__ import annotations

import numpy as np

from model.decoding import BeamOptions
from model.transcribe import DecodeOptions, Transcriber

from .manifest import Entry
from .metrics import error_rates

CHUNK = 64  # utterances read and decoded at a time: a large manifest is never held in memory whole


def hypotheses(transcriber: Transcriber, utterances: list[np.ndarray], beam: BeamOptions = BeamOptions()
               ) -> list[dict[str, str]]:
    """Each utterance's text: {"greedy": ..., "beam": ... (when the transcriber has a language model)}."""
    rows = []
    for logits in transcriber.logits(utterances):
        row = {"greedy": transcriber.decode(logits, DecodeOptions("greedy"))[0].text}
        if transcriber.lm is not None:
            row["beam"] = transcriber.decode(logits, DecodeOptions("beam", beam))[0].text
        rows.append(row)
    return rows


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


def evaluate(transcriber: Transcriber, entries: list[Entry], beam: BeamOptions = BeamOptions()) -> dict:
    """{"utterances": n, "greedy": rates, "beam": rates (with a language model), "details": [...]}."""
    entries = labelled(entries)
    rows = []
    for first in range(0, len(entries), CHUNK):
        chunk = entries[first:first + CHUNK]
        rows += hypotheses(transcriber, [transcriber.recognizer.read(entry.audio) for entry in chunk], beam)
    report = score([entry.text for entry in entries], rows)
    report["details"] = [{"audio": str(entry.audio), "reference": entry.text, **row}
                         for entry, row in zip(entries, rows)]
    return report
