"""How well each pseudo-label confidence separates right transcripts from wrong ones.

    python training/recipes/confidence_curve.py SCORES.jsonl [--thresholds 0.5 0.8 0.9 ...]

SCORES.jsonl is `python -m training pseudo-label ... --scores-out` run on a manifest that has its
real text (e.g. runs/fsdd/train-rest.jsonl or the dev set): a transcript is right when it equals
that reference. For each confidence it prints the average precision (the area under the
precision/recall curve; the share of right transcripts is what a useless score gets) and, at each
threshold, the labels kept, their precision (share right) and recall (share of all right ones kept).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from model.ctc import normalize_text  # noqa: E402
from training.pseudo_label import CONFIDENCES  # noqa: E402


def average_precision(scores: list[float], right: list[bool]) -> float:
    """Mean of the precision at each right transcript, taking them from the most confident down."""
    order = sorted(range(len(scores)), key=lambda index: -scores[index])
    found, total = 0, 0.0
    for rank, index in enumerate(order, start=1):
        if right[index]:
            found += 1
            total += found / rank
    return total / found if found else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scores", type=Path)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99])
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.scores.read_text().splitlines() if line.strip()]
    rows = [row for row in rows if "reference" in row]
    if not rows:
        print(f"{args.scores}: no row has a reference (pseudo-label a manifest with text)", file=sys.stderr)
        return 1
    right = [normalize_text(row["text"]) == normalize_text(row["reference"]) for row in rows]
    print(f"{len(rows)} transcripts, {sum(right)} right ({sum(right) / len(rows):.1%})\n")
    print(
        "| confidence | average precision | "
        + " | ".join(f">= {t:g}: kept, precision, recall" for t in args.thresholds)
        + " |"
    )
    print("|---|---:|" + "---:|" * len(args.thresholds))
    for name in CONFIDENCES:
        if not all(name in row for row in rows):
            continue
        scores = [row[name] for row in rows]
        cells = []
        for threshold in args.thresholds:
            kept = [ok for score, ok in zip(scores, right) if score >= threshold]
            precision = sum(kept) / len(kept) if kept else 1.0
            recall = sum(kept) / sum(right) if sum(right) else 0.0
            cells.append(f"{len(kept)}, {precision:.3f}, {recall:.3f}")
        print(f"| {name} | {average_precision(scores, right):.3f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
