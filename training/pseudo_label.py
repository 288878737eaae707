"""`python -m training pseudo-label`: self-training's labels. A fine-tuned model transcribes unlabeled
audio (beam search with a KenLM model when given, else greedy); utterances it is confident about
become a labelled manifest, optionally joined with the real labels to fine-tune on both.

Confidence is the server's word confidence (the mean probability of the best token over a word's
frames), averaged over the utterance's words.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from model.transcribe import Transcriber

from .manifest import Entry


@dataclass
class Labelled:
    entry: Entry
    confidence: float


def pseudo_label(transcriber: Transcriber, entries: list[Entry], lm: Path | None = None, beam_width: int = 100,
                 lm_alpha: float = 0.5, lm_beta: float = 1.0) -> list[Labelled]:
    """Every entry transcribed, with its confidence (0 for an empty transcript)."""
    from service.decoding import BeamSearch, greedy_decode

    frame_seconds = transcriber.checkpoint.config.samples_per_frame / transcriber.sampling_rate
    search = BeamSearch(transcriber.vocab, lm, lm_alpha, lm_beta, workers=1) if lm is not None else None
    if search is not None:
        search.start()
    # One event loop for every entry: the search's worker queue belongs to the loop that first used it.
    loop = asyncio.new_event_loop()

    async def decode(logits):
        if search is None:
            return greedy_decode(transcriber.vocab, logits, frame_seconds)
        return await search.decode(logits, frame_seconds, beam_width, None, 0.0)

    results = []
    try:
        for entry in tqdm(entries, unit="utt", dynamic_ncols=True):
            decoded = loop.run_until_complete(decode(transcriber.logits(transcriber.read(entry.audio))))
            words = decoded.words
            confidence = sum(word.confidence for word in words) / len(words) if words else 0.0
            results.append(Labelled(Entry(entry.audio, entry.duration, decoded.text), confidence))
    finally:
        if search is not None:
            search.close()
        loop.close()
    return results


def confident(labelled: list[Labelled], min_confidence: float) -> list[Entry]:
    return [item.entry for item in labelled if item.entry.text and item.confidence >= min_confidence]
