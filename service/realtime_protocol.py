"""OpenAI's Realtime API's transcription session, as clients send it: the GA API's `session.update`
session and the beta API's `transcription_session.update` one, as pydantic models. Unknown fields
are ignored (OpenAI adds fields often), known ones checked."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .audio_input import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AudioFormat(_Lenient):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: int | None = Field(
        None,
        ge=MIN_SAMPLE_RATE,
        le=MAX_SAMPLE_RATE,
        description="audio/pcm: any rate (OpenAI's is 24000); G.711: 8000 only",
    )


class TurnDetection(_Lenient):
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float | None = Field(None, ge=0, le=1)
    prefix_padding_ms: int | None = Field(None, ge=0, le=60_000)
    silence_duration_ms: int | None = Field(None, ge=30, le=60_000)


class Transcription(_Lenient):
    model: str | None = Field(None, max_length=256)  # echoed in every session event: not a megabyte of it
    language: str | None = None
    prompt: str | None = None
    keywords: list[str] | None = Field(None, max_length=100, description="served as hotwords")


class AudioInput(_Lenient):
    format: AudioFormat | None = None
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None
    noise_reduction: dict | None = None


class Audio(_Lenient):
    input: AudioInput | None = None


class SessionUpdate(_Lenient):
    """`session.update`'s session (the GA API)."""

    type: Literal["transcription"] | None = None
    audio: Audio | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None


class BetaSessionUpdate(_Lenient):
    """`transcription_session.update`'s session (the beta API)."""

    input_audio_format: Literal["pcm16", "g711_ulaw", "g711_alaw"] | None = None
    input_audio_transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None
    input_audio_noise_reduction: dict | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None


BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
