"""Reading requests: bodies under a size cap, multipart forms, and option fields."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from .errors import validation_problem
from .http_errors import ApiError

RAW_AUDIO_TYPES = ("application/octet-stream",)


async def read_body(request: Request, limit: int, idle_seconds: float) -> bytes:
    """The whole body, refused with 413 as soon as it passes `limit` bytes (declared or actual), and
    with 408 when nothing arrives for `idle_seconds` (a client that stalls must not hold it forever)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "upload_too_large", f"the upload is {int(declared)} bytes; the limit is {limit}")
    chunks, size = [], 0
    stream = request.stream()
    while True:
        try:
            chunk = await asyncio.wait_for(anext(stream), idle_seconds)
        except StopAsyncIteration:
            return b"".join(chunks)
        except TimeoutError:
            raise ApiError(
                408,
                "body_timeout",
                f"the request body stopped arriving: nothing for {idle_seconds:g} s after {size} bytes",
                headers={"Connection": "close"},
            ) from None
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "upload_too_large", f"the upload is over the limit of {limit} bytes")
        chunks.append(chunk)


async def parse_multipart(request: Request, body: bytes) -> FormData:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    try:
        # Fields: up to 100 hotwords, each its own field, and the options beside them.
        return await MultiPartParser(request.headers, stream(), max_files=4, max_fields=256).parse()
    except MultiPartException as error:
        raise ApiError(400, "invalid_multipart", f"the multipart body could not be read: {error.message}") from None


async def audio_and_fields(request: Request, limit: int, idle_seconds: float) -> tuple[bytes, dict[str, list[str]]]:
    """The audio (multipart field `file`, or the raw body) and every other field, by name."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limit, idle_seconds)
    fields: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        fields.setdefault(name, []).append(value)
    if media_type == "multipart/form-data":
        form = await parse_multipart(request, body)
        if len(form.getlist("file")) > 1:
            raise ApiError(
                422,
                "invalid_parameter",
                f"send one file per request (the multipart field 'file' came {len(form.getlist('file'))} times)",
                "file",
            )
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            names = ", ".join(sorted(set(form.keys()))) or "none"
            raise ApiError(
                422, "missing_file", f"send the audio in the multipart field 'file' (fields sent: {names})", "file"
            )
        audio = await upload.read()
        for name, value in form.multi_items():
            if name != "file":
                if isinstance(value, UploadFile):
                    raise ApiError(422, "unexpected_file", f"only 'file' may hold a file, not '{name}'", name)
                fields.setdefault(name, []).append(value)
        return audio, fields
    if media_type.startswith("audio/") or media_type in RAW_AUDIO_TYPES:
        return body, fields
    shown = media_type or "none"
    raise ApiError(
        415,
        "unsupported_media_type",
        f"content type '{shown}' is not audio; send multipart/form-data "
        "with a 'file' field, or the audio itself as audio/* or "
        "application/octet-stream",
    )


def parse_fields(model: type[BaseModel], fields: dict[str, list[str]], lists: tuple[str, ...] = ()) -> BaseModel:
    """Validate form or query fields into `model`; list fields may repeat or hold comma-separated values."""
    values: dict[str, object] = {}
    for name, given in fields.items():
        key = name.removesuffix("[]")
        if key in lists:
            values[key] = [part.strip() for value in given for part in value.split(",") if part.strip()]
        else:
            values[key] = given[-1]
    try:
        return model.model_validate(values)
    except ValidationError as error:
        where, what = validation_problem(error)
        raise ApiError(422, "invalid_parameter", f"{where or 'request'}: {what}", where or "request") from None
