"""Websocket streaming at /v1/stream: partial results while audio arrives, a final per segment.

Protocol: a JSON config first, then binary PCM frames, then {"type": "eof"} (or
{"type": "finalize"} to end the current segment and go on). Segments end at pauses found by
voice-activity detection (`endpointing` ms of non-speech; false: never), at
`max_segment_seconds`, at "finalize" and at "eof". A final is the offline transcription of
exactly that segment's audio, so it equals what /transcribe returns for the same samples.
Partials decode only the last few seconds of the segment, so their cost stays bounded however
long a stream runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Literal

import numpy as np
import soxr
import webrtcvad  # WebRTC's voice-activity detector: tiny, fast, no model files
from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from pydantic import Field, ValidationError, field_validator

from model.audio import AudioError, decode_pcm

from .audio_input import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from .dependencies import PipelineDep, ServerDep, require_api_key
from .errors import Busy, InvalidAudio, ServiceError, UnusableAudio, validation_problem
from .http_errors import close_code, refuse
from .pipeline import DecodeOptions, Pipeline

router = APIRouter()
log = logging.getLogger("service")

PARTIAL_WINDOW_SECONDS = 8.0  # partials decode at most this much of the segment's end
PARTIAL_EVERY_SECONDS = 0.5  # of new audio between partials
VAD_RATE = 16000
VAD_FRAME = 480  # 30 ms at 16 kHz, a frame size WebRTC's VAD accepts


class StreamConfig(DecodeOptions):
    type: Literal["config"] | None = None
    sample_rate: int = Field(16000, ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)
    encoding: Literal["pcm_s16le", "pcm_f32le"] = "pcm_s16le"
    interim_results: bool = True
    endpointing: int | Literal[False] = Field(800, description="ms of pause that end a segment (30-60000); "
                                                               "false: never")
    max_segment_seconds: float = Field(30.0, gt=0, description="longest segment; at most the stream's limit")

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


class SampleBuffer:
    """Samples appended in amortised O(1), joined only when read: a stream of tiny messages must
    not copy its whole open segment on every one. Every 256 appended pieces are joined into one,
    so a stream of one-sample messages does not hold one array object per sample."""

    JOIN_EVERY = 256

    def __init__(self):
        self._chunks: list[np.ndarray] = []  # joined pieces
        self._recent: list[np.ndarray] = []  # fewer than JOIN_EVERY pieces, as they came
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def append(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        self._recent.append(samples)
        self._length += len(samples)
        if len(self._recent) >= self.JOIN_EVERY:
            self._chunks.append(np.concatenate(self._recent))
            self._recent = []

    def tail(self, count: int) -> np.ndarray:
        """The last `count` samples, joining only the pieces that hold them."""
        needed, taken = [], 0
        for piece in reversed(self._chunks + self._recent):
            if taken >= count:
                break
            needed.append(piece)
            taken += len(piece)
        joined = np.concatenate(needed[::-1]) if needed else np.zeros(0, dtype=np.float32)
        return joined[len(joined) - min(count, len(joined)):]

    def take(self) -> np.ndarray:
        """Every sample, and the buffer is empty again."""
        pieces = self._chunks + self._recent
        joined = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        self._chunks, self._recent, self._length = [], [], 0
        return joined


class _Closed(Exception):
    """Raised to end the stream with a websocket close code and reason."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class Stream:
    def __init__(self, websocket: WebSocket, pipeline: Pipeline, config: StreamConfig, max_seconds: float):
        self.websocket = websocket
        self.pipeline = pipeline
        self.config = config
        self.max_samples = int(max_seconds * pipeline.rate)
        self.rate = pipeline.rate
        self.resampler = None if config.sample_rate == self.rate else soxr.ResampleStream(
            config.sample_rate, self.rate, 1, dtype="float32")
        self.segment = SampleBuffer()
        self.segment_start = 0  # samples since the stream began
        self.received = 0
        self.since_partial = 0
        self.partial: asyncio.Task | None = None  # at most one partial in flight: a busy server skips, never queues
        self.vad = webrtcvad.Vad(2)
        self.vad_pending = np.zeros(0, dtype=np.float32)
        self.silence_ms = 0
        self.heard_speech = False

    async def add_audio(self, data: bytes) -> None:
        try:
            samples = decode_pcm(data, self.config.encoding)
        except AudioError as error:
            raise _Closed(1007, str(error)) from None
        if not np.isfinite(samples).all():
            raise _Closed(1007, "a message holds samples that are not finite numbers (NaN or infinity)")
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples)
        self.received += len(samples)
        if self.received > self.max_samples:
            raise _Closed(1009, f"the stream is over its limit of {self.max_samples / self.rate:g} s of audio")
        self.segment.append(samples.astype(np.float32, copy=False))
        self.since_partial += len(samples)
        if self.config.endpointing is not False and self._pause_ended(samples):
            await self.finish_segment()
        elif len(self.segment) >= self.config.max_segment_seconds * self.rate:
            await self.finish_segment()
        elif self.config.interim_results and self.since_partial >= PARTIAL_EVERY_SECONDS * self.rate:
            self.start_partial()

    def _pause_ended(self, samples: np.ndarray) -> bool:
        """Feed the VAD; True once `endpointing` ms of non-speech follow speech."""
        audio = samples if self.rate == VAD_RATE else soxr.resample(samples, self.rate, VAD_RATE)
        self.vad_pending = np.concatenate([self.vad_pending, audio])
        frames = len(self.vad_pending) // VAD_FRAME
        pcm = (np.clip(self.vad_pending[:frames * VAD_FRAME], -1, 1) * 32767).astype("<i2")
        self.vad_pending = self.vad_pending[frames * VAD_FRAME:]
        for index in range(frames):
            if self.vad.is_speech(pcm[index * VAD_FRAME:(index + 1) * VAD_FRAME].tobytes(), VAD_RATE):
                self.heard_speech, self.silence_ms = True, 0
            else:
                self.silence_ms += 30
        return self.heard_speech and self.silence_ms >= self.config.endpointing

    def start_partial(self) -> None:
        """Decode the segment's last seconds in the background while audio keeps arriving; if the
        previous partial is still running, skip this one, so a slow server sends partials less
        often instead of falling behind."""
        if self.partial is not None:
            if not self.partial.done():
                return
            self.partial.result()  # a failed partial (e.g. the client went away) ends the stream here
        self.since_partial = 0
        window = self.segment.tail(int(PARTIAL_WINDOW_SECONDS * self.rate))
        if len(window) >= self.pipeline.engine.config.receptive_field:
            self.partial = asyncio.create_task(self._send_partial(window))

    async def _send_partial(self, window: np.ndarray) -> None:
        try:
            logits, _ = await self.pipeline.logits(window)
        except Busy:  # the inference queue is full: this partial is skipped
            return
        text = (await self.pipeline.decode(logits, "greedy", self.config)).text
        await self.websocket.send_json({"type": "partial", "text": text})

    async def settle_partial(self) -> None:
        """Wait for the partial in flight, so that it never arrives after its segment's final."""
        partial, self.partial = self.partial, None
        if partial is not None:
            await partial

    def cancel_partial(self) -> None:
        """The stream is over: stop the partial in flight, or read a failed one's error (the
        stream's end already reported it), so that asyncio has nothing left to complain about."""
        if self.partial is None:
            return
        if not self.partial.done():
            self.partial.cancel()
        elif not self.partial.cancelled():
            self.partial.exception()

    async def finish_segment(self) -> None:
        """Send the final for the audio so far (all of it, nothing trimmed) and start a new segment."""
        await self.settle_partial()
        segment, start = self.segment.take(), self.segment_start
        self.segment_start += len(segment)
        self.since_partial, self.silence_ms, self.heard_speech = 0, 0, False
        if len(segment) == 0:
            return
        try:
            result = await self.pipeline.transcribe(segment, self.config)
            text, words = result.text, result.words
        except (InvalidAudio, UnusableAudio) as error:
            if error.code not in ("silent_audio", "audio_too_short"):
                raise
            text, words = "", []
        offset = start / self.rate
        for word in words:
            word["start"] = round(word["start"] + offset, 3)
            word["end"] = round(word["end"] + offset, 3)
        await self.websocket.send_json({"type": "final", "text": text, "words": words, "start": round(offset, 3),
                                        "end": round((start + len(segment)) / self.rate, 3)})

    async def flush_resampler(self) -> None:
        if self.resampler is not None:
            tail = self.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            self.segment.append(tail.astype(np.float32, copy=False))


