"""Command line: `python -m model transcribe --model MODEL AUDIO [AUDIO ...]` (files or folders, or `--manifest`:
see model.bulk), `python -m model convert` and `python -m model features` (model/features.py)."""

from __future__ import annotations

import argparse
import json
import sys

from . import bulk, features
from .audio import AudioError
from .bulk.cli import add_arguments as add_bulk_arguments
from .decoding import DecoderStartError
from .hub import ModelNotFoundError
from .loading import load_recognizer
from .options import (
    OptionError,
    add_decode_arguments,
    add_language_model_arguments,
    check_options,
    choose_decoder,
    decode_options_from_args,
)
from .package import DEFAULT_MODEL
from .transcribe import Transcriber, Transcript, model_decoding


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model", description="wav2vec 2.0 CTC models")
    commands = parser.add_subparsers(dest="command", required=True)

    transcribe = commands.add_parser("transcribe", help="print '<path>\\t<transcript>' for each audio file")
    transcribe.add_argument(
        "--model",
        default=str(DEFAULT_MODEL),
        help="a model folder that ships (checkpoint/ inside), Hugging Face model folder or Hub "
        "id, fairseq fine-tuned checkpoint (.pt), or a folder written by `python -m export "
        "onnx` (run with ONNX Runtime) (default: the shipped digits model, models/digits)",
    )
    add_language_model_arguments(transcribe)
    add_decode_arguments(transcribe)  # --decoder, --beam-width, --hotwords, --alternatives, --phrases, ...
    transcribe.add_argument(
        "--word-timestamps",
        action="store_true",
        help="each word's start and end (seconds) and confidence: after the transcript, one "
        "line per word, '\\t<start>\\t<end>\\t<word>\\t<confidence>'; with --json, as 'words'",
    )
    transcribe.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per file and line: audio, text, confidence, duration, decoder "
        "(and words, and alternatives when asked for)",
    )
    transcribe.add_argument(
        "audio", nargs="*", help="audio files (wav, flac, ogg, mp3, any sample rate) or folders of them"
    )
    add_bulk_arguments(transcribe)

    convert = commands.add_parser("convert", help="save any loadable checkpoint as a Hugging Face model folder")
    convert.add_argument("--model", required=True, help="Hugging Face folder or Hub id, or fairseq checkpoint (.pt)")
    convert.add_argument("--dictionary", help="fairseq dict.ltr.txt, if not beside a fine-tuned fairseq checkpoint")
    convert.add_argument("--out", required=True, help="folder to write")

    features.add_command(commands)

    args = parser.parse_args(argv)
    if args.command == "features":
        return features.run(args)
    if args.command == "transcribe":
        for flag, off in (("lm", "no_lm"), ("lexicon", "no_lexicon")):
            if getattr(args, flag) and getattr(args, off):
                parser.error(f"--{flag} and --{off.replace('_', '-')} contradict each other")
        try:
            options = decode_options_from_args(args)
        except OptionError as error:
            parser.error(str(error))
        many = bulk.cli.requested(args)
        if options.beam.alternatives and not (args.json or args.out):
            parser.error("--alternatives are printed with --json or --out only")
        if many:
            bulk.cli.check(parser, args)
        elif not args.audio:
            parser.error("give audio files or folders, or --manifest")
    try:
        if args.command == "convert":
            from .pytorch.checkpoint import load_checkpoint  # torch loads in a second or two: only when needed

            folder = load_checkpoint(args.model, args.dictionary).save(args.out)
            print(f"saved {folder}")
            return 0
        lm, lexicon, lm_alpha, lm_beta = model_decoding(
            args.model, args.lm, args.no_lm, args.lexicon, args.no_lexicon, args.lm_alpha, args.lm_beta
        )
        # Many files run the model's ONNX export where it has one, as the server does (see model.bulk.task).
        recognizer = (
            bulk.task.load_bulk_recognizer(args.model, loader=load_recognizer) if many else load_recognizer(args.model)
        )
        transcriber = Transcriber(recognizer, lm, lm_alpha, lm_beta, lexicon=lexicon)
        check_options(options, transcriber.recognizer.vocab, lm is not None)  # OptionError: a ValueError
        if choose_decoder(options, lm is not None) == "beam":
            # A language model KenLM refuses, or a search that cannot run, fails here, once, not on every file.
            transcriber.beam_search().check(options.beam)
        cluster = _ray_backend(args.ray, args.workers) if many and args.ray else None
    except (ModelNotFoundError, OSError, ValueError, ImportError) as error:  # CheckpointError: a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 1
    except DecoderStartError as error:
        print(
            f"error: the beam-search decoder could not be built (language model {lm}, "
            f"{'lexicon of ' + str(len(lexicon)) + ' words' if lexicon else 'no lexicon'}): {error}",
            file=sys.stderr,
        )
        return 1

    if many:
        return bulk.cli.run(args, transcriber, options, load_recognizer, cluster)
    failed = 0
    with transcriber:
        for path in args.audio:
            try:
                result = transcriber.transcribe_file(path, options)
            except AudioError as error:
                print(f"error: {error}", file=sys.stderr)
                failed += 1
                continue
            print(_format(path, result, args.word_timestamps, args.json, options.beam.alternatives), flush=True)
    return 1 if failed else 0


def _ray_backend(address: str, workers: int | None):
    """The Ray cluster at `address`, connected (only with --ray: Ray is an optional extra)."""
    from cluster.ray_pool import RayPool

    return RayPool(address, workers)


def _format(path: str, result: Transcript, word_timestamps: bool, as_json: bool, alternatives: int | None) -> str:
    if as_json:
        body = {"audio": path, **bulk.task.transcript_fields(result, word_timestamps, bool(alternatives))}
        return json.dumps(body, ensure_ascii=False)
    lines = [f"{path}\t{result.text}"]
    if word_timestamps:
        lines += [f"\t{word.start:.3f}\t{word.end:.3f}\t{word.word}\t{word.confidence:.4f}" for word in result.words]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
