"""The server under hostile input and faults, for real: decompression bombs, absurd samples, a
killed beam-search worker, stalled and abandoned uploads, abusive websockets, SIGTERM under
load, a bad language model, and schemathesis over the whole HTTP API."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
import websockets

from model.audio import load_audio

from conftest import HANG_SECONDS, REALSPEECH, REPO, metric, missing_data, run_server

# One model family is enough here: the faults are the server's, not the model's.
pytestmark = pytest.mark.parametrize("family", ["base"], indirect=True)

# Without ../shared/data/realspeech, an empty stand-in lets the module load: every test here serves the
# exported model, which needs it, and is skipped.
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


def wav(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def zeros_flac(seconds: float, rate: int, channels: int) -> bytes:
    """A small file that decodes to a lot: `seconds` of silence, written 10 s at a time."""
    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", rate, channels, format="FLAC", subtype="PCM_16") as out:
        block = np.zeros((rate * 10, channels), dtype=np.int16)
        for _ in range(int(seconds // 10)):
            out.write(block)
    return buffer.getvalue()


def forged_flac(total_samples: int) -> bytes:
    """One second of FLAC whose STREAMINFO claims `total_samples` (36 bits, bytes 18-25 of the file)."""
    data = bytearray(zeros_flac(10, 16000, 1))
    assert data[:4] == b"fLaC"
    fields = int.from_bytes(data[18:26], "big")
    data[18:26] = ((fields & ~((1 << 36) - 1)) | total_samples).to_bytes(8, "big")
    return bytes(data)


def post_audio(server, body: bytes, endpoint: str = "/transcribe", timeout: float = 60, **params) -> httpx.Response:
    return httpx.post(
        server.url + endpoint, content=body, params=params, timeout=timeout, headers={"content-type": "audio/wav"}
    )


def post_beam(server, body: bytes, **fields) -> httpx.Response:
    return httpx.post(
        server.url + "/transcribe", files={"file": ("a.wav", body)}, data={"decoder": "beam", **fields}, timeout=60
    )


def beam_workers(server) -> list[int]:
    """Process ids of the server's beam-search workers (its spawned children)."""
    pids = []
    for child in Path(f"/proc/{server.process.pid}/task").glob("*/children"):
        for pid in child.read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                pids.append(int(pid))
    return pids


