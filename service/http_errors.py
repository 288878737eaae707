"""Errors as responses. HTTP: JSON in the shape OpenAI's API uses, {"error": {"message", "type",
"param", "code"}}, with the status of the error's kind. Websockets: a `Refusal` (the close code of
the error's kind, its code and message), sent in the protocol's words (by default /v1/stream's
{"type": "error", "error", "message"}) before the close.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.routing import Match
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .errors import (
    AudioTooLarge,
    Busy,
    InvalidAudio,
    InvalidOption,
    InvalidRequest,
    RateLimited,
    ServiceError,
    TooCostly,
    Unauthorised,
    UnknownModel,
    UnusableAudio,
    validation_problem,
)
from .logs import request_id

log = logging.getLogger("service")

# Each kind of refusal: its HTTP status, and the websocket close code that says the same.
HTTP_STATUS = {
    InvalidAudio: 400,
    InvalidRequest: 400,
    Unauthorised: 401,
    UnknownModel: 404,
    AudioTooLarge: 413,
    InvalidOption: 422,
    TooCostly: 422,
    UnusableAudio: 422,
    RateLimited: 429,
    Busy: 503,
}
CLOSE_CODE = {Unauthorised: 1008, Busy: 1013, RateLimited: 1013}  # any other: 1007, unusable data


class ApiError(Exception):
    """An error of HTTP itself (the body, its type and size), with its status."""

    def __init__(
        self, status: int, code: str, message: str, param: str | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.param, self.headers = status, code, message, param, headers


def error_body(code: str, message: str, param: str | None = None, status: int = 400) -> dict:
    """The error as OpenAI's API words it: `type` server_error for a 5xx (the client did nothing
    wrong), requests for a 429 (OpenAI's rate-limit type), invalid_request_error for other 4xx; with
    the request's id (`service.logs`), to quote when asking what happened."""
    kind = "server_error" if status >= 500 else "requests" if status == 429 else "invalid_request_error"
    detail = {"message": message, "type": kind, "param": param, "code": code}
    rid = request_id()
    if rid:
        detail["request_id"] = rid
    return {"error": detail}


def refusal(
    connection: HTTPConnection | None,
    status: int,
    code: str,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error answer, its reason logged at INFO (a 4xx: the client's mistake, worth a line to
    whoever helps it; a 5xx refusal such as busy: the same, it is not a bug)."""
    where = f"{connection.scope.get('method', 'WEBSOCKET')} {connection.url.path}" if connection is not None else ""
    log.info("%s -> %d %s: %s", where, status, code, message)
    return JSONResponse(error_body(code, message, param, status), status, headers=headers)


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
    """Tell a websocket client why, in its protocol's `words` (with the session's request id), then
    close; accepts the connection first if need be. The reason is logged at INFO."""
    log.info("WEBSOCKET %s -> close %d %s: %s", websocket.url.path, refusal.close_code, refusal.code, refusal.message)
    body = words(refusal)
    rid = request_id()
    if rid:
        body["request_id"] = rid
    try:
        if websocket.client_state == WebSocketState.CONNECTING:
            await websocket.accept()
        await websocket.send_json(body)
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
    return refusal(connection, http_status(error), error.code, error.message, error.param, headers)


async def api_error_handler(connection: HTTPConnection, error: ApiError) -> JSONResponse:
    return refusal(connection, error.status, error.code, error.message, error.param, error.headers)


async def validation_error_handler(connection: HTTPConnection, error: RequestValidationError) -> JSONResponse:
    where, what = validation_problem(error, skip=("body", "query", "form"))
    return refusal(connection, 422, "invalid_parameter", f"{where or 'request'}: {what}", where or None)


async def http_error_handler(connection: HTTPConnection, error: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    headers = error.headers
    if error.status_code == 405:  # Starlette names the methods of the first route of the path only
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(connection))}
    return refusal(connection, error.status_code, code, str(error.detail), headers=headers)


def allowed_methods(connection: HTTPConnection) -> list[str]:
    """Every method some route of this path answers (GET and HEAD of /health are two routes)."""
    routes = connection.app.router.routes
    return [
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
        if any(route.matches({**connection.scope, "method": method})[0] == Match.FULL for route in routes)
    ]


async def internal_error_handler(_: HTTPConnection, error: Exception) -> JSONResponse:
    """A bug: the client gets JSON that names no internals; the log gets the traceback."""
    return JSONResponse(
        error_body("internal_error", "the server failed on this request; its log says why", status=500), 500
    )
