"""How to decode: one options value for every caller, the one rule that chooses greedy decoding or
beam search, and the command-line flags generated from the options' fields.

`DecodeOptions` (with its beam-search part, `model.decoding.BeamOptions`) is the single definition:
`python -m model transcribe`'s flags, `python -m training`'s, and the server's request fields and
settings are generated from its fields' metadata (`help`; `min`, `max` or `max_items` where a
value is bounded), so nobody re-declares a field, a default or a limit. Imports no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from .ctc import CTCVocabulary
from .decoding import LM_ALPHA, LM_BETA, MIN_CONFIDENCE, BeamOptions, check_phrases
from .phrases import PhraseError

Decoder = Literal["greedy", "beam"]
DECODERS: tuple[Decoder, ...] = typing.get_args(Decoder)


@dataclass(frozen=True)
class DecodeOptions:
    """How one utterance is decoded. `decoder` None: `choose_decoder`'s rule decides."""

    # "greedy" (best path) or "beam" (beam search); None: beam search when the model has a language
    # model or a beam-search option is given, else greedy (`choose_decoder`).
    decoder: Decoder | None = field(
        default=None,
        metadata={
            "help": "greedy or beam; default: beam search when the model has a language model or a beam-search "
            "option (beam width, hotwords, alternatives, phrases, beam search) is given, else greedy",
            "choices": DECODERS,
        },
    )
    # What each beam search may choose: width, hotwords, alternatives, phrases.
    beam: BeamOptions = field(default_factory=BeamOptions)
    # Words less confident than this (0-1) are marked low_confidence.
    min_confidence: float = field(
        default=MIN_CONFIDENCE,
        metadata={
            "help": "words less confident than this (0-1) are marked low_confidence; a transcript's confidence is "
            "its weakest word's",
            "min": 0,
            "max": 1,
        },
    )

    def resolved(self, has_lm: bool, beam_width: int | None = None) -> DecodeOptions:
        """These options with the decoder chosen (`choose_decoder`) and, for beam search, the beam
        width filled in (`beam_width`, a caller's default, when none was asked for)."""
        decoder = choose_decoder(self, has_lm)
        beam = self.beam
        if decoder == "beam" and beam.beam_width is None and beam_width is not None:
            beam = dataclasses.replace(beam, beam_width=beam_width)
        return dataclasses.replace(self, decoder=decoder, beam=beam)


def choose_decoder(options: DecodeOptions, has_lm: bool) -> Decoder:
    """The one rule, for the CLI, evaluation and the server alike: the decoder asked for; else beam
    search when the model has a language model or any beam-search option (`BeamOptions.given`:
    a width, hotwords, alternatives or phrases) is asked for; else greedy."""
    if options.decoder is not None:
        return options.decoder
    return "beam" if has_lm or options.beam.given else "greedy"


class OptionError(ValueError):
    """Options that cannot be used: out of range, beam-search options with greedy decoding, hotwords
    with flashlight's search, phrases the model cannot write. `field` names the option;
    `unwritable`: phrases the model cannot spell."""

    def __init__(self, field_name: str, message: str, unwritable: bool = False):
        super().__init__(message)
        self.field = field_name
        self.unwritable = unwritable


def check_options(options: DecodeOptions, vocab: CTCVocabulary, has_lm: bool) -> None:
    """What the fields' own limits cannot say, for this model: beam-search options with greedy
    decoding (they would be ignored), hotwords with flashlight's search (it has none), and phrases
    it cannot write. OptionError if any."""
    check_limits(options)
    if choose_decoder(options, has_lm) == "greedy":
        for name in ("hotwords", "alternatives", "phrases"):
            if getattr(options.beam, name):
                raise OptionError(
                    name,
                    f"{name} need beam search; greedy decoding gives one transcript of any "
                    "words (leave decoder out, or set decoder=beam)",
                )
        if options.beam.beam_search != "auto":
            raise OptionError(
                "beam_search",
                f"beam_search={options.beam.beam_search} needs beam search; greedy decoding runs none "
                "(leave decoder out, or set decoder=beam)",
            )
    if options.beam.beam_search == "flashlight" and options.beam.hotwords:
        raise OptionError(
            "hotwords",
            "hotwords need beam_search=pyctcdecode (or auto): flashlight's search has no hotwords",
        )
    if options.beam.phrases is not None:
        try:
            check_phrases(vocab, options.beam.phrases)
        except PhraseError as error:
            raise OptionError("phrases", f"phrases: {error}", unwritable=True) from None


@dataclass(frozen=True)
class OptionField:
    """One option as command lines and request models see it: its name, type and default, the
    help and the limits from its metadata, and whether it belongs to `DecodeOptions.beam`."""

    name: str
    kind: type  # int, float or str: one value's type
    many: bool  # a sequence of values (hotwords, phrases)
    optional: bool  # None is a value (decoder, beam_width, phrases)
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_items: int | None = None
    in_beam: bool = False


