"""The README's and docs/'s examples run as written: their Python blocks and curl commands, against a
real server, with a tiny local model and real recordings in place of the names the documents use."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

from model.package import DEFAULT_MODEL

from conftest import DATA, HANG_SECONDS, REALSPEECH, REPO, require_data, run_server

# The README and every page under docs/ it links to: an example moved between them stays tested.
DOCUMENTS = {
    path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8")
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
}
SPEECH_WAV = (
    REALSPEECH
    / "audio"
    / "pocketsphinx"
    / "test"
    / "data"
    / "librivox"
    / "sense_and_sensibility_01_austen_64kb-0880.wav"
)
SPEECH_RAW = REALSPEECH / "audio" / "pocketsphinx" / "test" / "data" / "goforward.raw"  # 16 kHz s16le


@pytest.fixture(scope="module")
def server(exported_folder, tmp_path_factory):
    """The default model, and the tiny one under the name the README's examples give an English model."""
    require_data("realspeech", "unlabeled-librispeech")  # the examples' speech.wav, speech.raw and speech.flac
    with run_server(
        None,
        "--model",
        str(DEFAULT_MODEL),
        "--model",
        f"english={exported_folder}",
        log_dir=tmp_path_factory.mktemp("logs"),
    ) as running:
        yield running


def localise(text: str, server, hf_ctc_folder, exported_folder) -> str:
    flac = str(sorted((DATA / "unlabeled-librispeech").glob("*.flac"))[0])
    for name, value in (
        ("facebook/wav2vec2-base-960h", str(hf_ctc_folder)),
        ("wav2vec2-base-960h-onnx", str(exported_folder)),
        ("http://127.0.0.1:8000", server.url),
        ("http://localhost:8000", server.url),
        ("ws://127.0.0.1:8000", server.url.replace("http", "ws")),
        ("speech.wav", str(SPEECH_WAV)),
        ("speech.flac", flac),
        ("speech.raw", str(SPEECH_RAW)),
        ("vq-wav2vec.pt", str(REPO / "tests" / "fixtures" / "wav2vec1" / "vq-wav2vec-gumbel.args.pt")),
        ("a.flac", str(REPO / "tests" / "fixtures" / "wav2vec1" / "clip.flac")),
    ):
        text = text.replace(name, value)
    return text


def python_blocks() -> list[tuple[str, str]]:
    return [
        (name, block)
        for name, text in DOCUMENTS.items()
        for block in re.findall(r"```python\n(.*?)```", text, flags=re.S)
    ]


# The balancer of several replicas (docs/scaling-out.md) needs Docker: tests/test_replicas.py runs it.
NEEDS_COMPOSE = "http://localhost:8080"


def curl_commands() -> list[tuple[str, str]]:
    return [
        (name, line)
        for name, text in DOCUMENTS.items()
        for line in text.splitlines()
        if line.startswith("curl ") and NEEDS_COMPOSE not in line
    ]


@pytest.mark.fast
def test_the_examples_are_found():
    """Runs without a server or data: the collection itself, so a moved example cannot drop out unseen."""
    python = {name for name, _ in python_blocks()}
    assert {"README.md", "docs/api.md", "docs/export.md", "docs/transcribe.md"} <= python, python
    assert len(python_blocks()) >= 6, "model, ONNX runtime, OpenAI client (twice), streaming and realtime"
    curl = [name for name, _ in curl_commands()]
    assert curl.count("README.md") >= 3 and curl.count("docs/api.md") >= 6, curl


def test_python_examples_run(server, hf_ctc_folder, exported_folder):
    for name, block in python_blocks():
        code = localise(block, server, hf_ctc_folder, exported_folder)
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=HANG_SECONDS
        )
        assert result.returncode == 0, f"{name}:\n{block}\n{result.stderr[-2000:]}"
        assert result.stdout.strip(), f"the example prints something ({name}):\n{block}"


def test_curl_examples_run(server, hf_ctc_folder, exported_folder):
    for name, command in curl_commands():
        args = shlex.split(localise(command, server, hf_ctc_folder, exported_folder))
        result = subprocess.run(args, capture_output=True, text=True, timeout=HANG_SECONDS)
        assert result.returncode == 0, f"{name}: {command}"
        body = json.loads(result.stdout)
        assert "text" in body and "error" not in body, (name, command, body)
