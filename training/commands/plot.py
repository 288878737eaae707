"""`python -m training plot RUN [--out FILE.png]`: a run's loss and WER curves as a PNG."""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(commands) -> None:
    plot = commands.add_parser(
        "plot",
        help="save a run's training loss and evaluation WER curves as a PNG",
        description="Draws a pretrain or finetune run's curves from its metrics.jsonl: the training loss "
        "by update and, where the run evaluated, the WER in percent (greedy, and with the LM).",
    )
    plot.add_argument(
        "folder", metavar="RUN", type=Path, help="the run folder (the output_dir of pretrain or finetune)"
    )
    plot.add_argument("--out", type=Path, help="the PNG to write (default: RUN/curves.png)")
    plot.set_defaults(run=run)


def run(args) -> int:
    from ..plot import plot_run

    try:
        written = plot_run(args.folder, args.out)
    except ValueError as error:  # no such run, no metrics, no matplotlib: a mistake to fix, as a usage error
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(written)
    return 0
