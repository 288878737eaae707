"""WER/CER of a CTC model on a labelled manifest: greedy, and with beam search over a KenLM model."""

from __future__ import annotations

import asyncio
from pathlib import Path

from model.transcribe import Transcriber

from .manifest import Entry
from .metrics import error_rates


def evaluate(transcriber: Transcriber, entries: list[Entry], lm: Path | None = None, beam_width: int = 100,
             lm_alpha: float = 0.5, lm_beta: float = 1.0) -> dict:
    """{"greedy": rates, "beam": rates (with an LM), "utterances": [...]}; the decoders are the server's."""
    labelled = [entry for entry in entries if entry.text]
    if not labelled:
        raise ValueError("the manifest has no transcribed entries to score")
    logits = [transcriber.logits(transcriber.read(entry.audio)) for entry in labelled]
    greedy = [transcriber.vocab.greedy_decode(rows) for rows in logits]
    references = [entry.text for entry in labelled]
    report = {"utterances": len(labelled), "greedy": error_rates(references, greedy)}
    details = [{"audio": str(entry.audio), "reference": entry.text, "greedy": text}
               for entry, text in zip(labelled, greedy)]
    if lm is not None:
        beam = asyncio.run(_beam_texts(transcriber, logits, lm, beam_width, lm_alpha, lm_beta))
        report["beam"] = error_rates(references, beam)
        for detail, text in zip(details, beam):
            detail["beam"] = text
    report["details"] = details
    return report


async def _beam_texts(transcriber: Transcriber, logits: list, lm: Path, beam_width: int, alpha: float,
                      beta: float) -> list[str]:
    from service.decoding import BeamSearch

    search = BeamSearch(transcriber.vocab, lm, alpha, beta, workers=1)
    try:
        frame_seconds = transcriber.checkpoint.config.samples_per_frame / transcriber.sampling_rate
        decoded = [await search.decode(rows, frame_seconds, beam_width, None, 0.0) for rows in logits]
    finally:
        search.close()
    return [result.text for result in decoded]
