"""The server, for real: `python -m service` on loopback with tiny exported models, real audio,
a KenLM language model the tests write, HTTP, websockets and the official OpenAI client."""

from __future__ import annotations

import asyncio
import io
import json
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
import websockets

from model.audio import load_audio
from model.decoding import MIN_CONFIDENCE as DEFAULT_MIN_CONFIDENCE
from model.onnx import BATCHED_MODEL_FILE, MODEL_FILE, OnnxRecognizer
from model.windows import plan_windows, stitch
from service.batching import Batcher

from conftest import DATA, REALSPEECH, infer_all_at_once, metric_in, missing_data, needs_data, run_server

# -- the engine: batching equality and long-audio windows, without HTTP ------------------------------


def test_batched_logits_equal_single_request_logits(exported_folder, family):
    """Padding must not change any request's logits: the group-norm family serves its padding-exact graph."""
    name = BATCHED_MODEL_FILE if (exported_folder / BATCHED_MODEL_FILE).is_file() else MODEL_FILE
    assert (name == BATCHED_MODEL_FILE) == (family == "base")
    engine = OnnxRecognizer(exported_folder, model_file=name)
    generator = np.random.default_rng(3)
    utterances = [0.1 * generator.standard_normal(n).astype(np.float32) for n in (48000, 20000, 7001, 400)]
    batched = engine.logits(utterances)
    for samples, rows in zip(utterances, batched):
        alone = engine.logits([samples])[0]
        assert rows.shape == alone.shape
        assert np.abs(rows - alone).max() < 1e-4
    if family == "base":  # the plain graph, like transformers, does depend on padding
        plain = OnnxRecognizer(exported_folder, model_file=MODEL_FILE)
        assert np.abs(plain.logits(utterances)[2] - plain.logits([utterances[2]])[0]).max() > 1e-3


def test_batcher_gathers_concurrent_requests(exported_folder):
    engine = OnnxRecognizer(
        exported_folder,
        model_file=BATCHED_MODEL_FILE if (exported_folder / BATCHED_MODEL_FILE).is_file() else MODEL_FILE,
    )
    sizes = []
    batcher = Batcher(
        engine, max_batch_size=4, max_wait_ms=200, capacity=16, on_batch=lambda size, *_: sizes.append(size)
    )
    batcher.start()
    generator = np.random.default_rng(4)
    utterances = [0.1 * generator.standard_normal(16000 + 1000 * i).astype(np.float32) for i in range(6)]
    results = infer_all_at_once(batcher, utterances)
    assert sorted(sizes, reverse=True)[0] == 4 and sum(sizes) == 6
    for samples, (result,) in zip(utterances, results):
        assert np.abs(result.logits - engine.logits([samples])[0]).max() < 1e-4


def frame_energies(samples: np.ndarray, config) -> np.ndarray:
    """A local per-frame function with the model's exact frame geometry: frame t sees the receptive
    field starting at sample t * hop. Stitched windows must reproduce it exactly."""
    hop, field = config.samples_per_frame, config.receptive_field
    frames = config.num_frames(len(samples))
    return np.array([[np.square(samples[t * hop : t * hop + field]).sum()] for t in range(frames)])


def test_long_audio_windows_cover_every_frame_once(exported_folder):
    config = OnnxRecognizer(exported_folder).config
    generator = np.random.default_rng(5)
    for seconds in (29.9, 61.3, 95.0):
        samples = generator.standard_normal(int(seconds * 16000)).astype(np.float32)
        windows = plan_windows(len(samples), config, chunk_samples=10 * 16000, context_samples=3 * 16000)
        assert len(windows) == int(np.ceil(seconds / 10))
        assert all(w.end - w.start <= 16 * 16000 for w in windows)
        stitched = stitch(windows, [frame_energies(samples[w.start : w.end], config) for w in windows])
        np.testing.assert_allclose(stitched, frame_energies(samples, config), rtol=1e-5)


