"""HTTP routes: health and metrics (open), transcription and models (behind the API keys, if any)."""

from __future__ import annotations

import hmac
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from .audio_input import decode_upload
from .errors import ApiError
from .pipeline import DecodeOptions, Pipeline, Transcription
from .requests import audio_and_fields, parse_fields
from .subtitles import segments, srt, vtt


def server_of(request: Request):
    return request.app.state.server


def require_api_key(request: Request) -> None:
    keys = server_of(request).settings.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not any(hmac.compare_digest(token.encode(), key.encode()) for key in keys):
        raise ApiError(401, "invalid_api_key", "a valid API key is needed: Authorization: Bearer <key>",
                       headers={"WWW-Authenticate": "Bearer"})


health = APIRouter()
api = APIRouter(dependencies=[Depends(require_api_key)])


@health.get("/health", summary="The process is alive")
async def alive() -> dict:
    return {"status": "ok"}


@health.get("/ready", summary="The model is loaded and warmed up (503 before)")
async def ready(request: Request) -> JSONResponse:
    server = server_of(request)
    if server.pipeline is None:
        detail = server.load_error or "loading"
        return JSONResponse({"status": "not ready", "detail": detail}, 503, headers={"Retry-After": "5"})
    return JSONResponse({"status": "ready", "model": server.model_name})


@health.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    server = server_of(request)
    if server.pipeline:
        server.metrics.queue_depth.set(server.pipeline.batcher.depth)
    return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@api.get("/v1/models", summary="The served model, OpenAI-style")
async def models(request: Request) -> dict:
    server = server_of(request)
    return {"object": "list", "data": [{"id": server.model_name, "object": "model", "created": 0,
                                        "owned_by": "w2v-asr"}]}


class TranscribeParams(DecodeOptions):
    sample_rate: int | None = Field(None, description="raw PCM only: its sample rate in Hz")
    encoding: str | None = Field(None, description="raw PCM only: pcm_s16le, pcm_s32le or pcm_f32le")


class WordOut(BaseModel):
    word: str
    start: float
    end: float
    confidence: float


class TimingsOut(BaseModel):
    queue: float
    inference: float
    decode: float


class TranscribeResponse(BaseModel):
    text: str
    words: list[WordOut]
    duration: float
    model: str
    decoder: str
    timings: TimingsOut


async def _transcribe(request: Request, endpoint: str, params_model: type[TranscribeParams]):
    server = server_of(request)
    pipeline: Pipeline = server.require_pipeline()
    started = time.perf_counter()
    settings = server.settings
    audio, fields = await audio_and_fields(request, int(settings.max_upload_mb * 1024 * 1024))
    params = parse_fields(params_model, fields, lists=("hotwords", "timestamp_granularities"))
    samples = decode_upload(audio, pipeline.rate, settings.max_audio_seconds, params.sample_rate, params.encoding)
    result = await pipeline.transcribe(samples, DecodeOptions(**{name: getattr(params, name)
                                                                  for name in DecodeOptions.model_fields}))
    server.metrics.audio_seconds.labels(endpoint).inc(result.duration)
    server.metrics.real_time_factor.observe((time.perf_counter() - started) / max(result.duration, 1e-3))
    return params, result


@api.post("/transcribe", response_model=TranscribeResponse, summary="Transcribe one recording",
          description="The audio as multipart field `file`, or as the raw body (audio/* or "
                      "application/octet-stream; raw PCM with `sample_rate` and `encoding`). Options as form "
                      "fields or query parameters.")
async def transcribe(request: Request) -> dict:
    _, result = await _transcribe(request, "/transcribe", TranscribeParams)
    return {**result.to_dict(), "model": server_of(request).model_name}


class OpenAIParams(TranscribeParams):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    response_format: str = "json"
    timestamp_granularities: list[str] = Field(default_factory=list)
    stream: bool = False


@api.post("/v1/audio/transcriptions", summary="OpenAI-compatible transcription",
          description="Multipart `file` and `model` (any name: the served model answers), `response_format` "
                      "json, text, srt, vtt or verbose_json, `timestamp_granularities[]` word and/or segment.")
async def openai_transcriptions(request: Request) -> Response:
    params, result = await _transcribe(request, "/v1/audio/transcriptions", OpenAIParams)
    return openai_response(params, result)


def openai_response(params: OpenAIParams, result: Transcription) -> Response:
    if params.stream:
        raise ApiError(422, "unsupported", "stream=true is not supported here; use the websocket /v1/stream",
                       "stream")
    kind = params.response_format
    if kind == "json":
        return JSONResponse({"text": result.text})
    if kind == "text":
        return PlainTextResponse(result.text + "\n")
    if kind in ("srt", "vtt"):
        return PlainTextResponse((srt if kind == "srt" else vtt)(segments(result.words)))
    if kind == "verbose_json":
        granularities = set(params.timestamp_granularities or ["segment"])
        unknown = granularities - {"word", "segment"}
        if unknown:
            raise ApiError(422, "invalid_parameter", f"timestamp_granularities: unknown {', '.join(sorted(unknown))}",
                           "timestamp_granularities")
        body = {"task": "transcribe", "language": params.language or "english", "duration": result.duration,
                "text": result.text}
        if "segment" in granularities:
            body["segments"] = [{"id": index, "seek": 0, "start": segment["start"], "end": segment["end"],
                                 "text": segment["text"], "tokens": [], "temperature": 0.0,
                                 "avg_logprob": 0.0, "compression_ratio": 1.0, "no_speech_prob": 0.0}
                                for index, segment in enumerate(segments(result.words))]
        if "word" in granularities:
            body["words"] = [{"word": w["word"], "start": w["start"], "end": w["end"]} for w in result.words]
        return JSONResponse(body)
    raise ApiError(422, "invalid_parameter", f"response_format must be json, text, srt, vtt or verbose_json, "
                                             f"not {kind!r}", "response_format")
