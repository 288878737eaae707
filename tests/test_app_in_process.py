"""The fast tier's view of the server: the app built in-process (no uvicorn, no subprocess) on the
shipped default model, through its HTTP and websocket surface: the pipeline, the cross-request
batcher and the streaming engine with a real (tiny) ONNX recognizer, and the API's pages, which must
work offline."""

from __future__ import annotations

import base64
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient

from model.package import DEFAULT_MODEL
from service.app import create_app
from service.settings import Settings

from conftest import REPO, metric_in

pytestmark = pytest.mark.fast

EXAMPLE = REPO / "examples" / "four-one-five-zero-two.wav"


@pytest.fixture(scope="module")
def client():
    """The app on the default model, its lifespan (model loading, beam-search worker) run for real."""
    app = create_app(Settings(model=[str(DEFAULT_MODEL)], decode_workers=1))
    with TestClient(app) as test_client:
        deadline = time.monotonic() + 120  # a hang guard, not a timing: loading takes about a second
        while test_client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, test_client.get("/ready").json()
            time.sleep(0.1)
        yield test_client


def test_transcribes_the_example_with_each_decoder(client):
    for decoder in ("beam", "greedy"):
        with EXAMPLE.open("rb") as audio:
            answer = client.post("/transcribe", files={"file": audio}, data={"decoder": decoder})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["text"] == "four one five zero two" and body["decoder"] == decoder, body
        assert [word["word"] for word in body["words"]] == body["text"].split()
        assert all(0 <= word["start"] < word["end"] <= body["duration"] for word in body["words"])