@functools.cache  # read on every request: resolving the type hints each time cost ~0.7 ms a call
def option_fields() -> tuple[OptionField, ...]:
    """Every decoding option, `DecodeOptions`' own and its `beam` part's, in one flat tuple."""
    found = []
    for owner, in_beam in ((DecodeOptions, False), (BeamOptions, True)):
        hints = typing.get_type_hints(owner)
        for item in dataclasses.fields(owner):
            if "help" not in item.metadata:  # `beam`: its fields are listed themselves
                continue
            hint = hints[item.name]
            union = typing.get_origin(hint) in (typing.Union, types.UnionType)
            optional = union and type(None) in typing.get_args(hint)
            inner = next(arg for arg in typing.get_args(hint) if arg is not type(None)) if optional else hint
            many = typing.get_origin(inner) is tuple
            if many:
                inner = typing.get_args(inner)[0]
            if typing.get_origin(inner) is Literal:
                inner = str
            default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
            meta = item.metadata
            found.append(
                OptionField(
                    item.name,
                    inner,
                    many,
                    optional,
                    default,
                    meta["help"],
                    meta.get("choices"),
                    meta.get("min"),
                    meta.get("max"),
                    meta.get("max_items"),
                    in_beam,
                )
            )
    return tuple(found)


def check_limits(options: DecodeOptions) -> None:
    """Each value within its field's limits; OptionError names the first that is not."""
    for spec in option_fields():
        value = getattr(options.beam if spec.in_beam else options, spec.name)
        if value is None:
            continue
        flag = spec.name
        if spec.choices is not None and value not in spec.choices:
            raise OptionError(flag, f"{flag} must be one of {', '.join(spec.choices)}, not {value!r}")
        if spec.many and spec.max_items is not None and len(value) > spec.max_items:
            raise OptionError(flag, f"{flag}: {len(value)} given; at most {spec.max_items} are allowed")
        if not spec.many and spec.minimum is not None and value < spec.minimum:
            raise OptionError(flag, f"{flag} must be at least {spec.minimum:g}, not {value:g}")
        if not spec.many and spec.maximum is not None and value > spec.maximum:
            raise OptionError(flag, f"{flag} must be at most {spec.maximum:g}, not {value:g}")


def from_values(values: dict[str, Any]) -> DecodeOptions:
    """Options from flat values by field name (a missing or None value: the field's default; but
    None for `phrases` is its default anyway). Sequences become tuples. OptionError if out of range."""
    own, beam = {}, {}
    for spec in option_fields():
        value = values.get(spec.name)
        if value is None:
            continue
        (beam if spec.in_beam else own)[spec.name] = tuple(value) if spec.many else value
    options = DecodeOptions(**own, beam=BeamOptions(**beam))
    check_limits(options)
    return options


def add_decode_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """Add a flag per decoding option (`--decoder`, `--beam-width`, `--hotwords`, ...; those in
    `exclude` left out) to `parser`; `decode_options_from_args` reads them back. Sequences are
    comma-separated. Every flag defaults to None, so that one left out keeps the field's default."""
    group = parser.add_argument_group("decoding")
    for spec in option_fields():
        if spec.name in exclude:
            continue
        flag = "--" + spec.name.replace("_", "-")
        shown = "" if spec.default in (None, ()) or "default" in spec.help else f" (default {spec.default:g})"
        if spec.many:
            group.add_argument(flag, type=_comma_separated, metavar="A,B,...", help=f"{spec.help}; comma-separated")
        else:
            group.add_argument(flag, type=spec.kind, choices=spec.choices, help=spec.help + shown)


def decode_options_from_args(args: argparse.Namespace) -> DecodeOptions:
    """The options `add_decode_arguments`' flags give; OptionError (a ValueError) names a value out
    of range, as `--flag`."""
    try:
        return from_values(vars(args))
    except OptionError as error:
        message, flag = str(error), "--" + error.field.replace("_", "-")
        raise OptionError(error.field, flag + message.removeprefix(error.field)) from None


def _comma_separated(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_language_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that say what a model's beam search is built with: `--lm`/`--no-lm`, `--lexicon`/
    `--no-lexicon` (`model.transcribe.model_decoding` reads them), `--lm-alpha` and `--lm-beta`."""
    parser.add_argument(
        "--lm", help="KenLM language model (ARPA or binary): beam search with it (default: a model folder's lm.arpa)"
    )
    parser.add_argument(
        "--no-lm",
        action="store_true",
        help="no language model, not even the model folder's: greedy decoding unless a beam-search option is given",
    )
    parser.add_argument(
        "--lexicon",
        help="a file of the words beam search may write, one per line (default: a model folder's lexicon.txt)",
    )
    parser.add_argument(
        "--no-lexicon",
        action="store_true",
        help="no lexicon, not even the model folder's: beam search within the language model's words "
        "(flashlight), or over any spelling with --beam-search pyctcdecode",
    )
    parser.add_argument(
        "--lm-alpha",
        type=float,
        help=f"language model weight (default: a model folder's lm.json with its lm.arpa, else {LM_ALPHA})",
    )
    parser.add_argument(
        "--lm-beta",
        type=float,
        help=f"word insertion bonus (default: a model folder's lm.json with its lm.arpa, else {LM_BETA})",
    )
