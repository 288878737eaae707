"""The server's log: one format for uvicorn's lines (startup, access) and the service's, as text or
as one JSON object a line, and a request id in each line written while a request (or a stream
session) is being served.

The id comes from the client's `X-Request-Id` when it is a safe one (`REQUEST_ID`: up to 128
letters, digits and `._:-`; anything else is replaced, never echoed), else it is generated.
`RequestIdMiddleware` sets it for the request's task (and so for every task and thread it starts:
contextvars are copied), answers it in the response's `X-Request-Id` header (a websocket's in its
handshake answer), and `error_body` puts it in every error.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from contextvars import ContextVar
from typing import Literal

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
HEADER = b"x-request-id"
LEVELS = ("debug", "info", "warning", "error", "critical")
LogFormat = Literal["text", "json"]

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id() -> str:
    """A fresh id: 24 hex digits (96 random bits), like the ids clients usually send."""
    return secrets.token_hex(12)


def accepted_request_id(given: str | bytes | None) -> str:
    """The client's id if it is a safe one, else a new one."""
    if isinstance(given, bytes):
        given = given.decode("latin-1")
    return given if given is not None and REQUEST_ID.fullmatch(given) else new_request_id()


def request_id() -> str | None:
    """The id of the request (or stream session) being served, None outside one."""
    return _request_id.get()


def bind_request_id(value: str | None = None) -> str:
    """Make `value` (a new id if None) the current request id of this task, and return it. For a
    stream session that should carry an id of its own beyond the one of its handshake."""
    value = value or new_request_id()
    _request_id.set(value)
    return value


class RequestIdMiddleware:
    """Outermost ASGI middleware: takes or makes the request id, sets it, and answers it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        given = next((value for name, value in scope.get("headers", ()) if name == HEADER), None)
        value = accepted_request_id(given)
        token = _request_id.set(value)
        scope.setdefault("state", {})["request_id"] = value
        header = (HEADER, value.encode())

        async def send_with_id(message):
            if message["type"] in ("http.response.start", "websocket.accept"):
                headers = [item for item in message.get("headers", ()) if item[0].lower() != HEADER]
                message = {**message, "headers": [*headers, header]}
            elif message["type"] == "websocket.http.response.start":  # a handshake refused with HTTP
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (`record.request_id`, None outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True


def _access_fields(record: logging.LogRecord) -> dict:
    """uvicorn's access record holds (client, method, path, HTTP version, status) as its args."""
    if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
        client, method, path, version, status = record.args
        return {"client": client, "method": method, "path": path, "http_version": version, "status": status}
    return {}


class TextFormatter(logging.Formatter):
    """`2025-01-01 12:00:00,123 INFO service [id]: message`, the same for uvicorn's lines."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request_part)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.request_part = f" [{rid}]" if rid else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message, request_id, and for
    access lines their fields (client, method, path, status); a traceback as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        created = time.gmtime(record.created)
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", created) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            entry["request_id"] = rid
        entry.update(_access_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def logging_config(log_format: LogFormat = "text", level: str = "info") -> dict:
    """A `logging.config.dictConfig` dict for the server and uvicorn (`uvicorn.Config(log_config=...)`):
    one handler on stderr, one formatter, the request-id filter, `level` for every logger."""
    formatter = "json" if log_format == "json" else "text"
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"text": {"()": TextFormatter}, "json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": formatter,
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["stderr"], "level": upper},
        "loggers": {
            name: {"handlers": [], "level": upper, "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "service", "model")
        },
    }
