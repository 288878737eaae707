"""Websocket streaming at /v1/stream: partial results while audio arrives, a final per segment.

Protocol: a JSON config first (`model` chooses the model), then binary PCM frames, then
{"type": "eof"} (or {"type": "finalize"} to end the current segment and go on). Segments end at
pauses found by voice-activity detection (`endpointing` ms of non-speech; false: never), at
`max_segment_seconds`, at "finalize" and at "eof". A final is the offline transcription of
exactly that segment's audio, so it equals what /transcribe returns for the same samples.
Partials decode only the last few seconds of the segment, so their cost stays bounded however
long a stream runs.

`Stream` is the engine (resampling, segmenting, partials, finals) and reports through a
`StreamEvents`: here as this protocol's JSON messages, in `realtime` as OpenAI's events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import asdict, dataclass
from typing import Annotated, Literal

import numpy as np
import soxr
import webrtcvad  # WebRTC's voice-activity detector: tiny, fast, no model files
from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from pydantic import Field, ValidationError, field_validator

from model.audio import AudioError, decode_pcm
from model.decoding import one_line

from .audio_input import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from .dependencies import ServerDep, known_key, require_api_key
from .errors import Busy, ServiceError, Unauthorised, shorten, validation_problem
from .http_errors import close_code, refuse
from .options import DecodeRequest
from .pipeline import Pipeline
from .server import Server
from .sessions import STOPPING_TAIL_SECONDS, Closed, Ending, SessionLimits, parse_json

router = APIRouter()
log = logging.getLogger("service")

PARTIAL_WINDOW_SECONDS = 8.0  # partials decode at most this much of the segment's end
PARTIAL_EVERY_SECONDS = 0.5  # of new audio between partials
VAD_RATE = 16000
VAD_FRAME = 480  # 30 ms at 16 kHz, a frame size WebRTC's VAD accepts


class StreamConfig(DecodeRequest):
    type: Literal["config"] | None = None
    model: str | None = Field(None, description="the model to answer, by its name in /v1/models (default: the "
                                                "server's default model)")
    api_key: str | None = Field(None, exclude=True, description="for clients that cannot send headers (browsers): "
                                                                "the API key, read when no Authorization header came")
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


@dataclass
class SegmentEnd:
    """A segment that has just ended, before its transcription. Times in seconds from the stream's start."""
    start: float
    end: float
    reason: Literal["pause", "length", "finalize", "eof"]
    heard_speech: bool  # the voice-activity detector heard speech in it (always False without endpointing)


class StreamEvents:
    """What a stream reports, in the order it happens. Subclasses send them in a protocol's words."""

    async def speech_started(self, at: float) -> None:
        """The voice-activity detector heard the first speech of the segment, `at` seconds into the stream."""

    async def partial(self, text: str, words: list[dict]) -> None:
        """A greedy decode of the open segment's last seconds; `words` as /transcribe's, times within the window."""

    async def segment_ended(self, segment: SegmentEnd) -> bool:
        """The segment is closed; return False to drop it untranscribed."""
        return True

    async def final(self, text: str, words: list[dict], start: float, end: float, confidence: float,
                    alternatives: list[dict] | None = None) -> None:
        """The segment's transcription (words' times from the stream's start) and its confidence (as
        /transcribe's), and its n best transcripts if the config asked for them."""

    async def failed(self, error: ServiceError) -> None:
        """The segment could not be transcribed (busy, unusable audio); by default that ends the stream."""
        raise error


class StreamMessages(StreamEvents):
    """/v1/stream's JSON messages."""

    def __init__(self, websocket: WebSocket):
        self.websocket = websocket

    async def partial(self, text: str, words: list[dict]) -> None:
        await self.websocket.send_json({"type": "partial", "text": text})

    async def final(self, text: str, words: list[dict], start: float, end: float, confidence: float,
                    alternatives: list[dict] | None = None) -> None:
        message = {"type": "final", "text": text, "confidence": confidence, "words": words, "start": start,
                   "end": end}
        if alternatives is not None:
            message["alternatives"] = alternatives
        await self.websocket.send_json(message)


