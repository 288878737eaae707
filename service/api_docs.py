"""The API's own description: `/openapi.json`, and the pages that browse it, `/docs` (Swagger UI)
and `/redoc` (ReDoc). Their scripts and styles come from the pinned `fastapi-offline` package's
files, served here, never from a CDN: the pages work offline and behind a firewall. All of it is
behind the API keys, if any, like the API it describes."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response

from .dependencies import require_api_key
from .http_errors import ApiError

ASSETS_URL = "/docs/assets"
# The package's static files, found without importing it (its module only wraps FastAPI, unused here).
FOLDER = Path(find_spec("fastapi_offline").submodule_search_locations[0]) / "static"
FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}

router = APIRouter(dependencies=[Depends(require_api_key)], include_in_schema=False)


@router.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger(request: Request) -> Response:
    # No validator: Swagger UI would otherwise send the schema's URL to swagger.io for a badge.
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=request.app.title,
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc")
async def redoc(request: Request) -> Response:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title=request.app.title,
        redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )


@router.get(ASSETS_URL + "/{name}")
async def asset(name: str) -> FileResponse:
    if name not in FILES:
        raise ApiError(404, "not_found", f"no file {name!r} here")
    # The files change only with the pinned package, so a browser may keep them for a day.
    return FileResponse(FOLDER / name, media_type=FILES[name], headers={"Cache-Control": "max-age=86400"})
