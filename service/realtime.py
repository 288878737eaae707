"""OpenAI's Realtime API in transcription mode, at /v1/realtime, on /v1/stream's engine.

A client written for OpenAI's protocol (`wss://.../v1/realtime?intent=transcription`) can point at
this server unchanged. It sends JSON events:

- `session.update` with a transcription session (`session.type` = "transcription"), or
  `transcription_session.update`, the beta API's name, with its flat session;
- `input_audio_buffer.append`: base64 audio in the session's format (`audio/pcm`, 16-bit
  little-endian mono at 24 kHz or any rate from 1 to 384 kHz; `audio/pcmu` or `audio/pcma`, G.711
  at 8 kHz), resampled here to the model's rate;
- `input_audio_buffer.commit` (end the turn now) and `input_audio_buffer.clear` (drop it).

Models are named as over HTTP (`Server.resolve`): a served model's name, or an alias of one
(`--model-alias whisper-1=digits`); `model` in the connection URL chooses the session's first model
(default: the server's), a session's `transcription.model` the model of the turns that follow. An
unknown name gets OpenAI's `model_not_found`, as HTTP's 404: in the URL it refuses the session (close
1007), in a session update it is an `error` event and the update is not applied.

With `turn_detection` of type `server_vad` (the default) turns end at pauses of
`silence_duration_ms`, found by the same voice-activity detector as /v1/stream's endpointing;
with `null`, only at commits. The server answers `session.created`, `session.updated` (or
`transcription_session.updated`), `input_audio_buffer.speech_started`, `.speech_stopped`,
`.committed`, `.cleared`, `conversation.item.input_audio_transcription.delta` (the turn's
transcript, once it is settled: never a guess that `completed` could contradict), `.completed` (the
turn's transcription: what /transcribe gives for the turn's audio) or `.failed`, and `error` events
in OpenAI's shape. Mistakes in an event get an `error` and the session goes on; limits, keys and
faults end it, as on /v1/stream. Every event in and out, and every error by its code, is counted in
/metrics.
"""

from __future__ import annotations

import copy
import json
import math
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, WebSocket

from model.streaming import SegmentEnd, Stream, StreamEvents

from .dependencies import ServerDep, known_key, require_api_key
from .errors import ServiceError, shorten
from .http_errors import Refusal, http_status, refusal_of, refuse
from .metrics import Metrics, close_reason
from .pipeline import Pipeline
from .realtime_session import EventError, Session
from .server import Server
from .sessions import Ending, PipelineRecognizer, SessionLimits, parse_json, serve_in_slot, wind_down

router = APIRouter()

LOGPROBS = "item.input_audio_transcription.logprobs"
MIN_COMMIT_SECONDS = 0.1  # as OpenAI: a commit needs at least 100 ms of audio
BROWSER_KEY_PREFIX = "openai-insecure-api-key."  # OpenAI's browser clients send the key as a subprotocol


def _event_id() -> str:
    return "event_" + secrets.token_hex(12)


def error_event(
    code: str, message: str, kind: str = "invalid_request_error", param: str | None = None, event_id: str | None = None
) -> dict:
    """OpenAI's `error` event; `event_id`: the client event it answers, if known."""
    return {
        "type": "error",
        "event_id": _event_id(),
        "error": {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id},
    }


def refusal_event(refusal: Refusal) -> dict:
    """A session's end in OpenAI's words, before the close."""
    return error_event(
        refusal.code, refusal.message, "server_error" if refusal.server_fault else "invalid_request_error"
    )


def counted(metrics: Metrics, error: dict) -> dict:
    """An `error` event, counted as it goes out: as an event sent, and by its code."""
    metrics.realtime_event("out", "error")
    metrics.realtime_error(error["error"]["code"])
    return error


def _item_id() -> str:
    return "item_" + secrets.token_hex(12)


def _logprobs(words: list[dict]) -> list[dict]:
    """Word-level log probabilities: each word's confidence (`model.decoding.Word.confidence`)."""
    return [
        {
            "token": word["word"],
            "logprob": round(math.log(max(word["confidence"], 1e-12)), 6),
            "bytes": list(word["word"].encode()),
        }
        for word in words
    ]


