"""Word and character error rates, on normalised text."""

from __future__ import annotations

import jiwer  # the standard WER/CER implementation (edit distance over words and characters)

from model.ctc import normalize_text


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus-level WER and CER (errors over reference words / characters, not a mean of rates)."""
    references = [normalize_text(text) for text in references]
    hypotheses = [normalize_text(text) for text in hypotheses]
    if not any(references):
        raise ValueError("every reference is empty after normalisation")
    words = jiwer.process_words(references, hypotheses)
    characters = jiwer.process_characters(references, hypotheses)
    return {
        "wer": words.wer,
        "cer": characters.cer,
        "words": sum(len(r.split()) for r in references),
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
    }
