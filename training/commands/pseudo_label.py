"""`python -m training pseudo-label`: confident transcripts of unlabeled audio as labels."""

from __future__ import annotations

import json
from pathlib import Path

from model.decoding import BeamOptions

from ..pseudo_label import CONFIDENCES
from .decoding import decode_options, load_transcriber


def add_parser(commands) -> None:
    label = commands.add_parser("pseudo-label", help="transcribe unlabeled audio; keep confident transcripts as labels")
    label.add_argument("--model", required=True, help="a fine-tuned CTC model (folder, Hub id or fairseq checkpoint, "
                                                     "or an exported ONNX folder)")
    label.add_argument("--manifest", type=Path, required=True, help="the unlabeled audio (any text in it is ignored)")
    label.add_argument("--out", type=Path, required=True, help="labelled manifest to write")
    label.add_argument("--lm", type=Path, help="KenLM model: beam search with it (else greedy)")
    decode_options(label)
    label.add_argument("--confidence", choices=CONFIDENCES, default="posterior",
                       help="which confidence --min-confidence applies to: the CTC probability of the text per "
                            "word (default), the best transcript's share of the beam's n best (needs --lm), or "
                            "the mean best-token probability of its words")
    label.add_argument("--min-confidence", type=float, default=0.9,
                       help="keep utterances whose confidence is at least this (0-1)")
    label.add_argument("--scores-out", type=Path,
                       help="write every utterance's transcript and confidences (JSONL; with the manifest's own "
                            "text as 'reference' when it has one) for `training/recipes/confidence_curve.py`")
    label.add_argument("--labelled", type=Path, help="a manifest of real labels to include in --out as well")
    label.set_defaults(run=run)


def run(args) -> int:
    from ..manifest import read_manifest, write_manifest
    from ..pseudo_label import confident, pseudo_label

    if not 0.0 <= args.min_confidence <= 1.0:
        raise ValueError("--min-confidence is a probability, 0 to 1")
    if args.confidence == "nbest" and args.lm is None:
        raise ValueError("--confidence nbest compares the beam search's transcripts: give --lm")
    entries = read_manifest(args.manifest)
    if not entries:
        raise ValueError(f"{args.manifest}: no audio listed")
    real = [entry for entry in read_manifest(args.labelled) if entry.text] if args.labelled else []
    with load_transcriber(args) as transcriber:
        labelled = pseudo_label(transcriber, entries, BeamOptions(args.beam_width))
    kept = confident(labelled, args.min_confidence, args.confidence)
    write_manifest(real + kept, args.out)
    if args.scores_out:
        args.scores_out.write_text("".join(
            json.dumps({"audio": str(item.entry.audio), "text": item.entry.text,
                        **({"reference": item.reference} if item.reference is not None else {}), **item.scores},
                       ensure_ascii=False) + "\n" for item in labelled))
    hours = sum(entry.duration for entry in kept) / 3600
    print(f"{args.out}: {len(kept)} of {len(entries)} utterances kept ({hours:.2f} h) at {args.confidence} "
          f"confidence >= {args.min_confidence}" + (f", with {len(real)} real labels" if real else ""))
    return 0
