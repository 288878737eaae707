"""`python -m training lm`: a bigram language model of manifests' transcripts."""

from __future__ import annotations

from pathlib import Path


def add_parser(commands) -> None:
    lm = commands.add_parser("lm", help="a bigram language model (ARPA) of a manifest's transcripts, for beam search")
    lm.add_argument(
        "--manifest",
        type=Path,
        required=True,
        action="append",
        help="labelled manifest(s) whose texts the model learns",
    )
    lm.add_argument("--out", type=Path, required=True, help="ARPA file to write")
    lm.set_defaults(run=run)


def run(args) -> int:
    from ..lm import write_bigram_arpa
    from ..manifest import read_manifest

    texts = [entry.text for path in args.manifest for entry in read_manifest(path) if entry.text]
    if not texts:
        raise ValueError("the manifest(s) hold no transcripts to learn from")
    words = write_bigram_arpa(texts, args.out)
    print(f"{args.out}: bigram model of {len(texts)} transcripts, {words} distinct words")
    return 0
