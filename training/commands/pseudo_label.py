"""`python -m training pseudo-label`: confident transcripts of unlabeled audio as labels."""

from __future__ import annotations

from pathlib import Path

from ..pseudo_label import CONFIDENCES
from .decoding import decode_options, load_transcriber


def add_parser(commands) -> None:
    label = commands.add_parser("pseudo-label", help="transcribe unlabeled audio; keep confident transcripts as labels")
    label.add_argument(
        "--model",
        required=True,
        help="a fine-tuned CTC model (folder, Hub id or fairseq checkpoint, or an exported ONNX folder)",
    )
    label.add_argument("--manifest", type=Path, required=True, help="the unlabeled audio (any text in it is ignored)")
    label.add_argument("--out", type=Path, required=True, help="labelled manifest to write")
    label.add_argument("--lm", type=Path, help="KenLM model: beam search with it (else greedy)")
    decode_options(label)
    label.add_argument(
        "--confidence",
        choices=CONFIDENCES,
        default="posterior",
        help="which confidence --min-confidence applies to: the CTC probability of the text per "
        "word (default), the best transcript's share of the beam's n best (needs --lm), or "
        "the mean best-token probability of its words",
    )
    label.add_argument(
        "--min-confidence", type=float, default=0.9, help="keep utterances whose confidence is at least this (0-1)"
    )
    label.add_argument(
        "--scores-out",
        type=Path,
        help="where every utterance's transcript and confidences go (JSONL; with the manifest's own "
        "text as 'reference' when it has one; for `training/recipes/confidence_curve.py`); a "
        "rerun continues it, and --out is rewritten from it (default: <out>.scores.jsonl)",
    )
    label.add_argument("--workers", type=int, metavar="N", help="worker processes (default 1), or Ray workers")
    label.add_argument("--ray", metavar="ADDRESS", help="label on a Ray cluster ('auto' or HOST:PORT; the [ray] extra)")
    label.add_argument("--labelled", type=Path, help="a manifest of real labels to include in --out as well")
    label.set_defaults(run=run)


def run(args) -> int:
    from model.transcribe import model_decoding

    from ..manifest import read_manifest
    from ..pseudo_label import label

    if not 0.0 <= args.min_confidence <= 1.0:
        raise ValueError("--min-confidence is a probability, 0 to 1")
    if args.confidence == "nbest" and args.lm is None:
        raise ValueError("--confidence nbest compares the beam search's transcripts: give --lm")
    entries = read_manifest(args.manifest)
    if not entries:
        raise ValueError(f"{args.manifest}: no audio listed")
    real = [entry for entry in read_manifest(args.labelled) if entry.text] if args.labelled else []
    # The LM only when given (else greedy), no lexicon; its weights as every command resolves them.
    _, _, args.lm_alpha, args.lm_beta = model_decoding(
        args.model, args.lm, no_lm=args.lm is None, no_lexicon=True, lm_alpha=args.lm_alpha, lm_beta=args.lm_beta
    )
    with load_transcriber(args) as transcriber:  # the model and LM checked once, before any worker starts
        return label(args, transcriber, real)
