"""What the service refuses, and why: the errors its audio checks and pipeline raise.

Each has a `code` for clients to act on and a message for people. They know nothing of HTTP or
websockets: `service.http_errors` gives each kind its status and its close code.
"""

from __future__ import annotations


class ServiceError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.code, self.message, self.param, self.retry_after = code, message, param, retry_after


class InvalidAudio(ServiceError):
    """Audio that cannot be decoded, is empty, or is too short for one model frame."""


class InvalidRequest(ServiceError):
    """Options that contradict each other or the model (a language it does not speak): OpenAI's 400."""


class AudioTooLarge(ServiceError):
    """Audio longer, or larger once decoded, than this server takes."""


class UnusableAudio(ServiceError):
    """Audio that decodes but holds nothing to transcribe: silence, or values the model turns into NaN."""


class TooCostly(ServiceError):
    """A request the decoder cannot finish within this server's deadline, now or later: not a retry."""


class InvalidOption(ServiceError):
    """An option outside what the request allows or this server's limits."""


class UnknownModel(ServiceError):
    """A model name this server does not serve."""


class Unauthorised(ServiceError):
    """No valid API key."""


class RateLimited(ServiceError):
    """Over a per-minute limit of this client's (`service.rate_limits`): retry after `retry_after` seconds."""


class Busy(ServiceError):
    """Not now: a queue is full, a worker is restarting, the model is loading. `retry_after` seconds."""


def validation_problem(error, skip: tuple[str, ...] = ()) -> tuple[str, str]:
    """The first problem of a pydantic (or FastAPI request) validation error, as (where, what):
    where is the field's dotted path less the parts in `skip`, what says what is wrong with it."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in skip)
    what = "unknown field" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    return where, what


def shorten(value: object, limit: int = 64) -> str:
    """A client's value to quote in an error (a model name, an event type): its repr, cut to
    `limit` characters, so that an answer never echoes a megabyte back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
