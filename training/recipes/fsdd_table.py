"""Prints the FSDD results of `training/recipes/fsdd-results.sh` as a Markdown table.

    python training/recipes/fsdd_table.py [results folder (runs/fsdd-results)]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = {"full": "all training labels (2640)", "10pct": "10% of the labels (270)"}


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/fsdd-results")
    print("| run | updates (best) | training minutes | test WER greedy | test WER with LM |")
    print("|---|---:|---:|---:|---:|")
    loso = []
    for row in sorted(folder.glob("*/test.json"), key=lambda path: (path.parent.name.startswith("loso"),
                                                                      path.parent.name)):
        name = row.parent.name
        result = json.loads(row.read_text())
        records = [json.loads(line) for line in (row.parent / "metrics.jsonl").read_text().splitlines()]
        evaluations = [record for record in records if "eval" in record]
        best = evaluations[-1]["best"]["step"] if evaluations else "-"
        minutes = records[-1]["wall_seconds"] / 60
        greedy, beam = result["greedy"]["wer"], result.get("beam", {}).get("wer", float("nan"))
        if name.startswith("loso-"):
            loso.append((greedy, beam))
            label = f"leave out {name[5:]} (test: their 500)"
        else:
            label = ROWS.get(name, name)
        print(f"| {label} | {records[-1]['step']} ({best}) | {minutes:.1f} | {greedy:.2%} | {beam:.2%} |")
    if loso:
        print(f"| leave one speaker out, mean of {len(loso)} | | | {sum(g for g, _ in loso) / len(loso):.2%} "
              f"| {sum(b for _, b in loso) / len(loso):.2%} |")


if __name__ == "__main__":
    main()