def assert_json_error(response: httpx.Response, status: int, words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words.lower() in error["message"].lower(), error
    return error


@pytest.fixture(scope="module")
def server(exported_folder, lm, tmp_path_factory):
    with run_server(
        exported_folder,
        "--lm",
        str(lm),
        "--max-audio-seconds",
        "300",
        "--max-decoded-mb",
        "400",
        "--queue-capacity",
        "2",
        "--chunk-seconds",
        "5",
        "--chunk-context-seconds",
        "1",
        "--body-timeout-seconds",
        "1",
        "--stream-max-seconds",
        "600",
        log_dir=tmp_path_factory.mktemp("logs"),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def beam_server(exported_folder, lm, tmp_path_factory):
    """Two beam-search workers."""
    with run_server(
        exported_folder, "--lm", str(lm), "--decode-workers", "2", log_dir=tmp_path_factory.mktemp("logs")
    ) as running:
        yield running


# -- 1. decompression bombs: refused from the header; decoding never blocks the event loop ------------


def test_audio_too_big_once_decoded_is_refused_before_decoding(server):
    bomb = zeros_flac(150, 384_000, 2)  # 245 KB that decode to 439 MiB, 150 s: inside the duration limit
    assert len(bomb) < 300_000
    assert_json_error(post_audio(server, bomb), 413, "decodes to 439 MiB")
    forged = forged_flac(2**36 - 1)  # claims 49 days of audio: 256 GiB of float32
    assert len(forged) < 10_000
    assert_json_error(post_audio(server, forged), 413, "at most 300 s")
    served = httpx.get(server.url + "/v1/models").json()["data"][0]["id"]  # another name is a 404
    openai = httpx.post(
        server.url + "/v1/audio/transcriptions", files={"file": ("a.flac", forged)}, data={"model": served}, timeout=60
    )
    assert_json_error(openai, 413, "at most 300 s")
    pcm = httpx.post(
        server.url + "/transcribe",
        content=b"\0\0" * 400_000,
        timeout=60,
        params={"encoding": "pcm_s16le", "sample_rate": "1000"},
        headers={"content-type": "application/octet-stream"},
    )
    assert_json_error(pcm, 413, "400.0 s long")
    assert post_audio(server, wav(SPEECH)).status_code == 200


def test_health_answers_while_large_audio_decodes(server):
    large = zeros_flac(250, 384_000, 1)  # 250 s at 384 kHz: allowed, and seconds of decoding
    latencies = []
    with ThreadPoolExecutor(2) as pool:
        uploads = [pool.submit(post_audio, server, large) for _ in range(2)]
        while not all(upload.done() for upload in uploads):
            started = time.perf_counter()
            assert httpx.get(server.url + "/health", timeout=30).status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
    assert [upload.result().status_code for upload in uploads] == [422, 422]  # decoded: silence
    assert len(latencies) > 5 and max(latencies) < 1.0, f"/health took up to {max(latencies):.2f} s"


# -- 2. a killed beam-search worker is replaced; the search it held runs again on the new one -----------


def test_killed_beam_worker_is_replaced_and_its_search_runs_again(beam_server):
    body, statuses, stop = wav(SPEECH), [], threading.Event()

    def client():
        while not stop.is_set():
            response = post_beam(beam_server, body)
            statuses.append(
                (time.monotonic(), response.status_code, response.headers.get("retry-after"), response.json())
            )

    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(client)
        time.sleep(1.0)
        killed_at = time.monotonic()
        os.kill(beam_workers(beam_server)[0], signal.SIGKILL)
        time.sleep(4.0)
        stop.set()
    codes = [status for _, status, _, _ in statuses]
    assert set(codes) == {200}, [body for _, status, _, body in statuses if status != 200]
    assert sum(1 for at, status, _, _ in statuses if at > killed_at + 2 and status == 200) >= 4
    assert metric(beam_server, "asr_decode_worker_restarts_total") >= 1
    assert "Traceback" not in beam_server.log_tail()


def is_dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:  # already reaped
        return True


def test_ready_is_503_while_no_beam_worker_runs(beam_server):
    workers = beam_workers(beam_server)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    while not all(is_dead(pid) for pid in workers):  # a signal is delivered soon, not at once
        time.sleep(0.005)
    seen, deadline = [], time.monotonic() + HANG_SECONDS  # a restart waits for the machine, never a clock
    while time.monotonic() < deadline and (not seen or seen[-1] != 200):
        seen.append(httpx.get(beam_server.url + "/ready").status_code)
        time.sleep(0.02)
    assert 503 in seen and seen[-1] == 200, seen
    assert post_beam(beam_server, wav(SPEECH)).status_code == 200


# -- 3. absurd but finite samples are transcribed; NaN in a stream is refused properly ------------------


def test_huge_finite_samples_are_transcribed(server):
    expected = post_audio(server, wav(SPEECH, subtype="FLOAT"), decoder="greedy").json()["text"]
    loud = post_audio(server, wav(SPEECH * np.float32(1e38), subtype="FLOAT"), decoder="greedy")
    assert loud.status_code == 200 and loud.json()["text"] == expected
    assert post_audio(server, wav(SPEECH * np.float32(1e38), subtype="FLOAT"), decoder="beam").status_code == 200
    extreme = np.where(np.arange(16000) % 2, 3e38, -3e38).astype("<f4").tobytes()
    for decoder in ("greedy", "beam"):
        response = httpx.post(
            server.url + "/transcribe",
            content=extreme,
            timeout=60,
            params={"encoding": "pcm_f32le", "sample_rate": "16000", "decoder": decoder},
            headers={"content-type": "application/octet-stream"},
        )
        assert response.status_code == 200, response.text


async def stream_refusal(server, config: str, *messages: bytes | str) -> tuple[dict, int]:
    """Send a config and messages; return the server's JSON error and its close code."""
    async with websockets.connect(server.url.replace("http", "ws") + "/v1/stream", max_size=None) as socket:
        await socket.send(config)
        for message in messages:
            await socket.send(message)
        error = json.loads(await asyncio.wait_for(socket.recv(), 30))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(socket.recv(), 30)
        return error, socket.close_code


def test_stream_frame_with_nan_gets_an_error_and_a_close_code(server):
    frame = np.array([0.1, np.nan, 0.2, np.inf], dtype="<f4").tobytes()
    error, code = asyncio.run(stream_refusal(server, '{"encoding": "pcm_f32le"}', frame))
    assert error["type"] == "error" and "not finite" in error["message"] and code == 1007


# -- 4. every response is counted: 500s and disconnects too ----------------------------------------------


@pytest.fixture(scope="module")
def failing_server(exported_folder):
    """The app in this process, under uvicorn on loopback, with one route that raises: a bug's 500."""
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(model=str(exported_folder)))

    @app.get("/fail")
    async def fail():
        raise RuntimeError("a bug at <object at 0x7f00> in /secret/path")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + HANG_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    yield type("Running", (), {"url": url})
    server.should_exit = True
    thread.join(30)


def test_500s_are_json_and_counted(failing_server):
    for _ in range(5):
        response = httpx.get(failing_server.url + "/fail")
        assert_json_error(response, 500, "the server failed")
        assert "0x" not in response.text and "/secret" not in response.text
    assert metric(failing_server, "asr_requests_total", endpoint="/fail", status="500") == 5


def send_raw(url: str, head: bytes, body: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    connection.sendall(head + body)
    return connection


def test_client_disconnect_mid_upload_is_counted_and_logged_once(server):
    before = metric(server, "asr_requests_total", endpoint="/transcribe", status="disconnected")
    head = b"POST /transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: 100000\r\n\r\n"
    send_raw(server.url, head, wav(SPEECH)[:5000]).close()
    deadline = time.monotonic() + HANG_SECONDS
    while metric(server, "asr_requests_total", endpoint="/transcribe", status="disconnected") == before:
        assert time.monotonic() < deadline, "the disconnect was not counted"
        time.sleep(0.1)
    log = server.log_tail()
    assert "client disconnected" in log and "Traceback" not in log and "ClientDisconnect" not in log


# -- 5. long audio is not "busy"; stream settings are checked ---------------------------------------------


def test_audio_longer_than_the_queue_in_chunks_is_transcribed(server):
    long = np.tile(SPEECH, 12)[: 16000 * 30]  # 30 s in 5 s chunks: 6 chunks, queue capacity 2 (requests)
    response = post_audio(server, wav(long), decoder="greedy")
    assert response.status_code == 200, response.text
    assert response.json()["duration"] == 30.0


@pytest.mark.parametrize(
    "config, words",
    [
        ('{"max_segment_seconds": 1e9}', "stream limit of 600"),
        ('{"max_segment_seconds": 1e400}', "finite"),
        ('{"endpointing": true}', "endpointing"),
        ('{"endpointing": -1}', "endpointing"),
        ('{"beam_width": 1000}', "limit of 256"),
    ],
)
def test_stream_settings_out_of_range_are_refused(server, config, words):
    error, code = asyncio.run(stream_refusal(server, config))
    assert words in error["message"] and code == 1007


# -- 6. beam search cost is bounded -------------------------------------------------------------------------


def test_beam_width_over_the_servers_limit_is_refused(server):
    assert_json_error(post_beam(server, wav(SPEECH), beam_width="300"), 422, "limit of 256")
    assert post_beam(server, wav(SPEECH), beam_width="256").status_code == 200


def test_beam_queue_is_bounded_and_searches_have_a_deadline(exported_folder, lm, tmp_path):
    body, long = wav(SPEECH), wav(np.tile(SPEECH, 12)[: 16000 * 30])
    with run_server(
        exported_folder,
        "--lm",
        str(lm),
        "--decode-workers",
        "2",
        "--decode-queue-capacity",
        "2",
        "--decode-timeout-seconds",
        "2",
        log_dir=tmp_path,
    ) as server:
        with ThreadPoolExecutor(10) as pool:
            responses = list(pool.map(lambda _: post_beam(server, body, beam_width="256"), range(10)))
        assert {response.status_code for response in responses} == {200, 503}
        refused = [response for response in responses if response.status_code == 503]
        assert all(response.headers["retry-after"] for response in refused)
        assert any("queue is full" in response.json()["error"]["message"] for response in refused)
        slow = post_beam(server, long, beam_width="256", hotwords="DASHWOOD,ELINOR,MARIANNE")
        error = assert_json_error(slow, 422, "limit of 2 s")  # it would again: not a 503 to retry
        assert error["code"] == "beam_search_too_long" and "retry-after" not in slow.headers
        assert post_beam(server, body).status_code == 200  # its worker was replaced


# -- 7. tiny websocket messages cost no more on a long segment ----------------------------------------------


def server_cpu_seconds(server) -> float:
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_tiny_stream_messages_cost_the_same_on_a_long_segment(server):
    """20,000 two-byte messages after 0.5 s and after 25 s of open segment: the server's CPU time
    for them must not grow with the segment (it copied the whole segment on every message)."""

    async def cost(seconds: float) -> float:
        async with websockets.connect(server.url.replace("http", "ws") + "/v1/stream") as socket:
            await socket.send(json.dumps({"endpointing": False, "interim_results": False, "max_segment_seconds": 100}))
            pcm = (np.tile(SPEECH, 10)[: int(seconds * 16000)] * 32767).astype("<i2").tobytes()
            for start in range(0, len(pcm), 32000):
                await socket.send(pcm[start : start + 32000])
            await socket.send(json.dumps({"type": "unknown"}))  # answered once everything before it is done
            await socket.recv()
            started = server_cpu_seconds(server)
        async with websockets.connect(server.url.replace("http", "ws") + "/v1/stream") as socket:
            await socket.send(json.dumps({"endpointing": False, "interim_results": False, "max_segment_seconds": 100}))
            for start in range(0, len(pcm), 32000):
                await socket.send(pcm[start : start + 32000])
            started = server_cpu_seconds(server)
            for _ in range(20_000):
                await socket.send(b"\1\0")
            await socket.send(json.dumps({"type": "unknown"}))
            await socket.recv()
            return server_cpu_seconds(server) - started

    short, long = asyncio.run(cost(0.5)), asyncio.run(cost(25.0))
    assert long < 2 * short + 0.5, f"{long:.2f} s of CPU on a 25 s segment against {short:.2f} s on 0.5 s"


# -- 8. SIGTERM finishes the work in flight, beam search included, and exits 0 --------------------------------


def test_sigterm_finishes_requests_in_flight_and_exits_0(exported_folder, lm, tmp_path):
    body = wav(np.tile(SPEECH, 4)[: 16000 * 12])
    with run_server(exported_folder, "--lm", str(lm), log_dir=tmp_path) as server:
        with ThreadPoolExecutor(8) as pool:
            results = [
                pool.submit(post_beam, server, body, decoder=decoder, beam_width="256")
                for decoder in ("beam", "greedy") * 4
            ]
            time.sleep(1.0)  # all eight sent, the beam searches queued behind one worker
            server.process.send_signal(signal.SIGTERM)
            statuses = [result.result().status_code for result in results]
        assert server.process.wait(60) == 0, server.log_tail()
    assert statuses == [200] * 8, statuses


def test_request_past_the_grace_period_gets_a_json_503(exported_folder, lm, tmp_path):
    long = wav(np.tile(SPEECH, 12)[: 16000 * 30])  # seconds of beam search at width 256
    with run_server(exported_folder, "--lm", str(lm), "--shutdown-grace-seconds", "0.5", log_dir=tmp_path) as server:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(post_beam, server, long, beam_width="256", hotwords="DASHWOOD,ELINOR")
            time.sleep(1.5)  # decoded and searching
            server.process.send_signal(signal.SIGTERM)
            assert_json_error(slow.result(), 503, "shutting down")
        assert server.process.wait(60) == 0, server.log_tail()


# -- 9. no Python reprs or server paths in any answer ---------------------------------------------------------

GARBAGE = [
    b"RIFF" + bytes(range(256)) * 8,
    b"fLaC" + b"\0" * 100,
    b"OggS" + b"\1" * 300,
    b"ID3" + b"\xff" * 500,
    b"\xff\xfb" + b"\x90" * 800,
    b"FORM" + b"\0" * 60,
    b"RIFF\xff\xff\xff\xffWAVEfmt " + b"\0" * 40,
    wav(SPEECH)[:100],
    wav(SPEECH)[:44] + b"\x7f" * 3,
]


def test_no_object_reprs_or_paths_in_answers(server, exported_folder):
    for data in GARBAGE:
        for response in (
            post_audio(server, data),
            httpx.post(server.url + "/v1/audio/transcriptions", timeout=60, files={"file": ("a.wav", data)}),
        ):
            assert 400 <= response.status_code < 500, response.text
            assert " at 0x" not in response.text and "object" not in response.text, response.text
    assert str(exported_folder) not in httpx.get(server.url + "/metrics").text
    assert "source=" not in httpx.get(server.url + "/metrics").text


# -- 10. with API keys, exactly /health, /ready and /metrics are open -------------------------------------------


def test_api_key_mode_opens_exactly_health_ready_and_metrics(exported_folder, tmp_path):
    with run_server(exported_folder, "--api-keys", "k1", log_dir=tmp_path) as server:
        for path in ("/health", "/ready", "/metrics"):
            assert httpx.get(server.url + path).status_code == 200, path
        for path in ("/openapi.json", "/docs", "/redoc", "/v1/models"):
            assert httpx.get(server.url + path).status_code == 401, path
            assert httpx.get(server.url + path, headers={"authorization": "Bearer k1"}).status_code == 200, path


# -- 11. the OpenAPI schema is the contract: schemathesis finds no 5xx and no violation -------------------------


def test_schemathesis_finds_no_server_error_or_schema_violation(server):
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode, openapi
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.path for operation in operations} == {
        "/health",
        "/ready",
        "/metrics",
        "/v1/models",
        "/transcribe",
        "/v1/audio/transcriptions",
    }
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    for operation in operations:
        # Invalid requests exist only where there is something to get wrong: parameters or a body.
        modes = [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * (operation.method == "post")
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=30, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
            )
            def fuzz(case):
                case.call_and_validate(base_url=server.url, checks=checks, timeout=60)

            fuzz()


# -- 12. oversized frames, many hotwords, two files, options checked before the work --------------------------


@pytest.mark.parametrize("size", [int(1.5 * 2**20), 20 * 2**20])
def test_oversized_stream_message_gets_a_json_error(server, size):
    error, code = asyncio.run(stream_refusal(server, "{}", b"\0" * size))
    assert error["type"] == "error" and "over the limit" in error["message"] and code == 1009


def test_hundred_hotwords_two_files_and_options_first(server):
    body = wav(SPEECH)
    fields = {"hotwords": [f"WORD{index}" for index in range(100)]}
    response = httpx.post(server.url + "/transcribe", files=[("file", ("a.wav", body))], data=fields, timeout=60)
    assert response.status_code == 200, response.text
    two = httpx.post(server.url + "/transcribe", files=[("file", ("a.wav", body)), ("file", ("b.wav", body))])
    assert_json_error(two, 422, "one file")
    garbage = b"not audio at all" * 100  # the option is wrong: that is said before the audio is read
    bad_format = httpx.post(
        server.url + "/v1/audio/transcriptions", files={"file": ("a.wav", garbage)}, data={"response_format": "xml"}
    )
    assert_json_error(bad_format, 422, "response_format")
    streamed = httpx.post(
        server.url + "/v1/audio/transcriptions", files={"file": ("a.wav", garbage)}, data={"stream": "true"}
    )
    assert_json_error(streamed, 422, "websocket")


# -- 13. HEAD /health, and a body that stops arriving -------------------------------------------------------------


def test_head_health_and_stalled_body(server):
    assert httpx.head(server.url + "/health").status_code == 200
    head = b"POST /transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: 1000\r\n\r\n"
    connection = send_raw(server.url, head, b"RIFF012345")
    connection.settimeout(30)
    answer = b""
    while chunk := connection.recv(65536):  # until the server closes the connection
        answer += chunk
    connection.close()
    answer = answer.decode(errors="replace")
    assert answer.startswith("HTTP/1.1 408") and "stopped arriving" in answer, repr(answer)


# -- 14. a language model KenLM refuses stops start-up with one line ------------------------------------------------


@pytest.mark.parametrize("damage", ["unigrams only", "spaces for tabs"])
def test_bad_language_model_stops_startup_with_one_line(exported_folder, lm, tmp_path, damage):
    if damage == "spaces for tabs":
        text = lm.read_text().replace("\t", " ")
    else:
        words = ["<s>", "</s>", "<unk>", "HE", "WAS"]
        text = f"\\data\\\nngram 1={len(words)}\n\n\\1-grams:\n" + "".join(f"-1.0\t{word}\n" for word in words)
        text += "\n\\end\\\n"
    bad = tmp_path / "bad.arpa"
    bad.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "service", "--model", str(exported_folder), "--lm", str(bad), "--port", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
