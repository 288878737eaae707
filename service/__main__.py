"""`python -m service [--model [NAME=]MODEL ...] [--lm [NAME=]LM ...] [--host H] [--port P] ...`; every
option also as ASR_<NAME> (a repeatable one as a comma-separated list)."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import logging.config
import signal
import sys

from pydantic import ValidationError


def keep_large_buffers_out_of_the_heap(threshold: int = 128 * 1024) -> None:
    """Audio buffers (hundreds of KB to MB) are allocated and freed by several threads. glibc's
    adaptive mmap threshold soon moves such blocks into per-thread heaps, which fragment and do
    not shrink: RSS grew by 60 MB and more under load. A fixed threshold keeps each block in a
    mapping of its own, returned to the system when freed."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).mallopt(-3, threshold)  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def shown_default(field) -> str:
    """A setting's default as the help shows it."""
    value = field.get_default(call_default_factory=True)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(str(item) for item in value) or "none"
    return "none" if value is None else str(value)


def build_parser(settings_model) -> argparse.ArgumentParser:
    """One option per setting, each with its help, its default and its environment variable. Defaults
    are not set on the parser (argparse.SUPPRESS): what is not given comes from the environment, then
    from the settings' own default."""
    parser = argparse.ArgumentParser(
        prog="python -m service",
        usage="%(prog)s [options]  (--help lists them)",
        description="wav2vec 2.0 transcription server. "
        "Every option can also be set as an environment variable ASR_<OPTION>.",
    )
    for name, field in settings_model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if not field.description:  # a checked contract: tests/test_operations.py
            raise AssertionError(f"setting {name} has no description")
        default = "" if "(default" in field.description else f"; default: {shown_default(field)}"
        help_text = f"{field.description} (env ASR_{name.upper()}{default})".replace("%", "%%")
        if field.annotation is bool:  # --web-ui / --no-web-ui
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
            continue
        if name in ("model", "lm", "lexicon", "lm_alpha", "lm_beta", "model_alias", "language"):  # repeatable
            metavar = {
                "model_alias": "ALIAS=NAME",
                "language": "[NAME=]CODE",
                "lm_alpha": "[NAME=]VALUE",
                "lm_beta": "[NAME=]VALUE",
            }.get(name, "[NAME=]PATH")
            parser.add_argument(
                flag, dest=name, action="append", default=argparse.SUPPRESS, metavar=metavar, help=help_text
            )
            continue
        choices = getattr(field.annotation, "__args__", None) if "Literal" in str(field.annotation) else None
        annotation = str(field.annotation)
        kind = int if annotation == "<class 'int'>" else float if annotation == "<class 'float'>" else str
        parser.add_argument(
            flag,
            dest=name,
            type=kind,
            default=argparse.SUPPRESS,
            help=help_text,
            choices=choices,
            metavar=name.upper() if choices is None else None,
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import validation_problem
    from .settings import Settings

    parser = build_parser(Settings)
    given = vars(parser.parse_args(argv))
    try:
        settings = Settings(**given)
    except ValidationError as error:
        name, what = validation_problem(error)
        flag = "--" + name.replace("_", "-")
        if error.errors()[0]["type"] == "missing":
            print(f"error: {flag} (or ASR_{name.upper()}) is required", file=sys.stderr)
        elif not name:  # a rule between two settings
            print(f"error: {what}", file=sys.stderr)
        else:
            print(f"error: {flag}: {what}", file=sys.stderr)
        return 2
    problem = check_models(settings)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1

    import uvicorn  # the ASGI server, with websockets support from the `websockets` package

    from .app import create_app
    from .http_protocol import GracefulServer, HTTPProtocol
    from .logs import logging_config
    from .stream_protocol import StreamProtocol

    log_config = logging_config(settings.log_format, settings.log_level)
    logging.config.dictConfig(log_config)
    keep_large_buffers_out_of_the_heap()
    # A model that cannot be loaded (a damaged ONNX file, say) stops the server: uvicorn reads
    # should_exit on every tick, and shuts down as on SIGTERM.
    app = create_app(settings, on_load_failure=lambda: setattr(server, "should_exit", True))
    server = GracefulServer(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            http=HTTPProtocol,
            ws=StreamProtocol,
            ws_max_size=settings.stream_max_message_bytes,
            timeout_graceful_shutdown=settings.shutdown_grace_seconds,
            log_config=log_config,
            log_level=settings.log_level,
        ),
        stopping=app.state.server.stopping,
    )
    # uvicorn turns SIGTERM and SIGINT into a graceful shutdown, then raises the signal again so that
    # the default handler ends the process with it (exit 143). A shutdown that went as planned is a
    # success: this handler, which uvicorn puts back before raising, makes that second delivery a no-op.
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda *_: None)
    server.run()
    failure = app.state.server.load_error
    if failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


def check_models(settings) -> str | None:
    """What stops a model from being served, found before the server starts (and each model
    exported once, if it needs to be), or None: its folder, its language model's and lexicon's files,
    and that KenLM and the beam search take them."""
    from model.ctc import CTCVocabulary
    from model.decoding import DecoderStartError
    from model.hub import ModelNotFoundError
    from model.lexicon import LexiconError, read_lexicon
    from model.pipeline import Decoders

    from .beam_workers import check_decoder
    from .engine import ModelUnavailable, onnx_folder

    for spec in settings.models:
        if spec.lm is not None and not spec.lm.is_file():
            return f"model '{spec.name}': language model '{spec.lm}' not found"
        if spec.lexicon is not None and not spec.lexicon.is_file():
            return f"model '{spec.name}': lexicon '{spec.lexicon}' not found"
    for spec in settings.models:
        try:
            folder = onnx_folder(spec.reference, settings.cache_dir)
            vocab = CTCVocabulary.from_folder(folder)
        except (ModelNotFoundError, ModelUnavailable, OSError, ValueError) as error:
            return f"model '{spec.name}': {error}"
        try:
            lexicon = read_lexicon(spec.lexicon) if spec.lexicon is not None else None
        except LexiconError as error:
            return f"model '{spec.name}': {error}"
        if spec.lm is not None or lexicon:  # one KenLM refuses would otherwise fail every beam-search worker, forever
            try:
                # Only built, never run: the frame length matters to searches alone.
                check_decoder(Decoders(vocab, 0.0, spec.lm, spec.lm_alpha, spec.lm_beta, lexicon))
            except DecoderStartError as error:
                return (
                    f"model '{spec.name}': the beam search could not be built with language model "
                    f"'{spec.lm}' and lexicon '{spec.lexicon}': {error}"
                )
    return None


if __name__ == "__main__":
    sys.exit(main())
