"""WER/CER of a CTC model on a labelled manifest: greedy, and with beam search over a KenLM model.

The decoders are the server's: greedy decoding from `model.ctc`, beam search from `service.decoding`.
The fine-tuning loop scores its evaluations with `score` too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from model.ctc import CTCVocabulary
from model.transcribe import Transcriber

from .manifest import Entry
from .metrics import error_rates


class Scorer:
    """Turns logits into texts and error rates, keeping one beam-search pool (and LM) alive across calls."""

    def __init__(self, vocab: CTCVocabulary, frame_seconds: float, lm: Path | None = None, beam_width: int = 100,
                 lm_alpha: float = 0.5, lm_beta: float = 1.0):
        self.vocab, self.frame_seconds, self.beam_width = vocab, frame_seconds, beam_width
        self.search = None
        # One event loop for every call: the search's worker queue belongs to the loop that first used it.
        self._loop = asyncio.new_event_loop()
        if lm is not None:
            from service.decoding import BeamSearch

            self.search = BeamSearch(vocab, lm, lm_alpha, lm_beta, workers=1)
            self.search.start()

    def score(self, references: list[str], logits: list[np.ndarray]) -> tuple[dict, list[dict]]:
        """({"greedy": rates, "beam": rates (with an LM)}, one detail row per utterance)."""
        greedy = [self.vocab.greedy_decode(rows) for rows in logits]
        report = {"utterances": len(references), "greedy": error_rates(references, greedy)}
        details = [{"reference": reference, "greedy": text} for reference, text in zip(references, greedy)]
        if self.search is not None:
            beam = self._loop.run_until_complete(self._beam_texts(logits))
            report["beam"] = error_rates(references, beam)
            for detail, text in zip(details, beam):
                detail["beam"] = text
        return report, details

    async def _beam_texts(self, logits: list[np.ndarray]) -> list[str]:
        decoded = [await self.search.decode(rows, self.frame_seconds, self.beam_width, None, 0.0) for rows in logits]
        return [result.text for result in decoded]

    def close(self) -> None:
        if self.search is not None:
            self.search.close()
        self._loop.close()


def labelled(entries: list[Entry]) -> list[Entry]:
    chosen = [entry for entry in entries if entry.text]
    if not chosen:
        raise ValueError("the manifest has no transcribed entries to score")
    return chosen


def evaluate(transcriber: Transcriber, entries: list[Entry], lm: Path | None = None, beam_width: int = 100,
             lm_alpha: float = 0.5, lm_beta: float = 1.0) -> dict:
    """{"greedy": rates, "beam": rates (with an LM), "utterances": n, "details": [...]}."""
    entries = labelled(entries)
    logits = [transcriber.logits(transcriber.read(entry.audio)) for entry in entries]
    frame_seconds = transcriber.checkpoint.config.samples_per_frame / transcriber.sampling_rate
    scorer = Scorer(transcriber.vocab, frame_seconds, lm, beam_width, lm_alpha, lm_beta)
    try:
        report, details = scorer.score([entry.text for entry in entries], logits)
    finally:
        scorer.close()
    report["details"] = [{"audio": str(entry.audio), **detail} for entry, detail in zip(entries, details)]
    return report
