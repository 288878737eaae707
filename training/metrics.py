"""Word and character error rates, on normalised text: fractions in what programs read (JSON),
percent in what people read (`percent`, `rates_line`)."""

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


def percent(rate: float) -> str:
    """An error rate (a fraction) as people read it: 0.032667 -> "3.27%"."""
    return f"{100 * rate:.2f}%"


def rates_line(report: dict) -> str:
    """An evaluation report's rates in one line: "greedy WER 3.27% CER 1.20%, beam WER 2.00% CER 0.90%"."""
    return ", ".join(
        f"{decoder} WER {percent(report[decoder]['wer'])} CER {percent(report[decoder]['cer'])}"
        for decoder in ("greedy", "beam")
        if decoder in report
    )
