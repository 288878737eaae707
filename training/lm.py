"""A bigram language model of transcripts, as an ARPA file KenLM reads (it needs bigrams at least,
tab-separated), for beam search over a small closed vocabulary such as digit strings."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path


def write_bigram_arpa(texts: list[str], path: Path, discount: float = 0.1) -> int:
    """Seen bigrams keep 1 - `discount` of their relative frequency; the rest goes to the unigrams
    through back-off weights. Returns the number of distinct words."""
    sentences = [["<s>", *text.split(), "</s>"] for text in texts]
    unigrams = Counter(word for words in sentences for word in words[1:])
    bigrams = Counter(pair for words in sentences for pair in zip(words, words[1:]))
    history = Counter(first for first, _ in bigrams.elements())
    followers: dict[str, list[str]] = {}
    for first, second in bigrams:
        followers.setdefault(first, []).append(second)
    total = sum(unigrams.values())
    unigram = {word: count / total for word, count in unigrams.items()}
    unigram_lines, bigram_lines = [], []
    for word in ["<s>", "<unk>", *sorted(unigrams)]:
        seen = followers.get(word, [])
        backoff = discount / max(1e-9, 1 - sum(unigram[second] for second in seen)) if seen else 1.0
        probability = -99 if word == "<s>" else math.log10(unigram.get(word, 0.5 / total))
        unigram_lines.append(f"{probability:.6f}\t{word}\t{math.log10(backoff):.6f}")
    for (first, second), count in sorted(bigrams.items()):
        bigram_lines.append(f"{math.log10((1 - discount) * count / history[first]):.6f}\t{first} {second}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"\\data\\\nngram 1={len(unigram_lines)}\nngram 2={len(bigram_lines)}\n\n\\1-grams:\n"
        + "\n".join(unigram_lines)
        + "\n\n\\2-grams:\n"
        + "\n".join(bigram_lines)
        + "\n\n\\end\\\n"
    )
    return len(unigrams) - 1  # </s> is not a word
