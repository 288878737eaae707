"""Uploaded bytes -> samples at the model's rate, with a clear refusal for every kind of bad input.

The header is read first, so audio that is too long, or would decode to too much data (a
small compressed file can hold hours of 384 kHz stereo), is refused before any decoding.
Callers run `decode_upload` in a worker thread: decoding and resampling never block the
event loop.
"""

from __future__ import annotations

import numpy as np

from model.audio import PCM_ENCODINGS, AudioError, audio_info, check_duration, decode_pcm, load_audio, resample

from .errors import AudioTooLarge, InvalidAudio, InvalidOption, UnusableAudio

MAX_SAMPLE_RATE = 384_000  # the highest rate common hardware records at
MIN_SAMPLE_RATE = 1_000
SILENCE_PEAK = 1e-4  # -80 dBFS: below this there is nothing to transcribe
DECODED_SAMPLE_BYTES = 4  # float32


def decode_upload(
    data: bytes,
    target_rate: int,
    max_seconds: float,
    max_decoded_bytes: int,
    sample_rate: int | None = None,
    encoding: str | None = None,
) -> np.ndarray:
    """Encoded audio (any container soundfile reads), or raw PCM when `encoding` is given."""
    if not data:
        raise InvalidAudio("empty_audio", "the request holds no audio (0 bytes)")
    if encoding is not None:
        samples = _decode_raw_pcm(data, encoding, sample_rate, max_seconds, max_decoded_bytes)
        rate = sample_rate
    else:
        try:
            info = audio_info(data)
        except AudioError as error:
            raise InvalidAudio(
                "invalid_audio", f"{error} (send wav, flac, ogg or mp3, or raw PCM with sample_rate and encoding)"
            ) from None
        check_rate(info.rate)
        check_size(info.frames, info.channels, info.rate, max_seconds, max_decoded_bytes)
        try:
            samples = load_audio(data, target_rate)
        except AudioError as error:  # undecodable data, no samples, or samples that are not finite
            raise InvalidAudio("invalid_audio", str(error)) from None
        rate = target_rate
    duration = len(samples) / rate  # a compressed file's header may only estimate its length
    if duration > max_seconds:
        raise AudioTooLarge(
            "audio_too_long", f"audio is {duration:.1f} s long; this server accepts at most {max_seconds:g} s"
        )
    return resample(samples, rate, target_rate)


def _decode_raw_pcm(
    data: bytes, encoding: str, sample_rate: int | None, max_seconds: float, max_decoded_bytes: int
) -> np.ndarray:
    if encoding not in PCM_ENCODINGS:
        raise InvalidOption(
            "invalid_encoding", f"unknown encoding {encoding!r}; use one of {', '.join(PCM_ENCODINGS)}", "encoding"
        )
    if sample_rate is None:
        raise InvalidOption("missing_sample_rate", "raw PCM needs its sample_rate", "sample_rate")
    check_rate(sample_rate)
    check_size(
        len(data) // np.dtype(PCM_ENCODINGS[encoding][0]).itemsize, 1, sample_rate, max_seconds, max_decoded_bytes
    )
    try:
        samples = decode_pcm(data, encoding)
    except AudioError as error:
        raise InvalidAudio("invalid_audio", str(error)) from None
    if not np.isfinite(samples).all():
        raise InvalidAudio("invalid_audio", "the audio holds samples that are not finite numbers (NaN or infinity)")
    return samples


def check_rate(rate: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidOption(
            "unsupported_sample_rate",
            f"sample rate {rate} Hz is outside the supported {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz",
            "sample_rate",
        )


def check_size(frames: int, channels: int, rate: int, max_seconds: float, max_decoded_bytes: int) -> None:
    """Refuse, before decoding, audio longer than `max_seconds` or larger than `max_decoded_bytes`
    once decoded (float32, every channel, at its own rate)."""
    duration = frames / rate
    if duration > max_seconds:
        raise AudioTooLarge(
            "audio_too_long", f"audio is {duration:.1f} s long; this server accepts at most {max_seconds:g} s"
        )
    decoded = frames * channels * DECODED_SAMPLE_BYTES
    if decoded > max_decoded_bytes:
        raise AudioTooLarge(
            "audio_too_large",
            f"audio of {duration:.1f} s, {channels} channel(s) at {rate} Hz "
            f"decodes to {decoded / 2**20:.0f} MiB; this server decodes at most "
            f"{max_decoded_bytes / 2**20:.0f} MiB (send mono, or a lower "
            "sample rate)",
        )


def check_usable(samples: np.ndarray, min_samples: int, rate: int) -> None:
    """Long enough for one model frame, and not silent."""
    try:
        check_duration(samples, min_samples, rate)
    except AudioError as error:
        raise InvalidAudio("audio_too_short", str(error)) from None
    if float(np.abs(samples).max()) < SILENCE_PEAK:
        raise UnusableAudio("silent_audio", "the audio is silent (peak below -80 dBFS); there is nothing to transcribe")
