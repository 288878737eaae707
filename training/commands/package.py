"""`python -m training package`: a model folder that ships."""

from __future__ import annotations

from pathlib import Path


def add_parser(commands) -> None:
    pack = commands.add_parser(
        "package", help="a model folder that ships: checkpoint, ONNX export, LM, provenance and model card"
    )
    pack.add_argument("--out", type=Path, required=True, help="the folder to write (replaced)")
    pack.add_argument("--checkpoint", type=Path, required=True, help="the fine-tuned checkpoint folder")
    pack.add_argument("--onnx", type=Path, required=True, help="its export (python -m export onnx)")
    pack.add_argument("--lm", type=Path, help="the language model beam search uses with it (ARPA)")
    pack.add_argument(
        "--lm-weights",
        type=float,
        nargs=2,
        metavar=("ALPHA", "BETA"),
        help="the LM weight and word bonus tuned for --lm (training/recipes/tune_lm.py): written as lm.json, "
        "the folder's defaults wherever it is served or run",
    )
    pack.add_argument(
        "--lexicon",
        type=Path,
        help="a file of the words the model knows, one per line (e.g. the folder's own lexicon.txt, "
        "kept across a rebuild): written as lexicon.txt, and beam search stays within them",
    )
    pack.add_argument("--config", type=Path, required=True, help="the fine-tuning config it was trained with")
    pack.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="NAME=MANIFEST",
        help="a manifest it was trained or evaluated on (hashed into the provenance); repeatable",
    )
    pack.add_argument(
        "--results",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="`python -m training evaluate` output on one evaluation set; repeatable",
    )
    pack.add_argument("--commands", type=Path, help="a text file of the commands that made it, one per line")
    pack.add_argument(
        "--card",
        type=Path,
        required=True,
        help="the model card's template (Markdown; {results}, {data}, {commands}, {commit}, "
        "{created}, {size_mb}, {parameters_m} are filled in)",
    )
    pack.set_defaults(run=run)


def run(args) -> int:
    from ..package import package

    def pairs(values: list[str], flag: str) -> dict[str, Path]:
        named = {}
        for value in values:
            name, separator, path = value.partition("=")
            if not separator or not name or not path:
                raise ValueError(f"{flag} takes NAME=PATH, got {value!r}")
            named[name] = Path(path)
        return named

    for folder, flag in ((args.checkpoint, "--checkpoint"), (args.onnx, "--onnx")):
        if not folder.is_dir():
            raise ValueError(f"{flag} {folder}: not a folder")
    lexicon = _lexicon_words(args.lexicon, args.checkpoint) if args.lexicon else None
    if args.lm_weights and not args.lm:
        raise ValueError("--lm-weights are the weights of --lm: give both")
    record = package(
        args.out,
        args.checkpoint,
        args.onnx,
        args.lm,
        args.config,
        pairs(args.data, "--data"),
        pairs(args.results, "--results"),
        args.commands,
        args.card,
        lexicon,
        tuple(args.lm_weights) if args.lm_weights else None,
    )
    print(f"{args.out}: {len(record['files'])} files, {sum(record['files'].values()) / 1e6:.1f} MB")
    return 0


def _lexicon_words(path: Path, checkpoint: Path) -> tuple[str, ...]:
    """The lexicon's words as the checkpoint's model spells them; ValueError names a word it cannot write."""
    from model.ctc import CTCVocabulary
    from model.decoding import check_lexicon
    from model.lexicon import read_lexicon
    from model.phrases import PhraseError

    try:
        return check_lexicon(CTCVocabulary.from_folder(checkpoint), read_lexicon(path))
    except PhraseError as error:
        raise ValueError(f"--lexicon {path}: {error}") from None
