"""Websocket streaming at /v1/stream: partial results while audio arrives, a final per segment.

Protocol: a JSON config first (`model` chooses the model), then binary PCM frames, then
{"type": "eof"} (or {"type": "finalize"} to end the current segment and go on). Segments end at
pauses found by voice-activity detection (`endpointing` ms of non-speech; false: never), at
`max_segment_seconds`, at "finalize" and at "eof". A final is the offline transcription of
exactly that segment's audio, so it equals what /transcribe returns for the same samples.
Partials decode only the last few seconds of the segment, so their cost stays bounded however
long a stream runs.

This module is the protocol only: the engine is `model.streaming.Stream`, which reports here as
this protocol's JSON messages (`StreamMessages`), and in `realtime` as OpenAI's events.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from pydantic import Field, ValidationError, field_validator

from model.audio import AudioError, decode_pcm
from model.streaming import Stream, StreamEvents, StreamOptions

from .audio_input import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from .dependencies import ServerDep, known_key, require_api_key
from .errors import ServiceError, Unauthorised, shorten, validation_problem
from .http_errors import refuse
from .options import DecodeRequest
from .server import Server
from .sessions import (
    Closed,
    Ending,
    PipelineRecognizer,
    SessionLimits,
    parse_json,
    serve_in_slot,
    session_refusal,
    wind_down,
)

router = APIRouter()
DEFAULTS = StreamOptions()


class StreamConfig(DecodeRequest):
    type: Literal["config"] | None = None
    model: str | None = Field(
        None, description="the model to answer, by its name in /v1/models (default: the server's default model)"
    )
    api_key: str | None = Field(
        None,
        exclude=True,
        description="for clients that cannot send headers (browsers): "
        "the API key, read when no Authorization header came",
    )
    sample_rate: int = Field(DEFAULTS.sample_rate, ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)
    encoding: Literal["pcm_s16le", "pcm_f32le"] = "pcm_s16le"
    interim_results: bool = DEFAULTS.interim_results
    endpointing: int | Literal[False] = Field(
        DEFAULTS.endpointing_ms, description="ms of pause that end a segment (30-60000); false: never"
    )
    max_segment_seconds: float = Field(
        DEFAULTS.max_segment_seconds, gt=0, description="longest segment; at most the stream's limit"
    )

    @field_validator("endpointing", mode="before")
    @classmethod
    def _milliseconds_or_false(cls, value):
        # JSON true is not 1 ms; 30 ms is one VAD frame; past a minute, false says it better.
        if value is False or (type(value) is int and 30 <= value <= 60_000):
            return value
        raise ValueError("must be false or a whole number of milliseconds from 30 to 60000")

    @field_validator("max_segment_seconds")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):  # JSON 1e400 parses as infinity
            raise ValueError("must be a finite number of seconds")
        return value

    def stream_options(self, max_stream_seconds: float) -> StreamOptions:
        """The engine's options this config asks for, within the server's limit of audio per stream."""
        return StreamOptions(
            sample_rate=self.sample_rate,
            interim_results=self.interim_results,
            endpointing_ms=None if self.endpointing is False else self.endpointing,
            max_segment_seconds=self.max_segment_seconds,
            max_stream_seconds=max_stream_seconds,
        )


class StreamMessages(StreamEvents):
    """/v1/stream's JSON messages."""

    def __init__(self, websocket: WebSocket):
        self.websocket = websocket

    async def partial(self, text: str, words: list[dict]) -> None:
        await self.websocket.send_json({"type": "partial", "text": text})

    async def final(
        self,
        text: str,
        words: list[dict],
        start: float,
        end: float,
        confidence: float,
        alternatives: list[dict] | None = None,
        search: dict[str, str] | None = None,
    ) -> None:
        message = {"type": "final", "text": text, "confidence": confidence, "words": words, "start": start, "end": end}
        if alternatives is not None:
            message["alternatives"] = alternatives
        message.update(search or {})  # decoder, beam_search: as /transcribe names them
        await self.websocket.send_json(message)


def decode_audio(data: bytes, encoding: str) -> np.ndarray:
    """A binary message's PCM as float samples; Closed(1007) if it is not whole samples of `encoding`,
    or holds values that are not finite."""
    try:
        samples = decode_pcm(data, encoding)
    except AudioError as error:
        raise Closed(1007, str(error)) from None
    if not np.isfinite(samples).all():
        raise Closed(1007, "a message holds samples that are not finite numbers (NaN or infinity)")
    return samples


