"""The language model's weight and word bonus, tried on a dev set: the model's logits are computed once,
then every (alpha, beta) pair decodes them with the default search (within the lexicon when given).

  python training/recipes/tune_lm.py --model MODEL --manifest DEV.jsonl --lm LM [--lexicon FILE]
      [--alpha 0.3 0.5 ...] [--beta 0 0.5 ...] [--empty CLIPS.jsonl]

Leave-speakers-out folds (training/recipes/digits-multi-folds.sh): give --model, --manifest and --lm once
per fold, in the same order, and each fold's held-out speakers are decoded with the fold's own model
and LM.
--empty: clips the model should write nothing for, or nothing it is sure of (noise, speech that is not
digits; their transcripts are ignored), transcribed by the first model: the words written on them
and the share left empty or below --min-confidence, since a larger word bonus buys dropped words
back with invented ones.

Prints one line per pair, best first: WER, substitutions, deletions, insertions.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from the repository

from model.decoding import MIN_CONFIDENCE, BeamSearchDecoder  # noqa: E402
from model.lexicon import read_lexicon  # noqa: E402
from model.loading import load_recognizer  # noqa: E402
from training.manifest import read_manifests  # noqa: E402
from training.metrics import error_rates  # noqa: E402


def logits_of(recognizer, manifests: str, labelled: bool) -> tuple[list[np.ndarray], list[str]]:
    """The logits and transcripts of the manifests' entries (only those with a transcript if `labelled`)."""
    entries = [entry for entry in read_manifests(manifests) if entry.text or not labelled]
    return recognizer.logits([recognizer.read(entry.audio) for entry in entries]), [entry.text for entry in entries]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, action="append", help="once, or once per --manifest")
    parser.add_argument("--manifest", required=True, action="append", help="labelled manifests, comma-separated")
    parser.add_argument("--lm", required=True, type=Path, action="append", help="once, or once per --manifest")
    parser.add_argument("--lexicon", type=Path)
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.2, 0.35, 0.5, 0.75, 1.0, 1.5])
    parser.add_argument("--beta", type=float, nargs="+", default=[-1.0, 0.0, 1.0, 2.0, 3.0])
    parser.add_argument("--empty", help="manifests of clips with nothing to say, comma-separated")
    parser.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE, help="for --empty (%(default)s)")
    args = parser.parse_args()
    folds = len(args.manifest)
    for flag, given in (("--model", args.model), ("--lm", args.lm)):
        if len(given) not in (1, folds):
            parser.error(f"{len(given)} {flag} for {folds} --manifest: give one, or one per manifest")
    models, lms = (given * folds if len(given) == 1 else given for given in (args.model, args.lm))
    recognizers = {model: load_recognizer(model) for model in args.model}  # each loaded once
    logits: list[list[np.ndarray]] = []  # each fold's
    references: list[str] = []
    for model, manifests in zip(models, args.manifest):
        fold_logits, texts = logits_of(recognizers[model], manifests, labelled=True)
        logits.append(fold_logits)
        references += texts
    recognizer = recognizers[args.model[0]]
    empty = logits_of(recognizer, args.empty, labelled=False)[0] if args.empty else []
    lexicon = read_lexicon(args.lexicon) if args.lexicon else None
    results = []
    for alpha, beta in itertools.product(args.alpha, args.beta):
        searches = [BeamSearchDecoder(recognizer.vocab, lm, alpha, beta, lexicon) for lm in lms]
        texts = [
            searches[fold].decode(item, recognizer.frame_seconds).text
            for fold, fold_logits in enumerate(logits)
            for item in fold_logits
        ]
        on_empty = [searches[0].decode(item, recognizer.frame_seconds) for item in empty]
        invented = sum(len(decoded.words) for decoded in on_empty)
        unsure = sum(not decoded.words or decoded.confidence < args.min_confidence for decoded in on_empty)
        results.append((error_rates(references, texts), alpha, beta, invented, unsure))
    for rates, alpha, beta, invented, unsure in sorted(results, key=lambda row: row[0]["wer"]):
        print(
            f"alpha {alpha:<5} beta {beta:<5} WER {100 * rates['wer']:6.2f}%  S {rates['substitutions']:3d} "
            f"D {rates['deletions']:3d} I {rates['insertions']:3d}  ({rates['words']} words)"
            + (f"  empty clips: {invented} words, {unsure} of {len(empty)} empty or unsure" if args.empty else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
