"""What both websocket protocols (/v1/stream and /v1/realtime) share: a stream slot and the one
mapping from what ended a session to what its client is told (`serve_in_slot`), a model as the
streaming engine's recognizer (`PipelineRecognizer`), reading a session's messages under its limits,
parsing their JSON safely, and transcribing what a session holds when it must end (`wind_down`).

`SessionLimits.receive` refuses a message over the size limit (1009), and ends a session that
sent no audio for `stream_idle_seconds` (control messages do not count: a client that sends
only those would hold a stream slot for nothing; the clock restarts at a final too, so the time
the server took to transcribe does not count), one that has lasted
`stream_max_session_seconds`, and every session when the server shuts down (after taking what
arrives in `STOPPING_TAIL_SECONDS`). The last two end gracefully (`Ending`): the audio received so
far is transcribed and sent before the close.
`parse_json` refuses nesting deeper than `MAX_JSON_DEPTH` before the parser recurses into it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Literal

import numpy as np
from fastapi import WebSocket, WebSocketDisconnect

from model.decoding import one_line
from model.streaming import Heard, SegmentFailed, SegmentReason, Stream, StreamTooLong

from .errors import Busy, ServiceError
from .http_errors import Refusal, refusal_of, refuse, stream_error
from .metrics import close_reason
from .options import DecodeRequest
from .pipeline import Pipeline
from .settings import Settings

if TYPE_CHECKING:
    from .metrics import Metrics
    from .server import Server

log = logging.getLogger("service")

# On shutdown, the messages that still arrive in this time are taken: audio a client sent before it
# could know (a message in flight, or queued behind a slow one) is transcribed with the rest.
STOPPING_TAIL_SECONDS = 1.0
MAX_JSON_DEPTH = 32  # a session's messages nest 4 levels at most
Protocol = Literal["stream", "realtime"]  # /v1/stream, /v1/realtime: the metrics' `protocol` label
NOUNS: dict[str, str] = {"stream": "stream", "realtime": "session"}  # what each protocol calls a session
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string: its brackets are not nesting
_BRACKETS = np.zeros(256, dtype=np.int8)
_BRACKETS[[ord("["), ord("{")]], _BRACKETS[[ord("]"), ord("}")]] = 1, -1


class Closed(Exception):
    """Raised to end the stream with a websocket close code and reason."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class Ending(Exception):
    """The session ends gracefully: its audio so far is transcribed, then it closes with `code`.
    `error` and `message` say why, to the client."""

    def __init__(self, code: int, error: str, message: str):
        super().__init__(message)
        self.code, self.error, self.message = code, error, message


def parse_json(text: str):
    """A message's JSON; ValueError (json.JSONDecodeError for bad syntax) saying what is wrong."""
    skeleton = _STRING.sub("", text).encode("utf-8", "replace")
    if skeleton:
        depth = np.cumsum(_BRACKETS[np.frombuffer(skeleton, dtype=np.uint8)], dtype=np.int64).max()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"the message nests {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed")
    return json.loads(text)


