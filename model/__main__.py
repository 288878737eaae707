"""Command line: `python -m model transcribe --model MODEL AUDIO [AUDIO ...]` and `python -m model convert`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from .package import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="python -m model", description="wav2vec 2.0 CTC models")
    commands = parser.add_subparsers(dest="command", required=True)

    transcribe = commands.add_parser("transcribe", help="print '<path>\\t<transcript>' for each audio file")
    transcribe.add_argument("--model", default=str(DEFAULT_MODEL),
                            help="a model folder that ships (checkpoint/ inside), Hugging Face model folder or Hub "
                                 "id, or fairseq fine-tuned checkpoint (.pt) (default: the shipped digits model, "
                                 "models/digits)")
    transcribe.add_argument("audio", nargs="+", help="audio files: wav, flac, ogg, mp3, any sample rate")

    convert = commands.add_parser("convert", help="save any loadable checkpoint as a Hugging Face model folder")
    convert.add_argument("--model", required=True, help="Hugging Face folder or Hub id, or fairseq checkpoint (.pt)")
    convert.add_argument("--dictionary", help="fairseq dict.ltr.txt, if not beside a fine-tuned fairseq checkpoint")
    convert.add_argument("--out", required=True, help="folder to write")

    args = parser.parse_args(argv)
    # torch loads in a second or two; import it only once the arguments are known to be good.
    from .audio import AudioError
    from .checkpoint import CheckpointError, load_checkpoint
    from .hub import ModelNotFoundError
    from .transcribe import Transcriber

    try:
        if args.command == "convert":
            folder = load_checkpoint(args.model, args.dictionary).save(args.out)
            print(f"saved {folder}")
            return 0
        transcriber = Transcriber.load(args.model)
    except (ModelNotFoundError, CheckpointError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    failed = 0
    for path in args.audio:
        try:
            text = transcriber.transcribe(path)
        except AudioError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}\t{text}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
