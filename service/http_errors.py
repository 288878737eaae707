"""Errors as responses. HTTP: JSON in the shape OpenAI's API uses, {"error": {"message", "type",
"param", "code"}}, with the status of the error's kind. Websockets: a `Refusal` (the close code of
the error's kind, its code and message), sent in the protocol's words (by default /v1/stream's
{"type": "error", "error", "message"}) before the close.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.routing import Match
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .errors import (AudioTooLarge, Busy, InvalidAudio, InvalidOption, ServiceError, TooCostly, Unauthorised,
                     UnknownModel, UnusableAudio, validation_problem)

# Each kind of refusal: its HTTP status, and the websocket close code that says the same.
HTTP_STATUS = {InvalidAudio: 400, Unauthorised: 401, UnknownModel: 404, AudioTooLarge: 413, InvalidOption: 422,
               TooCostly: 422,
               UnusableAudio: 422, Busy: 503}
CLOSE_CODE = {Unauthorised: 1008, Busy: 1013}  # any other: 1007, unusable data


class ApiError(Exception):
    """An error of HTTP itself (the body, its type and size), with its status."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.param, self.headers = status, code, message, param, headers


def error_body(code: str, message: str, param: str | None = None, status: int = 400) -> dict:
    """The error as OpenAI's API words it: `type` server_error for a 5xx (the client did nothing
    wrong), invalid_request_error for a 4xx."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def http_status(error: ServiceError) -> int:
    return next(status for kind, status in HTTP_STATUS.items() if isinstance(error, kind))


def close_code(error: ServiceError) -> int:
    return next((code for kind, code in CLOSE_CODE.items() if isinstance(error, kind)), 1007)


@dataclass(frozen=True)
class Refusal:
    """Why a websocket session ends: its close code, a `code` for clients to act on and a message for people."""
    close_code: int
    code: str
    message: str
    server_fault: bool = False  # the client did nothing wrong (a 5xx's kind): OpenAI's server_error


def refusal_of(error: ServiceError) -> Refusal:
    """The refusal that says `error` to a websocket client."""
    return Refusal(close_code(error), error.code, error.message, http_status(error) >= 500)


def stream_error(refusal: Refusal) -> dict:
    """A refusal in /v1/stream's words, and any websocket's refused before its protocol answers."""
    return {"type": "error", "error": refusal.code, "message": refusal.message}


async def refuse(websocket: WebSocket, refusal: Refusal, words: Callable[[Refusal], dict] = stream_error) -> None:
    """Tell a websocket client why, in its protocol's `words`, then close; accepts the connection first if need be."""
    try:
        if websocket.client_state == WebSocketState.CONNECTING:
            await websocket.accept()
        await websocket.send_json(words(refusal))
        await websocket.close(refusal.close_code, reason=refusal.message[:120])
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client is already gone


async def service_error_handler(connection: HTTPConnection, error: ServiceError) -> JSONResponse | None:
    if isinstance(connection, WebSocket):
        await refuse(connection, refusal_of(error))
        return None
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, Unauthorised):
        headers["WWW-Authenticate"] = "Bearer"
    status = http_status(error)
    return JSONResponse(error_body(error.code, error.message, error.param, status), status, headers=headers)


async def api_error_handler(_: HTTPConnection, error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(error.code, error.message, error.param, error.status), error.status,
                        headers=error.headers)


async def validation_error_handler(_: HTTPConnection, error: RequestValidationError) -> JSONResponse:
    where, what = validation_problem(error, skip=("body", "query", "form"))
    return JSONResponse(error_body("invalid_parameter", f"{where or 'request'}: {what}", where or None), 422)


async def http_error_handler(connection: HTTPConnection, error: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    headers = error.headers
    if error.status_code == 405:  # Starlette names the methods of the first route of the path only
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(connection))}
    return JSONResponse(error_body(code, str(error.detail), status=error.status_code), error.status_code,
                        headers=headers)


def allowed_methods(connection: HTTPConnection) -> list[str]:
    """Every method some route of this path answers (GET and HEAD of /health are two routes)."""
    routes = connection.app.router.routes
    return [method for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
            if any(route.matches({**connection.scope, "method": method})[0] == Match.FULL for route in routes)]


async def internal_error_handler(_: HTTPConnection, error: Exception) -> JSONResponse:
    """A bug: the client gets JSON that names no internals; the log gets the traceback."""
    return JSONResponse(error_body("internal_error", "the server failed on this request; its log says why",
                                   status=500), 500)