class SessionLimits:
    """One session's clock and limits; `stopping` is set when the server shuts down."""

    def __init__(self, settings: Settings, stopping: asyncio.Event):
        self.idle_seconds = settings.stream_idle_seconds
        self.max_seconds = settings.stream_max_session_seconds
        self.max_bytes = settings.stream_max_message_bytes
        self.stopping = stopping
        self.started = self.last_audio = time.monotonic()
        self._stop_wait: asyncio.Future | None = None
        self.stopped_at: float | None = None  # when this session saw the server begin to shut down

    def heard_audio(self) -> None:
        """Audio arrived, or a final was sent: the idle clock starts again."""
        self.last_audio = time.monotonic()

    async def receive(self, websocket: WebSocket) -> dict:
        """The next message; Closed (idle, too large), Ending (too long, shutting down) or
        WebSocketDisconnect instead."""
        if self._stop_wait is None:
            self._stop_wait = asyncio.ensure_future(self.stopping.wait())
        receiving = asyncio.ensure_future(websocket.receive())
        try:
            while not receiving.done():
                now = time.monotonic()
                self._check_clock(now)
                deadline = min(self.last_audio + self.idle_seconds, self.started + self.max_seconds)
                if self.stopped_at is not None:
                    deadline = min(deadline, self.stopped_at + STOPPING_TAIL_SECONDS)
                waits = [receiving] if self.stopping.is_set() else [receiving, self._stop_wait]
                await asyncio.wait(waits, timeout=max(deadline - now, 0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not receiving.done():
                receiving.cancel()  # a queue's get: cancelled, it takes no message
        message = receiving.result()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        size = len(message.get("bytes") or b"") + len(message.get("text") or "")
        if size > self.max_bytes:
            raise Closed(1009, f"a message of {size} bytes is over the limit of {self.max_bytes}")
        return message

    def _check_clock(self, now: float) -> None:
        if self.stopping.is_set():
            self.stopped_at = self.stopped_at or now
            if now >= self.stopped_at + STOPPING_TAIL_SECONDS:
                raise Ending(
                    1001,
                    "server_shutting_down",
                    "the server is shutting down: the audio received so far "
                    "is transcribed, then the session closes; reconnect to "
                    "go on",
                )
        if now >= self.started + self.max_seconds:
            raise Ending(
                1008,
                "session_expired",
                f"the session reached its maximum duration of {self.max_seconds:g} s; reconnect to go on",
            )
        if now >= self.last_audio + self.idle_seconds:
            raise Closed(1001, f"no audio for {self.idle_seconds:g} s; closing the idle stream")

    def close(self) -> None:
        if self._stop_wait is not None:
            self._stop_wait.cancel()


class PipelineRecognizer:
    """A served model as the streaming engine's `model.streaming.Recognizer`, decoding with `options`."""

    def __init__(
        self, pipeline: Pipeline, options: DecodeRequest, protocol: str = "stream", metrics: Metrics | None = None
    ):
        self.pipeline, self.options = pipeline, options
        self.name, self.rate = pipeline.name, pipeline.rate
        self.min_samples = pipeline.engine.config.receptive_field
        self.protocol, self.metrics = protocol, metrics  # partial and final latencies go to `metrics`

    async def partial(self, window: np.ndarray) -> Heard | None:
        started = time.perf_counter()
        try:
            logits, _ = await self.pipeline.logits(window)
        except Busy:  # the inference queue is full: this partial is skipped
            return None
        decoded = await self.pipeline.decode(logits, "greedy", self.options)
        if self.metrics is not None:
            self.metrics.stream_partial(self.protocol, self.name, time.perf_counter() - started)
        return Heard(decoded.text, [asdict(word) for word in decoded.words])

    async def final(self, segment: np.ndarray) -> Heard:
        started = time.perf_counter()
        try:
            result = await self.pipeline.transcribe(segment, self.options)
            if self.metrics is not None:
                self.metrics.stream_final(self.protocol, self.name, time.perf_counter() - started)
        except ServiceError as error:
            if error.code in ("silent_audio", "audio_too_short"):  # a pause, a click: an empty final
                return Heard("", [], 0.0, [] if self.options.alternatives else None)
            raise SegmentFailed(error) from None
        body = result.to_dict()  # words and alternatives as the wire has them
        search = result.decoding_fields()
        return Heard(body["text"], body["words"], body["confidence"], body.get("alternatives"), search)


def session_refusal(error: Exception, noun: str) -> Refusal:
    """What a client is told of the error that ended its session; `noun`: what the protocol calls
    a session ("stream", "session")."""
    if isinstance(error, Closed):
        return Refusal(error.code, f"{noun}_error", error.reason)
    if isinstance(error, StreamTooLong):
        return Refusal(1009, f"{noun}_error", str(error))
    if isinstance(error, Ending):  # before there was anything to transcribe
        return Refusal(error.code, error.error, error.message, server_fault=error.code == 1001)
    if isinstance(error, ServiceError):  # from the pipeline: busy (try again later) or unusable audio
        return refusal_of(error)
    # A bug: the client still gets an error and a close code, the log one line.
    log.error("%s failed: %s: %s", noun, type(error).__name__, one_line(error))
    return Refusal(1011, "internal_error", f"the server failed on this {noun}; see its log", server_fault=True)


async def serve_in_slot(
    websocket: WebSocket,
    server: Server,
    serve: Callable[[], Awaitable[Ending | None]],
    protocol: Protocol,
    words: Callable[[Refusal], dict] = stream_error,
) -> None:
    """Run `serve` in one of the server's `max_streams` slots (refused with 1013 when none is free),
    and end the session with whatever stopped it, told in the protocol's `words`. `serve` returns the
    Ending it wound down on, if any; every session is counted under `protocol` and its close reason."""
    noun = NOUNS[protocol]
    limit = server.settings.max_streams
    if server.streams >= limit:
        server.metrics.stream_closed(protocol, close_reason(1013, "too_many_streams"))
        await refuse(
            websocket,
            Refusal(
                1013,
                "too_many_streams",
                f"this server takes at most {limit} streams at once; retry shortly",
                server_fault=True,
            ),
            words,
        )
        return
    server.streams += 1
    server.metrics.active_streams.inc()
    code, error_code = None, None  # None: the client ended the session
    try:
        ending = await serve()
        if ending is not None:
            code, error_code = ending.code, ending.error
    except WebSocketDisconnect:
        pass
    except Exception as error:
        refusal = session_refusal(error, noun)
        code, error_code = refusal.close_code, refusal.code
        await refuse(websocket, refusal, words)
    finally:
        server.streams -= 1
        server.metrics.active_streams.dec()
        server.metrics.stream_closed(protocol, close_reason(code, error_code))


async def wind_down(stream: Stream, seconds: float | None, reason: SegmentReason = "eof") -> None:
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
