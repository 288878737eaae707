"""Uploaded bytes -> samples at the model's rate, with a clear refusal for every kind of bad input.

The header is read first (`inspect_upload`), so audio that is too long, or would decode to too
much data (a small compressed file can hold hours of 384 kHz stereo), is refused before any
decoding. `decode_upload` does a few seconds of plain WAV or raw PCM on the event loop,
header and samples, where that costs less than handing it to a worker thread would; anything
longer, and every other format (compressed ones' headers may only estimate their length, and a
WAV's chunks may be many), goes to a worker thread, so decoding never holds up the loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from model.audio import PCM_ENCODINGS, AudioError, audio_info, check_duration, decode_pcm, load_audio, resample

from .errors import AudioTooLarge, InvalidAudio, InvalidOption, UnusableAudio

MAX_SAMPLE_RATE = 384_000  # the highest rate common hardware records at
MIN_SAMPLE_RATE = 1_000
SILENCE_PEAK = 1e-4  # -80 dBFS: below this there is nothing to transcribe
DECODED_SAMPLE_BYTES = 4  # float32
# Uncompressed audio of up to this many samples (every channel; 5 s at 16 kHz mono) is decoded on
# the event loop: under a millisecond (WAV at 16 kHz: ~0.16 ms per audio second, measured), where
# a worker thread's round trip costs ~0.3 ms and, under load, competes with the loop for the
# interpreter.
QUICK_SAMPLES = 80_000
# A WAV file's sample data must begin within this many chunks for its header to be read on the event
# loop: libsndfile walks every chunk before the samples (a file of 20,000 empty chunks took 15 ms).
QUICK_CHUNKS = 8


@dataclass(frozen=True)
class Upload:
    """Uploaded audio whose header passed the checks: what decoding it will give."""

    data: bytes
    rate: int  # the audio's own sample rate
    samples: int  # every channel's, as the header says (a compressed file's may only estimate them)
    encoding: str | None  # raw PCM's encoding; None: a container soundfile reads
    uncompressed: bool  # raw PCM, or a container of uncompressed samples (`AudioInfo.uncompressed`)

    @property
    def quick(self) -> bool:
        """Uncompressed, and small enough to decode on the event loop (`QUICK_SAMPLES`)."""
        return self.uncompressed and self.samples <= QUICK_SAMPLES


async def decode_upload(
    data: bytes,
    target_rate: int,
    max_seconds: float,
    max_decoded_bytes: int,
    sample_rate: int | None = None,
    encoding: str | None = None,
) -> np.ndarray:
    """Encoded audio (any container soundfile reads), or raw PCM when `encoding` is given, at
    `target_rate`: on the event loop where that is quick (raw PCM or a `plain_wav`, and
    `Upload.quick`), else in a worker thread."""

    def inspect() -> Upload:
        return inspect_upload(data, max_seconds, max_decoded_bytes, sample_rate, encoding)

    if encoding is None and not plain_wav(data):
        return await asyncio.to_thread(lambda: decode_inspected(inspect(), target_rate, max_seconds))
    upload = inspect()
    if upload.quick:
        return decode_inspected(upload, target_rate, max_seconds)
    return await asyncio.to_thread(decode_inspected, upload, target_rate, max_seconds)


def plain_wav(data: bytes) -> bool:
    """A WAV file (RIFF or RF64) whose sample data begins within its first QUICK_CHUNKS chunks, so that
    reading its header costs next to nothing. Checks only where the chunks lie: soundfile reads them."""
    if data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        return False
    position = 12
    for _ in range(QUICK_CHUNKS):
        if position + 8 > len(data):
            return False
        if data[position : position + 4] == b"data":
            return True
        size = int.from_bytes(data[position + 4 : position + 8], "little")
        position += 8 + size + size % 2  # chunks are padded to an even length
    return False


def inspect_upload(
    data: bytes,
    max_seconds: float,
    max_decoded_bytes: int,
    sample_rate: int | None = None,
    encoding: str | None = None,
) -> Upload:
    """The header's checks, before any decoding: a clear refusal for audio that is not audio, not a
    usable rate, or too long or too large once decoded."""
    if not data:
        raise InvalidAudio("empty_audio", "the request holds no audio (0 bytes)")
    if encoding is not None:
        if encoding not in PCM_ENCODINGS:
            raise InvalidOption(
                "invalid_encoding", f"unknown encoding {encoding!r}; use one of {', '.join(PCM_ENCODINGS)}", "encoding"
            )
        if sample_rate is None:
            raise InvalidOption("missing_sample_rate", "raw PCM needs its sample_rate", "sample_rate")
        check_rate(sample_rate)
        frames = len(data) // np.dtype(PCM_ENCODINGS[encoding][0]).itemsize
        check_size(frames, 1, sample_rate, max_seconds, max_decoded_bytes)
        return Upload(data, sample_rate, frames, encoding, True)
    try:
        info = audio_info(data)
    except AudioError as error:
        raise InvalidAudio(
            "invalid_audio", f"{error} (send wav, flac, ogg or mp3, or raw PCM with sample_rate and encoding)"
        ) from None
    check_rate(info.rate)
    check_size(info.frames, info.channels, info.rate, max_seconds, max_decoded_bytes)
    return Upload(data, info.rate, info.frames * info.channels, None, info.uncompressed)


def decode_inspected(upload: Upload, target_rate: int, max_seconds: float) -> np.ndarray:
    """An inspected upload's samples at `target_rate`."""
    if upload.encoding is not None:
        try:
            samples = decode_pcm(upload.data, upload.encoding)
        except AudioError as error:
            raise InvalidAudio("invalid_audio", str(error)) from None
        if not np.isfinite(samples).all():
            raise InvalidAudio("invalid_audio", "the audio holds samples that are not finite numbers (NaN or infinity)")
        rate = upload.rate
    else:
        try:
            samples = load_audio(upload.data, target_rate)
        except AudioError as error:  # undecodable data, no samples, or samples that are not finite
            raise InvalidAudio("invalid_audio", str(error)) from None
        rate = target_rate
    duration = len(samples) / rate  # a compressed file's header may only estimate its length
    if duration > max_seconds:
        raise AudioTooLarge(
            "audio_too_long", f"audio is {duration:.1f} s long; this server accepts at most {max_seconds:g} s"
        )
    return resample(samples, rate, target_rate)


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