def stitched_greedy_text(folder: Path, samples: np.ndarray, chunk_seconds: float, context_seconds: float) -> str:
    """What the server should answer for long audio: windows through the served graph, stitched, greedy."""
    name = BATCHED_MODEL_FILE if (folder / BATCHED_MODEL_FILE).is_file() else MODEL_FILE
    engine = OnnxRecognizer(folder, model_file=name)
    windows = plan_windows(len(samples), engine.config, int(chunk_seconds * 16000), int(context_seconds * 16000))
    logits = stitch(windows, engine.logits([samples[w.start : w.end] for w in windows]))
    return " ".join(engine.vocab.greedy_decode(logits).split())  # transcripts are single-spaced


# -- the running server ------------------------------------------------------------------------------

MIN_CONFIDENCE = 0.95  # the server's setting: above the default, so that the words it marks show it is applied


@pytest.fixture(scope="module")
def server(exported_folder, lm, tmp_path_factory):
    with run_server(
        exported_folder,
        "--lm",
        str(lm),
        "--max-batch-size",
        "8",  # batches on the CPU too (not the cpu default): concurrent requests must still answer as alone
        "--max-wait-ms",
        "30",
        "--max-audio-seconds",
        "300",
        "--chunk-seconds",
        "20",
        "--model-name",
        "tiny",
        "--min-confidence",
        str(MIN_CONFIDENCE),
        log_dir=tmp_path_factory.mktemp("logs"),
    ) as s:
        yield s


@pytest.fixture(scope="module")
def speech_files(realspeech) -> dict[str, str]:
    rows = {(row["path"].rsplit(".", 1)[-1], row["sample_rate"]): row["path"] for row in realspeech}
    return {
        "wav16": rows[("wav", "16000")],
        "wav22": rows[("wav", "22050")],
        "mp3": rows[("mp3", "48000")],
        "flac": str(sorted((DATA / "unlabeled-librispeech").glob("*.flac"))[0]),
    }


def offline_text(folder: Path, path: str) -> str:
    engine = OnnxRecognizer(folder)
    return " ".join(engine.vocab.greedy_decode(engine.logits([load_audio(path, 16000)])[0]).split())


def post_file(server, path: str, endpoint: str = "/transcribe", **fields) -> httpx.Response:
    with open(path, "rb") as handle:
        return httpx.post(server.url + endpoint, files={"file": (Path(path).name, handle)}, data=fields, timeout=60)


def test_health_ready_models_metrics(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready").json() == {"status": "ready", "model": "tiny"}
    assert httpx.get(server.url + "/v1/models").json()["data"][0]["id"] == "tiny"
    metrics = httpx.get(server.url + "/metrics").text
    assert 'asr_model_info{name="tiny"' in metrics


def test_transcribe_formats_equal_offline_greedy(server, exported_folder, speech_files):
    confidences = []
    for name, path in speech_files.items():
        response = post_file(server, path, decoder="greedy")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["text"] == offline_text(exported_folder, path), name
        assert body["decoder"] == "greedy" and body["model"] == "tiny"
        assert abs(body["duration"] - soundfile.info(path).duration) < 0.05
        assert set(body["timings"]) == {"queue", "inference", "decode"}
        words = body["words"]
        assert [w["word"] for w in words] == body["text"].split()
        assert all(0 <= w["start"] < w["end"] <= body["duration"] + 0.02 for w in words)
        assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:]))
        assert all(0 < w["confidence"] <= 1 for w in words)
        assert body["confidence"] == min((w["confidence"] for w in words), default=0.0)
        assert [w["low_confidence"] for w in words] == [w["confidence"] < MIN_CONFIDENCE for w in words]
        confidences += [w["confidence"] for w in words]
    assert any(DEFAULT_MIN_CONFIDENCE <= c < MIN_CONFIDENCE for c in confidences), "the setting marks, not the default"


