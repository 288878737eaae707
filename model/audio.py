"""Audio in: decode files or bytes, mix to mono, resample, normalise.

One path for every caller (CLI, trainer, service). Imports no torch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile  # libsndfile: wav, flac, ogg/vorbis/opus and mp3 in one well-kept decoder
import soxr  # high-quality resampler, fast and torch-free

from .config import FeatureSettings

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")  # what load_audio decodes, as file name endings


class AudioError(ValueError):
    """Audio that cannot be used: unreadable, empty, too short or not finite."""


AudioSource = str | Path | bytes | BinaryIO


def _describe(source: AudioSource) -> str:
    if isinstance(source, (str, Path)):
        return f"'{source}'"
    if isinstance(source, (bytes, bytearray)):
        return f"{len(source)} bytes of audio"
    return "the audio stream"


BLOCK_FRAMES = 1 << 18  # frames decoded at a time: stereo or high-rate audio is never held whole


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, read without decoding it."""

    frames: int
    channels: int
    rate: int  # Hz
    container: str = ""  # as soundfile names it: WAV, FLAC, OGG, MP3...
    subtype: str = ""  # the samples' encoding: PCM_16, FLOAT, MPEG_LAYER_III, VORBIS... (FLAC's: PCM_16...)

    @property
    def uncompressed(self) -> bool:
        """Samples stored as they are (linear PCM, floats, or 8-bit u-law/A-law): the header's
        frames follow from the file's size, and decoding costs little per second."""
        stored = self.subtype.startswith("PCM_") or self.subtype in ("FLOAT", "DOUBLE", "ULAW", "ALAW")
        return stored and self.container != "FLAC"  # FLAC names the PCM it decodes to


def _open(source: AudioSource) -> soundfile.SoundFile:
    what = _describe(source)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise AudioError("the audio is empty (0 bytes)")
        source = io.BytesIO(source)
    elif isinstance(source, (str, Path)) and not Path(source).is_file():
        raise AudioError(f"no such audio file: '{source}'")
    try:
        return soundfile.SoundFile(source)
    except soundfile.LibsndfileError as error:  # its own text, not the str() that names the Python object
        raise AudioError(f"could not decode {what}: {error.error_string}") from None
    except (RuntimeError, TypeError, ValueError):
        raise AudioError(f"could not decode {what}: not a format this library reads") from None


def audio_info(source: AudioSource) -> AudioInfo:
    """Frames, channels and rate from the header: what decoding would cost, known before paying it."""
    with _open(source) as audio:
        return AudioInfo(audio.frames, audio.channels, audio.samplerate, audio.format, audio.subtype)


def _mono_blocks(audio: soundfile.SoundFile, what: str):
    """Mono float32 blocks of at most BLOCK_FRAMES frames, each checked to be finite."""
    try:
        # Not SoundFile.blocks: with a header that overestimates the length (mp3) it pads the last
        # block with the one before it.
        while len(block := audio.read(BLOCK_FRAMES, dtype="float32", always_2d=True)):
            mono = mix_to_mono(block)
            if not np.isfinite(mono).all():
                raise AudioError(f"{what} holds samples that are not finite numbers (NaN or infinity)")
            yield mono
    except (soundfile.LibsndfileError, RuntimeError) as error:
        detail = error.error_string if isinstance(error, soundfile.LibsndfileError) else "corrupt data"
        raise AudioError(f"could not decode {what}: {detail}") from None


def read_audio(source: AudioSource) -> tuple[np.ndarray, int]:
    """Decode a file, a path or encoded bytes to mono float32 samples and their rate (Hz)."""
    what = _describe(source)
    with _open(source) as audio:
        blocks = list(_mono_blocks(audio, what))
        rate = audio.samplerate
    return (np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)), int(rate)


# Raw PCM encodings: name -> (numpy dtype, scale to [-1, 1]).
PCM_ENCODINGS = {"pcm_s16le": ("<i2", 1 / 32768), "pcm_s32le": ("<i4", 1 / 2147483648), "pcm_f32le": ("<f4", 1.0)}


