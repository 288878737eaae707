"""What operators and OpenAI clients meet, on the real server with the shipped digits model: request
ids, JSON logs, refusals logged, model aliases, honest verbose_json, usage, language and
timestamp checks, CORS and per-key rate limits (with the official `openai` client)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from model.quiet import EXPECTED_WARNINGS, KENLM_NOISE
from service.rate_limits import RateLimits

from conftest import DATA, REPO, needs_data, run_server

pytestmark = needs_data("fsdd")
SEVEN = DATA / "fsdd" / "recordings" / "7_jackson_0.wav"  # "seven", from the FSDD test split


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with run_server(
        None,
        "--log-format",
        "json",
        "--model-alias",
        "whisper-1=digits",
        "--cors-origins",
        "https://app.example",
        log_dir=tmp_path_factory.mktemp("logs"),
    ) as running:
        yield running


def post(server, path: str = "/v1/audio/transcriptions", headers: dict | None = None, **fields) -> httpx.Response:
    with open(SEVEN, "rb") as audio:
        return httpx.post(
            server.url + path, files={"file": ("seven.wav", audio)}, data=fields, headers=headers, timeout=60
        )


def log_entries(server) -> list[dict]:
    """Every line of the server's log, each parsed as the JSON object it must be. (Until the
    beam-search decoder loads its LM within `model.quiet`, the LM libraries' own lines are left out:
    `test_server_start_has_no_lm_library_chatter` says when they are gone.)"""
    lines = [line for line in server.log.read_text().splitlines() if line.strip()]
    chatter = [line for line in lines if KENLM_NOISE.fullmatch(line) or EXPECTED_WARNINGS.search(line)]
    return [json.loads(line) for line in lines if line not in chatter]


# -- request ids and logs ------------------------------------------------------------------------------


def test_request_id_is_taken_or_made_and_answered(server):
    given = post(server, "/transcribe", headers={"x-request-id": "client-id_1.2:3"})
    assert given.status_code == 200 and given.headers["x-request-id"] == "client-id_1.2:3"
    made = httpx.get(server.url + "/health")
    assert len(made.headers["x-request-id"]) == 24
    for unsafe in ("a" * 129, "bad id", "x\u00e9"):  # too long, a space, not ASCII: replaced, never echoed
        response = httpx.get(server.url + "/health", headers={"x-request-id": unsafe.encode("utf-8")})
        assert response.headers["x-request-id"] != unsafe and len(response.headers["x-request-id"]) == 24
    refused = post(server, model="nope", headers={"x-request-id": "req-404"})
    assert refused.status_code == 404 and refused.headers["x-request-id"] == "req-404"
    assert refused.json()["error"]["request_id"] == "req-404"
    missing = httpx.get(server.url + "/no/such/page", headers={"x-request-id": "req-unrouted"})
    assert missing.status_code == 404 and missing.json()["error"]["request_id"] == "req-unrouted"


def test_json_log_lines_carry_the_request_id_and_refusals_are_logged(server):
    post(server, model="nope", headers={"x-request-id": "logged-404"})
    entries = log_entries(server)  # every line is one JSON object, uvicorn's included
    assert {entry["logger"] for entry in entries} >= {"uvicorn.error", "uvicorn.access", "service"}
    mine = [entry for entry in entries if entry.get("request_id") == "logged-404"]
    access = [entry for entry in mine if entry["logger"] == "uvicorn.access"]
    reason = [entry for entry in mine if entry["logger"] == "service"]
    assert access and access[0]["status"] == 404 and access[0]["path"] == "/v1/audio/transcriptions"
    assert reason and reason[0]["level"] == "info" and "model_not_found" in reason[0]["message"]
    assert any("beam search (lm.arpa, lexicon lexicon.txt)" in entry["message"] for entry in entries)


@pytest.mark.skipif(
    "quiet_lm_loading" not in (REPO / "model" / "decoding.py").read_text(),
    reason="the beam-search decoder does not load its LM within model.quiet yet",
)
def test_server_start_has_no_lm_library_chatter(server):
    text = server.log.read_text()
    assert "Found entries of length" not in text and "build a binary file" not in text


def test_text_log_format_is_one_format_for_every_line(tmp_path):
    with run_server(None, "--log-level", "warning", log_dir=tmp_path) as quiet:
        httpx.get(quiet.url + "/health")
        assert "GET /health" not in quiet.log.read_text()  # access lines are INFO
    with run_server(None, log_dir=tmp_path) as plain:
        httpx.get(plain.url + "/health", headers={"x-request-id": "text-id"})
        lines = plain.log.read_text().splitlines()
    access = [line for line in lines if "GET /health" in line]
    assert access and " INFO uvicorn.access [text-id]: " in access[0]
    assert any(" INFO uvicorn.error: Uvicorn running on" in line for line in lines)


# -- OpenAI compatibility --------------------------------------------------------------------------------


def test_alias_answers_as_its_model_with_the_official_client(server):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with open(SEVEN, "rb") as audio:
        direct = client.audio.transcriptions.create(model="digits", file=audio)
    with open(SEVEN, "rb") as audio:
        aliased = client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert direct.text == aliased.text == "seven"
    assert aliased.usage.type == "duration" and aliased.usage.seconds == pytest.approx(0.432, abs=0.01)
    assert [model.id for model in client.models.list()] == ["digits", "whisper-1"]
    with open(SEVEN, "rb") as audio, pytest.raises(openai.NotFoundError) as unknown:
        client.audio.transcriptions.create(model="whisper-2", file=audio)
    assert unknown.value.body["code"] == "model_not_found"


def test_verbose_json_holds_no_placeholders(server):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with open(SEVEN, "rb") as audio:
        raw = client.audio.transcriptions.with_raw_response.create(
            model="whisper-1",
            file=audio,
            response_format="verbose_json",
            timestamp_granularities=["segment", "word"],
            language="en",
        )
    verbose = raw.parse()
    assert verbose.language == "english" and verbose.text == "seven"
    (segment,) = raw.http_response.json()["segments"]
    assert set(segment) == {"id", "start", "end", "text", "avg_logprob"}, "only what the server computes"
    assert -1.0 < segment["avg_logprob"] < 0.0 and segment["end"] > segment["start"]
    assert [word.word for word in verbose.words] == ["seven"]
    only_words = post(server, response_format="verbose_json", **{"timestamp_granularities[]": "word"}).json()
    assert "segments" not in only_words and only_words["words"][0]["word"] == "seven"
    # Which search made it, as /transcribe says (this server's additions, like `confidence`).
    native = post(server, "/transcribe").json()
    assert (only_words["decoder"], only_words.get("beam_search")) == (native["decoder"], native.get("beam_search"))
    greedy = post(server, response_format="verbose_json", decoder="greedy").json()
    assert greedy["decoder"] == "greedy" and "beam_search" not in greedy


def test_language_and_granularities_are_checked_as_openai_does(server):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    for language, code in (("klingon", "invalid_language_format"), ("de", "unsupported_language")):
        with open(SEVEN, "rb") as audio, pytest.raises(openai.BadRequestError) as refused:
            client.audio.transcriptions.create(model="whisper-1", file=audio, language=language)
        assert refused.value.body["code"] == code and refused.value.body["param"] == "language"
    assert post(server, language="English").status_code == 200
    refused = post(server, response_format="json", **{"timestamp_granularities[]": "word"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "timestamp_granularities"


def test_cors_preflight_and_answers(server):
    preflight = httpx.options(
        server.url + "/v1/audio/transcriptions",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    answer = post(server, headers={"origin": "https://app.example"})
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in answer.headers["access-control-expose-headers"]
    stranger = httpx.options(
        server.url + "/v1/audio/transcriptions",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in stranger.headers


def test_per_key_rate_limits_answer_429_in_openai_shape(tmp_path):
    import openai

    with run_server(
        None, "--api-keys", "k1,k2", "--rate-limit-requests", "2", "--rate-limit-audio-seconds", "1", log_dir=tmp_path
    ) as limited:
        first = openai.OpenAI(base_url=limited.url + "/v1", api_key="k1", max_retries=0)
        with open(SEVEN, "rb") as audio:
            assert first.audio.transcriptions.create(model="digits", file=audio).text == "seven"
        with open(SEVEN, "rb") as audio:  # 0.43 s of the 1 s a minute left: admitted
            assert first.audio.transcriptions.create(model="digits", file=audio).text == "seven"
        with open(SEVEN, "rb") as audio, pytest.raises(openai.RateLimitError) as refused:
            first.audio.transcriptions.create(model="digits", file=audio)
        assert refused.value.body["code"] == "rate_limit_exceeded" and refused.value.body["type"] == "requests"
        assert 1 <= int(refused.value.response.headers["retry-after"]) <= 30
        other = post(limited, headers={"authorization": "Bearer k2"}, model="digits")
        assert other.status_code == 200, "each key has its own allowance"
        assert other.headers["x-ratelimit-remaining-requests"] == "1"


def test_rate_limit_buckets_refill_at_the_steady_rate():
    now = [0.0]
    limits = RateLimits(requests_per_minute=60, audio_seconds_per_minute=30, clock=lambda: now[0])
    for _ in range(60):
        limits.admit("a")
    with pytest.raises(Exception) as refused:
        limits.admit("a")
    assert refused.value.retry_after == 1  # one request a second comes back
    now[0] += 1.0
    limits.admit("a")
    limits.charge_audio("b", 90.0)  # a long file: admitted, then the client is in debt for two minutes
    with pytest.raises(Exception) as debt:
        limits.admit("b")
    assert debt.value.retry_after == 120
    now[0] += 121
    limits.admit("b")


def test_settings_refuse_bad_aliases_and_languages():
    for argument, message in (
        (["--model-alias", "whisper-1=nothing"], "no model is named 'nothing'"),
        (["--model-alias", "digits=digits"], "already names a model"),
        (["--language", "english"], "ISO-639-1"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "service", *argument], capture_output=True, text=True, cwd=REPO, timeout=120
        )
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_lm_loading_is_one_line():
    script = (
        "import logging; logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')\n"
        "from model.ctc import CTCVocabulary\nfrom model.decoding import BeamSearchDecoder\n"
        "from model.package import DEFAULT_MODEL, package_lm\n"
        "lm = package_lm(DEFAULT_MODEL)\n"
        "BeamSearchDecoder(CTCVocabulary.from_folder(DEFAULT_MODEL / 'onnx'), lm)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "model.lm: language model lm.arpa loaded: ARPA text (`build_binary` from "
        "KenLM makes a file that loads faster), 14 words"
    ]


# -- metrics -------------------------------------------------------------------------------------------------


def test_metrics_hold_process_and_stream_series_and_request_id_exemplars(server):
    post(server, "/transcribe", headers={"x-request-id": "exemplar-1"})
    text = httpx.get(server.url + "/metrics").text
    for series in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        'asr_audio_seconds_total{endpoint="/v1/realtime",model="digits"} 0.0',
        'asr_stream_sessions_total{protocol="stream",reason="client_closed"} 0.0',
        'asr_stream_final_latency_seconds_count{model="digits",protocol="realtime"} 0.0',
        'asr_queue_capacity{model="digits"} 64.0',
    ):
        assert series in text, series
    for family in (
        "asr_realtime_events_total counter",
        "asr_realtime_errors_total counter",
        "asr_stream_partial_latency_seconds histogram",
    ):
        assert f"# TYPE {family}\n" in text
    openmetrics = httpx.get(server.url + "/metrics", headers={"accept": "application/openmetrics-text"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert '# {request_id="exemplar-1"}' in openmetrics.text


def test_stream_recording_functions_label_what_they_are_told():
    from prometheus_client import generate_latest

    from service.metrics import Metrics

    metrics = Metrics()
    metrics.model("digits")
    metrics.stream_closed("realtime", "idle")
    metrics.stream_closed("stream", "made-up reason")  # a label set that cannot grow: "other"
    metrics.stream_audio("stream", "digits", 1.5)
    metrics.stream_partial("stream", "digits", 0.2)
    metrics.stream_final("realtime", "digits", 0.7)
    metrics.realtime_event("in", "input_audio_buffer.append")
    metrics.realtime_event("in", "x" * 1000)
    metrics.realtime_error("invalid_value")
    text = generate_latest(metrics.registry).decode()
    for series in (
        'asr_stream_sessions_total{protocol="realtime",reason="idle"} 1.0',
        'asr_stream_sessions_total{protocol="stream",reason="other"} 1.0',
        'asr_audio_seconds_total{endpoint="/v1/stream",model="digits"} 1.5',
        'asr_stream_partial_latency_seconds_bucket{le="0.2",model="digits",protocol="stream"} 1.0',
        'asr_stream_final_latency_seconds_bucket{le="0.5",model="digits",protocol="realtime"} 0.0',
        'asr_realtime_events_total{direction="in",type="input_audio_buffer.append"} 1.0',
        'asr_realtime_events_total{direction="in",type="other"} 1.0',
        'asr_realtime_errors_total{code="invalid_value"} 1.0',
    ):
        assert series in text, series


# -- the command line ------------------------------------------------------------------------------------------


def test_every_server_option_has_help_with_its_default():
    from service.settings import Settings

    result = subprocess.run(
        [sys.executable, "-m", "service", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={"COLUMNS": "400", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0
    options: dict[str, str] = {}  # each option's help, its wrapped lines joined
    for line in result.stdout.split("options:", 1)[1].splitlines():
        if line.startswith("  --"):
            flag = line.split()[0].rstrip(",")
            options[flag] = line
        elif line.startswith("   ") and options:
            options[flag] += " " + line.strip()
    for name in Settings.model_fields:
        line = options["--" + name.replace("_", "-")]
        assert f"env ASR_{name.upper()}" in line and "default" in line, line
    assert "default: 127.0.0.1" in options["--host"] and "default: 8000" in options["--port"]
    assert "default: 100.0" in options["--max-upload-mb"] and "default: 16" in options["--max-streams"]
    bad = subprocess.run(
        [sys.executable, "-m", "service", "--bogus"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert bad.returncode == 2 and bad.stderr.startswith("usage: python -m service [options]")
    assert "unrecognized arguments: --bogus" in bad.stderr


def test_streams_carry_a_request_id_per_session(server):
    import asyncio

    import websockets

    async def refused() -> tuple[str, dict]:
        url = server.url.replace("http", "ws") + "/v1/stream"
        async with websockets.connect(url, additional_headers={"x-request-id": "stream-7"}) as socket:
            await socket.send(json.dumps({"model": "nope"}))
            return socket.response.headers["x-request-id"], json.loads(await socket.recv())

    header, error = asyncio.run(refused())
    assert header == "stream-7" and error["request_id"] == "stream-7" and error["error"] == "model_not_found"
    logged = [entry for entry in log_entries(server) if entry.get("request_id") == "stream-7"]
    assert any("close 1007 model_not_found" in entry["message"] for entry in logged), logged


def test_oversized_request_head_gets_an_id_too(server):
    """A head too long for h11, in two pieces (one would be read whole): refused before any request
    is read, by the protocol, which still gives the answer an id."""
    import re
    import socket
    import time

    host, port = server.url.removeprefix("http://").split(":")
    head = f"GET /health?q={'A' * 120_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        connection.sendall(head[:20_000])
        time.sleep(0.2)
        try:
            connection.sendall(head[20_000:])
        except OSError:  # refused already
            pass
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 414"), answer[:200]
    header = re.search(rb"x-request-id: (\w+)", answer).group(1).decode()
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["request_id"] == header


def test_close_codes_map_to_the_reasons_counted():
    from service.metrics import CLOSE_REASONS, close_reason

    cases = {
        (None, None): "client_closed",
        (1000, None): "client_closed",
        (1001, None): "idle",
        (1001, "server_shutting_down"): "shutdown",
        (1008, "invalid_api_key"): "unauthorised",
        (1008, "session_expired"): "max_session",
        (1009, None): "max_audio",
        (1007, None): "invalid",
        (1013, "too_many_streams"): "too_many_streams",
        (1013, "model_not_ready"): "refused",
        (1011, "internal_error"): "error",
        (4000, None): "other",
    }
    for (code, error), reason in cases.items():
        assert close_reason(code, error) == reason and reason in CLOSE_REASONS, (code, error)
