"""The README's examples run as written: its Python blocks and curl commands, against a real server,
with a tiny local model and real recordings in place of the names the README uses."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

from conftest import DATA, HANG_SECONDS, REALSPEECH, REPO, require_data, run_server
from model.package import DEFAULT_MODEL

README = (REPO / "README.md").read_text(encoding="utf-8")
SPEECH_WAV = REALSPEECH / "audio" / "pocketsphinx" / "test" / "data" / "librivox" / \
    "sense_and_sensibility_01_austen_64kb-0880.wav"
SPEECH_RAW = REALSPEECH / "audio" / "pocketsphinx" / "test" / "data" / "goforward.raw"  # 16 kHz s16le


@pytest.fixture(scope="module")
def server(exported_folder, tmp_path_factory):
    """The default model, and the tiny one under the name the README's examples give an English model."""
    require_data("realspeech", "unlabeled-librispeech")  # the examples' speech.wav, speech.raw and speech.flac
    with run_server(None, "--model", str(DEFAULT_MODEL), "--model", f"english={exported_folder}",
                    log_dir=tmp_path_factory.mktemp("logs")) as running:
        yield running


def localise(text: str, server, hf_ctc_folder, exported_folder) -> str:
    flac = str(sorted((DATA / "unlabeled-librispeech").glob("*.flac"))[0])
    for name, value in (("facebook/wav2vec2-base-960h", str(hf_ctc_folder)),
                        ("wav2vec2-base-960h-onnx", str(exported_folder)),
                        ("http://127.0.0.1:8000", server.url), ("http://localhost:8000", server.url), ("ws://127.0.0.1:8000", server.url.replace("http", "ws")),
                        ("speech.wav", str(SPEECH_WAV)), ("speech.flac", flac), ("speech.raw", str(SPEECH_RAW))):
        text = text.replace(name, value)
    return text


def test_python_examples_run(server, hf_ctc_folder, exported_folder):
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) >= 4, "model, ONNX runtime, OpenAI client and streaming examples"
    for block in blocks:
        code = localise(block, server, hf_ctc_folder, exported_folder)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                                timeout=HANG_SECONDS)
        assert result.returncode == 0, f"{block}\n{result.stderr[-2000:]}"
        assert result.stdout.strip(), f"the example prints something:\n{block}"


def test_curl_examples_run(server, hf_ctc_folder, exported_folder):
    commands = [line for line in README.splitlines() if line.startswith("curl ")]
    assert len(commands) >= 4
    for command in commands:
        args = shlex.split(localise(command, server, hf_ctc_folder, exported_folder))
        result = subprocess.run(args, capture_output=True, text=True, timeout=HANG_SECONDS)
        assert result.returncode == 0, command
        body = json.loads(result.stdout)
        assert "text" in body and "error" not in body, (command, body)
