"""The model that ships (models/digits): served by default, recognising real speech through the whole
chain — our training, our export, our server — and the same through the server and the CLI."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import websockets
from conftest import DATA, REPO, run_server

from model.audio import load_audio
from model.package import DEFAULT_MODEL
from service.settings import Settings
from training.manifest import read_transcripts

FSDD = DATA / "fsdd"
EXAMPLE = REPO / "examples" / "four-one-five-zero-two.wav"
OH = ("four one five oh two", "two oh four seven")


def word_error_rate(pairs: list[tuple[str, str]]) -> float:
    """Word errors (edit distance) over reference words, for (reference, hypothesis) pairs."""
    errors = words = 0
    for reference, hypothesis in pairs:
        ref, hyp = reference.split(), hypothesis.split()
        distance = list(range(len(hyp) + 1))
        for i, word in enumerate(ref, start=1):
            previous, distance[0] = distance[0], i
            for j, other in enumerate(hyp, start=1):
                previous, distance[j] = distance[j], min(distance[j] + 1, distance[j - 1] + 1,
                                                         previous + (word != other))
        errors, words = errors + distance[-1], words + len(ref)
    return errors / words


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    with run_server(None, log_dir=tmp_path_factory.mktemp("default-server")) as server:
        yield server


def test_the_shipped_model_folder_is_complete_and_small():
    files = {path.relative_to(DEFAULT_MODEL).as_posix() for path in DEFAULT_MODEL.rglob("*") if path.is_file()}
    assert {"onnx/model.onnx", "checkpoint/model.safetensors", "checkpoint/vocab.json", "lm.arpa", "README.md",
            "provenance.json"} <= files
    assert sum(path.stat().st_size for path in DEFAULT_MODEL.rglob("*") if path.is_file()) <= 25e6
    provenance = json.loads((DEFAULT_MODEL / "provenance.json").read_text())
    assert provenance["commit"] != "unknown" and provenance["commands"]
    assert all(len(item["sha256"]) == 64 for item in provenance["data"].values())
    vocab = json.loads((DEFAULT_MODEL / "checkpoint" / "vocab.json").read_text())
    assert set("abcdefghijklmnopqrstuvwxyz'") <= set(vocab), "a standard English character vocabulary"
    (served,) = Settings().models
    assert served.lm == DEFAULT_MODEL / "lm.arpa" and served.name == "digits"


def test_the_server_recognises_real_spoken_digits_by_default(default_server):
    """All 300 recordings of FSDD's official test split (never trained on), through POST /transcribe."""
    assert httpx.get(default_server.url + "/v1/models").json()["data"][0]["id"] == "digits"
    test = read_transcripts(FSDD / "transcripts_test.tsv")

    def transcribe(path):
        with open(path, "rb") as audio:
            response = httpx.post(default_server.url + "/transcribe", files={"file": (path.name, audio)}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(transcribe, test))
    assert {result["model"] for result in results} == {"digits"}
    assert {result["decoder"] for result in results} == {"beam"}, "the shipped LM turns beam search on"
    wer = word_error_rate([(reference, result["text"]) for reference, result in zip(test.values(), results)])
    assert wer <= 0.01, f"WER {wer:.2%} on FSDD's test split"


def test_the_shipped_example_transcribes_and_streams_alike(default_server):
    with open(EXAMPLE, "rb") as audio:
        response = httpx.post(default_server.url + "/transcribe", files={"file": (EXAMPLE.name, audio)})
    assert response.status_code == 200 and response.json()["text"] == "four one five zero two", response.text
    samples = load_audio(EXAMPLE, 16000)
    finals = asyncio.run(_stream_finals(default_server.url, samples))
    assert " ".join(final["text"] for final in finals if final["text"]) == "four one five zero two"


@pytest.mark.skipif(shutil.which("text2wave") is None, reason="Festival is not installed (.ci/run installs it)")
@pytest.mark.parametrize("text", OH)
def test_the_shipped_model_recognises_oh_for_zero(default_server, tmp_path, text):
    for voice in ("cmu_us_slt_arctic_hts", "kal_diphone"):
        (tmp_path / "text.txt").write_text(text + "\n")
        raw = tmp_path / f"{voice}.wav"
        subprocess.run(["text2wave", "-eval", f"(voice_{voice})", "-o", str(raw), str(tmp_path / "text.txt")],
                       check=True, capture_output=True)
        with open(raw, "rb") as audio:
            response = httpx.post(default_server.url + "/transcribe", files={"file": (raw.name, audio)})
        assert response.json()["text"] == text, (voice, response.text)


async def _stream_finals(url: str, samples: np.ndarray) -> list[dict]:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    async with websockets.connect(url.replace("http", "ws") + "/v1/stream") as socket:
        await socket.send(json.dumps({"sample_rate": 16000, "encoding": "pcm_s16le", "endpointing": False}))
        for start in range(0, len(pcm), 1600):
            await socket.send(pcm[start:start + 1600].tobytes())
        await socket.send(json.dumps({"type": "eof"}))
        return [message for message in map(json.loads, [text async for text in socket])
                if message["type"] == "final"]


def test_the_cli_and_the_server_give_the_same_transcripts(default_server):
    """The checkpoint through `python -m model transcribe` (no --model: the default) and its ONNX export
    through the server, greedy both, on real recordings: 8 kHz FSDD and a 16 kHz microphone."""
    paths = sorted((FSDD / "recordings").glob("[0-9]_*_[0-4].wav"))[::10] + [EXAMPLE]
    result = subprocess.run([sys.executable, "-m", "model", "transcribe", *map(str, paths)], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    cli = dict(line.split("\t") for line in result.stdout.splitlines())
    for path in paths:
        with open(path, "rb") as audio:
            served = httpx.post(default_server.url + "/transcribe?decoder=greedy",
                                files={"file": (path.name, audio)}).json()
        assert served["text"] == cli[str(path)], path.name