@router.websocket("/v1/stream", dependencies=[Depends(require_api_key)])
async def stream(websocket: WebSocket, server: ServerDep, pipeline: PipelineDep) -> None:
    settings = server.settings
    if server.streams >= settings.max_streams:
        raise Busy("too_many_streams", f"this server takes at most {settings.max_streams} streams at once; "
                                       "retry shortly")
    await websocket.accept()
    server.streams += 1
    server.metrics.active_streams.inc()
    try:
        await _serve(websocket, pipeline, settings)
    except _Closed as closed:
        await refuse(websocket, closed.code, "stream_error", closed.reason)
    except WebSocketDisconnect:
        pass
    except ServiceError as error:  # from the pipeline: busy (try again later) or unusable audio
        await refuse(websocket, close_code(error), error.code, error.message)
    except Exception:  # a bug: the client still gets an error and a close code, the log the traceback
        log.exception("stream failed")
        await refuse(websocket, 1011, "internal_error", "the server failed on this stream; see its log")
    finally:
        server.streams -= 1
        server.metrics.active_streams.dec()


async def _receive(websocket: WebSocket, idle_seconds: float, max_bytes: int) -> dict:
    try:
        message = await asyncio.wait_for(websocket.receive(), timeout=idle_seconds)
    except asyncio.TimeoutError:
        raise _Closed(1001, f"no message for {idle_seconds:g} s; closing the idle stream") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    size = len(message.get("bytes") or b"") + len(message.get("text") or "")
    if size > max_bytes:
        raise _Closed(1009, f"a message of {size} bytes is over the limit of {max_bytes}")
    return message