def test_concurrent_requests_batched_together_answer_as_alone(client):
    """Requests that meet in the batcher get what each gets alone (padding never leaks)."""
    samples, rate = soundfile.read(EXAMPLE, dtype="float32")
    pause = np.zeros(rate // 2, dtype=np.float32)
    clips = [samples, samples[: len(samples) * 2 // 3], np.concatenate([samples, pause, samples])]
    raw = [(clip * 32767).astype("<i2").tobytes() for clip in clips]

    def post(body: bytes) -> dict:
        answer = client.post(
            f"/transcribe?encoding=pcm_s16le&sample_rate={rate}&decoder=greedy",
            content=body,
            headers={"content-type": "application/octet-stream"},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    alone = [post(body) for body in raw]
    with ThreadPoolExecutor(len(raw)) as pool:
        together = list(pool.map(post, raw))
    assert [a["text"] for a in together] == [a["text"] for a in alone]
    assert [a["words"] for a in together] == [a["words"] for a in alone]
    assert alone[0]["text"] == "four one five zero two" and len(alone[2]["words"]) > len(alone[0]["words"])


def test_bad_options_are_a_clear_422(client):
    with EXAMPLE.open("rb") as audio:
        answer = client.post("/transcribe", files={"file": audio}, data={"decoder": "greedy", "alternatives": "3"})
    assert answer.status_code == 422
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_a_stream_gives_the_same_text_as_a_request(client):
    samples, rate = soundfile.read(EXAMPLE, dtype="int16")
    with client.websocket_connect("/v1/stream") as socket:
        socket.send_text(json.dumps({"sample_rate": rate, "encoding": "pcm_s16le", "endpointing": False}))
        for start in range(0, len(samples), rate // 10):
            socket.send_bytes(samples[start : start + rate // 10].tobytes())
        socket.send_text(json.dumps({"type": "eof"}))
        finals = []
        while True:
            message = json.loads(socket.receive_text())
            assert message["type"] in ("partial", "final"), message
            if message["type"] == "final":
                finals.append(message)
                break
    assert finals[0]["text"] == "four one five zero two", finals
    assert finals[0]["start"] == 0


def test_a_stream_with_a_bad_config_is_told_why(client):
    with client.websocket_connect("/v1/stream") as socket:
        socket.send_text(json.dumps({"sample_rate": 16000, "encoding": "mp3"}))
        message = json.loads(socket.receive_text())
    assert message["type"] == "error" and "encoding" in message["message"], message


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_pages_need_nothing_from_the_network(client, page):
    """Every script, style and icon the page names is served here, so it works offline."""
    answer = client.get(page)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    html = answer.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html, html
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assets += re.findall(r"""\burl\s*:\s*["']([^"']+)["']""", html)  # Swagger UI's schema URL
    assert any(asset.endswith(".js") for asset in assets), assets
    for asset in assets:
        assert asset.startswith("/"), asset
        fetched = client.get(asset)
        assert fetched.status_code == 200 and len(fetched.content) > 1000, (asset, fetched.status_code)


def test_an_unknown_asset_is_a_404(client):
    answer = client.get("/docs/assets/../../settings.py")
    assert answer.status_code == 404
    answer = client.get("/docs/assets/nothing.js")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


def metric(client, name: str, **labels) -> float:
    return metric_in(client.get("/metrics").text, name, **labels)


def test_sessions_of_both_protocols_are_counted_in_the_metrics(client):
    samples, rate = soundfile.read(EXAMPLE, dtype="int16")
    seconds = len(samples) / rate
    streamed = metric(client, "asr_audio_seconds_total", endpoint="/v1/stream", model="digits")
    closed = metric(client, "asr_stream_sessions_total", protocol="stream", reason="client_closed")
    finals = metric(client, "asr_stream_final_latency_seconds_count", protocol="stream", model="digits")
    with client.websocket_connect("/v1/stream") as socket:
        socket.send_text(json.dumps({"sample_rate": rate, "encoding": "pcm_s16le", "endpointing": False}))
        socket.send_bytes(samples.tobytes())
        socket.send_text(json.dumps({"type": "eof"}))
        while json.loads(socket.receive_text())["type"] != "final":
            pass
    assert metric(client, "asr_audio_seconds_total", endpoint="/v1/stream", model="digits") == pytest.approx(
        streamed + seconds, abs=1e-3
    )
    assert metric(client, "asr_stream_sessions_total", protocol="stream", reason="client_closed") == closed + 1
    assert metric(client, "asr_stream_final_latency_seconds_count", protocol="stream", model="digits") == finals + 1

    ended = metric(client, "asr_stream_sessions_total", protocol="realtime", reason="client_closed")
    heard = metric(client, "asr_audio_seconds_total", endpoint="/v1/realtime", model="digits")
    before = client.get("/metrics").text
    audio24k = np.interp(np.arange(0, len(samples), rate / 24000), np.arange(len(samples)), samples).astype(np.int16)
    with client.websocket_connect("/v1/realtime?intent=transcription") as socket:
        socket.send_text(json.dumps({"type": "input_audio_buffer.shout"}))
        socket.send_text("not json")
        socket.send_text(
            json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio24k.tobytes()).decode()})
        )
        socket.send_text(json.dumps({"type": "input_audio_buffer.commit"}))
        while not json.loads(socket.receive_text())["type"].endswith("transcription.completed"):
            pass
    after = client.get("/metrics").text
    assert metric(client, "asr_audio_seconds_total", endpoint="/v1/realtime", model="digits") == pytest.approx(
        heard + len(audio24k) / 24000, abs=1e-3
    )
    counted = {  # (series, labels): how many this session added
        ("asr_realtime_events_total", ("in", "input_audio_buffer.append")): 1,
        ("asr_realtime_events_total", ("in", "input_audio_buffer.commit")): 1,
        ("asr_realtime_events_total", ("in", "other")): 2,  # an unknown type, and a message that is no event
        ("asr_realtime_events_total", ("out", "session.created")): 1,
        ("asr_realtime_events_total", ("out", "error")): 2,
        ("asr_realtime_events_total", ("out", "input_audio_buffer.committed")): 1,
        ("asr_realtime_events_total", ("out", "conversation.item.input_audio_transcription.delta")): 1,
        ("asr_realtime_events_total", ("out", "conversation.item.input_audio_transcription.completed")): 1,
        ("asr_realtime_errors_total", ("unknown_event",)): 1,
        ("asr_realtime_errors_total", ("invalid_json",)): 1,
    }
    for (series, values), added in counted.items():
        labels = dict(zip(("direction", "type") if len(values) == 2 else ("code",), values))
        assert metric_in(after, series, **labels) - metric_in(before, series, **labels) == added, (series, values)
    deadline = time.monotonic() + 30  # the session's handler ends just after the client's close
    while metric(client, "asr_stream_sessions_total", protocol="realtime", reason="client_closed") != ended + 1:
        assert time.monotonic() < deadline, "the realtime session was not counted as closed by its client"
        time.sleep(0.05)
