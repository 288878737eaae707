"""A realtime session's settings (`Session`) as OpenAI's API keeps them: each `session.update`
(or the beta API's `transcription_session.update`) changes the fields it names, checked before any
is applied, and the engine's options and decoding follow from them. A mistake in an update is an
`EventError`: an `error` event, and the session goes on."""

from __future__ import annotations

import base64
import binascii
import io
import secrets

import numpy as np
import soundfile
from pydantic import ValidationError

from model.audio import AudioError, decode_pcm
from model.streaming import StreamOptions

from .options import DecodeRequest
from .realtime_protocol import BETA_FORMATS, AudioFormat, BetaSessionUpdate, SessionUpdate, Transcription, TurnDetection

G711_RATE = 8000
# OpenAI's defaults for server VAD
VAD_DEFAULTS = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}


class EventError(Exception):
    """A client event the session cannot take: an `error` event, and the session goes on."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class Session:
    """The effective settings, updated field by field as OpenAI's API does."""

    def __init__(self, model_name: str):
        self.id = "sess_" + secrets.token_hex(12)
        self.format = AudioFormat(type="audio/pcm", rate=24000)
        self.transcription = Transcription(model=model_name, language=None, prompt="")
        self.turn_detection: TurnDetection | None = TurnDetection(**VAD_DEFAULTS)
        self.noise_reduction: dict | None = None
        self.include: list[str] = []

    @property
    def rate(self) -> int:
        return (self.format.rate or 24000) if self.format.type == "audio/pcm" else G711_RATE

    def update(self, session: dict, beta: bool) -> None:
        """Apply a client's session: the fields it names, each checked before any is applied."""
        if not isinstance(session, dict):
            raise EventError("invalid_value", "session must be an object", "session")
        if not beta and session.get("type", "transcription") != "transcription":
            raise EventError(
                "invalid_value",
                'this server holds transcription sessions only: session.type must be "transcription"',
                "session.type",
            )
        try:
            parsed = (BetaSessionUpdate if beta else SessionUpdate).model_validate(session)
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(["session", *(str(part) for part in problem["loc"])])
            raise EventError("invalid_value", f"{where}: {problem['msg']}", where) from None
        given = _given_fields(parsed, beta)
        audio_format = given.get("format")
        if audio_format is not None and audio_format.type != "audio/pcm" and audio_format.rate not in (None, G711_RATE):
            raise EventError("invalid_value", f"G.711 audio is {G711_RATE} Hz", "session.audio.input.format.rate")
        if audio_format is not None:  # null leaves the format as it was
            self.format = audio_format
        if given.get("transcription") is not None:
            self.transcription = self.transcription.model_copy(
                update=given["transcription"].model_dump(exclude_unset=True)
            )
        if "turn_detection" in given:  # null turns detection off
            detection = given["turn_detection"]
            self.turn_detection = (
                None
                if detection is None
                else TurnDetection(**{**VAD_DEFAULTS, **detection.model_dump(exclude_unset=True)})
            )
        if "noise_reduction" in given:
            self.noise_reduction = given["noise_reduction"]
        if parsed.include is not None:
            self.include = list(parsed.include)

    def stream_options(self, max_stream_seconds: float) -> StreamOptions:
        """The engine's options: turns end at pauses (with server VAD), at commits, and at the
        engine's default segment length or the server's limit of audio per stream, the shorter;
        each turn resampled on its own, so its transcript is the offline one of its audio. No partial
        results: deltas carry only settled text (the turn's final), so partials would go unused."""
        vad = self.turn_detection
        silence_ms = None if vad is None else vad.silence_duration_ms or VAD_DEFAULTS["silence_duration_ms"]
        return StreamOptions(
            sample_rate=self.rate,
            interim_results=False,
            endpointing_ms=silence_ms,
            max_segment_seconds=min(StreamOptions.max_segment_seconds, max_stream_seconds),
            max_stream_seconds=max_stream_seconds,
            resample_per_segment=True,
        )

    def decode_options(self) -> DecodeRequest:
        return DecodeRequest(hotwords=self.transcription.keywords or [])

    def describe(self) -> dict:
        """The session as the GA API's events show it."""
        audio_format = {"type": self.format.type}
        if self.format.type == "audio/pcm":
            audio_format["rate"] = self.rate
        return {
            "type": "transcription",
            "object": "realtime.session",
            "id": self.id,
            "audio": {
                "input": {
                    "format": audio_format,
                    "transcription": self.transcription.model_dump(exclude_none=True),
                    "turn_detection": self._turn_detection(),
                    "noise_reduction": self.noise_reduction,
                }
            },
            "include": self.include,
        }

    def describe_beta(self) -> dict:
        """The session as the beta API's `transcription_session.updated` shows it."""
        name = {value: key for key, value in BETA_FORMATS.items()}[self.format.type]
        return {
            "id": self.id,
            "object": "realtime.transcription_session",
            "input_audio_format": name,
            "input_audio_transcription": self.transcription.model_dump(exclude_none=True),
            "turn_detection": self._turn_detection(),
            "input_audio_noise_reduction": self.noise_reduction,
            "include": self.include,
            "modalities": ["text"],
        }

    def _turn_detection(self) -> dict | None:
        return None if self.turn_detection is None else self.turn_detection.model_dump(exclude_none=True)

    def decode(self, audio: str) -> np.ndarray:
        """An append event's base64 audio -> float samples at the session's rate."""
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise EventError("invalid_value", "audio is not valid base64", "audio") from None
        if self.format.type == "audio/pcm":
            try:
                return decode_pcm(data, "pcm_s16le")
            except AudioError as error:
                raise EventError("invalid_value", f"audio: {error}", "audio") from None
        if not data:
            return np.zeros(0, dtype=np.float32)
        subtype = "ULAW" if self.format.type == "audio/pcmu" else "ALAW"
        samples, _ = soundfile.read(
            io.BytesIO(data), samplerate=G711_RATE, channels=1, format="RAW", subtype=subtype, dtype="float32"
        )
        return samples


def _given_fields(parsed: SessionUpdate | BetaSessionUpdate, beta: bool) -> dict:
    """The fields a session update names (None where it sets one to null), under the GA API's names."""
    if beta:
        names = {
            "input_audio_format": "format",
            "input_audio_transcription": "transcription",
            "turn_detection": "turn_detection",
            "input_audio_noise_reduction": "noise_reduction",
        }
        given = {names[name]: getattr(parsed, name) for name in parsed.model_fields_set if name in names}
        if given.get("format") is not None:
            given["format"] = AudioFormat(type=BETA_FORMATS[given["format"]])
        return given
    audio_input = parsed.audio.input if parsed.audio is not None else None
    if audio_input is None:
        return {}
    return {name: getattr(audio_input, name) for name in audio_input.model_fields_set}
