"""`python -m training synth`: a synthetic English corpus and its manifest."""

from __future__ import annotations

from pathlib import Path

from ..synth import DEFAULT_VOICES


def add_parser(commands) -> None:
    synth = commands.add_parser(
        "synth", help="a synthetic English corpus (espeak-ng, flite and Festival voices) and its manifest"
    )
    source = synth.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", type=Path, help="sentences, one per line (.gz read as gzip)")
    source.add_argument(
        "--digits",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="random digit strings of MIN-MAX digits instead, e.g. 'four one five oh two'",
    )
    synth.add_argument(
        "--oh-fraction",
        type=float,
        default=0.3,
        help="with --digits: how often a zero is said 'oh' (default: %(default)s)",
    )
    synth.add_argument(
        "--zero-fraction",
        type=float,
        help="with --digits: how often a digit is a zero, e.g. 0.3 for more 'oh' in the strings "
        "(default: every digit as often as the others)",
    )
    synth.add_argument("--out", type=Path, required=True, help="folder for audio/ and manifest.jsonl")
    synth.add_argument("--count", type=int, default=100, help="utterances to make")
    synth.add_argument(
        "--voices",
        default=",".join(DEFAULT_VOICES),
        help="comma-separated espeak:NAME / flite:NAME / festival:NAME voices, or `english` for every "
        "English voice installed; each utterance's voice is drawn at random, each engine as "
        "often as the others (default: %(default)s)",
    )
    synth.add_argument("--min-words", type=int, default=3, help="with --text")
    synth.add_argument("--max-words", type=int, default=20, help="with --text")
    synth.add_argument(
        "--without-words", metavar="WORD,...", help="with --text: only sentences that contain none of these words"
    )
    synth.add_argument(
        "--empty-text",
        action="store_true",
        help="write an empty transcript for every utterance: speech a model must not transcribe "
        "(e.g. English sentences without a digit word, for a digits model)",
    )
    synth.add_argument(
        "--speed",
        type=float,
        nargs=2,
        default=(0.8, 1.2),
        metavar=("LOW", "HIGH"),
        help="speaking-rate factor, drawn uniformly per utterance",
    )
    synth.add_argument(
        "--pitch",
        type=float,
        nargs=2,
        default=(0.7, 1.3),
        metavar=("LOW", "HIGH"),
        help="pitch factor, drawn uniformly per utterance",
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=4, help="synthesizer processes at once")
    synth.set_defaults(run=run)


def run(args) -> int:
    from dataclasses import replace

    from ..manifest import write_manifest
    from ..synth import digit_strings, parse_voices, pick_sentences, synthesize

    if args.count < 1 or args.workers < 1:
        raise ValueError("--count and --workers must be at least 1")
    if not 0 < args.speed[0] <= args.speed[1] or not 0 < args.pitch[0] <= args.pitch[1]:
        raise ValueError("--speed and --pitch take LOW HIGH with 0 < LOW <= HIGH")
    voices = parse_voices(args.voices)
    if args.digits:
        if not 1 <= args.digits[0] <= args.digits[1]:
            raise ValueError("--digits takes MIN MAX with 1 <= MIN <= MAX")
        if not 0 <= args.oh_fraction <= 1:
            raise ValueError("--oh-fraction is between 0 and 1")
        if args.zero_fraction is not None and not 0 <= args.zero_fraction <= 1:
            raise ValueError("--zero-fraction is between 0 and 1")
        sentences = digit_strings(args.count, *args.digits, args.oh_fraction, args.seed, args.zero_fraction)
    else:
        if not args.min_words <= args.max_words or args.min_words < 1:
            raise ValueError("--min-words must be at least 1 and at most --max-words")
        without = {word.strip() for word in (args.without_words or "").split(",") if word.strip()}
        sentences = pick_sentences(args.text, args.count, args.min_words, args.max_words, args.seed, without)
    entries = synthesize(
        sentences, args.out, args.count, voices, tuple(args.speed), tuple(args.pitch), args.seed, args.workers
    )
    if args.empty_text:
        entries = [replace(entry, text="") for entry in entries]
        write_manifest(entries, args.out / "manifest.jsonl")
    minutes = sum(entry.duration for entry in entries) / 60
    print(f"{args.out / 'manifest.jsonl'}: {len(entries)} utterances, {minutes:.1f} min, {len(voices)} voices")
    return 0