async def _serve(websocket: WebSocket, pipeline: Pipeline, settings) -> None:
    first = await _receive(websocket, settings.stream_idle_seconds, settings.stream_max_message_bytes)
    if first.get("text") is None:
        raise _Closed(1003, "send a JSON config first, then binary audio")
    try:
        config = StreamConfig.model_validate_json(first["text"])
    except ValidationError as error:
        where, what = validation_problem(error)
        raise _Closed(1007, f"bad config: {where or 'config'}: {what}") from None
    if "max_segment_seconds" in config.model_fields_set and config.max_segment_seconds > settings.stream_max_seconds:
        raise _Closed(1007, f"bad config: max_segment_seconds: {config.max_segment_seconds:g} is over this "
                            f"server's stream limit of {settings.stream_max_seconds:g} s")
    try:
        pipeline.check_options(config)
    except ServiceError as error:
        raise _Closed(1007, f"bad config: {error.message}") from None
    stream = Stream(websocket, pipeline, config, settings.stream_max_seconds)
    try:
        while True:
            message = await _receive(websocket, settings.stream_idle_seconds, settings.stream_max_message_bytes)
            if message.get("bytes") is not None:
                await stream.add_audio(message["bytes"])
                continue
            try:
                kind = json.loads(message["text"]).get("type")
            except (json.JSONDecodeError, AttributeError):
                raise _Closed(1007, "control messages are JSON objects with a type: eof or finalize") from None
            if kind == "finalize":
                await stream.finish_segment()
            elif kind == "eof":
                await stream.flush_resampler()
                await stream.finish_segment()
                await websocket.close(1000)
                return
            else:
                raise _Closed(1007, f"unknown message type {kind!r}; expected eof or finalize")
    finally:
        stream.cancel_partial()
