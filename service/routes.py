"""HTTP routes: health, readiness and metrics (open), transcription and models (behind the API
keys, if any); the API's own description is `service.api_docs`.

The transcription routes read their bodies themselves (multipart or raw audio, under a size
cap and a read timeout), so their parameters and bodies are declared to OpenAPI from the same
pydantic models that validate them: the schema is the contract.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from pydantic import BaseModel, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from model.audio import PCM_ENCODINGS
from model.pipeline import Transcript

from .audio_input import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, decode_upload
from .dependencies import ServerDep, require_api_key
from .openai_format import check_granularities, check_language, openai_response
from .options import DecodeRequest
from .pipeline import Pipeline
from .rate_limits import client_of
from .requests import audio_and_fields, parse_fields
from .server import Server


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class ErrorResponse(BaseModel):
    """Every error, in the shape OpenAI's API uses."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict:
    reasons = {
        400: "undecodable, empty or too short audio; a language the model does not speak; "
        "timestamp_granularities without verbose_json",
        401: "a missing or wrong API key",
        404: "no model of that name (code model_not_found)",
        408: "the request body stopped arriving",
        413: "the upload or the audio is too large or too long (for beam search too)",
        414: "the URL is over 16 KiB: send long options as form fields",
        415: "the body is not audio",
        422: "bad options, or silent audio",
        429: "over this key's requests or audio seconds a minute; retry after Retry-After seconds",
        503: "busy (queue full, a worker restarting) or not ready; retry after Retry-After seconds",
    }
    return {status: {"model": ErrorResponse, "description": reasons[status]} for status in statuses}


class ReadyResponse(BaseModel):
    status: Literal["ready"]
    model: str


class NotReadyResponse(BaseModel):
    status: Literal["not ready"]
    detail: str


health = APIRouter()
api = APIRouter(dependencies=[Depends(require_api_key)], responses=error_responses(401))


@health.get("/health", summary="The process is alive")
@health.head("/health", include_in_schema=False)
async def alive() -> dict:
    return {"status": "ok"}


@health.get(
    "/ready",
    summary="Every model is loaded and warmed up, and each has a beam-search worker running",
    response_model=ReadyResponse,
    responses={503: {"model": NotReadyResponse, "description": "loading, failed, or no decoder running"}},
)
async def ready(server: ServerDep) -> JSONResponse:
    reason = server.not_ready_reason()
    if reason:
        return JSONResponse({"status": "not ready", "detail": reason}, 503, headers={"Retry-After": "5"})
    return JSONResponse({"status": "ready", "model": server.model_name})


@health.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request, server: ServerDep) -> Response:
    for pipeline in list(server.pipelines.values()):
        pipeline.metrics.queue_depth.set(pipeline.batcher.depth)
        pipeline.metrics.decode_workers_alive.set(pipeline.beam.alive)
    if "application/openmetrics-text" in request.headers.get("accept", ""):  # with exemplars (request ids)
        return Response(
            openmetrics.generate_latest(server.metrics.registry), media_type=openmetrics.CONTENT_TYPE_LATEST
        )
    return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


@api.get(
    "/v1/models", summary="The served models, OpenAI-style (the default first, aliases last)", response_model=ModelList
)
async def models(server: ServerDep) -> dict:
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 0, "owned_by": "w2v-asr"} for name in server.model_names],
    }


class TranscribeParams(DecodeRequest):
    model: str | None = Field(
        None, description="the model to answer, by its name in /v1/models (default: the server's default model)"
    )
    # The range is checked with the rate read from a file's header, by the same function.
    sample_rate: int | None = Field(
        None,
        description="raw PCM only: its sample rate in Hz",
        json_schema_extra={"minimum": MIN_SAMPLE_RATE, "maximum": MAX_SAMPLE_RATE},
    )
    encoding: Literal["pcm_s16le", "pcm_s32le", "pcm_f32le"] | None = Field(
        None, description="raw PCM only: its encoding"
    )

    @field_validator("encoding", mode="before")
    @classmethod
    def _known_encoding(cls, value):
        if value is not None and value not in PCM_ENCODINGS:
            raise ValueError(f"unknown encoding {value!r}; use one of {', '.join(PCM_ENCODINGS)}")
        return value


