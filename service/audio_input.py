"""Uploaded bytes -> samples at the model's rate, with a clear 4xx for every kind of bad input."""

from __future__ import annotations

import numpy as np

from model.audio import PCM_ENCODINGS, AudioError, decode_pcm, read_audio, resample

from .errors import ApiError

MAX_SAMPLE_RATE = 384_000  # the highest rate common hardware records at
MIN_SAMPLE_RATE = 1_000
SILENCE_PEAK = 1e-4  # -80 dBFS: below this there is nothing to transcribe


def decode_upload(data: bytes, target_rate: int, max_seconds: float, sample_rate: int | None = None,
                  encoding: str | None = None) -> np.ndarray:
    """Encoded audio (any container soundfile reads), or raw PCM when `encoding` is given."""
    if not data:
        raise ApiError(400, "empty_audio", "the request holds no audio (0 bytes)")
    if encoding is not None:
        if encoding not in PCM_ENCODINGS:
            raise ApiError(422, "invalid_encoding", f"unknown encoding {encoding!r}; use one of "
                                                   f"{', '.join(PCM_ENCODINGS)}", "encoding")
        if sample_rate is None:
            raise ApiError(422, "missing_sample_rate", "raw PCM needs its sample_rate", "sample_rate")
        check_rate(sample_rate)
        try:
            samples = decode_pcm(data, encoding)
        except AudioError as error:
            raise ApiError(400, "invalid_audio", str(error)) from None
        rate = sample_rate
    else:
        try:
            samples, rate = read_audio(data)
        except AudioError as error:
            raise ApiError(400, "invalid_audio", f"{error} (send wav, flac, ogg or mp3, or raw PCM with "
                                                 "sample_rate and encoding)") from None
        check_rate(rate)
    duration = len(samples) / rate
    if duration > max_seconds:
        raise ApiError(413, "audio_too_long", f"audio is {duration:.1f} s long; this server accepts at most "
                                              f"{max_seconds:g} s")
    if samples.size == 0:
        raise ApiError(400, "empty_audio", "the audio holds no samples")
    if not np.isfinite(samples).all():
        raise ApiError(400, "invalid_audio", "the audio holds samples that are not finite numbers")
    return resample(samples, rate, target_rate)


def check_rate(rate: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ApiError(422, "unsupported_sample_rate", f"sample rate {rate} Hz is outside the supported "
                                                       f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz", "sample_rate")


def check_usable(samples: np.ndarray, min_samples: int, rate: int) -> None:
    """Long enough for one model frame, and not silent."""
    if len(samples) < min_samples:
        raise ApiError(400, "audio_too_short", f"audio is {len(samples) / rate:.3f} s long; at least "
                                               f"{min_samples / rate:.3f} s is needed")
    if float(np.abs(samples).max()) < SILENCE_PEAK:
        raise ApiError(422, "silent_audio", "the audio is silent (peak below -80 dBFS); there is nothing to "
                                            "transcribe")
