"""What both websocket protocols (/v1/stream and /v1/realtime) share: reading a session's messages
under its limits, and parsing their JSON safely.

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
import re
import time

import numpy as np
from fastapi import WebSocket, WebSocketDisconnect

from .settings import Settings

# On shutdown, the messages that still arrive in this time are taken: audio a client sent before it
# could know (a message in flight, or queued behind a slow one) is transcribed with the rest.
STOPPING_TAIL_SECONDS = 1.0
MAX_JSON_DEPTH = 32  # a session's messages nest 4 levels at most
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
                raise Ending(1001, "server_shutting_down", "the server is shutting down: the audio received so far "
                                                          "is transcribed, then the session closes; reconnect to "
                                                          "go on")
        if now >= self.started + self.max_seconds:
            raise Ending(1008, "session_expired", f"the session reached its maximum duration of "
                                                  f"{self.max_seconds:g} s; reconnect to go on")
        if now >= self.last_audio + self.idle_seconds:
            raise Closed(1001, f"no audio for {self.idle_seconds:g} s; closing the idle stream")

    def close(self) -> None:
        if self._stop_wait is not None:
            self._stop_wait.cancel()