class WordOut(BaseModel):
    word: str
    start: float
    end: float
    confidence: float = Field(description="0-1: the mean probability of the decoder's token over the word's frames")
    low_confidence: bool = Field(description="the confidence is below the server's min_confidence")


class TimingsOut(BaseModel):
    queue: float
    inference: float
    decode: float


class AlternativeOut(BaseModel):
    text: str
    score: float = Field(
        description="the beam search's log score (acoustic, weighted LM, word bonus); higher is "
        "better; comparable within one answer"
    )


CONFIDENCE = (
    "0-1: the weakest word's confidence, 0 when no word was recognised; below the server's "
    "min_confidence, the model probably did not hear words it knows (speech in another vocabulary, noise)"
)


class TranscribeResponse(BaseModel):
    text: str
    confidence: float = Field(description=CONFIDENCE)
    words: list[WordOut]
    duration: float
    model: str
    decoder: str
    beam_search: str | None = Field(
        None, description="the beam search that ran: pyctcdecode or flashlight (absent with greedy decoding)"
    )
    timings: TimingsOut
    alternatives: list[AlternativeOut] | None = Field(
        None, description="with `alternatives`: the n best transcripts, best first"
    )


class OpenAIParams(TranscribeParams):
    model: str | None = Field(
        None, description="the model to answer, by its name in /v1/models (default: the server's default model)"
    )
    # OpenAI's response shapes have no place for alternatives: /transcribe gives them.
    alternatives: SkipJsonSchema[None] = None
    language: str | None = Field(
        None,
        description="ISO-639-1 code (or name) of the audio's language: it must be "
        "the model's (400 otherwise); the answer is the same either way",
    )
    prompt: str | None = Field(None, description="accepted and ignored")
    temperature: float | None = Field(None, description="accepted and ignored")
    response_format: Literal["json", "text", "srt", "vtt", "verbose_json"] = "json"
    timestamp_granularities: list[Literal["word", "segment"]] = Field(
        default_factory=list, max_length=2, description="verbose_json only (400 with another format); default: segment"
    )
    stream: bool = Field(False, description="must be false: streaming is the websocket /v1/stream")

    @field_validator("stream")
    @classmethod
    def _not_streamed(cls, value: bool) -> bool:
        if value:
            raise ValueError("stream=true is not supported here; use the websocket /v1/stream")
        return value

    @field_validator("alternatives", mode="before")
    @classmethod
    def _no_alternatives(cls, value):
        if value is not None:
            raise ValueError("OpenAI's response formats have no place for alternatives; POST /transcribe answers them")
        return value


class OpenAIUsage(BaseModel):
    type: Literal["duration"]
    seconds: float = Field(description="the audio's length, in seconds")


class OpenAIText(BaseModel):
    text: str
    usage: OpenAIUsage


class OpenAIWord(BaseModel):
    word: str
    start: float
    end: float


class OpenAISegment(BaseModel):
    """Whisper's seek, tokens, temperature, compression_ratio and no_speech_prob are left out: this
    server has no such things to report (docs/api-openai.md)."""

    id: int
    start: float
    end: float
    text: str
    avg_logprob: float = Field(
        description="the mean, over the segment's words weighted by length, of the natural "
        "log of each word's confidence (from the CTC posteriors)"
    )


class OpenAIVerbose(BaseModel):
    task: str
    language: str
    duration: float
    text: str
    confidence: float = Field(description=CONFIDENCE)
    segments: list[OpenAISegment] | None = None
    words: list[OpenAIWord] | None = None
    usage: OpenAIUsage


LISTS = ("hotwords", "phrases", "timestamp_granularities")  # fields that may repeat, or hold comma-separated values


def _field_schema(schema: dict) -> dict:
    """A field's JSON schema less its `null` alternative: a form field or query parameter is
    either given or left out; it cannot be null."""
    choices = [choice for choice in schema.get("anyOf", []) if choice != {"type": "null"}]
    if len(choices) != 1:
        return schema
    return {**{key: value for key, value in schema.items() if key not in ("anyOf", "default")}, **choices[0]}


