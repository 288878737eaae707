"""OpenAI's Realtime API in transcription mode, at /v1/realtime, on /v1/stream's engine.

A client written for OpenAI's protocol (`wss://.../v1/realtime?intent=transcription`) can point at
this server unchanged. It sends JSON events:

- `session.update` with a transcription session (`session.type` = "transcription"), or
  `transcription_session.update`, the beta API's name, with its flat session;
- `input_audio_buffer.append`: base64 audio in the session's format (`audio/pcm`, 16-bit
  little-endian mono at 24 kHz or any rate from 1 to 384 kHz; `audio/pcmu` or `audio/pcma`, G.711
  at 8 kHz), resampled here to the model's rate;
- `input_audio_buffer.commit` (end the turn now) and `input_audio_buffer.clear` (drop it).

A session's `transcription.model` that names a served model chooses it; any other name (OpenAI's
model names) leaves the model in use, at first the default one.

With `turn_detection` of type `server_vad` (the default) turns end at pauses of
`silence_duration_ms`, found by the same voice-activity detector as /v1/stream's endpointing;
with `null`, only at commits. The server answers `session.created`, `session.updated` (or
`transcription_session.updated`), `input_audio_buffer.speech_started`, `.speech_stopped`,
`.committed`, `.cleared`, `conversation.item.input_audio_transcription.delta` (the words partial
results have settled), `.completed` (the turn's transcription: what /transcribe gives for the
turn's audio) or `.failed`, and `error` events in OpenAI's shape. Mistakes in an event get an
`error` and the session goes on; limits, keys and faults end it, as on /v1/stream.
"""

from __future__ import annotations

import json
import math
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, WebSocket

from model.streaming import SegmentEnd, Stream, StreamEvents

from .dependencies import ServerDep, known_key, require_api_key
from .errors import ServiceError, shorten
from .http_errors import Refusal, http_status, refuse
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


def settled_words(sent: list[str], partial: list[str]) -> list[str]:
    """The words of a partial that follow those already sent, less its last word (which may still
    grow). Partials cover the segment's last seconds only, so once the segment is longer, the
    partial's start is matched against the end of what was sent (two words at least)."""
    settled = partial[:-1]
    if settled[: len(sent)] == sent:
        return settled[len(sent) :]
    for skip in (0, 1):  # the window's first word may be cut
        for overlap in range(min(len(sent), len(settled) - skip), 1, -1):
            if sent[-overlap:] == settled[skip : skip + overlap]:
                return settled[skip + overlap :]
    return []


class RealtimeEvents(StreamEvents):
    """The engine's events as OpenAI's server events."""

    def __init__(self, websocket: WebSocket, session: Session):
        self.websocket = websocket
        self.session = session
        self.item: str | None = None  # the turn being heard
        self.previous_item: str | None = None
        self.sent_words: list[str] = []
        self.turn_start_ms = 0

    async def send(self, event: dict) -> None:
        await self.websocket.send_json({"type": event.pop("type"), "event_id": _event_id(), **event})

    async def error(
        self,
        code: str,
        message: str,
        param: str | None = None,
        event_id: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        await self.websocket.send_json(error_event(code, message, kind, param, event_id))

    def current_item(self) -> str:
        if self.item is None:
            self.item = _item_id()
        return self.item

    def end_turn(self) -> None:
        self.item, self.sent_words = None, []

    async def speech_started(self, at: float) -> None:
        padding = self.session.turn_detection.prefix_padding_ms if self.session.turn_detection else 0
        start_ms = max(self.turn_start_ms, round(at * 1000) - (padding or 0))
        await self.send(
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": start_ms, "item_id": self.current_item()}
        )

    async def partial(self, text: str, words: list[dict]) -> None:
        new = settled_words(self.sent_words, text.split())
        if not new:
            return
        delta = (" " if self.sent_words else "") + " ".join(new)
        self.sent_words += new
        event = {
            "type": "conversation.item.input_audio_transcription.delta",
            "item_id": self.current_item(),
            "content_index": 0,
            "delta": delta,
        }
        if LOGPROBS in self.session.include:
            event["logprobs"] = _logprobs(words[len(words) - len(new) - 1 : len(words) - 1])
        await self.send(event)

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
    ) -> None:
        # `confidence` is this server's addition to OpenAI's event (as /transcribe's).
        event = {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": self.current_item(),
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
    pipeline = server.pipelines.get(server.model_name)
    if not (authorised or any(known_key(key, settings.api_keys) for key in browser_keys)):
        refusal = Refusal(1008, "invalid_api_key", "a valid API key is needed: Authorization: Bearer <key>")
    elif intent != "transcription":
        refusal = Refusal(
            1003,
            "unsupported_intent",
            f"intent {intent!r} is not served here; this server holds transcription sessions: intent=transcription",
        )
    elif pipeline is None:
        refusal = Refusal(1013, "model_not_ready", "the model is not loaded yet; retry shortly", server_fault=True)
    else:
        limits = SessionLimits(settings, server.stopping)
        try:
            await serve_in_slot(
                websocket, server, lambda: _serve(websocket, server, pipeline, limits), "session", refusal_event
            )
        finally:
            limits.close()
        return
    await refuse(websocket, refusal, refusal_event)


async def _serve(websocket: WebSocket, server: Server, pipeline: Pipeline, limits: SessionLimits) -> Ending | None:
    settings = server.settings
    session = Session(pipeline.name)
    events = RealtimeEvents(websocket, session)
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
            event_id = None
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
                event_id = event.get("event_id")  # echoed in an error: not a megabyte of it
                event_id = event_id if isinstance(event_id, str) and len(event_id) <= 128 else None
                finals = stream.finals
                await _handle(event, session, events, stream, server, limits)
                if stream.finals != finals:  # the client waited for its transcript: that was not idleness
                    limits.heard_audio()
            except EventError as error:
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
        session.update(event.get("session"), beta=beta)
        pipeline = _chosen_model(session, server, stream.recognizer.pipeline)
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
            raise EventError("invalid_value", str(error), "session.audio.input.transcription.model") from None
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


def _chosen_model(session: Session, server: Server, current: Pipeline) -> Pipeline:
    """The model a session's `transcription.model` names, if this server serves one of that name;
    else (OpenAI's model names, say) the one in use."""
    name = session.transcription.model
    if name not in server.model_names:
        return current
    try:
        return server.pipeline(name)
    except ServiceError as error:  # not loaded yet
        raise EventError(error.code, error.message, "session.audio.input.transcription.model") from None
