"""Command line: `python -m model transcribe --model MODEL AUDIO [AUDIO ...]` (files or folders, or `--manifest`:
see model.bulk) and `python -m model convert`."""

from __future__ import annotations

import argparse
import json
import sys

from . import bulk
from .audio import AudioError
from .bulk.cli import add_arguments as add_bulk_arguments
from .decoding import (BEAM_WIDTH, LM_ALPHA, LM_BETA, MAX_ALTERNATIVES, MIN_CONFIDENCE, BeamOptions,
                       DecoderStartError, check_phrases)
from .hub import ModelNotFoundError
from .loading import load_recognizer
from .package import DEFAULT_MODEL
from .transcribe import DecodeOptions, Transcriber, model_decoding


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model", description="wav2vec 2.0 CTC models")
    commands = parser.add_subparsers(dest="command", required=True)

    transcribe = commands.add_parser("transcribe", help="print '<path>\\t<transcript>' for each audio file")
    transcribe.add_argument("--model", default=str(DEFAULT_MODEL),
                            help="a model folder that ships (checkpoint/ inside), Hugging Face model folder or Hub "
                                 "id, fairseq fine-tuned checkpoint (.pt), or a folder written by `python -m export "
                                 "onnx` (run with ONNX Runtime) (default: the shipped digits model, models/digits)")
    transcribe.add_argument("--lm", help="KenLM language model (ARPA or binary): beam search with it (default: a "
                                         "model folder's lm.arpa)")
    transcribe.add_argument("--no-lm", action="store_true", help="no language model, not even the model folder's: "
                                                                 "greedy decoding unless --beam-width is given")
    transcribe.add_argument("--lexicon", help="a file of the words beam search may write, one per line (default: a "
                                              "model folder's lexicon.txt)")
    transcribe.add_argument("--no-lexicon", action="store_true",
                            help="beam search over any spelling, not only the lexicon's words")
    transcribe.add_argument("--beam-width", type=int,
                            help=f"beam search with this many beams (default {BEAM_WIDTH} with a language model; "
                                 "without either, greedy decoding)")
    transcribe.add_argument("--lm-alpha", type=float, default=LM_ALPHA, help="language model weight (%(default)s)")
    transcribe.add_argument("--lm-beta", type=float, default=LM_BETA, help="word insertion bonus (%(default)s)")
    transcribe.add_argument("--phrases", help="comma-separated words or phrases: the transcript is a sequence of "
                                              "them, nothing else (beam search; the phrases replace --lm for it)")
    transcribe.add_argument("--alternatives", type=int, metavar="N",
                            help=f"with --json: the N best transcripts (1-{MAX_ALTERNATIVES}) of the beam search, "
                                 "best first, as 'alternatives' [{text, score}]")
    transcribe.add_argument("--word-timestamps", action="store_true",
                            help="each word's start and end (seconds) and confidence: after the transcript, one "
                                 "line per word, '\\t<start>\\t<end>\\t<word>\\t<confidence>'; with --json, as 'words'")
    transcribe.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE,
                            help="words less confident than this (0-1) are marked low_confidence (%(default)s)")
    transcribe.add_argument("--json", action="store_true",
                            help="one JSON object per file and line: audio, text, confidence, duration, decoder "
                                 "(and words)")
    transcribe.add_argument("audio", nargs="*", help="audio files (wav, flac, ogg, mp3, any sample rate) or folders "
                                                     "of them")
    add_bulk_arguments(transcribe)

    convert = commands.add_parser("convert", help="save any loadable checkpoint as a Hugging Face model folder")
    convert.add_argument("--model", required=True, help="Hugging Face folder or Hub id, or fairseq checkpoint (.pt)")
    convert.add_argument("--dictionary", help="fairseq dict.ltr.txt, if not beside a fine-tuned fairseq checkpoint")
    convert.add_argument("--out", required=True, help="folder to write")

    args = parser.parse_args(argv)
    if args.command == "transcribe" and args.beam_width is not None and args.beam_width < 1:
        parser.error("--beam-width must be at least 1")
    if args.command == "transcribe" and args.alternatives is not None:
        if not 1 <= args.alternatives <= MAX_ALTERNATIVES or not (args.json or args.out):
            parser.error(f"--alternatives takes 1 to {MAX_ALTERNATIVES}, with --json or --out")
    if args.command == "transcribe":
        for flag, off in (("lm", "no_lm"), ("lexicon", "no_lexicon")):
            if getattr(args, flag) and getattr(args, off):
                parser.error(f"--{flag} and --{off.replace('_', '-')} contradict each other")
        if not 0 <= args.min_confidence <= 1:
            parser.error("--min-confidence is a probability, 0 to 1")
        many = bulk.cli.requested(args)
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
        lm, lexicon = model_decoding(args.model, args.lm, args.no_lm, args.lexicon, args.no_lexicon)
        # Many files run the model's ONNX export where it has one, as the server does (see model.bulk.task).
        recognizer = (bulk.task.load_bulk_recognizer(args.model, loader=load_recognizer) if many
                      else load_recognizer(args.model))
        transcriber = Transcriber(recognizer, lm, args.lm_alpha, args.lm_beta, lexicon=lexicon)
        phrases = check_phrases(transcriber.recognizer.vocab, args.phrases.split(",")) if args.phrases else None
        beam = lm is not None or args.beam_width is not None or phrases is not None or bool(args.alternatives)
        options = DecodeOptions("beam" if beam else "greedy", BeamOptions(
            args.beam_width or BEAM_WIDTH, alternatives=args.alternatives or 0, phrases=phrases),
            args.min_confidence)
        if beam:
            transcriber.beam_search()  # a language model KenLM refuses fails here, once, not on every file
        cluster = _ray_backend(args.ray, args.workers) if many and args.ray else None
    except (ModelNotFoundError, OSError, ValueError, ImportError) as error:  # CheckpointError: a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 1
    except DecoderStartError as error:
        print(f"error: the beam-search decoder could not be built (language model {lm}, "
              f"{'lexicon of ' + str(len(lexicon)) + ' words' if lexicon else 'no lexicon'}): {error}",
              file=sys.stderr)
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
            print(_format(path, result, args.word_timestamps, args.json, args.alternatives), flush=True)
    return 1 if failed else 0


def _ray_backend(address: str, workers: int | None):
    """The Ray cluster at `address`, connected (only with --ray: Ray is an optional extra)."""
    from cluster.ray_pool import RayPool

    return RayPool(address, workers)


def _format(path: str, result, word_timestamps: bool, as_json: bool, alternatives: int | None) -> str:
    if as_json:
        body = {"audio": path, **bulk.task.transcript_fields(result, word_timestamps, bool(alternatives))}
        return json.dumps(body, ensure_ascii=False)
    lines = [f"{path}\t{result.text}"]
    if word_timestamps:
        lines += [f"\t{word.start:.3f}\t{word.end:.3f}\t{word.word}\t{word.confidence:.4f}" for word in result.words]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
