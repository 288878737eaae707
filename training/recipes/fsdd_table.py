"""Prints the FSDD results of `training/recipes/fsdd-results.sh` as a Markdown table.

python training/recipes/fsdd_table.py [results folder (runs/fsdd-results)]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from the repository

from training.metrics_log import read_records  # noqa: E402

ROWS = {
    "full": "all training labels (2640)",
    "10pct": "10% of the labels (270)",
    "10pct-pretrained": "10% of the labels, pretrained",
    "10pct-pretrained-frozen": "10% of the labels, pretrained, feature encoder frozen",
    "selftrain": "10% of the labels + self-training",
    "selftrain-pretrained": "10% of the labels, pretrained + self-training",
}


def group(name: str) -> tuple[int, str]:
    """Leave-one-speaker-out rows after the others; scratch folds before pretrained ones."""
    if name.startswith("loso-pretrained-"):
        return 2, name
    return (1 if name.startswith("loso-") else 0), name


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/fsdd-results")
    print("| run | updates (best) | training minutes | test WER greedy | test WER with LM |")
    print("|---|---:|---:|---:|---:|")
    folds: dict[str, list[tuple[float, float]]] = {}
    for row in sorted(folder.glob("*/test.json"), key=lambda path: group(path.parent.name)):
        name = row.parent.name
        result = json.loads(row.read_text())
        records = read_records(row.parent)
        evaluations = [record for record in records if "eval" in record]
        best = evaluations[-1]["best"]["step"] if evaluations else "-"
        minutes = records[-1]["wall_seconds"] / 60
        greedy, beam = result["greedy"]["wer"], result.get("beam", {}).get("wer", float("nan"))
        if name.startswith("loso-"):
            kind = "pretrained" if name.startswith("loso-pretrained-") else "from scratch"
            folds.setdefault(kind, []).append((greedy, beam))
            label = f"leave out {name.rsplit('-', 1)[1]} (test: their 500), {kind}"
        else:
            label = ROWS.get(name, name)
        print(f"| {label} | {records[-1]['step']} ({best}) | {minutes:.1f} | {greedy:.2%} | {beam:.2%} |")
    for kind, results in folds.items():
        print(
            f"| leave one speaker out, {kind}, mean of {len(results)} | | | "
            f"{sum(g for g, _ in results) / len(results):.2%} | {sum(b for _, b in results) / len(results):.2%} |"
        )


if __name__ == "__main__":
    main()