class RealtimeEvents(StreamEvents):
    """The engine's events as OpenAI's server events."""

    def __init__(self, websocket: WebSocket, session: Session, metrics: Metrics):
        self.websocket = websocket
        self.session = session
        self.metrics = metrics  # every event sent is counted by its type, every error by its code
        self.item: str | None = None  # the turn being heard
        self.previous_item: str | None = None
        self.turn_start_ms = 0

    async def send(self, event: dict) -> None:
        self.metrics.realtime_event("out", event["type"])
        await self.websocket.send_json({"type": event.pop("type"), "event_id": _event_id(), **event})

    async def error(
        self,
        code: str,
        message: str,
        param: str | None = None,
        event_id: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        await self.websocket.send_json(counted(self.metrics, error_event(code, message, kind, param, event_id)))

    def current_item(self) -> str:
        if self.item is None:
            self.item = _item_id()
        return self.item

    def end_turn(self) -> None:
        self.item = None

    async def speech_started(self, at: float) -> None:
        padding = self.session.turn_detection.prefix_padding_ms if self.session.turn_detection else 0
        start_ms = max(self.turn_start_ms, round(at * 1000) - (padding or 0))
        await self.send(
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": start_ms, "item_id": self.current_item()}
        )

    async def segment_ended(self, segment: SegmentEnd) -> bool:
        self.turn_start_ms = round(segment.end * 1000)
        vad = self.session.turn_detection is not None
        if segment.reason == "length" and vad and not segment.heard_speech:
            self.end_turn()  # no one spoke: nothing to commit
            return False
        item = self.current_item()
        if segment.reason == "pause":
            await self.send(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": round(segment.end * 1000),
                    "item_id": item,
                }
            )
        await self.send(
            {"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": self.previous_item}
        )
        self.previous_item = item
        return True

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
        # The delta is the transcript itself, sent once it is settled: a partial's words, however
        # likely, may differ from the final's (a greedy guess over the turn's last seconds, "seve" for
        # "seven"), and a delta cannot be taken back. So deltas, joined, are always `completed`'s text.
        item = self.current_item()
        if text:
            delta = {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item,
                "content_index": 0,
                "delta": text,
            }
            if LOGPROBS in self.session.include:
                delta["logprobs"] = _logprobs(words)
            await self.send(delta)
        # `confidence` is this server's addition to OpenAI's event (as /transcribe's).
        event = {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item,
            "content_index": 0,
            "transcript": text,
            "confidence": confidence,
            "usage": {"type": "duration", "seconds": round(end - start, 3)},
        }
        if LOGPROBS in self.session.include:
            event["logprobs"] = _logprobs(words)
        await self.send(event)
        self.end_turn()

    async def failed(self, error: ServiceError) -> None:
        kind = "server_error" if http_status(error) >= 500 else "invalid_request_error"
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.failed",
                "item_id": self.current_item(),
                "content_index": 0,
                "error": {"type": kind, "code": error.code, "message": error.message, "param": None},
            }
        )
        self.end_turn()


UNSUPPORTED = ("response.", "conversation.", "output_audio_buffer.")  # a conversation session's events


@router.websocket("/v1/realtime")
async def realtime(
    websocket: WebSocket, server: ServerDep, authorised: Annotated[bool, Depends(require_api_key)]
) -> None:
    settings = server.settings
    offered = [name.strip() for name in websocket.headers.get("sec-websocket-protocol", "").split(",") if name.strip()]
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    browser_keys = [name.removeprefix(BROWSER_KEY_PREFIX) for name in offered if name.startswith(BROWSER_KEY_PREFIX)]
    intent = websocket.query_params.get("intent", "transcription")
    requested = websocket.query_params.get("model")  # as HTTP's `model`: a served name or an alias

    def words(refusal: Refusal) -> dict:
        return counted(server.metrics, refusal_event(refusal))

    if not (authorised or any(known_key(key, settings.api_keys) for key in browser_keys)):
        refusal = Refusal(1008, "invalid_api_key", "a valid API key is needed: Authorization: Bearer <key>")
    elif intent != "transcription":
        refusal = Refusal(
            1003,
            "unsupported_intent",
            f"intent {intent!r} is not served here; this server holds transcription sessions: intent=transcription",
        )
    else:
        try:
            pipeline = server.pipeline(requested)  # unknown: model_not_found, as HTTP's 404; not loaded: 1013
        except ServiceError as error:
            refusal = refusal_of(error)
        else:
            limits = SessionLimits(settings, server.stopping)
            try:
                await serve_in_slot(
                    websocket,
                    server,
                    lambda: _serve(websocket, server, pipeline, requested or pipeline.name, limits),
                    "realtime",
                    words,
                )
            finally:
                limits.close()
            return
    server.metrics.stream_closed("realtime", close_reason(refusal.close_code, refusal.code))
    await refuse(websocket, refusal, words)


