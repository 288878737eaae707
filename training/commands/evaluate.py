"""`python -m training evaluate`: WER and CER of a model on a labelled manifest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from model.decoding import MIN_CONFIDENCE, BeamOptions

from .decoding import decode_options, load_transcriber


def add_parser(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="WER and CER of a CTC model on a labelled manifest")
    evaluate.add_argument(
        "--model",
        required=True,
        help="a model folder that ships, Hugging Face folder or Hub id, fairseq checkpoint, or an exported ONNX folder",
    )
    evaluate.add_argument("--manifest", type=Path, required=True)
    evaluate.add_argument(
        "--lm",
        type=Path,
        help="KenLM model (ARPA or binary): also score beam search with it (default: a model folder's lm.arpa)",
    )
    evaluate.add_argument(
        "--no-lm", action="store_true", help="not even the model folder's language model: greedy only"
    )
    evaluate.add_argument(
        "--lexicon",
        type=Path,
        help="the words beam search may write, one per line (default: a model folder's lexicon.txt)",
    )
    evaluate.add_argument(
        "--no-lexicon",
        action="store_true",
        help="no lexicon, not even the model folder's: beam search within the language model's words "
        "(flashlight), or over any spelling with --beam-search pyctcdecode",
    )
    evaluate.add_argument(
        "--min-confidence",
        type=float,
        default=MIN_CONFIDENCE,
        help="report the share of transcripts less confident than this, of all and of the correct ones (%(default)s)",
    )
    decode_options(evaluate)
    evaluate.add_argument("--details", type=Path, help="write each utterance's reference and hypotheses (JSONL)")
    evaluate.set_defaults(run=run)


def run(args) -> int:
    from model.transcribe import model_decoding

    from ..evaluate import evaluate
    from ..manifest import read_manifest
    from ..metrics import rates_line

    for flag, off in (("lm", "no_lm"), ("lexicon", "no_lexicon")):
        if getattr(args, flag) and getattr(args, off):
            raise ValueError(f"--{flag} and --{off.replace('_', '-')} contradict each other")
    if not 0 <= args.min_confidence <= 1:
        raise ValueError("--min-confidence is a probability, 0 to 1")
    args.lm, lexicon, args.lm_alpha, args.lm_beta = model_decoding(
        args.model, args.lm, args.no_lm, args.lexicon, args.no_lexicon, args.lm_alpha, args.lm_beta
    )
    with load_transcriber(args, lexicon) as transcriber:
        report = evaluate(
            transcriber,
            read_manifest(args.manifest),
            BeamOptions(args.beam_width, beam_search=args.beam_search),
            args.min_confidence,
        )
    details = report.pop("details")
    if args.details:
        args.details.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in details))
    print(json.dumps(report, indent=2))  # rates as fractions, for programs
    print(f"{report['utterances']} utterances: {rates_line(report)}", file=sys.stderr)  # in percent, for people
    return 0