class Stream:
    """The streaming engine. `resample_per_segment`: each segment's audio is resampled on its own
    (the resampler is flushed when a segment ends), so a segment's transcript equals /transcribe's
    for exactly the audio sent during it, at the rate it was sent."""

    def __init__(self, events: StreamEvents, pipeline: Pipeline, config: StreamConfig, max_seconds: float,
                 resample_per_segment: bool = False):
        self.events = events
        self.pipeline = pipeline
        self.config = config
        self.max_samples = int(max_seconds * pipeline.rate)
        self.rate = pipeline.rate
        self.resample_per_segment = resample_per_segment
        self.resampler = self._resampler()
        self.segment = SampleBuffer()
        self.segment_start = 0  # samples since the stream began
        self.received = 0
        self.since_partial = 0
        self.partial: asyncio.Task | None = None  # at most one partial in flight: a busy server skips, never queues
        self.vad = webrtcvad.Vad(2)
        self.vad_pending = np.zeros(0, dtype=np.float32)
        self.vad_seconds = 0.0  # audio the detector has judged, from the stream's start
        self.silence_ms = 0
        self.heard_speech = False
        self.speech_at = 0.0  # when the segment's speech began, seconds from the stream's start
        self.speech_announced = False
        self.finals = 0  # sent so far

    def _resampler(self) -> soxr.ResampleStream | None:
        rate = self.config.sample_rate
        return None if rate == self.rate else soxr.ResampleStream(rate, self.rate, 1, dtype="float32")

    def reconfigure(self, config: StreamConfig, pipeline: Pipeline | None = None) -> None:
        """New settings for the audio that comes next; the open segment keeps what it has. Another
        model (`pipeline`) transcribes from the open segment on; ValueError if it takes audio at
        another rate than this stream's model."""
        if pipeline is not None and pipeline.rate != self.rate:
            raise ValueError(f"model '{pipeline.name}' takes audio at {pipeline.rate} Hz, this stream's model "
                             f"at {self.rate} Hz; open a new stream for it")
        if config.sample_rate != self.config.sample_rate:
            self.flush_resampler()
        self.config = config
        self.pipeline = pipeline or self.pipeline
        self.resampler = self._resampler()

    async def add_audio(self, data: bytes) -> None:
        try:
            samples = decode_pcm(data, self.config.encoding)
        except AudioError as error:
            raise Closed(1007, str(error)) from None
        if not np.isfinite(samples).all():
            raise Closed(1007, "a message holds samples that are not finite numbers (NaN or infinity)")
        await self.add_samples(samples)

    async def add_samples(self, samples: np.ndarray) -> None:
        """Mono float samples at the config's sample rate."""
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples)
        self.received += len(samples)
        if self.received > self.max_samples:
            raise Closed(1009, f"the stream is over its limit of {self.max_samples / self.rate:g} s of audio")
        self.segment.append(samples.astype(np.float32, copy=False))
        self.since_partial += len(samples)
        if self.config.endpointing is not False:
            paused = self._pause_ended(samples)
            if self.heard_speech and not self.speech_announced:
                self.speech_announced = True
                await self.events.speech_started(self.speech_at)
            if paused:
                await self.finish_segment("pause")
                return
        if len(self.segment) >= self.config.max_segment_seconds * self.rate:
            await self.finish_segment("length")
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
                if not self.heard_speech:
                    self.speech_at = round(self.vad_seconds, 3)
                self.heard_speech, self.silence_ms = True, 0
            else:
                self.silence_ms += 30
            self.vad_seconds += VAD_FRAME / VAD_RATE
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
        decoded = await self.pipeline.decode(logits, "greedy", self.config)
        await self.events.partial(decoded.text, [asdict(word) for word in decoded.words])

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

    async def finish_segment(self, reason: Literal["pause", "length", "finalize", "eof"] = "finalize") -> None:
        """Send the final for the audio so far (all of it, nothing trimmed) and start a new segment."""
        await self.settle_partial()
        if self.resample_per_segment and reason != "eof":
            self.flush_resampler()
            self.resampler = self._resampler()
        segment, start, heard_speech = self.segment.take(), self.segment_start, self.heard_speech
        self.segment_start += len(segment)
        self.since_partial, self.silence_ms, self.heard_speech, self.speech_announced = 0, 0, False, False
        if len(segment) == 0:
            return
        offset, end = round(start / self.rate, 3), round((start + len(segment)) / self.rate, 3)
        if not await self.events.segment_ended(SegmentEnd(offset, end, reason, heard_speech)):
            return
        try:
            result = await self.pipeline.transcribe(segment, self.config)
            body = result.to_dict()
            text, words, confidence, alternatives = body["text"], body["words"], body["confidence"], body.get(
                "alternatives")
        except ServiceError as error:
            if error.code not in ("silent_audio", "audio_too_short"):
                await self.events.failed(error)
                return
            text, words, confidence, alternatives = "", [], 0.0, [] if self.config.alternatives else None
        for word in words:
            word["start"] = round(word["start"] + start / self.rate, 3)
            word["end"] = round(word["end"] + start / self.rate, 3)
        await self.events.final(text, words, offset, end, confidence, alternatives)
        self.finals += 1

    def discard_segment(self) -> None:
        """Drop the open segment's audio untranscribed; the stream's clock runs on."""
        self.cancel_partial()
        self.partial = None
        self.resampler = self._resampler()  # what it held belonged to the dropped audio
        self.segment_start += len(self.segment.take())
        self.since_partial, self.silence_ms, self.heard_speech, self.speech_announced = 0, 0, False, False
        self.vad_pending = np.zeros(0, dtype=np.float32)
        self.vad_seconds = self.segment_start / self.rate

    def flush_resampler(self) -> None:
        """Into the open segment: the samples the resampler still holds."""
        if self.resampler is not None:
            tail = self.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            self.segment.append(tail.astype(np.float32, copy=False))


