"""Errors as JSON, in the shape OpenAI's API uses: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.param, self.headers = status, code, message, param, headers


def error_body(code: str, message: str, param: str | None = None) -> dict:
    kind = "server_error" if code == "internal_error" else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


async def api_error_handler(_: Request, error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(error.code, error.message, error.param), error.status, headers=error.headers)


async def validation_error_handler(_: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "form"))
    return JSONResponse(error_body("invalid_parameter", f"{where or 'request'}: {first.get('msg', 'invalid')}",
                                   where or None), 422)


async def http_error_handler(_: Request, error: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return JSONResponse(error_body(code, str(error.detail)), error.status_code, headers=error.headers)


async def internal_error_handler(_: Request, error: Exception) -> JSONResponse:
    """A bug: the client gets JSON that names no internals; the log gets the traceback."""
    return JSONResponse(error_body("internal_error", "the server failed on this request; its log says why"), 500)
