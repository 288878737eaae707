"""`python -m training connect`: connected speech from one speaker's isolated recordings."""

from __future__ import annotations

from pathlib import Path


def add_parser(commands) -> None:
    connect = commands.add_parser(
        "connect",
        help="connected speech from one speaker's isolated recordings "
        "(e.g. digit strings from single digits) and its manifest",
    )
    connect.add_argument("--manifest", type=Path, required=True, help="labelled recordings to join")
    connect.add_argument("--out", type=Path, required=True, help="folder for audio/ and manifest.jsonl")
    connect.add_argument(
        "--speaker",
        required=True,
        metavar="REGEX",
        help="a regular expression on the file name whose first group is the speaker; strings "
        "never mix speakers (FSDD: '^[0-9]+_([a-z]+)_')",
    )
    connect.add_argument("--count", type=int, default=100, help="utterances to make")
    connect.add_argument(
        "--items",
        type=int,
        nargs=2,
        default=(2, 5),
        metavar=("MIN", "MAX"),
        help="recordings per utterance (default: 2 5)",
    )
    connect.add_argument(
        "--pause",
        type=float,
        nargs=2,
        default=(0.05, 0.6),
        metavar=("LOW", "HIGH"),
        help="seconds of silence before, between and after them, drawn uniformly (default: 0.05 0.6)",
    )
    connect.add_argument("--seed", type=int, default=0)
    connect.set_defaults(run=run)


def run(args) -> int:
    from ..connect import connect
    from ..manifest import read_manifest

    if args.count < 1 or not 1 <= args.items[0] <= args.items[1]:
        raise ValueError("--count must be at least 1 and --items MIN MAX have 1 <= MIN <= MAX")
    if not 0 <= args.pause[0] <= args.pause[1]:
        raise ValueError("--pause takes LOW HIGH with 0 <= LOW <= HIGH")
    entries = connect(
        read_manifest(args.manifest), args.out, args.count, *args.items, args.speaker, tuple(args.pause), args.seed
    )
    minutes = sum(entry.duration for entry in entries) / 60
    print(f"{args.out / 'manifest.jsonl'}: {len(entries)} utterances, {minutes:.1f} min")
    return 0
