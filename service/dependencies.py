"""What routes receive, as typed FastAPI dependencies: the server's state (whose `pipeline(name)`
gives a model's pipeline), its settings, and the API-key check that HTTP routes and the
websocket share."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from .errors import Unauthorised
from .server import Server
from .settings import Settings


async def get_server(connection: HTTPConnection) -> Server:
    return connection.app.state.server


ServerDep = Annotated[Server, Depends(get_server)]


async def get_settings(server: ServerDep) -> Settings:
    return server.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def known_key(token: str, keys: list[str]) -> bool:
    """Whether `token` is one of `keys`, compared in constant time."""
    return any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)


class APIKey(HTTPBearer):
    """The bearer scheme in the OpenAPI schema, and its check against the server's keys, for HTTP
    requests and websockets alike. An HTTP request without a valid key is refused here (401). A
    websocket gets the answer instead (True: a valid key, or none is needed): its protocol says how
    to refuse, and a browser, which cannot set headers on a websocket, may send its key in a
    message (`known_key` checks that one)."""

    async def __call__(self, connection: HTTPConnection, settings: SettingsDep) -> bool:  # type: ignore[override]
        if not settings.api_keys:
            return True
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and known_key(token, settings.api_keys):
            return True
        if isinstance(connection, WebSocket):
            return False
        raise Unauthorised("invalid_api_key", "a valid API key is needed: Authorization: Bearer <key>")


require_api_key = APIKey(
    scheme_name="HTTPBearer", auto_error=False, description="one of the server's API keys, when it has any"
)
