"""`python -m service --model MODEL [--lm LM] [--host H] [--port P] ...`; every option also as ASR_<NAME>."""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> int:
    from .settings import Settings

    parser = argparse.ArgumentParser(prog="python -m service", description="wav2vec 2.0 transcription server. "
                                     "Every option can also be set as an environment variable ASR_<OPTION>.")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        annotation = str(field.annotation)
        kind = int if annotation == "<class 'int'>" else float if annotation == "<class 'float'>" else str
        parser.add_argument(flag, dest=name, type=kind, default=argparse.SUPPRESS,
                            help=f"{field.description or ''} (env ASR_{name.upper()})".strip())
    given = vars(parser.parse_args(argv))
    try:
        settings = Settings(**given)
    except ValidationError as error:
        problem = error.errors()[0]
        name = str(problem["loc"][0]) if problem["loc"] else "settings"
        if problem["type"] == "missing":
            print(f"error: --{name.replace('_', '-')} (or ASR_{name.upper()}) is required", file=sys.stderr)
        else:
            print(f"error: --{name.replace('_', '-')}: {problem['msg']}", file=sys.stderr)
        return 2
    if settings.lm is not None and not settings.lm.is_file():
        print(f"error: language model '{settings.lm}' not found", file=sys.stderr)
        return 1

    from model.hub import ModelNotFoundError

    from .engine import ModelUnavailable, onnx_folder

    try:
        onnx_folder(settings)  # fail fast, and export once if needed, before the server starts
    except (ModelNotFoundError, ModelUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    import uvicorn  # the ASGI server, with websockets support from the `websockets` package

    from .app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                # Above our own per-message limit, so an oversized message gets our JSON error, not a bare close.
                ws_max_size=settings.stream_max_message_bytes + 65536, timeout_graceful_shutdown=30, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
