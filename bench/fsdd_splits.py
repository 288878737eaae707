"""Manifests for the Free Spoken Digit Dataset experiments of the README ("Train and evaluate").

    python bench/fsdd_splits.py --data ../shared/data/fsdd --out runs/fsdd

writes, from the official split (test: recordings 0-4 of each digit and speaker):
  train.jsonl        the official training set less the development set (2640)
  dev.jsonl          recording 5 of each digit and speaker (60): picks the best checkpoint
  test.jsonl         the official test set (300)
  train-10pct.jsonl  10% of the official training labels (270), drawn at random (seed 0) from train.jsonl
  unlabeled.jsonl    the official training audio without its text, for pretraining
  train-rest-unlabeled.jsonl  train.jsonl less train-10pct.jsonl, without text: for pseudo-labelling
  words.arpa         a bigram language model of the training transcripts (ARPA), for beam search
  loso-SPEAKER/{train,dev,test}.jsonl   leave one speaker out: train on the other five (recordings 5-49,
                     less each one's recording 5 for dev), test on all 500 of SPEAKER's
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.manifest import build_manifest, write_manifest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the FSDD folder (recordings/ and transcripts_*.tsv)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    train, _ = build_manifest(transcripts=args.data / "transcripts_train.tsv")
    test, _ = build_manifest(transcripts=args.data / "transcripts_test.tsv")

    def index(entry) -> int:  # {digit}_{speaker}_{index}.wav
        return int(entry.audio.stem.split("_")[2])

    def speaker(entry) -> str:
        return entry.audio.stem.split("_")[1]

    dev = [entry for entry in train if index(entry) == 5]
    rest = [entry for entry in train if index(entry) != 5]
    few = random.Random(0).sample(rest, round(0.1 * len(train)))
    write_manifest(rest, args.out / "train.jsonl")
    write_manifest(dev, args.out / "dev.jsonl")
    write_manifest(test, args.out / "test.jsonl")
    write_manifest(few, args.out / "train-10pct.jsonl")
    write_manifest([replace(entry, text=None) for entry in train], args.out / "unlabeled.jsonl")
    write_manifest([replace(entry, text=None) for entry in rest if entry not in few],
                   args.out / "train-rest-unlabeled.jsonl")
    write_bigram_arpa([entry.text for entry in rest], args.out / "words.arpa")
    everyone = train + test
    for held_out in sorted({speaker(entry) for entry in everyone}):
        others = [entry for entry in everyone if speaker(entry) != held_out]
        fold = args.out / f"loso-{held_out}"
        write_manifest([entry for entry in others if index(entry) != 5], fold / "train.jsonl")
        write_manifest([entry for entry in others if index(entry) == 5], fold / "dev.jsonl")
        write_manifest([entry for entry in everyone if speaker(entry) == held_out], fold / "test.jsonl")
    print(f"{args.out}: train {len(rest)}, dev {len(dev)}, test {len(test)}, 10% {len(few)}, "
          f"unlabeled {len(train)}; leave-one-speaker-out folds in {args.out}/loso-*")


def write_bigram_arpa(texts: list[str], path: Path, discount: float = 0.1) -> None:
    """A bigram language model of the transcripts (KenLM reads bigrams and up): seen bigrams keep
    1 - `discount` of their relative frequency, the rest goes to the unigrams through back-off weights."""
    sentences = [["<s>", *text.split(), "</s>"] for text in texts]
    unigrams = Counter(word for words in sentences for word in words[1:])
    bigrams = Counter(pair for words in sentences for pair in zip(words, words[1:]))
    history = Counter(first for first, _ in bigrams.elements())
    total = sum(unigrams.values())
    unigram = {word: count / total for word, count in unigrams.items()}
    unigram_lines, bigram_lines = [], []
    for word in ["<s>", "<unk>", *sorted(unigrams)]:
        seen = [second for first, second in bigrams if first == word]
        backoff = discount / max(1e-9, 1 - sum(unigram[second] for second in seen)) if seen else 1.0
        probability = -99 if word == "<s>" else math.log10(unigram.get(word, 0.5 / total))
        unigram_lines.append(f"{probability:.6f}\t{word}\t{math.log10(backoff):.6f}")
    for (first, second), count in sorted(bigrams.items()):
        bigram_lines.append(f"{math.log10((1 - discount) * count / history[first]):.6f}\t{first} {second}")
    path.write_text(f"\\data\\\nngram 1={len(unigram_lines)}\nngram 2={len(bigram_lines)}\n\n\\1-grams:\n"
                    + "\n".join(unigram_lines) + "\n\n\\2-grams:\n" + "\n".join(bigram_lines) + "\n\n\\end\\\n")


if __name__ == "__main__":
    main()
