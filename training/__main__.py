"""Command line: `python -m training manifest | lm | synth | pretrain | finetune | pseudo-label | evaluate ...`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.decoding import BEAM_WIDTH, LM_ALPHA, LM_BETA, MIN_CONFIDENCE, BeamOptions, DecoderStartError

from .pseudo_label import CONFIDENCES
from .synth import DEFAULT_VOICES

RESCHEDULE = ("with --resume: follow this config's learning-rate schedule from the step reached (say, after "
              "raising max_steps), instead of the run's own")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description="train and evaluate wav2vec 2.0 models")
    commands = parser.add_subparsers(dest="command", required=True)

    manifest = commands.add_parser(
        "manifest", help="write a JSONL manifest (audio, duration, text) of a corpus, optionally split off a dev set",
        description="Write a JSONL manifest of a corpus. Selection applies in this order: --include/--exclude, "
                    "then the dev set (--dev-out with --dev-match or --dev-fraction) is carved off, then --fraction "
                    "or --count keeps a random part of the rest (--rest-out gets the others).")
    manifest.add_argument("--audio-dir", type=Path, help="every wav/flac/ogg/mp3 file below this folder")
    manifest.add_argument("--transcripts", type=Path, action="append",
                          help="TSV of audio<TAB>text, paths relative to the TSV (a header naming audio and text "
                               "columns is allowed); alone, it lists the corpus; with --audio-dir, it labels it; "
                               "may be given more than once")
    manifest.add_argument("--out", type=Path, required=True, help="manifest to write (.jsonl)")
    manifest.add_argument("--min-seconds", type=float, default=0.0)
    manifest.add_argument("--max-seconds", type=float, default=float("inf"))
    manifest.add_argument("--include", metavar="REGEX", help="keep only files whose path matches (e.g. '_theo_')")
    manifest.add_argument("--exclude", metavar="REGEX", help="leave out files whose path matches")
    manifest.add_argument("--dev-out", type=Path, help="write a development set here, taken out of --out")
    manifest.add_argument("--dev-match", metavar="REGEX",
                          help="the dev set: files whose path matches (e.g. '_5\\.wav$' for FSDD's recording 5)")
    manifest.add_argument("--dev-fraction", type=float,
                          help="the dev set: this fraction of the files, drawn at random within each transcript")
    manifest.add_argument("--fraction", type=float,
                          help="write only this fraction of the (non-dev) files to --out, drawn at random within "
                               "each transcript (e.g. 0.1 for a 10%% labelled subset)")
    manifest.add_argument("--count", type=int, help="like --fraction, but this many files")
    manifest.add_argument("--rest-out", type=Path, help="with --fraction or --count: write the files left out here")
    manifest.add_argument("--seed", type=int, default=0, help="for --dev-fraction and --fraction")

    lm = commands.add_parser("lm", help="a bigram language model (ARPA) of a manifest's transcripts, for beam search")
    lm.add_argument("--manifest", type=Path, required=True, action="append",
                    help="labelled manifest(s) whose texts the model learns")
    lm.add_argument("--out", type=Path, required=True, help="ARPA file to write")

    synth = commands.add_parser("synth", help="a synthetic English corpus (espeak-ng, flite and Festival voices) "
                                              "and its manifest")
    source = synth.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", type=Path, help="sentences, one per line (.gz read as gzip)")
    source.add_argument("--digits", type=int, nargs=2, metavar=("MIN", "MAX"),
                        help="random digit strings of MIN-MAX digits instead, e.g. 'four one five oh two'")
    synth.add_argument("--oh-fraction", type=float, default=0.3,
                       help="with --digits: how often a zero is said 'oh' (default: %(default)s)")
    synth.add_argument("--zero-fraction", type=float,
                       help="with --digits: how often a digit is a zero, e.g. 0.3 for more 'oh' in the strings "
                            "(default: every digit as often as the others)")
    synth.add_argument("--out", type=Path, required=True, help="folder for audio/ and manifest.jsonl")
    synth.add_argument("--count", type=int, default=100, help="utterances to make")
    synth.add_argument("--voices", default=",".join(DEFAULT_VOICES),
                       help="comma-separated espeak:NAME / flite:NAME / festival:NAME voices, or `english` for every "
                            "English voice installed; each utterance's voice is drawn at random, each engine as "
                            "often as the others (default: %(default)s)")
    synth.add_argument("--min-words", type=int, default=3, help="with --text")
    synth.add_argument("--max-words", type=int, default=20, help="with --text")
    synth.add_argument("--without-words", metavar="WORD,...",
                       help="with --text: only sentences that contain none of these words")
    synth.add_argument("--empty-text", action="store_true",
                       help="write an empty transcript for every utterance: speech a model must not transcribe "
                            "(e.g. English sentences without a digit word, for a digits model)")
    synth.add_argument("--speed", type=float, nargs=2, default=(0.8, 1.2), metavar=("LOW", "HIGH"),
                       help="speaking-rate factor, drawn uniformly per utterance")
    synth.add_argument("--pitch", type=float, nargs=2, default=(0.7, 1.3), metavar=("LOW", "HIGH"),
                       help="pitch factor, drawn uniformly per utterance")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=4, help="synthesizer processes at once")

    connect = commands.add_parser("connect", help="connected speech from one speaker's isolated recordings "
                                                  "(e.g. digit strings from single digits) and its manifest")
    connect.add_argument("--manifest", type=Path, required=True, help="labelled recordings to join")
    connect.add_argument("--out", type=Path, required=True, help="folder for audio/ and manifest.jsonl")
    connect.add_argument("--speaker", required=True, metavar="REGEX",
                         help="a regular expression on the file name whose first group is the speaker; strings "
                              "never mix speakers (FSDD: '^[0-9]+_([a-z]+)_')")
    connect.add_argument("--count", type=int, default=100, help="utterances to make")
    connect.add_argument("--items", type=int, nargs=2, default=(2, 5), metavar=("MIN", "MAX"),
                         help="recordings per utterance (default: 2 5)")
    connect.add_argument("--pause", type=float, nargs=2, default=(0.05, 0.6), metavar=("LOW", "HIGH"),
                         help="seconds of silence before, between and after them, drawn uniformly (default: 0.05 0.6)")
    connect.add_argument("--seed", type=int, default=0)

    pack = commands.add_parser("package", help="a model folder that ships: checkpoint, ONNX export, LM, "
                                               "provenance and model card")
    pack.add_argument("--out", type=Path, required=True, help="the folder to write (replaced)")
    pack.add_argument("--checkpoint", type=Path, required=True, help="the fine-tuned checkpoint folder")
    pack.add_argument("--onnx", type=Path, required=True, help="its export (python -m export onnx)")
    pack.add_argument("--lm", type=Path, help="the language model beam search uses with it (ARPA)")
    pack.add_argument("--lexicon", type=Path,
                      help="a file of the words the model knows, one per line (e.g. the folder's own lexicon.txt, "
                           "kept across a rebuild): written as lexicon.txt, and beam search stays within them")
    pack.add_argument("--config", type=Path, required=True, help="the fine-tuning config it was trained with")
    pack.add_argument("--data", action="append", default=[], metavar="NAME=MANIFEST",
                      help="a manifest it was trained or evaluated on (hashed into the provenance); repeatable")
    pack.add_argument("--results", action="append", default=[], metavar="NAME=JSON",
                      help="`python -m training evaluate` output on one evaluation set; repeatable")
    pack.add_argument("--commands", type=Path, help="a text file of the commands that made it, one per line")
    pack.add_argument("--card", type=Path, required=True,
                      help="the model card's template (Markdown; {results}, {data}, {commands}, {commit}, "
                           "{created}, {size_mb}, {parameters_m} are filled in)")

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
                       help="where every utterance's transcript and confidences go (JSONL; with the manifest's own "
                            "text as 'reference' when it has one; for `training/recipes/confidence_curve.py`); a "
                            "rerun continues it, and --out is rewritten from it (default: <out>.scores.jsonl)")
    label.add_argument("--labelled", type=Path, help="a manifest of real labels to include in --out as well")
    label.add_argument("--workers", type=int, metavar="N", help="worker processes (default 1), or Ray workers")
    label.add_argument("--ray", metavar="ADDRESS", help="label on a Ray cluster ('auto' or HOST:PORT; the [ray] extra)")

    evaluate = commands.add_parser("evaluate", help="WER and CER of a CTC model on a labelled manifest")
    evaluate.add_argument("--model", required=True, help="a model folder that ships, Hugging Face folder or Hub id, "
                                                        "fairseq checkpoint, or an exported ONNX folder")
    evaluate.add_argument("--manifest", type=Path, required=True)
    evaluate.add_argument("--lm", type=Path, help="KenLM model (ARPA or binary): also score beam search with it "
                                                  "(default: a model folder's lm.arpa)")
    evaluate.add_argument("--no-lm", action="store_true", help="not even the model folder's language model: greedy only")
    evaluate.add_argument("--lexicon", type=Path, help="the words beam search may write, one per line (default: a "
                                                       "model folder's lexicon.txt)")
    evaluate.add_argument("--no-lexicon", action="store_true", help="beam search over any spelling")
    evaluate.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE,
                          help="report the share of transcripts less confident than this, of all and of the "
                               "correct ones (%(default)s)")
    decode_options(evaluate)
    evaluate.add_argument("--details", type=Path, help="write each utterance's reference and hypotheses (JSONL)")

    pretrain = commands.add_parser("pretrain", help="self-supervised pretraining on unlabeled audio")
    pretrain.add_argument("--config", type=Path, help="YAML or JSON config (presets in training/configs/)")
    pretrain.add_argument("--resume", type=Path, help="a checkpoint folder of this run to continue from")
    pretrain.add_argument("--reschedule", action="store_true", help=RESCHEDULE)
    pretrain.add_argument("overrides", nargs="*", help="key=value settings over the config, e.g. max_steps=1000")

    finetune = commands.add_parser("finetune", help="CTC fine-tuning (from a pretrained checkpoint or scratch)")
    finetune.add_argument("--config", type=Path, help="YAML or JSON config (examples in training/configs/)")
    finetune.add_argument("--resume", type=Path, help="a checkpoint folder of this run to continue from")
    finetune.add_argument("--reschedule", action="store_true", help=RESCHEDULE)
    finetune.add_argument("overrides", nargs="*", help="key=value settings over the config, e.g. init=runs/pt/checkpoint-9")

    args = parser.parse_args(argv)
    try:
        if args.command == "manifest":
            return _manifest(args)
        if args.command == "lm":
            return _lm(args)
        if args.command in ("pretrain", "finetune"):
            return _train(args)
        if args.command == "synth":
            return _synth(args)
        if args.command == "connect":
            return _connect(args)
        if args.command == "package":
            return _package(args)
        if args.command == "pseudo-label":
            return _pseudo_label(args)
        return _evaluate(args)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def decode_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--beam-width", type=int, default=BEAM_WIDTH, help="beams kept (%(default)s)")
    command.add_argument("--lm-alpha", type=float, default=LM_ALPHA, help="language model weight (%(default)s)")
    command.add_argument("--lm-beta", type=float, default=LM_BETA, help="word insertion bonus (%(default)s)")


def _manifest(args) -> int:
    from .manifest import build_manifest, split, write_manifest

    if args.audio_dir is None and args.transcripts is None:
        raise ValueError("give --audio-dir, --transcripts or both")
    if args.dev_out is not None and (args.dev_match is None) == (args.dev_fraction is None):
        raise ValueError("--dev-out needs one of --dev-match or --dev-fraction")
    for name in ("dev_fraction", "fraction"):
        value = getattr(args, name)
        if value is not None and not 0 < value < 1:
            raise ValueError(f"--{name.replace('_', '-')} is a fraction between 0 and 1, got {value}")
    if args.fraction is not None and args.count is not None:
        raise ValueError("give --fraction or --count, not both")
    if args.count is not None and args.count < 1:
        raise ValueError(f"--count is a number of files, at least 1, got {args.count}")
    if args.rest_out is not None and args.fraction is None and args.count is None:
        raise ValueError("--rest-out goes with --fraction or --count")
    entries, skipped = build_manifest(args.audio_dir, args.transcripts, args.min_seconds, args.max_seconds,
                                      args.include, args.exclude)
    outputs = {}
    if args.dev_out is not None:
        entries, outputs[args.dev_out] = split(entries, args.dev_match, args.dev_fraction or 0.0, args.seed)
    if args.fraction is not None or args.count is not None:
        rest, entries = split(entries, fraction=args.fraction or 0.0, seed=args.seed, count=args.count)
        if args.rest_out is not None:
            outputs[args.rest_out] = rest
    outputs = {args.out: entries, **outputs}
    for path, chosen in outputs.items():
        write_manifest(chosen, path)
        labelled = sum(entry.text is not None for entry in chosen)
        hours = sum(entry.duration for entry in chosen) / 3600
        print(f"{path}: {len(chosen)} files ({labelled} with text), {hours:.2f} h"
              + (f"; {skipped} left out for duration" if path == args.out else ""))
    if not entries:
        raise ValueError(f"{args.out}: no files left to write (check --include/--exclude and the splits)")
    return 0


def _lm(args) -> int:
    from .lm import write_bigram_arpa
    from .manifest import read_manifest

    texts = [entry.text for path in args.manifest for entry in read_manifest(path) if entry.text]
    if not texts:
        raise ValueError("the manifest(s) hold no transcripts to learn from")
    words = write_bigram_arpa(texts, args.out)
    print(f"{args.out}: bigram model of {len(texts)} transcripts, {words} distinct words")
    return 0


def _synth(args) -> int:
    from dataclasses import replace

    from .manifest import write_manifest
    from .synth import digit_strings, parse_voices, pick_sentences, synthesize

    if args.count < 1 or args.workers < 1:
        raise ValueError("--count and --workers must be at least 1")
    if not 0 < args.speed[0] <= args.speed[1] or not 0 < args.pitch[0] <= args.pitch[1]:
        raise ValueError("--speed and --pitch take LOW HIGH with 0 < LOW <= HIGH")
    voices = parse_voices(args.voices)
    if args.digits:
        if not 1 <= args.digits[0] <= args.digits[1]:
            raise ValueError("--digits takes MIN MAX with 1 <= MIN <= MAX")
        if not 0 <= args.oh_fraction <= 1:
            raise ValueError("--oh-fraction is between 0 and 1")
        if args.zero_fraction is not None and not 0 <= args.zero_fraction <= 1:
            raise ValueError("--zero-fraction is between 0 and 1")
        sentences = digit_strings(args.count, *args.digits, args.oh_fraction, args.seed, args.zero_fraction)
    else:
        if not args.min_words <= args.max_words or args.min_words < 1:
            raise ValueError("--min-words must be at least 1 and at most --max-words")
        without = {word.strip() for word in (args.without_words or "").split(",") if word.strip()}
        sentences = pick_sentences(args.text, args.count, args.min_words, args.max_words, args.seed, without)
    entries = synthesize(sentences, args.out, args.count, voices, tuple(args.speed), tuple(args.pitch), args.seed,
                         args.workers)
    if args.empty_text:
        entries = [replace(entry, text="") for entry in entries]
        write_manifest(entries, args.out / "manifest.jsonl")
    minutes = sum(entry.duration for entry in entries) / 60
    print(f"{args.out / 'manifest.jsonl'}: {len(entries)} utterances, {minutes:.1f} min, {len(voices)} voices")
    return 0


def _connect(args) -> int:
    from .connect import connect
    from .manifest import read_manifest

    if args.count < 1 or not 1 <= args.items[0] <= args.items[1]:
        raise ValueError("--count must be at least 1 and --items MIN MAX have 1 <= MIN <= MAX")
    if not 0 <= args.pause[0] <= args.pause[1]:
        raise ValueError("--pause takes LOW HIGH with 0 <= LOW <= HIGH")
    entries = connect(read_manifest(args.manifest), args.out, args.count, *args.items, args.speaker,
                      tuple(args.pause), args.seed)
    minutes = sum(entry.duration for entry in entries) / 60
    print(f"{args.out / 'manifest.jsonl'}: {len(entries)} utterances, {minutes:.1f} min")
    return 0


def _package(args) -> int:
    from .package import package

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
    record = package(args.out, args.checkpoint, args.onnx, args.lm, args.config, pairs(args.data, "--data"),
                     pairs(args.results, "--results"), args.commands, args.card, lexicon)
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


def _train(args) -> int:
    """pretrain or finetune: the config and its overrides, then the run."""
    from .config import FinetuneConfig, PretrainConfig, load_config

    if args.command == "pretrain":
        from .pretrain import pretrain as run

        config = load_config(PretrainConfig, args.config, args.overrides)
        missing = "" if config.manifest else "no manifest: set manifest in the config or as manifest=PATH"
    else:
        from .finetune import finetune as run

        config = load_config(FinetuneConfig, args.config, args.overrides)
        missing = "" if config.train_manifest else ("no training data: set train_manifest in the config or as "
                                                    "train_manifest=PATH")
    if missing:
        raise ValueError(missing)
    print(f"saved {run(config, args.resume, args.reschedule)}")
    return 0


def _load_transcriber(args, lexicon: tuple[str, ...] | None = None):
    """The model of `--model` with the decoders of `--lm`, `--lm-alpha` and `--lm-beta` (and `lexicon`'s words)."""
    from model.hub import ModelNotFoundError
    from model.loading import load_recognizer
    from model.transcribe import Transcriber

    if args.beam_width < 1:
        raise ValueError("--beam-width must be at least 1")
    try:
        transcriber = Transcriber(load_recognizer(args.model), args.lm, args.lm_alpha, args.lm_beta, lexicon=lexicon)
        if args.lm is not None:
            transcriber.beam_search()  # load the language model now: a bad one fails before any audio is read
    except (ModelNotFoundError, ImportError) as error:  # a CheckpointError is a ValueError already
        raise ValueError(str(error)) from None
    except DecoderStartError as error:
        raise ValueError(f"language model '{args.lm}' could not be loaded: {error}") from None
    return transcriber


def _pseudo_label(args) -> int:
    from .manifest import read_manifest
    from .pseudo_label import label

    if not 0.0 <= args.min_confidence <= 1.0:
        raise ValueError("--min-confidence is a probability, 0 to 1")
    if args.confidence == "nbest" and args.lm is None:
        raise ValueError("--confidence nbest compares the beam search's transcripts: give --lm")
    entries = read_manifest(args.manifest)
    if not entries:
        raise ValueError(f"{args.manifest}: no audio listed")
    real = [entry for entry in read_manifest(args.labelled) if entry.text] if args.labelled else []
    with _load_transcriber(args) as transcriber:  # the model and LM checked once, before any worker starts
        return label(args, transcriber, real)


def _evaluate(args) -> int:
    from model.transcribe import model_decoding

    from .evaluate import evaluate
    from .manifest import read_manifest

    for flag, off in (("lm", "no_lm"), ("lexicon", "no_lexicon")):
        if getattr(args, flag) and getattr(args, off):
            raise ValueError(f"--{flag} and --{off.replace('_', '-')} contradict each other")
    if not 0 <= args.min_confidence <= 1:
        raise ValueError("--min-confidence is a probability, 0 to 1")
    args.lm, lexicon = model_decoding(args.model, args.lm, args.no_lm, args.lexicon, args.no_lexicon)
    with _load_transcriber(args, lexicon) as transcriber:
        report = evaluate(transcriber, read_manifest(args.manifest), BeamOptions(args.beam_width),
                          args.min_confidence)
    details = report.pop("details")
    if args.details:
        args.details.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in details))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
