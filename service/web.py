"""The browser page at `/`: live transcription from the microphone over /v1/stream, and files
through POST /transcribe. Static files in `web/` (no build step, nothing fetched from elsewhere),
open without an API key like /health: the page holds no data, and asks for the key itself.
Off with `--no-web-ui` (`ASR_WEB_UI=false`)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

from model.options import DecodeOptions, choose_decoder

from .dependencies import ServerDep
from .http_errors import ApiError

FOLDER = Path(__file__).with_name("web")
FILES = {
    "app.js": "text/javascript",
    "export.js": "text/javascript",
    "capture-worklet.js": "text/javascript",
    "style.css": "text/css",
}
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidated each time: a new server version shows at once

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(FOLDER / "index.html", media_type="text/html", headers=NO_CACHE)


@router.get("/web/config.json")
async def config(server: ServerDep) -> JSONResponse:
    """What the page needs before it starts: the models (the default first) and the sample rate of
    each one loaded (the page sends audio at it), the default decoder, whether keys are needed."""
    pipeline = server.pipelines.get(server.model_name)
    return JSONResponse(
        {
            "ready": pipeline is not None,
            "model": server.model_name if pipeline is not None else None,
            "models": server.served_names,
            "sample_rate": pipeline.rate if pipeline is not None else None,
            "rates": {name: loaded.rate for name, loaded in server.pipelines.items()},  # each loaded model's
            "default_decoder": choose_decoder(DecodeOptions(), server.settings.default.lm is not None),
            "api_keys": bool(server.settings.api_keys),
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get("/web/{name}")
async def asset(name: str) -> FileResponse:
    if name not in FILES:
        raise ApiError(404, "not_found", f"no file {name!r} here")
    return FileResponse(FOLDER / name, media_type=FILES[name], headers=NO_CACHE)