def _config_key(message: dict) -> str | None:
    """The `api_key` of a JSON config message, if it has one."""
    try:
        config = parse_json(message.get("text") or "")
    except ValueError:
        return None
    key = config.get("api_key") if isinstance(config, dict) else None
    return key if isinstance(key, str) else None


@router.websocket("/v1/stream")
async def stream(
    websocket: WebSocket, server: ServerDep, authorised: Annotated[bool, Depends(require_api_key)]
) -> None:
    settings = server.settings
    await websocket.accept()
    limits = SessionLimits(settings, server.stopping)
    try:
        await _authorised_stream(websocket, server, limits, authorised)
    finally:
        limits.close()


async def _authorised_stream(websocket: WebSocket, server: Server, limits: SessionLimits, authorised: bool) -> None:
    first = None
    if not authorised:
        # A browser cannot set headers on a websocket: without one, the key may come in the config.
        if "authorization" not in websocket.headers:
            try:
                first = await limits.receive(websocket)
            except WebSocketDisconnect:
                return
            except (Closed, Ending) as closed:
                await refuse(websocket, session_refusal(closed, "stream"))
                return
        if first is None or not known_key(_config_key(first) or "", server.settings.api_keys):
            raise Unauthorised(
                "invalid_api_key", "a valid API key is needed: Authorization: Bearer <key>, or the config's api_key"
            )
    await serve_in_slot(websocket, server, lambda: _serve(websocket, server, limits, first), "stream")


async def _serve(
    websocket: WebSocket, server: Server, limits: SessionLimits, first: dict | None = None
) -> Ending | None:
    settings = server.settings
    if first is None:
        first = await limits.receive(websocket)
    if first.get("text") is None:
        raise Closed(1003, "send a JSON config first, then binary audio")
    try:
        parse_json(first["text"])  # the depth check, before pydantic's parser
        config = StreamConfig.model_validate_json(first["text"])
    except ValidationError as error:
        where, what = validation_problem(error)
        raise Closed(1007, f"bad config: {where or 'config'}: {what}") from None
    except ValueError as error:
        raise Closed(1007, f"bad config: {error}") from None
    pipeline = server.pipeline(config.model)  # an unknown model: 1007; one not loaded yet: 1013
    if "max_segment_seconds" in config.model_fields_set and config.max_segment_seconds > settings.stream_max_seconds:
        raise Closed(
            1007,
            f"bad config: max_segment_seconds: {config.max_segment_seconds:g} is over this "
            f"server's stream limit of {settings.stream_max_seconds:g} s",
        )
    try:
        pipeline.check_options(config)
        pipeline.check_cost(config.max_segment_seconds, config)
    except ServiceError as error:
        raise Closed(1007, f"bad config: {error.message}") from None
    stream = Stream(
        StreamMessages(websocket),
        PipelineRecognizer(pipeline, config, "stream", server.metrics),
        config.stream_options(settings.stream_max_seconds),
    )
    try:
        while True:
            try:
                message = await limits.receive(websocket)
            except Ending as ending:
                await websocket.send_json({"type": "closing", "reason": ending.error, "message": ending.message})
                await wind_down(stream, settings.shutdown_grace_seconds if ending.code == 1001 else None)
                await websocket.close(ending.code, reason=ending.message[:120])
                return ending
            finals = stream.finals
            if message.get("bytes") is not None:
                if message["bytes"]:
                    limits.heard_audio()
                samples = decode_audio(message["bytes"], config.encoding)
                server.metrics.stream_audio("stream", pipeline.name, len(samples) / config.sample_rate)
                await stream.add_samples(samples)
                if stream.finals != finals:  # the client waited for it: that was not idleness
                    limits.heard_audio()
                continue
            try:
                kind = parse_json(message["text"]).get("type")
            except (json.JSONDecodeError, AttributeError):
                raise Closed(1007, "control messages are JSON objects with a type: eof or finalize") from None
            except ValueError as error:  # nested too deep
                raise Closed(1007, str(error)) from None
            if kind == "finalize":
                await stream.finish_segment()
                if stream.finals != finals:
                    limits.heard_audio()
            elif kind == "eof":
                stream.flush_resampler()
                await stream.finish_segment("eof")
                await websocket.close(1000)
                return
            else:
                raise Closed(1007, f"unknown message type {shorten(kind)}; expected eof or finalize")
    finally:
        stream.cancel_partial()
