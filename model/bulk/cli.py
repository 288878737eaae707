"""`python -m model transcribe`'s options for many files, and the run they start.

Any of them (or a folder among the audio) sends the command down the bulk path: inputs from a
manifest or folders, a local pool or a Ray cluster, a resumable JSONL output, per-file outputs in
txt/json/srt/vtt, and a progress bar. Without `--out`, lines are printed as for single files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ..recognizer import Recognizer
from ..transcribe import DecodeOptions, Transcriber
from .inputs import Inputs, is_url
from .journal import Journal
from .outputs import FORMATS, NEEDS_WORDS
from .pool import Backend, InProcess, LocalPool
from .run import run_bulk
from .task import TranscribeTask


def add_arguments(transcribe: argparse.ArgumentParser) -> None:
    many = transcribe.add_argument_group(
        "many files",
        "any of these, or a folder among the audio, runs the bulk path: workers, a progress bar on "
        "standard error, and with --out a resumable output",
    )
    many.add_argument(
        "--manifest",
        type=Path,
        metavar="IN",
        help="a JSONL manifest to transcribe instead of AUDIO: one object per line with 'audio' (a "
        "path relative to the manifest, an absolute path, or an http(s) URL); its other "
        "fields are copied to the output ('text' as 'reference')",
    )
    many.add_argument(
        "--out",
        type=Path,
        metavar="OUT.jsonl",
        help="write one JSON line per input (its fields, then text, confidence, duration, decoder, "
        "words with --word-timestamps; or error) instead of printing; rerunning the same "
        "command skips the inputs already there, so an interrupted run continues",
    )
    many.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="also write each transcript to DIR/<audio's name>.<format> (folders: their layout kept)",
    )
    many.add_argument(
        "--format", choices=FORMATS, help="with --output-dir: plain text, JSON, or SRT / WebVTT subtitles (default txt)"
    )
    many.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes, each loading the model once, the cores shared out between them "
        "(default 1: this process, every core); with --ray, workers on the cluster (default: "
        "one per CPU of the cluster)",
    )
    many.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the workers on a Ray cluster: 'auto' (this machine's), or HOST:PORT of its head "
        "(needs the [ray] extra; every node must see the model and audio paths, or use URLs)",
    )


def requested(args: argparse.Namespace) -> bool:
    """Whether the command takes the bulk path."""
    return any(
        getattr(args, name) is not None for name in ("manifest", "out", "output_dir", "format", "workers", "ray")
    ) or any(not is_url(audio) and Path(audio).is_dir() for audio in args.audio)


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse contradictory or missing options (parser.error exits with usage)."""
    if args.manifest is None and not args.audio:
        parser.error("give audio files or folders, or --manifest")
    if args.manifest is not None and args.audio:
        parser.error("give either audio files and folders or --manifest, not both")
    if args.format is not None and args.output_dir is None:
        parser.error("--format says how to write the files of --output-dir: give --output-dir too")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.out is not None and args.out.is_dir():
        parser.error(f"--out names a file to write, and {args.out} is a folder")


def model_reference(model: str) -> str:
    """A local model path made absolute (workers may start elsewhere); a Hub id as it is."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def run(
    args: argparse.Namespace,
    transcriber: Transcriber,
    options: DecodeOptions,
    loader: Callable[[str], Recognizer],
    cluster: Backend | None = None,
) -> int:
    """The bulk run of a parsed `transcribe` command. `transcriber`: the model the driver loaded to check
    the options (reused when the work stays in this process); `loader`: how workers load a model with no
    ONNX export; `cluster`: the Ray backend, when `--ray` was given."""
    format = args.format or "txt"
    try:
        inputs = Inputs(args.manifest, args.audio)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    task = TranscribeTask(
        model_reference(args.model),
        transcriber.lm and str(Path(transcriber.lm).resolve()),
        transcriber.lm_alpha,
        transcriber.lm_beta,
        transcriber.lexicon,
        options,
        word_timestamps=args.word_timestamps or (args.output_dir is not None and format in NEEDS_WORDS),
        alternatives=bool(args.alternatives),
        loader=loader,
    )
    if cluster is not None:
        backend = cluster
    elif (args.workers or 1) > 1:
        backend = LocalPool(args.workers)
        transcriber.close()
    else:
        backend = InProcess(state=transcriber)
    emit = None if args.out is not None else _printer(args.json, args.word_timestamps)
    print(f"transcribing with {backend.describe()}", file=sys.stderr)
    try:
        if args.out is not None:
            with Journal(args.out, task.settings()) as journal:
                summary = run_bulk(inputs, task, backend, journal, emit, args.output_dir, format)
        else:
            summary = run_bulk(inputs, task, backend, None, emit, args.output_dir, format)
    except KeyboardInterrupt:
        where = f"; the same command continues from what is in {args.out}" if args.out else ""
        print(f"\ninterrupted{where}", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as error:  # a malformed manifest line, other settings, workers that cannot start
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary.line(), file=sys.stderr)
    return 1 if summary.errors else 0


def _printer(as_json: bool, word_timestamps: bool) -> Callable[[dict], None]:
    """Print each line as the command prints single files: '<audio>\\t<text>' (and word lines), or JSON."""

    def emit(line: dict) -> None:
        if "error" in line:
            print(f"error: {line['error']}", file=sys.stderr)
        elif as_json:
            print(json.dumps(line, ensure_ascii=False), flush=True)
        else:
            words = (
                [
                    f"\t{w['start']:.3f}\t{w['end']:.3f}\t{w['word']}\t{w['confidence']:.4f}"
                    for w in line.get("words", [])
                ]
                if word_timestamps
                else []
            )
            print("\n".join([f"{line['audio']}\t{line['text']}", *words]), flush=True)

    return emit