def test_raw_body_and_raw_pcm(server, exported_folder, speech_files):
    path = speech_files["wav16"]
    expected = offline_text(exported_folder, path)
    data = Path(path).read_bytes()
    response = httpx.post(
        server.url + "/transcribe?decoder=greedy", content=data, headers={"content-type": "audio/wav"}
    )
    assert response.status_code == 200 and response.json()["text"] == expected
    samples, rate = soundfile.read(path, dtype="int16")
    response = httpx.post(
        server.url + f"/transcribe?decoder=greedy&sample_rate={rate}&encoding=pcm_s16le",
        content=samples.tobytes(),
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 200 and response.json()["text"] == expected


def test_beam_search_is_the_default_with_an_lm(server, speech_files):
    body = post_file(server, speech_files["wav16"]).json()
    assert body["decoder"] == "beam"
    assert body["words"] and [w["word"] for w in body["words"]] == body["text"].split()
    hot = post_file(server, speech_files["wav16"], hotwords="DASHWOOD", hotword_weight="100", beam_width="16")
    assert hot.status_code == 200 and hot.json()["decoder"] == "beam"


def test_concurrent_requests_equal_sequential_results(server, speech_files):
    """Whatever batches they share: the tiny model infers faster than these requests arrive, so each
    may run alone (a request that finds the sessions idle waits for nobody); tests/test_batching.py
    shows batches forming where the sessions are busy."""
    paths = list(speech_files.values()) * 3
    sequential = [post_file(server, path, decoder="greedy").json()["text"] for path in paths]
    before = httpx.get(server.url + "/metrics").text
    with ThreadPoolExecutor(len(paths)) as pool:
        concurrent = list(pool.map(lambda path: post_file(server, path, decoder="greedy").json()["text"], paths))
    assert concurrent == sequential
    after = httpx.get(server.url + "/metrics").text
    utterances, batches = (
        metric_in(after, name, model="tiny") - metric_in(before, name, model="tiny")
        for name in ("asr_batch_size_sum", "asr_batch_size_count")
    )
    assert utterances >= len(paths) and 1 <= batches <= utterances  # every request inferred, in batches of any size


def test_long_audio_is_chunked_and_stitched(server, exported_folder):
    """Over a minute of real speech in windows of 20 s: the answer is the stitched windows' text, and
    word timestamps run on across window borders to the end of the audio."""
    samples = np.concatenate(
        [load_audio(path, 16000) for path in sorted((DATA / "unlabeled-librispeech").glob("*.flac"))[:5]]
    )
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 16000, format="WAV", subtype="FLOAT")
    response = httpx.post(
        server.url + "/transcribe?decoder=greedy",
        content=buffer.getvalue(),
        headers={"content-type": "audio/wav"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(samples) > 3 * 20 * 16000
    assert body["text"] == stitched_greedy_text(exported_folder, samples, 20, 5)
    starts = [w["start"] for w in body["words"]]
    assert starts == sorted(starts) and body["words"][-1]["end"] > len(samples) / 16000 - 10


# -- bad input: always a 4xx JSON error naming the problem, and the server keeps serving ---------------


def _wav(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def _wav_header_rate(rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.zeros(rate // 10, dtype="<i2").tobytes())
    return buffer.getvalue()


# Without ../shared/data/realspeech, an empty stand-in lets the module load: every test that sends it is skipped.
SPEECH = (
    load_audio(
        REALSPEECH
        / "audio"
        / "pocketsphinx"
        / "test"
        / "data"
        / "librivox"
        / "sense_and_sensibility_01_austen_64kb-0880.wav",
        16000,
    )
    if missing_data("realspeech") is None
    else np.zeros(0, dtype=np.float32)
)
GOOD_WAV = _wav(SPEECH)

BAD_INPUTS = [
    # (name, request kwargs, path, status, words expected in the message)
    ("empty body", dict(content=b"", headers={"content-type": "audio/wav"}), "/transcribe", 400, "no audio"),
    ("empty file", dict(files={"file": ("a.wav", b"")}), "/transcribe", 400, "no audio"),
    (
        "truncated wav",
        dict(content=GOOD_WAV[:30], headers={"content-type": "audio/wav"}),
        "/transcribe",
        400,
        "could not decode",
    ),
    (
        "corrupt bytes",
        dict(files={"file": ("a.wav", b"RIFF" + bytes(range(256)) * 8)}),
        "/transcribe",
        400,
        "could not decode",
    ),
    (
        "text file",
        dict(files={"file": ("a.txt", b"hello, this is not audio\n" * 20)}),
        "/transcribe",
        400,
        "could not decode",
    ),
    ("json body", dict(json={"audio": "x"}), "/transcribe", 415, "not audio"),
    ("plain text type", dict(content=b"abc", headers={"content-type": "text/plain"}), "/transcribe", 415, "not audio"),
    ("no content type", dict(content=GOOD_WAV, headers={"content-type": ""}), "/transcribe", 415, "not audio"),
    ("wrong field name", dict(files={"audio": ("a.wav", GOOD_WAV)}), "/transcribe", 422, "field 'file'"),
    ("file sent as text", dict(data={"file": "not a file"}, files={"other": ("x", b"1")}), "/transcribe", 422, "file"),
    (
        "unknown option",
        dict(files={"file": ("a.wav", GOOD_WAV)}, data={"decoded": "greedy"}),
        "/transcribe",
        422,
        "decoded: unknown field",
    ),
    (
        "bad decoder",
        dict(files={"file": ("a.wav", GOOD_WAV)}, data={"decoder": "viterbi"}),
        "/transcribe",
        422,
        "decoder",
    ),
    (
        "beam width zero",
        dict(files={"file": ("a.wav", GOOD_WAV)}, data={"beam_width": "0"}),
        "/transcribe",
        422,
        "beam_width",
    ),
    (
        "beam width huge",
        dict(files={"file": ("a.wav", GOOD_WAV)}, data={"beam_width": "100000"}),
        "/transcribe",
        422,
        "beam_width",
    ),
    (
        "beam width not a number",
        dict(files={"file": ("a.wav", GOOD_WAV)}, data={"beam_width": "wide"}),
        "/transcribe",
        422,
        "beam_width",
    ),
    (
        "unknown encoding",
        dict(
            content=b"\0" * 3200,
            headers={"content-type": "application/octet-stream"},
            params={"encoding": "mulaw", "sample_rate": "8000"},
        ),
        "/transcribe",
        422,
        "unknown encoding",
    ),
    (
        "pcm without rate",
        dict(
            content=b"\0" * 3200, headers={"content-type": "application/octet-stream"}, params={"encoding": "pcm_s16le"}
        ),
        "/transcribe",
        422,
        "sample_rate",
    ),
    (
        "pcm odd bytes",
        dict(
            content=b"\1" * 3201,
            headers={"content-type": "application/octet-stream"},
            params={"encoding": "pcm_s16le", "sample_rate": "16000"},
        ),
        "/transcribe",
        400,
        "whole number",
    ),
    (
        "huge pcm rate",
        dict(
            content=b"\1" * 3200,
            headers={"content-type": "application/octet-stream"},
            params={"encoding": "pcm_s16le", "sample_rate": "10000000"},
        ),
        "/transcribe",
        422,
        "sample rate",
    ),
    (
        "zero pcm rate",
        dict(
            content=b"\1" * 3200,
            headers={"content-type": "application/octet-stream"},
            params={"encoding": "pcm_s16le", "sample_rate": "0"},
        ),
        "/transcribe",
        422,
        "sample rate",
    ),
    (
        "huge header rate",
        dict(content=_wav_header_rate(2_000_000), headers={"content-type": "audio/wav"}),
        "/transcribe",
        422,
        "sample rate",
    ),
    (
        "10 ms of audio",
        dict(content=_wav(SPEECH[:160]), headers={"content-type": "audio/wav"}),
        "/transcribe",
        400,
        "0.010 s long",
    ),
    (
        "silence",
        dict(content=_wav(np.zeros(32000, dtype=np.float32)), headers={"content-type": "audio/wav"}),
        "/transcribe",
        422,
        "silent",
    ),
    (
        "not finite",
        dict(
            content=_wav(np.full(8000, np.nan, dtype=np.float32), subtype="FLOAT"),
            headers={"content-type": "audio/wav"},
        ),
        "/transcribe",
        400,
        "not finite",
    ),
    (
        "too long",
        dict(content=_wav(np.tile(SPEECH, 200)[: 16000 * 301]), headers={"content-type": "audio/wav"}),
        "/transcribe",
        413,
        "at most 300",
    ),
    (
        "openai bad format",
        dict(files={"file": ("a.wav", GOOD_WAV)}, data={"model": "x", "response_format": "xml"}),
        "/v1/audio/transcriptions",
        422,
        "response_format",
    ),
    (
        "openai bad granularity",
        dict(
            files={"file": ("a.wav", GOOD_WAV)},
            data={"model": "x", "response_format": "verbose_json", "timestamp_granularities[]": "syllable"},
        ),
        "/v1/audio/transcriptions",
        422,
        "timestamp_granularities",
    ),
    (
        "openai without file",
        dict(data={"model": "x"}, files={"other": ("a.wav", GOOD_WAV)}),
        "/v1/audio/transcriptions",
        422,
        "file",
    ),
    ("unknown path", dict(content=b"x"), "/transcribe/now", 404, "not found"),
]


@pytest.mark.parametrize("name, kwargs, path, status, words", BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_gets_a_clear_4xx(server, name, kwargs, path, status, words):
    response = httpx.post(server.url + path, timeout=60, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words.lower() in error["message"].lower(), error
    assert (
        httpx.post(
            server.url + "/transcribe", content=GOOD_WAV, headers={"content-type": "audio/wav"}, timeout=60
        ).status_code
        == 200
    )


# -- OpenAI compatibility, with the official client ------------------------------------------------


def test_openai_client(server, speech_files, exported_folder):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    path = speech_files["wav22"]
    expected = post_file(server, path).json()
    with open(path, "rb") as audio:
        result = client.audio.transcriptions.create(model="tiny", file=audio)
    assert result.text == expected["text"]
    with open(path, "rb") as audio:
        text = client.audio.transcriptions.create(model="tiny", file=audio, response_format="text")
    assert text.strip() == expected["text"]
    with open(path, "rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="tiny", file=audio, response_format="verbose_json", timestamp_granularities=["word", "segment"]
        )
    assert verbose.text == expected["text"] and abs(verbose.duration - expected["duration"]) < 1e-6
    assert verbose.confidence == expected["confidence"], "this server's addition to OpenAI's verbose_json"
    assert [w.word for w in verbose.words] == [w["word"] for w in expected["words"]]
    assert " ".join(s.text for s in verbose.segments) == " ".join(w["word"] for w in expected["words"])
    for kind, first in (("srt", "1\n00:00:"), ("vtt", "WEBVTT\n\n00:00:")):
        with open(path, "rb") as audio:
            subtitles = client.audio.transcriptions.create(model="tiny", file=audio, response_format=kind)
        assert subtitles.startswith(first) and expected["words"][0]["word"] in subtitles


# -- limits: queue, upload size, API keys, readiness --------------------------------------------------


def test_full_queue_answers_503_with_retry_after(exported_folder, tmp_path):
    """Admission counts requests, not chunks: one long request alone is served, a crowd over the
    capacity is told to come back."""
    long = _wav(np.tile(SPEECH, 25)[: 16000 * 60])  # 30 chunks of 2 s, one inference each
    with run_server(
        exported_folder,
        "--queue-capacity",
        "1",
        "--chunk-seconds",
        "2",
        "--chunk-context-seconds",
        "1",
        "--max-batch-size",
        "1",
        log_dir=tmp_path,
    ) as server:

        def post(body: bytes) -> httpx.Response:
            return httpx.post(
                server.url + "/transcribe?decoder=greedy",
                content=body,
                timeout=120,
                headers={"content-type": "audio/wav"},
            )

        assert post(long).status_code == 200
        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(post, [long] * 6))
        busy = [response for response in responses if response.status_code == 503]
        assert busy and len(busy) < 6
        assert all(
            response.headers["retry-after"] == "1" and "queue is full" in response.json()["error"]["message"]
            for response in busy
        )
        assert post(GOOD_WAV).status_code == 200


def test_api_keys_and_upload_limit(exported_folder, tmp_path):
    with run_server(exported_folder, "--api-keys", "k1,k2", "--max-upload-mb", "0.05", log_dir=tmp_path) as server:
        headers = {"content-type": "audio/wav"}
        response = httpx.post(server.url + "/transcribe", content=GOOD_WAV[:1000], headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert httpx.get(server.url + "/v1/models").status_code == 401
        assert httpx.get(server.url + "/v1/models", headers={"authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(server.url + "/health").status_code == 200
        assert httpx.get(server.url + "/metrics").status_code == 200
        authorised = {**headers, "authorization": "Bearer k2"}
        small = _wav(SPEECH[:16000])
        assert httpx.post(server.url + "/transcribe", content=small, headers=authorised).status_code == 200
        big = httpx.post(server.url + "/transcribe", content=GOOD_WAV * 2, headers=authorised)
        assert big.status_code == 413 and "limit" in big.json()["error"]["message"]


def test_missing_model_and_bad_options_are_one_line_errors(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    # Without --model the server starts on the default model; a bad option still stops it at once.
    result = subprocess.run(
        [sys.executable, "-m", "service", "--max-batch-size", "-1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert (
        result.returncode == 2
        and result.stderr.strip() == "error: --max-batch-size: Input should be greater than or equal to 0"
    )
    result = subprocess.run(
        [sys.executable, "-m", "service", "--model", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "not found" in result.stderr


def test_settings_from_environment(exported_folder, tmp_path):
    with run_server(exported_folder, log_dir=tmp_path, env={"ASR_MODEL_NAME": "from-env"}) as server:
        assert httpx.get(server.url + "/v1/models").json()["data"][0]["id"] == "from-env"


# -- websocket streaming ------------------------------------------------------------------------------


async def _stream(
    url: str,
    config: dict,
    samples: np.ndarray,
    frame_seconds: float = 0.1,
    control: list[tuple[int, dict]] = (),
    pace: float = 0.0,
) -> list[dict]:
    """Send `samples` as pcm_s16le frames, `pace` seconds apart; `control` sends extra JSON messages after frame i."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    step = int(frame_seconds * config.get("sample_rate", 16000))
    messages = []
    async with websockets.connect(url.replace("http", "ws") + "/v1/stream") as socket:
        await socket.send(json.dumps(config))
        for index, start in enumerate(range(0, len(pcm), step)):
            await socket.send(pcm[start : start + step].tobytes())
            await asyncio.sleep(pace)
            for after, message in control:
                if after == index:
                    await socket.send(json.dumps(message))
        await socket.send(json.dumps({"type": "eof"}))
        async for text in socket:
            messages.append(json.loads(text))
    return messages


def _transcribe_samples(server, samples: np.ndarray) -> dict:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    response = httpx.post(
        server.url + "/transcribe?decoder=greedy&encoding=pcm_s16le&sample_rate=16000",
        content=pcm.tobytes(),
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_stream_without_endpointing_equals_offline(server):
    samples = np.concatenate(
        [
            SPEECH,
            load_audio(
                REALSPEECH
                / "audio"
                / "pocketsphinx"
                / "test"
                / "data"
                / "librivox"
                / "sense_and_sensibility_01_austen_64kb-0870.wav",
                16000,
            ),
        ]
    )
    config = {
        "sample_rate": 16000,
        "encoding": "pcm_s16le",
        "interim_results": True,
        "endpointing": False,
        "max_segment_seconds": 600,
        "decoder": "greedy",
    }
    # 5x faster than real time: partials (one in flight at a time) have time to run while audio arrives
    messages = asyncio.run(_stream(server.url, config, samples, pace=0.02))
    finals = [m for m in messages if m["type"] == "final"]
    partials = [m for m in messages if m["type"] == "partial"]
    assert len(finals) == 1 and len(partials) >= 5
    assert messages[-1]["type"] == "final", "no partial arrives after its segment's final"
    expected = _transcribe_samples(server, samples)
    assert finals[0]["text"] == expected["text"]
    assert finals[0]["start"] == 0 and abs(finals[0]["end"] - len(samples) / 16000) < 1e-3
    assert [w["word"] for w in finals[0]["words"]] == [w["word"] for w in expected["words"]]
    assert finals[0]["confidence"] == expected["confidence"]


def test_stream_endpointing_splits_at_pauses_and_each_final_equals_offline(server):
    pause = np.zeros(int(1.5 * 16000), dtype=np.float32)
    other = load_audio(
        REALSPEECH
        / "audio"
        / "pocketsphinx"
        / "test"
        / "data"
        / "librivox"
        / "sense_and_sensibility_01_austen_64kb-0890.wav",
        16000,
    )
    samples = np.concatenate([SPEECH, pause, other])
    config = {
        "sample_rate": 16000,
        "encoding": "pcm_s16le",
        "interim_results": False,
        "endpointing": 600,
        "decoder": "greedy",
    }
    finals = [m for m in asyncio.run(_stream(server.url, config, samples, frame_seconds=0.03)) if m["type"] == "final"]
    assert len(finals) >= 2
    assert finals[0]["start"] == 0 and finals[-1]["end"] == pytest.approx(len(samples) / 16000, abs=1e-3)
    for a, b in zip(finals, finals[1:]):
        assert a["end"] == b["start"], "segments are contiguous: no audio dropped"
    for final in finals:
        segment = samples[round(final["start"] * 16000) : round(final["end"] * 16000)]
        if np.abs(segment).max() > 1e-3:
            assert final["text"] == _transcribe_samples(server, segment)["text"]
    assert finals[0]["end"] < len(SPEECH) / 16000 + 1.5, "the first segment ends in the pause"


def test_stream_finalize_and_max_segment(server):
    config = {
        "sample_rate": 16000,
        "encoding": "pcm_s16le",
        "interim_results": False,
        "endpointing": False,
        "max_segment_seconds": 1.0,
        "decoder": "greedy",
    }
    finals = [m for m in asyncio.run(_stream(server.url, config, SPEECH)) if m["type"] == "final"]
    assert len(finals) == int(np.ceil(len(SPEECH) / 16000))
    assert all(f["end"] - f["start"] <= 1.0 + 1e-6 for f in finals)
    config["max_segment_seconds"] = 60
    finals = [
        m
        for m in asyncio.run(_stream(server.url, config, SPEECH, control=[(5, {"type": "finalize"})]))
        if m["type"] == "final"
    ]
    assert len(finals) == 2 and finals[0]["end"] == pytest.approx(0.6, abs=1e-3)


def test_stream_resamples_other_rates(server):
    samples, rate = soundfile.read(
        REALSPEECH
        / "audio"
        / "pocketsphinx"
        / "test"
        / "data"
        / "librivox"
        / "sense_and_sensibility_01_austen_64kb-0880.wav",
        dtype="float32",
    )
    import soxr

    at_8k = soxr.resample(samples, rate, 8000)
    config = {"sample_rate": 8000, "encoding": "pcm_f32le", "endpointing": False, "decoder": "greedy"}

    async def send():
        async with websockets.connect(server.url.replace("http", "ws") + "/v1/stream") as socket:
            await socket.send(json.dumps(config))
            for start in range(0, len(at_8k), 800):
                await socket.send(at_8k[start : start + 800].astype("<f4").tobytes())
            await socket.send(json.dumps({"type": "eof"}))
            return [json.loads(m) async for m in socket]

    finals = [m for m in asyncio.run(send()) if m["type"] == "final"]
    assert len(finals) == 1 and finals[0]["end"] == pytest.approx(len(at_8k) / 8000, abs=0.01)
    assert finals[0]["text"]


@pytest.mark.parametrize(
    "first, reason",
    [
        (b"\0\0", "JSON config first"),
        ('{"sample_rate": 16000, "encoding": "opus"}', "encoding"),
        ('{"sample_rate": 99999999}', "sample_rate"),
        ('{"endpointing": "soon"}', "endpointing"),
        ('{"sample_rate": 16000, "colour": "blue"}', "colour"),
        ("not json", "bad config"),
    ],
)
def test_stream_bad_config_is_refused(server, first, reason):
    async def attempt():
        async with websockets.connect(server.url.replace("http", "ws") + "/v1/stream") as socket:
            await socket.send(first)
            error = json.loads(await socket.recv())
            with pytest.raises(websockets.ConnectionClosed):
                await socket.recv()
            return error, socket.close_code

    error, code = asyncio.run(attempt())
    assert error["type"] == "error" and reason in error["message"]
    assert code in (1003, 1007)


def test_stream_limits(exported_folder, tmp_path):
    with run_server(
        exported_folder,
        "--max-streams",
        "1",
        "--stream-idle-seconds",
        "1",
        "--stream-max-message-bytes",
        "4096",
        "--stream-max-seconds",
        "2",
        log_dir=tmp_path,
    ) as server:
        url = server.url.replace("http", "ws") + "/v1/stream"

        async def scenario():
            results = {}
            async with websockets.connect(url) as first:
                await first.send(json.dumps({"endpointing": False}))
                async with websockets.connect(url) as second:  # over the cap of one stream
                    results["cap"] = json.loads(await second.recv())["message"]
                await first.send(b"\0" * 5000)  # over the message size
                results["size"] = json.loads(await first.recv())["message"]
            async with websockets.connect(url) as idle:
                await idle.send(json.dumps({}))
                results["idle"] = json.loads(await asyncio.wait_for(idle.recv(), 5))["message"]
            async with websockets.connect(url) as long:
                await long.send(json.dumps({"endpointing": False, "interim_results": False}))
                for _ in range(20):  # 0.128 s per message, past the 2 s cap
                    await long.send(b"\0" * 4096)
                results["duration"] = json.loads(await long.recv())["message"]
            return results

        results = asyncio.run(scenario())
        assert "at most 1 streams" in results["cap"]
        assert "over the limit of 4096" in results["size"]
        assert "idle" in results["idle"]
        assert "limit of 2 s of audio" in results["duration"]
        metrics = httpx.get(server.url + "/metrics").text
        assert "asr_active_streams 0.0" in metrics


def test_metrics_after_traffic(server, speech_files):
    post_file(server, speech_files["wav16"])
    metrics = httpx.get(server.url + "/metrics").text
    for family in (
        "asr_requests_total",
        "asr_request_duration_seconds_bucket",
        "asr_queue_wait_seconds_bucket",
        "asr_inference_seconds_bucket",
        "asr_decode_seconds_bucket",
        "asr_batch_size_bucket",
        "asr_audio_seconds_total",
        "asr_real_time_factor_bucket",
        "asr_active_streams",
        "asr_queue_depth",
        "asr_model_info",
    ):
        assert family in metrics, family
    assert 'asr_requests_total{endpoint="/transcribe",status="200"}' in metrics
    assert 'asr_requests_total{endpoint="/transcribe",status="422"}' in metrics


@needs_data("realspeech")
def test_pytorch_checkpoint_is_exported_once_at_startup(hf_ctc_folder, tmp_path, family):
    if family != "base":
        pytest.skip("one family is enough: the export itself is tested in test_export")
    cache = tmp_path / "cache"
    with run_server(hf_ctc_folder, "--cache-dir", str(cache), log_dir=tmp_path) as server:
        assert (
            httpx.post(
                server.url + "/transcribe", content=GOOD_WAV, headers={"content-type": "audio/wav"}, timeout=60
            ).status_code
            == 200
        )
    (exported,) = cache.iterdir()
    assert (exported / "model.onnx").is_file() and (exported / "export.json").is_file()
    stamp = (exported / "model.onnx").stat().st_mtime_ns
    with run_server(hf_ctc_folder, "--cache-dir", str(cache), log_dir=tmp_path) as server:
        assert httpx.get(server.url + "/ready").status_code == 200
    assert (exported / "model.onnx").stat().st_mtime_ns == stamp, "the second start reuses the export"


def test_batches_run_in_groups_of_similar_length():
    from model.windows import MAX_PADDING, length_groups

    generator = np.random.default_rng(0)
    for _ in range(50):
        lengths = [int(n) for n in generator.integers(8000, 16000 * 12, size=int(generator.integers(1, 17)))]
        groups = length_groups(lengths)
        assert sorted(index for group in groups for index in group) == list(range(len(lengths)))
        for group in groups:
            real = sum(lengths[i] for i in group)
            assert len(group) * max(lengths[i] for i in group) <= (1 + MAX_PADDING) * real
    assert length_groups([16000] * 8) == [list(range(8))], "equal lengths stay one batch"
    assert len(length_groups([16000, 16000 * 10])) == 2, "a short and a long utterance are not padded together"
