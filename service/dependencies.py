"""What routes receive, as typed FastAPI dependencies: the server's state, its settings, the
pipeline (or a 503 while there is none), and the API-key check that HTTP routes and the
websocket share."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from .errors import Unauthorised
from .pipeline import Pipeline
from .server import Server
from .settings import Settings


def get_server(connection: HTTPConnection) -> Server:
    return connection.app.state.server


ServerDep = Annotated[Server, Depends(get_server)]


def get_settings(server: ServerDep) -> Settings:
    return server.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_pipeline(server: ServerDep) -> Pipeline:
    return server.require_pipeline()


PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]


class APIKey(HTTPBearer):
    """The bearer scheme in the OpenAPI schema, and its check against the server's keys
    (constant-time), for HTTP requests and websockets alike."""

    async def __call__(self, connection: HTTPConnection, settings: SettingsDep) -> None:  # type: ignore[override]
        if not settings.api_keys:
            return
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(token.encode(), key.encode())
                                                 for key in settings.api_keys):
            raise Unauthorised("invalid_api_key", "a valid API key is needed: Authorization: Bearer <key>")


require_api_key = APIKey(scheme_name="HTTPBearer", auto_error=False,
                         description="one of the server's API keys, when it has any")
