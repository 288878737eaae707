"""The decoding flags and the transcriber they make, shared by `pseudo-label` and `evaluate`."""

from __future__ import annotations

import argparse

from model.decoding import BEAM_WIDTH, LM_ALPHA, LM_BETA, DecoderStartError
from model.options import option_fields


def decode_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--beam-width", type=int, default=BEAM_WIDTH, help="beams kept (%(default)s)")
    search = next(spec for spec in option_fields() if spec.name == "beam_search")  # the core's field, as generated
    command.add_argument("--beam-search", default=search.default, choices=search.choices, help=search.help)
    command.add_argument(
        "--lm-alpha", type=float, help=f"language model weight (default: {LM_ALPHA}, or a model folder's)"
    )
    command.add_argument(
        "--lm-beta", type=float, help=f"word insertion bonus (default: {LM_BETA}, or a model folder's)"
    )


def load_transcriber(args, lexicon: tuple[str, ...] | None = None):
    """The model of `--model` with the decoders of `--lm`, `--lm-alpha` and `--lm-beta` (and `lexicon`'s
    words); the weights as the command resolved them with `model.transcribe.model_decoding` (a model
    folder's lm.json when `--lm` is its own lm.arpa)."""
    from model.hub import ModelNotFoundError
    from model.loading import load_recognizer
    from model.transcribe import Transcriber

    if args.beam_width < 1:
        raise ValueError("--beam-width must be at least 1")
    try:
        recognizer = load_recognizer(args.model)
        transcriber = Transcriber(recognizer, args.lm, args.lm_alpha, args.lm_beta, lexicon=lexicon)
        if args.lm is not None:
            transcriber.beam_search()  # load the language model now: a bad one fails before any audio is read
    except (ModelNotFoundError, ImportError) as error:  # a CheckpointError is a ValueError already
        raise ValueError(str(error)) from None
    except DecoderStartError as error:
        raise ValueError(f"language model '{args.lm}' could not be loaded: {error}") from None
    return transcriber