async def _serve(
    websocket: WebSocket, server: Server, pipeline: Pipeline, model: str, limits: SessionLimits
) -> Ending | None:
    """One session on `pipeline`, which `model` (the name the client chose, or the default's) names."""
    settings = server.settings
    session = Session(model)
    events = RealtimeEvents(websocket, session, server.metrics)
    stream = Stream(
        events,
        PipelineRecognizer(pipeline, session.decode_options(), "realtime", server.metrics),
        session.stream_options(settings.stream_max_seconds),
    )
    await events.send({"type": "session.created", "session": session.describe()})
    try:
        while True:
            try:
                message = await limits.receive(websocket)
            except Ending as ending:
                await _wind_down(ending, events, stream, settings.shutdown_grace_seconds)
                return ending
            event_id, kind = None, None
            try:
                if message.get("text") is None:
                    raise EventError(
                        "invalid_event", "events are JSON text messages; audio goes in input_audio_buffer.append"
                    )
                try:
                    event = parse_json(message["text"])
                except ValueError as error:  # bad syntax, or nested too deep
                    syntax = isinstance(error, json.JSONDecodeError)
                    raise EventError("invalid_json", "the message is not JSON" if syntax else str(error)) from None
                if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                    raise EventError("invalid_event", "an event is a JSON object with a type", "type")
                kind = event["type"]
                server.metrics.realtime_event("in", kind)  # counted before it is answered
                event_id = event.get("event_id")  # echoed in an error: not a megabyte of it
                event_id = event_id if isinstance(event_id, str) and len(event_id) <= 128 else None
                finals = stream.finals
                await _handle(event, session, events, stream, server, limits)
                if stream.finals != finals:  # the client waited for its transcript: that was not idleness
                    limits.heard_audio()
            except EventError as error:
                if kind is None:  # not an event at all: counted as "other"
                    server.metrics.realtime_event("in", None)
                await events.error(error.code, error.message, error.param, event_id)
    finally:
        stream.cancel_partial()


async def _wind_down(ending: Ending, events: RealtimeEvents, stream: Stream, grace: float) -> None:
    """Say why (OpenAI's `session_expired` when too long), commit and transcribe the turn held, close."""
    kind = "server_error" if ending.code == 1001 else "invalid_request_error"
    await events.error(ending.error, ending.message, kind=kind)
    if stream.held_seconds >= MIN_COMMIT_SECONDS:
        await wind_down(stream, grace if ending.code == 1001 else None, "finalize")
    await events.websocket.close(ending.code, reason=ending.message[:120])


async def _handle(
    event: dict, session: Session, events: RealtimeEvents, stream: Stream, server: Server, limits: SessionLimits
) -> None:
    kind = event["type"]
    if kind in ("session.update", "transcription_session.update"):
        beta = kind == "transcription_session.update"
        before = copy.copy(session)  # an update refused is not applied, not even in part
        try:
            _update(session, event.get("session"), beta, stream, server)
        except EventError:
            vars(session).update(vars(before))  # `update` replaces fields, never changes one in place
            raise
        if beta:
            await events.send({"type": "transcription_session.updated", "session": session.describe_beta()})
        else:
            await events.send({"type": "session.updated", "session": session.describe()})
    elif kind == "input_audio_buffer.append":
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise EventError("invalid_value", "audio must be a base64 string", "audio")
        samples = session.decode(audio)
        if len(samples):
            limits.heard_audio()
            server.metrics.stream_audio("realtime", stream.recognizer.name, len(samples) / session.rate)
        await stream.add_samples(samples)
    elif kind == "input_audio_buffer.commit":
        held = stream.held_seconds
        if held < MIN_COMMIT_SECONDS:
            raise EventError(
                "input_audio_buffer_commit_empty",
                f"the input audio buffer holds {held * 1000:.0f} ms of audio; a commit needs at least "
                f"{MIN_COMMIT_SECONDS * 1000:.0f} ms",
            )
        await stream.finish_segment("finalize")
    elif kind == "input_audio_buffer.clear":
        stream.discard_segment()
        events.end_turn()
        events.turn_start_ms = round(stream.segment_start / stream.rate * 1000)
        await events.send({"type": "input_audio_buffer.cleared"})
    elif kind.startswith(UNSUPPORTED):
        raise EventError("unsupported_event", f"{shorten(kind)} is not part of a transcription session", "type")
    else:
        raise EventError("unknown_event", f"unknown event type {shorten(kind)}", "type")


def _update(session: Session, fields: object, beta: bool, stream: Stream, server: Server) -> None:
    """Apply a session update's `fields`, and the model and options they choose to the stream;
    EventError if any is refused."""
    session.update(fields, beta=beta)
    where = "session.input_audio_transcription.model" if beta else "session.audio.input.transcription.model"
    pipeline = _chosen_model(session.transcription.model, server, stream.recognizer.pipeline, where)
    options = session.decode_options()
    try:
        pipeline.check_options(options)
    except ServiceError as error:
        raise EventError("invalid_value", error.message, "session") from None
    try:
        stream.reconfigure(
            session.stream_options(server.settings.stream_max_seconds),
            PipelineRecognizer(pipeline, options, "realtime", server.metrics),
        )
    except ValueError as error:
        raise EventError("invalid_value", str(error), where) from None


def _chosen_model(name: str | None, server: Server, current: Pipeline, where: str) -> Pipeline:
    """The model `name` stands for, resolved as HTTP resolves `model` (a served name or an alias);
    None: the one in use. An unknown name is OpenAI's `model_not_found`, as over HTTP."""
    if name is None:
        return current
    try:
        return server.pipeline(name)
    except ServiceError as error:  # unknown (model_not_found), or not loaded yet (model_not_ready)
        raise EventError(error.code, error.message, where) from None
