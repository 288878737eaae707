"""The language model's weight and word bonus, tried on a dev set: the model's logits are computed once,
then every (alpha, beta) pair decodes them with the default search (within the lexicon when given).

  python training/recipes/tune_lm.py --model MODEL --manifest DEV.jsonl --lm LM [--lexicon FILE]
      [--alpha 0.3 0.5 ...] [--beta 0 0.5 ...]

Prints one line per pair, best first: WER, substitutions, deletions, insertions.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from the repository

from model.decoding import BeamSearchDecoder  # noqa: E402
from model.lexicon import read_lexicon  # noqa: E402
from model.loading import load_recognizer  # noqa: E402
from training.manifest import read_manifests  # noqa: E402
from training.metrics import error_rates  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--manifest", required=True, help="labelled manifests, comma-separated")
    parser.add_argument("--lm", required=True, type=Path)
    parser.add_argument("--lexicon", type=Path)
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.2, 0.35, 0.5, 0.75, 1.0, 1.5])
    parser.add_argument("--beta", type=float, nargs="+", default=[-1.0, 0.0, 1.0, 2.0, 3.0])
    args = parser.parse_args()
    recognizer = load_recognizer(args.model)
    entries = [entry for entry in read_manifests(args.manifest) if entry.text]
    logits = recognizer.logits([recognizer.read(entry.audio) for entry in entries])
    lexicon = read_lexicon(args.lexicon) if args.lexicon else None
    references = [entry.text for entry in entries]
    results = []
    for alpha, beta in itertools.product(args.alpha, args.beta):
        search = BeamSearchDecoder(recognizer.vocab, args.lm, alpha, beta, lexicon)
        texts = [search.decode(item, recognizer.frame_seconds).text for item in logits]
        rates = error_rates(references, texts)
        results.append((rates["wer"], alpha, beta, rates))
    for wer, alpha, beta, rates in sorted(results, key=lambda row: row[0]):
        print(
            f"alpha {alpha:<5} beta {beta:<5} WER {100 * wer:6.2f}%  S {rates['substitutions']:3d} "
            f"D {rates['deletions']:3d} I {rates['insertions']:3d}  ({rates['words']} words)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
