"""Command line: `python -m training manifest | pretrain | evaluate ...`.

CTC fine-tuning, synthetic speech and pseudo-labelling are still to come.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description="train and evaluate wav2vec 2.0 models")
    commands = parser.add_subparsers(dest="command", required=True)

    manifest = commands.add_parser("manifest", help="write a JSONL manifest (audio, duration, text) of a corpus")
    manifest.add_argument("--audio-dir", type=Path, help="every wav/flac/ogg/mp3 file below this folder")
    manifest.add_argument("--transcripts", type=Path,
                          help="TSV of audio<TAB>text, paths relative to the TSV (a header naming audio and text "
                               "columns is allowed); alone, it lists the corpus; with --audio-dir, it labels it")
    manifest.add_argument("--out", type=Path, required=True, help="manifest to write (.jsonl)")
    manifest.add_argument("--min-seconds", type=float, default=0.0)
    manifest.add_argument("--max-seconds", type=float, default=float("inf"))

    evaluate = commands.add_parser("evaluate", help="WER and CER of a CTC model on a labelled manifest")
    evaluate.add_argument("--model", required=True, help="Hugging Face folder or Hub id, or fairseq checkpoint")
    evaluate.add_argument("--manifest", type=Path, required=True)
    evaluate.add_argument("--lm", type=Path, help="KenLM model (ARPA or binary): also score beam search with it")
    evaluate.add_argument("--beam-width", type=int, default=100)
    evaluate.add_argument("--lm-alpha", type=float, default=0.5)
    evaluate.add_argument("--lm-beta", type=float, default=1.0)
    evaluate.add_argument("--details", type=Path, help="write each utterance's reference and hypotheses (JSONL)")

    pretrain = commands.add_parser("pretrain", help="self-supervised pretraining on unlabeled audio")
    pretrain.add_argument("--config", type=Path, help="YAML or JSON config (presets in training/configs/)")
    pretrain.add_argument("--resume", type=Path, help="a checkpoint folder of this run to continue from")
    pretrain.add_argument("overrides", nargs="*", help="key=value settings over the config, e.g. max_steps=1000")

    args = parser.parse_args(argv)
    try:
        if args.command == "manifest":
            return _manifest(args)
        if args.command == "pretrain":
            return _pretrain(args)
        return _evaluate(args)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _manifest(args) -> int:
    from .manifest import build_manifest, write_manifest

    if args.audio_dir is None and args.transcripts is None:
        raise ValueError("give --audio-dir, --transcripts or both")
    entries, skipped = build_manifest(args.audio_dir, args.transcripts, args.min_seconds, args.max_seconds)
    write_manifest(entries, args.out)
    labelled = sum(entry.text is not None for entry in entries)
    hours = sum(entry.duration for entry in entries) / 3600
    print(f"{args.out}: {len(entries)} files ({labelled} with text), {hours:.2f} h; {skipped} left out for duration")
    return 0


def _pretrain(args) -> int:
    from .config import PretrainConfig, load_config
    from .pretrain import pretrain

    config = load_config(PretrainConfig, args.config, args.overrides)
    if not config.manifest:
        raise ValueError("no manifest: set manifest in the config or as manifest=PATH")
    last = pretrain(config, args.resume)
    print(f"saved {last}")
    return 0


def _evaluate(args) -> int:
    from model.checkpoint import CheckpointError
    from model.hub import ModelNotFoundError
    from model.transcribe import Transcriber

    from .evaluate import evaluate
    from .manifest import read_manifest

    try:
        transcriber = Transcriber.load(args.model)
    except (ModelNotFoundError, CheckpointError) as error:
        raise ValueError(str(error)) from None
    report = evaluate(transcriber, read_manifest(args.manifest), args.lm, args.beam_width, args.lm_alpha,
                      args.lm_beta)
    details = report.pop("details")
    if args.details:
        args.details.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in details))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
