"""The audio path on real speech: formats, sample rates, channels, resampling, and clear errors."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import soundfile

from model.audio import AudioError, check_duration, decode_pcm, load_audio, normalize, read_audio

from conftest import DATA, REALSPEECH, needs_data, require_data

pytestmark = pytest.mark.fast  # the fast tier: `make test-fast`


def pick(realspeech, suffix: str, rate: str) -> str:
    return next(row["path"] for row in realspeech if row["path"].endswith(suffix) and row["sample_rate"] == rate)


@pytest.fixture(scope="module")
def real_files(realspeech, tmp_path_factory) -> dict[str, str]:
    """Real utterances in each container and sample rate we accept, some converted here from real wav."""
    require_data("unlabeled-librispeech")
    folder = tmp_path_factory.mktemp("formats")
    files = {
        "wav-16k": pick(realspeech, ".wav", "16000"),
        "wav-22k": pick(realspeech, ".wav", "22050"),
        "wav-32k": pick(realspeech, ".wav", "32000"),
        "mp3-48k": pick(realspeech, ".mp3", "48000"),
        "flac-16k": str(sorted((DATA / "unlabeled-librispeech").glob("*.flac"))[0]),
    }
    samples, rate = soundfile.read(files["wav-22k"], dtype="float32")
    soundfile.write(folder / "speech.ogg", samples, rate, format="OGG", subtype="VORBIS")
    files["ogg-22k"] = str(folder / "speech.ogg")
    # Stereo at 44.1 kHz: the speech on the left, half of it on the right.
    samples, rate = soundfile.read(files["wav-16k"], dtype="float32")
    stereo = np.stack([samples, 0.5 * samples], axis=1)
    soundfile.write(folder / "stereo.wav", stereo, rate, subtype="FLOAT")
    files["wav-stereo"] = str(folder / "stereo.wav")
    return files


def test_every_format_and_rate_decodes_to_16k_mono(real_files):
    for name, path in real_files.items():
        info = soundfile.info(path)
        samples = load_audio(path, 16000)
        assert samples.dtype == np.float32 and samples.ndim == 1, name
        assert abs(len(samples) - info.duration * 16000) <= 0.01 * info.duration * 16000 + 1200, name
        assert 0.005 < np.abs(samples).max() <= 1.5, name  # real speech, not silence or garbage


def test_stereo_is_the_average_of_its_channels(real_files):
    stereo, rate = read_audio(real_files["wav-stereo"])
    mono, _ = read_audio(real_files["wav-16k"])
    np.testing.assert_allclose(stereo, 0.75 * mono, atol=1e-6)
    assert rate == 16000


def test_bytes_and_paths_decode_alike(real_files):
    path = real_files["mp3-48k"]
    with open(path, "rb") as handle:
        data = handle.read()
    np.testing.assert_array_equal(load_audio(data, 16000), load_audio(path, 16000))


def test_resampling_keeps_the_pitch():
    rate = 44100
    tone = np.sin(2 * np.pi * 1000 * np.arange(rate) / rate).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, tone, rate, format="WAV")
    samples = load_audio(buffer.getvalue(), 16000)
    assert len(samples) == 16000
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) == 1000  # bins are 1 Hz apart for one second of audio


@needs_data("realspeech")
def test_raw_pcm_of_a_real_recording():
    data = (REALSPEECH / "audio" / "pocketsphinx" / "test" / "data" / "goforward.raw").read_bytes()
    samples = decode_pcm(data, "pcm_s16le")
    assert len(samples) == len(data) // 2
    assert 0.01 < np.abs(samples).max() <= 1.0
    with pytest.raises(AudioError, match="not a whole number"):
        decode_pcm(data[:-1], "pcm_s16le")
    with pytest.raises(AudioError, match="unknown PCM encoding 'mulaw'"):
        decode_pcm(data, "mulaw")


@needs_data("realspeech")
def test_headerless_audio_is_refused_clearly():
    with pytest.raises(AudioError, match="could not decode .*goforward.raw"):
        load_audio(REALSPEECH / "audio" / "pocketsphinx" / "test" / "data" / "goforward.raw", 16000)


def wav_bytes(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "source, message",
    [
        (b"", "empty"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "could not decode"),  # truncated header
        (b"this is not audio at all, just some text" * 10, "could not decode"),
        (wav_bytes(np.zeros(0, dtype=np.float32)), "0 samples"),
        (wav_bytes(np.array([0.1, np.nan, 0.2] * 200, dtype=np.float32), subtype="FLOAT"), "not finite"),
        ("no/such/file.wav", "no such audio file"),
    ],
)
def test_bad_audio_is_refused_with_a_reason(source, message):
    with pytest.raises(AudioError, match=message):
        load_audio(source, 16000)


def test_too_short_audio_names_both_durations():
    with pytest.raises(AudioError, match=r"audio is 0\.010 s long; at least 0\.025 s is needed"):
        check_duration(np.zeros(160, dtype=np.float32), 400, 16000)
    check_duration(np.zeros(400, dtype=np.float32), 400, 16000)


def test_normalize_matches_transformers_feature_extractor(real_files):
    from transformers import Wav2Vec2FeatureExtractor

    samples = load_audio(real_files["wav-22k"], 16000)
    expected = Wav2Vec2FeatureExtractor(do_normalize=True)(samples, sampling_rate=16000).input_values[0]
    np.testing.assert_allclose(normalize(samples), expected, atol=1e-6)


def test_uploads_decode_alike_on_the_event_loop_and_in_a_thread(real_files):
    """The server decodes a few seconds of WAV or raw PCM on its event loop and the rest in a
    thread (`service.audio_input`): the same samples and the same refusals either way."""
    from service.audio_input import decode_inspected, decode_upload, inspect_upload, plain_wav
    from service.errors import ServiceError

    speech, rate = soundfile.read(real_files["wav-16k"], dtype="float32")
    short, long = speech[: 2 * rate], np.tile(speech, int(6 * rate / len(speech)) + 1)
    adpcm = io.BytesIO()
    soundfile.write(adpcm, short, rate, format="WAV", subtype="IMA_ADPCM")
    uploads = {
        "short wav": (wav_bytes(short, rate), None, None, True),
        "long wav": (wav_bytes(long, rate), None, None, False),
        "1.5 s of 48 kHz stereo": (wav_bytes(np.stack([long[:72000], long[:72000]], 1), 48000), None, None, False),
        "raw pcm": ((short * 32767).astype("<i2").tobytes(), rate, "pcm_s16le", True),
        "wav of ADPCM": (adpcm.getvalue(), None, None, False),
        "mp3": (open(real_files["mp3-48k"], "rb").read(), None, None, False),
        "ogg": (open(real_files["ogg-22k"], "rb").read(), None, None, False),
    }
    header, samples = uploads["short wav"][0][:36], uploads["short wav"][0][36:]  # RIFF, fmt | data
    chunks = b"".join(b"junk" + (2).to_bytes(4, "little") + b"\0\0" for _ in range(20))
    uploads["wav, data after 20 chunks"] = (header + chunks + samples, None, None, True)
    assert plain_wav(uploads["short wav"][0]) and plain_wav(uploads["long wav"][0])
    assert not plain_wav(uploads["wav, data after 20 chunks"][0]), "its header is read in a worker thread"
    assert not plain_wav(uploads["mp3"][0]) and not plain_wav(b"RIFF")
    for name, (data, sample_rate, encoding, quick) in uploads.items():
        upload = inspect_upload(data, 600, 2**30, sample_rate, encoding)
        assert upload.quick is quick, name
        expected = decode_inspected(upload, 16000, 600)
        got = asyncio.run(decode_upload(data, 16000, 600, 2**30, sample_rate, encoding))
        np.testing.assert_array_equal(got, expected, err_msg=name)

    refused = {
        "a truncated header": (b"RIFF\x24\x00\x00\x00WAVEfmt ", None, None),
        "no samples": (wav_bytes(np.zeros(0, dtype=np.float32)), None, None),
        "not finite": (wav_bytes(np.array([0.1, np.nan] * 300, dtype=np.float32), subtype="FLOAT"), None, None),
        "too long": (wav_bytes(long, rate), None, None),
        "raw pcm at no rate": (b"\x00\x01" * 100, None, "pcm_s16le"),
        "raw pcm, half a sample": (b"\x00\x01" * 100 + b"\x00", rate, "pcm_s16le"),
    }
    for name, (data, sample_rate, encoding) in refused.items():
        with pytest.raises(ServiceError) as thread:
            decode_inspected(inspect_upload(data, 5, 2**30, sample_rate, encoding), 16000, 5)
        with pytest.raises(ServiceError) as loop:
            asyncio.run(decode_upload(data, 16000, 5, 2**30, sample_rate, encoding))
        assert (type(loop.value), loop.value.code, loop.value.message) == (
            type(thread.value),
            thread.value.code,
            thread.value.message,
        ), name
