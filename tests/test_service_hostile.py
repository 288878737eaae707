"""The server against the hostile suite's second round, for real (uvicorn on loopback, real
websockets, real onnxruntime): memory a large request takes comes back, hostile websocket
messages end nothing, idle and squatting sessions lose their slot, SIGTERM lets streams finish,
and the small inconsistencies of the HTTP API are gone."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
import websockets

from conftest import HANG_SECONDS, REALSPEECH, run_server
from model.audio import load_audio

# One tiny model family is enough: these are the server's faults, not the model's. Tests of the
# default model's memory take no family.
tiny = pytest.mark.parametrize("family", ["base"], indirect=True)

SPEECH = load_audio(REALSPEECH / "audio" / "pocketsphinx" / "test" / "data" / "librivox" /
                    "sense_and_sensibility_01_austen_64kb-0880.wav", 16000)


def wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def tiled(seconds: float) -> np.ndarray:
    return np.tile(SPEECH, int(seconds * 16000 // len(SPEECH)) + 1)[:int(seconds * 16000)]


def memory_mb(pid: int, field: str) -> float:
    """VmRSS (resident now) or VmHWM (the most it has ever been) of a process, in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024


def metric(server, name: str, **labels) -> float:
    total = 0.0
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] == name and all(f'{key}="{wanted}"' in series for key, wanted in labels.items()):
            total += float(value)
    return total


def ws_url(server, path: str) -> str:
    return server.url.replace("http", "ws") + path


@pytest.fixture(scope="module")
def server(exported_folder, tmp_path_factory):
    with run_server(exported_folder, "--stream-idle-seconds", "2", "--chunk-seconds", "5",
                    "--chunk-context-seconds", "1", "--max-batch-audio-seconds", "10",
                    log_dir=tmp_path_factory.mktemp("logs")) as running:
        yield running


# -- 1. the memory a request takes comes back, and its peak is bounded ----------------------------------------

def test_a_large_request_leaves_no_memory_behind(tmp_path):
    """The default model, 100 s of speech: ONNX Runtime's arena kept ~1 GB of it for good."""
    with run_server(None, log_dir=tmp_path) as server:
        pid = server.process.pid
        idle = memory_mb(pid, "VmRSS")
        response = httpx.post(server.url + "/transcribe", content=wav(tiled(100)), timeout=HANG_SECONDS,
                              params={"decoder": "greedy"}, headers={"content-type": "audio/wav"})
        assert response.status_code == 200, response.text
        peak, after = memory_mb(pid, "VmHWM"), memory_mb(pid, "VmRSS")
    assert peak - idle < 1024, f"peak {peak:.0f} MB against {idle:.0f} MB idle"
    assert after < idle * 1.1, f"{after:.0f} MB after the request, {idle:.0f} MB before"


@tiny
def test_inference_runs_hold_at_most_the_batch_audio_limit(server):
    """20 s in 5 s windows (7 s with their context) with a 10 s limit: one window per run."""
    response = httpx.post(server.url + "/transcribe", content=wav(tiled(20)), params={"decoder": "greedy"},
                          headers={"content-type": "audio/wav"}, timeout=HANG_SECONDS)
    assert response.status_code == 200, response.text
    runs = metric(server, "asr_batch_size_count")
    assert runs >= 4 and metric(server, "asr_batch_size_bucket", le="1.0") == runs
