"""Command line: `python -m training manifest | lm | synth | connect | package | pseudo-label | evaluate |
pretrain | finetune | plot ...`; each command's parser and code are in `training.commands`."""

from __future__ import annotations

import argparse
import sys

from .commands import COMMANDS


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m training", description="train and evaluate wav2vec 2.0 models")
    commands = root.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
