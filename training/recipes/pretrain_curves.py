"""The learning curves of pretraining runs (their metrics.jsonl) as a Markdown table: contrastive loss,
accuracy (the share of masked frames whose true latent scores highest among the distractors) and
codebook perplexity, each averaged over a window of updates.

    python training/recipes/pretrain_curves.py RUN_FOLDER... [--window 100]

Chance accuracy is about 1 / (1 + num_negatives); the contrastive loss starts near ln(1 + num_negatives).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from the repository

from training.metrics_log import read_records  # noqa: E402


def windows(records: list[dict], size: int) -> list[tuple[int, dict[str, float]]]:
    """(last update, means) of consecutive windows of `size` updates."""
    out, group = [], []
    for record in records:
        group.append(record)
        if record["step"] % size == 0 or record is records[-1]:
            means = {
                key: sum(item[key] for item in group) / len(group) for key in ("contrastive", "accuracy", "perplexity")
            }
            out.append((record["step"], means))
            group = []
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--window", type=int, default=100, help="updates per row (%(default)s)")
    args = parser.parse_args()
    for run in args.runs:
        try:
            records = [record for record in read_records(run) if "accuracy" in record]
        except ValueError:  # not a run folder (a glob's other matches)
            continue
        if not records:
            continue
        speed = records[-1].get("audio_seconds_per_second", float("nan"))
        print(f"\n{run.name} ({records[-1]['step']} updates, {speed} audio-s/s)\n")
        print("| updates to | contrastive loss | accuracy | perplexity |")
        print("|---:|---:|---:|---:|")
        for step, means in windows(records, args.window):
            print(f"| {step} | {means['contrastive']:.3f} | {means['accuracy']:.1%} | {means['perplexity']:.1f} |")


if __name__ == "__main__":
    main()