def audio_request(params: type[BaseModel]) -> dict:
    """OpenAPI for a route that takes audio as the body or a multipart `file`, with `params` as
    query parameters or form fields."""
    properties = {name: _field_schema(schema) for name, schema in params.model_json_schema()["properties"].items()}
    form = {"file": {"type": "string", "format": "binary", "description": "the audio"}}
    form.update(
        {f"{name}[]" if name == "timestamp_granularities" else name: schema for name, schema in properties.items()}
    )
    audio = {"schema": {"type": "string", "format": "binary"}}
    return {
        "parameters": [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": schema,
                "description": schema.get("description", ""),
                "explode": True,
            }
            for name, schema in properties.items()
        ],
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": form, "required": ["file"]}},
                "audio/*": audio,
                "application/octet-stream": audio,
            },
        },
    }


async def _transcribe(
    request: Request,
    server: Server,
    endpoint: str,
    params_model: type[TranscribeParams],
    check: Callable[[TranscribeParams, Pipeline], None] = lambda *_: None,
) -> tuple[TranscribeParams, Transcript, dict[str, str]]:
    """The request's options and transcription, and the rate-limit headers to answer with; `check`
    refuses options that depend on the model, before the audio costs anything."""
    started = time.perf_counter()
    settings = server.settings
    client = client_of(request.headers, request.client.host if request.client else None, bool(settings.api_keys))
    headers = server.rate_limits.admit(client)  # before the body is even read: a refused client costs nothing
    audio, fields = await audio_and_fields(request, int(settings.max_upload_mb * 2**20), settings.body_timeout_seconds)
    params = parse_fields(params_model, fields, lists=LISTS)
    pipeline = server.pipeline(params.model)
    request.state.model = pipeline.name
    # Only the decoding fields (a route's own may not be one), less those a route left unset (None).
    options = DecodeRequest(
        **{name: getattr(params, name) for name in DecodeRequest.model_fields if getattr(params, name) is not None}
    )
    pipeline.check_options(options)  # every option is checked before the audio costs anything
    check(params, pipeline)
    samples = await decode_upload(
        audio,
        pipeline.rate,
        settings.max_audio_seconds,
        int(settings.max_decoded_mb * 2**20),
        params.sample_rate,
        params.encoding,
    )
    result = await pipeline.transcribe(samples, options)
    server.rate_limits.charge_audio(client, result.duration)
    pipeline.metrics.audio_seconds(endpoint).inc(result.duration)
    pipeline.metrics.real_time_factor.observe((time.perf_counter() - started) / max(result.duration, 1e-3))
    return params, result, headers


TRANSCRIBE_ERRORS = error_responses(400, 404, 408, 413, 414, 415, 422, 429, 503)


@api.post(
    "/transcribe",
    response_model=TranscribeResponse,
    response_model_exclude_none=True,
    summary="Transcribe one recording",
    description="The audio as multipart field `file`, or as the raw body (audio/* or "
    "application/octet-stream; raw PCM with `sample_rate` and `encoding`). Options as form "
    "fields or query parameters; `model` chooses the model.",
    responses=TRANSCRIBE_ERRORS,
    openapi_extra=audio_request(TranscribeParams),
)
async def transcribe(request: Request, response: Response, server: ServerDep) -> dict:
    _, result, headers = await _transcribe(request, server, "/transcribe", TranscribeParams)
    response.headers.update(headers)
    return result.to_dict()


@api.post(
    "/v1/audio/transcriptions",
    summary="OpenAI-compatible transcription",
    description="Multipart `file` and `model` (a name from /v1/models; left out: the default model), "
    "`response_format` json, text, srt, vtt or verbose_json, `timestamp_granularities[]` word "
    "and/or segment.",
    responses={
        **TRANSCRIBE_ERRORS,
        200: {
            "description": "json and verbose_json as JSON; text, srt and vtt as text",
            "model": OpenAIText | OpenAIVerbose,
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
    },
    openapi_extra=audio_request(OpenAIParams),
)
async def openai_transcriptions(request: Request, server: ServerDep) -> Response:
    def check(params: OpenAIParams, pipeline: Pipeline) -> None:
        check_granularities(params.timestamp_granularities, params.response_format)
        check_language(params.language, server.settings.language_of(pipeline.name))

    params, result, headers = await _transcribe(request, server, "/v1/audio/transcriptions", OpenAIParams, check)
    language = check_language(params.language, server.settings.language_of(result.model))
    response = openai_response(params.response_format, params.timestamp_granularities, language, result)
    response.headers.update(headers)
    return response