def decode_pcm(data: bytes, encoding: str, channels: int = 1) -> np.ndarray:
    """Headerless little-endian PCM -> mono float32 samples."""
    if encoding not in PCM_ENCODINGS:
        raise AudioError(f"unknown PCM encoding {encoding!r}; use one of {', '.join(PCM_ENCODINGS)}")
    dtype, scale = PCM_ENCODINGS[encoding]
    frame_bytes = np.dtype(dtype).itemsize * channels
    if len(data) % frame_bytes:
        raise AudioError(f"{len(data)} bytes is not a whole number of {encoding} frames of {channels} channel(s)")
    samples = np.frombuffer(data, dtype=dtype).reshape(-1, channels).astype(np.float32) * np.float32(scale)
    return mix_to_mono(samples)


def mix_to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,): the average of the channels."""
    if samples.ndim == 1:
        return samples
    if samples.shape[1] == 1:
        return samples[:, 0]
    return samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    if rate == target_rate:
        return samples
    return soxr.resample(samples, rate, target_rate).astype(np.float32, copy=False)


def load_audio(source: AudioSource, sampling_rate: int) -> np.ndarray:
    """Decode `source` and return mono float32 samples at `sampling_rate` Hz.

    Decodes and resamples block by block (soxr's stream gives the same samples as resampling
    the whole), so memory holds only the result, whatever the file's rate and channels.
    """
    what = _describe(source)
    with _open(source) as audio:
        rate = audio.samplerate
        resampler = None if rate == sampling_rate else soxr.ResampleStream(rate, sampling_rate, 1, dtype="float32")
        parts = [block if resampler is None else resampler.resample_chunk(block) for block in _mono_blocks(audio, what)]
    if not parts:
        raise AudioError(f"{what} holds no audio (0 samples)")
    if resampler is not None:
        parts.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    return np.concatenate(parts)


def check_duration(samples: np.ndarray, min_samples: int, sampling_rate: int) -> None:
    """Refuse audio too short to produce a single model frame."""
    if len(samples) < min_samples:
        raise AudioError(
            f"audio is {len(samples) / sampling_rate:.3f} s long; "
            f"at least {min_samples / sampling_rate:.3f} s is needed"
        )


def batch_input_values(
    utterances: list[np.ndarray], do_normalize: bool, padding_value: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs for a batch: (input_values (batch, samples) float32, attention_mask (batch, samples) int64).

    Each utterance is normalised over its own samples, then right-padded with `padding_value`,
    as Hugging Face's feature extractor does.
    """
    width = max(len(samples) for samples in utterances)
    input_values = np.full((len(utterances), width), padding_value, dtype=np.float32)
    attention_mask = np.zeros((len(utterances), width), dtype=np.int64)
    for row, samples in enumerate(utterances):
        input_values[row, : len(samples)] = normalize(samples) if do_normalize else samples
        attention_mask[row, : len(samples)] = 1
    return input_values, attention_mask


def model_inputs(
    utterances: list[np.ndarray], features: FeatureSettings, padding_exact: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """What a model is fed for a batch, as its audio settings say; every caller (transcription,
    training, export checks) prepares its inputs here.

    Returns input_values (batch, samples) float32, each utterance normalised over its own samples
    when `do_normalize`, right-padded with `padding_value`; and attention_mask (batch, samples)
    int64 when the model takes one (`return_attention_mask`), or when the batch is padded and
    `padding_exact` (the mask then keeps padding from changing any row), else None.
    """
    input_values, attention_mask = batch_input_values(utterances, features.do_normalize, features.padding_value)
    padded = any(len(samples) < input_values.shape[1] for samples in utterances)
    if features.return_attention_mask or (padded and padding_exact):
        return input_values, attention_mask
    return input_values, None


# No recording comes near this peak; past it, float32 sums of squares over a long input could overflow.
OVERFLOW_SAFE_PEAK = 1e12


def normalize(samples: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance, computed in float32 exactly as Hugging Face's feature extractor does.

    Samples beyond OVERFLOW_SAFE_PEAK (finite but absurd, e.g. +-3e38) are first scaled to a peak
    of 1, which changes nothing but the 1e-7 guard, so the variance stays finite.
    """
    samples = np.asarray(samples, dtype=np.float32)
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > OVERFLOW_SAFE_PEAK:
        samples = samples / np.float32(peak)
    return (samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)
