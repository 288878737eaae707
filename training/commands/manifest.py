"""`python -m training manifest`: a JSONL manifest of a corpus, with its splits."""

from __future__ import annotations

from pathlib import Path


def add_parser(commands) -> None:
    manifest = commands.add_parser(
        "manifest",
        help="write a JSONL manifest (audio, duration, text) of a corpus, optionally split off a dev set",
        description="Write a JSONL manifest of a corpus. Selection applies in this order: --include/--exclude, "
        "then the dev set (--dev-out with --dev-match or --dev-fraction) is carved off, then --fraction "
        "or --count keeps a random part of the rest (--rest-out gets the others).",
    )
    manifest.add_argument("--audio-dir", type=Path, help="every wav/flac/ogg/mp3 file below this folder")
    manifest.add_argument(
        "--transcripts",
        type=Path,
        action="append",
        help="TSV of audio<TAB>text, paths relative to the TSV (a header naming audio and text "
        "columns is allowed); alone, it lists the corpus; with --audio-dir, it labels it; "
        "may be given more than once",
    )
    manifest.add_argument("--out", type=Path, required=True, help="manifest to write (.jsonl)")
    manifest.add_argument("--min-seconds", type=float, default=0.0)
    manifest.add_argument("--max-seconds", type=float, default=float("inf"))
    manifest.add_argument("--include", metavar="REGEX", help="keep only files whose path matches (e.g. '_theo_')")
    manifest.add_argument("--exclude", metavar="REGEX", help="leave out files whose path matches")
    manifest.add_argument("--dev-out", type=Path, help="write a development set here, taken out of --out")
    manifest.add_argument(
        "--dev-match",
        metavar="REGEX",
        help="the dev set: files whose path matches (e.g. '_5\\.wav$' for FSDD's recording 5)",
    )
    manifest.add_argument(
        "--dev-fraction",
        type=float,
        help="the dev set: this fraction of the files, drawn at random within each transcript",
    )
    manifest.add_argument(
        "--fraction",
        type=float,
        help="write only this fraction of the (non-dev) files to --out, drawn at random within "
        "each transcript (e.g. 0.1 for a 10%% labelled subset)",
    )
    manifest.add_argument("--count", type=int, help="like --fraction, but this many files")
    manifest.add_argument("--rest-out", type=Path, help="with --fraction or --count: write the files left out here")
    manifest.add_argument("--seed", type=int, default=0, help="for --dev-fraction and --fraction")
    manifest.set_defaults(run=run)


def run(args) -> int:
    from ..manifest import build_manifest, split, write_manifest

    if args.audio_dir is None and args.transcripts is None:
        raise ValueError("give --audio-dir, --transcripts or both")
    if args.dev_out is not None and (args.dev_match is None) == (args.dev_fraction is None):
        raise ValueError("--dev-out needs one of --dev-match or --dev-fraction")
    for name in ("dev_fraction", "fraction"):
        value = getattr(args, name)
        if value is not None and not 0 < value < 1:
            raise ValueError(f"--{name.replace('_', '-')} is a fraction between 0 and 1, got {value}")
    if args.fraction is not None and args.count is not None:
        raise ValueError("give --fraction or --count, not both")
    if args.count is not None and args.count < 1:
        raise ValueError(f"--count is a number of files, at least 1, got {args.count}")
    if args.rest_out is not None and args.fraction is None and args.count is None:
        raise ValueError("--rest-out goes with --fraction or --count")
    entries, skipped = build_manifest(
        args.audio_dir, args.transcripts, args.min_seconds, args.max_seconds, args.include, args.exclude
    )
    outputs = {}
    if args.dev_out is not None:
        entries, outputs[args.dev_out] = split(entries, args.dev_match, args.dev_fraction or 0.0, args.seed)
    if args.fraction is not None or args.count is not None:
        rest, entries = split(entries, fraction=args.fraction or 0.0, seed=args.seed, count=args.count)
        if args.rest_out is not None:
            outputs[args.rest_out] = rest
    outputs = {args.out: entries, **outputs}
    for path, chosen in outputs.items():
        write_manifest(chosen, path)
        labelled = sum(entry.text is not None for entry in chosen)
        hours = sum(entry.duration for entry in chosen) / 3600
        print(
            f"{path}: {len(chosen)} files ({labelled} with text), {hours:.2f} h"
            + (f"; {skipped} left out for duration" if path == args.out else "")
        )
    if not entries:
        raise ValueError(f"{args.out}: no files left to write (check --include/--exclude and the splits)")
    return 0