def _config_key(message: dict) -> str | None:
    """The `api_key` of a JSON config message, if it has one."""
    try:
        config = parse_json(message.get("text") or "")
    except ValueError:
        return None
    key = config.get("api_key") if isinstance(config, dict) else None
    return key if isinstance(key, str) else None


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket, server: ServerDep, authorised: Annotated[bool, Depends(require_api_key)]
                 ) -> None:
    settings = server.settings
    await websocket.accept()
    limits = SessionLimits(settings, server.stopping)
    try:
        await _authorised_stream(websocket, server, limits, authorised)
    finally:
        limits.close()


async def _authorised_stream(websocket: WebSocket, server: Server, limits: SessionLimits, authorised: bool) -> None:
    settings = server.settings
    first = None
    if not authorised:
        # A browser cannot set headers on a websocket: without one, the key may come in the config.
        if "authorization" not in websocket.headers:
            try:
                first = await limits.receive(websocket)
            except (Closed, Ending) as closed:
                await refuse(websocket, closed.code, "stream_error", str(closed))
                return
            except WebSocketDisconnect:
                return
        if first is None or not known_key(_config_key(first) or "", settings.api_keys):
            raise Unauthorised("invalid_api_key", "a valid API key is needed: Authorization: Bearer <key>, or the "
                                                  "config's api_key")
    if server.streams >= settings.max_streams:
        raise Busy("too_many_streams", f"this server takes at most {settings.max_streams} streams at once; "
                                       "retry shortly")
    server.streams += 1
    server.metrics.active_streams.inc()
    try:
        await _serve(websocket, server, limits, first)
    except Closed as closed:
        await refuse(websocket, closed.code, "stream_error", closed.reason)
    except Ending as ending:  # before the config: nothing to transcribe
        await refuse(websocket, ending.code, ending.error, ending.message)
    except WebSocketDisconnect:
        pass
    except ServiceError as error:  # from the pipeline: busy (try again later) or unusable audio
        await refuse(websocket, close_code(error), error.code, error.message)
    except Exception as error:  # a bug: the client still gets an error and a close code, the log one line
        log.error("stream failed: %s: %s", type(error).__name__, one_line(error))
        await refuse(websocket, 1011, "internal_error", "the server failed on this stream; see its log")
    finally:
        server.streams -= 1
        server.metrics.active_streams.dec()


async def _serve(websocket: WebSocket, server: Server, limits: SessionLimits, first: dict | None = None) -> None:
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
        raise Closed(1007, f"bad config: max_segment_seconds: {config.max_segment_seconds:g} is over this "
                           f"server's stream limit of {settings.stream_max_seconds:g} s")
    try:
        pipeline.check_options(config)
        pipeline.check_cost(config.max_segment_seconds, config)
    except ServiceError as error:
        raise Closed(1007, f"bad config: {error.message}") from None
    stream = Stream(StreamMessages(websocket), pipeline, config, settings.stream_max_seconds)
    try:
        while True:
            try:
                message = await limits.receive(websocket)
            except Ending as ending:
                await websocket.send_json({"type": "closing", "reason": ending.error, "message": ending.message})
                await wind_down(stream, settings.shutdown_grace_seconds if ending.code == 1001 else None)
                await websocket.close(ending.code, reason=ending.message[:120])
                return
            finals = stream.finals
            if message.get("bytes") is not None:
                if message["bytes"]:
                    limits.heard_audio()
                await stream.add_audio(message["bytes"])
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


async def wind_down(stream: Stream, seconds: float | None, reason: str = "eof") -> None:
    """The session is ending: the final of the audio it holds, if that takes at most `seconds`
    (on SIGTERM, less than the grace period, past which uvicorn cancels it; None: no bound).
    Closed(1012) if it would take longer."""
    try:
        async with asyncio.timeout(None if seconds is None else max(seconds - STOPPING_TAIL_SECONDS - 1.0, 0.5)):
            if reason == "eof":  # a segment that is not the last flushes the resampler itself
                stream.flush_resampler()
            await stream.finish_segment(reason)
    except TimeoutError:
        raise Closed(1012, "the server is shutting down and could not transcribe the rest in time") from None
