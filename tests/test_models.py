"""Several models in one server, for real: the shipped digits model (the default) beside a tiny
English-alphabet model with its own KenLM model, chosen per request over HTTP, the OpenAI routes
and the websockets; n-best alternatives; output restricted to a list of phrases. Start-up with several models:
tests/test_model_startup.py."""

from __future__ import annotations

import asyncio
import base64
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from digit_strings import write_digit_strings

from model.audio import load_audio
from model.onnx import OnnxRecognizer
from model.package import DEFAULT_MODEL
from model.phrases import MAX_PHRASES

from conftest import DATA, REALSPEECH, REPO, needs_data, run_server

EXAMPLE = REPO / "examples" / "four-one-five-zero-two.wav"  # the digits model hears it right
SPEECH = (
    REALSPEECH
    / "audio"
    / "pocketsphinx"
    / "test"
    / "data"
    / "librivox"
    / "sense_and_sensibility_01_austen_64kb-0880.wav"
)
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ENGLISH = ["HE", "WAS", "NOT", "AN", "ILL", "DISPOSED", "YOUNG", "MAN", "A", "I", "THE"]


@pytest.fixture(scope="module")
def tiny(family, request) -> Path:
    if family != "base":
        pytest.skip("one tiny model is enough beside the digits model")
    return request.getfixturevalue("exported_folder")


@pytest.fixture(scope="module")
def server(tiny, lm, tmp_path_factory):
    """digits (the default: listed first) and tiny, named and given their LMs in the environment's
    comma-separated form; a batch may wait up to 100 ms for company."""
    exported_folder = tiny
    env = {"ASR_MODEL": f"{DEFAULT_MODEL}, tiny={exported_folder}", "ASR_LM": f"tiny={lm}"}
    with run_server(
        None, "--max-batch-size", "8", "--max-wait-ms", "100", log_dir=tmp_path_factory.mktemp("logs"), env=env
    ) as running:
        yield running


def post(server, path: Path | bytes, endpoint: str = "/transcribe", **fields) -> httpx.Response:
    audio = path if isinstance(path, bytes) else Path(path).read_bytes()
    return httpx.post(server.url + endpoint, files={"file": ("audio.wav", audio)}, data=fields, timeout=120)


def text_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["text"]


def metric_lines(server, name: str) -> list[str]:
    return [line for line in httpx.get(server.url + "/metrics").text.splitlines() if line.startswith(name)]


def metric(server, series: str) -> float:
    """The value of one series, written as /metrics writes it (labels sorted), 0 if absent."""
    return next(
        (float(line.split()[-1]) for line in metric_lines(server, series) if line.rsplit(" ", 1)[0] == series), 0.0
    )


# -- several models ---------------------------------------------------------------------------------------


def test_every_model_is_listed_ready_and_reported(server):
    assert [card["id"] for card in httpx.get(server.url + "/v1/models").json()["data"]] == ["digits", "tiny"]
    assert httpx.get(server.url + "/ready").json() == {"status": "ready", "model": "digits"}
    log = server.log.read_text()
    for name in ("digits", "tiny"):
        assert any(
            line.startswith(f'asr_model_memory_bytes{{model="{name}",part="inference"}} ')
            for line in metric_lines(server, "asr_model_memory_bytes")
        )
        assert metric(server, f'asr_model_memory_bytes{{model="{name}",part="beam_search"}}') > 10e6
        assert metric(server, f'asr_decode_workers_alive{{model="{name}"}}') == 1
        assert any(f'name="{name}"' in line for line in metric_lines(server, "asr_model_info"))
        assert f"model {name} ready: " in log and "MB in the server process" in log


def test_each_request_chooses_its_model(server, tiny):
    assert text_of(post(server, EXAMPLE)) == "four one five zero two"
    response = post(server, EXAMPLE, model="digits")
    assert response.json()["model"] == "digits" and response.json()["text"] == "four one five zero two"
    greedy = post(server, SPEECH, model="tiny", decoder="greedy")
    engine = OnnxRecognizer(tiny)
    offline = engine.vocab.greedy_decode(engine.logits([load_audio(SPEECH, 16000)])[0])
    assert text_of(greedy) == " ".join(offline.split())  # transcripts are single-spaced
    assert greedy.json()["model"] == "tiny"
    query = httpx.post(
        server.url + "/transcribe?model=tiny",
        content=SPEECH.read_bytes(),
        timeout=120,
        headers={"content-type": "audio/wav"},
    )
    assert query.json()["model"] == "tiny" and query.json()["decoder"] == "beam", "tiny's own LM: beam search"
    assert query.json()["text"] == text_of(post(server, SPEECH, model="tiny"))


def test_the_openai_routes_choose_by_model(server):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    assert [model.id for model in client.models.list()] == ["digits", "tiny"]
    for name, path in (("digits", EXAMPLE), ("tiny", SPEECH)):
        with open(path, "rb") as audio:
            assert client.audio.transcriptions.create(model=name, file=audio).text == text_of(
                post(server, path, model=name)
            )
    with open(EXAMPLE, "rb") as audio, pytest.raises(openai.NotFoundError) as refused:
        client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert refused.value.code == "model_not_found"


def test_an_unknown_model_is_a_404_in_openais_shape(server):
    for endpoint in ("/transcribe", "/v1/audio/transcriptions"):
        response = post(server, EXAMPLE, endpoint, model="nope")
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
        assert error["param"] == "model" and "'nope'" in error["message"]
        assert "digits" in error["message"] and "tiny" in error["message"]
    # Options are checked first: a bad option is said before the model is looked for.
    assert post(server, EXAMPLE, model="nope", beam_width="0").status_code == 422


@needs_data("fsdd")
def test_batching_stays_exact_per_model_under_mixed_load(server):
    """Requests for both models at once: each model infers its own (in batches where they queue:
    a request that finds a session free runs at once), and every answer equals the one the same
    request got alone."""
    requests = [("digits", path) for path in sorted((DATA / "fsdd" / "recordings").glob("[0-9]_theo_1.wav"))[:6]]
    requests += [
        (
            "tiny",
            REALSPEECH
            / "audio"
            / "pocketsphinx"
            / "test"
            / "data"
            / "librivox"
            / f"sense_and_sensibility_01_austen_64kb-{number}.wav",
        )
        for number in ("0870", "0880", "0890")
    ] * 2

    def ask(request):
        name, path = request
        return text_of(post(server, path, model=name, decoder="greedy"))

    alone = [ask(request) for request in requests]
    inferred = {name: inferred_utterances(server, name) for name in ("digits", "tiny")}
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(ask, requests))
    assert together == alone
    for name in inferred:  # each model's requests, in its own batches
        assert inferred_utterances(server, name) - inferred[name] == sum(asked == name for asked, _ in requests)


def inferred_utterances(server, name: str) -> float:
    """Utterances (or chunks) this model has run, in batches of any size."""
    return metric(server, f'asr_batch_size_sum{{model="{name}"}}')


def test_metrics_carry_the_model(server):
    post(server, EXAMPLE)
    post(server, SPEECH, model="tiny")
    for name in ("digits", "tiny"):
        assert metric(server, f'asr_audio_seconds_total{{endpoint="/transcribe",model="{name}"}}') > 0
        searched = [line for line in metric_lines(server, "asr_decode_seconds_count") if f'model="{name}"' in line]
        assert any('decoder="beam"' in line and float(line.split()[-1]) > 0 for line in searched), searched
        assert metric(server, f'asr_request_duration_seconds_count{{endpoint="/transcribe",model="{name}"}}') > 0
        assert metric(server, f'asr_queue_wait_seconds_count{{model="{name}"}}') > 0
        assert any(f'model="{name}"' in line for line in metric_lines(server, "asr_queue_depth"))


async def stream_finals(server, config: dict, path: Path) -> list[dict]:
    pcm = (np.clip(load_audio(path, 16000), -1, 1) * 32767).astype("<i2")
    async with websockets.connect(server.url.replace("http", "ws") + "/v1/stream") as socket:
        await socket.send(json.dumps({"endpointing": False, "interim_results": False, **config}))
        for start in range(0, len(pcm), 1600):
            await socket.send(pcm[start : start + 1600].tobytes())
        await socket.send(json.dumps({"type": "eof"}))
        return [message for message in map(json.loads, [text async for text in socket]) if message["type"] == "final"]


async def stream_refusal(server, config: dict) -> tuple[dict, int]:
    async with websockets.connect(server.url.replace("http", "ws") + "/v1/stream") as socket:
        await socket.send(json.dumps(config))
        error = json.loads(await socket.recv())
        with pytest.raises(websockets.ConnectionClosed):
            await socket.recv()
        return error, socket.close_code


def test_the_stream_config_chooses_the_model(server):
    (final,) = asyncio.run(stream_finals(server, {"model": "tiny", "decoder": "greedy"}, SPEECH))
    pcm = (np.clip(load_audio(SPEECH, 16000), -1, 1) * 32767).astype("<i2")
    offline = httpx.post(
        server.url + "/transcribe",
        content=pcm.tobytes(),
        timeout=120,
        params={"model": "tiny", "decoder": "greedy", "sample_rate": 16000, "encoding": "pcm_s16le"},
        headers={"content-type": "application/octet-stream"},
    )
    assert final["text"] == text_of(offline)
    assert final["decoder"] == offline.json()["decoder"] == "greedy" and "beam_search" not in final
    (final,) = asyncio.run(stream_finals(server, {}, EXAMPLE))
    assert final["text"] == "four one five zero two", "no model named: the default"
    offline = post(server, EXAMPLE).json()  # its default decoding too, named alike
    assert (final["decoder"], final["beam_search"]) == (offline["decoder"], offline["beam_search"])
    error, code = asyncio.run(stream_refusal(server, {"model": "nope"}))
    assert error["error"] == "model_not_found" and "digits" in error["message"] and code == 1007


def realtime_update(**transcription_and_detection) -> str:
    """A session.update of a 24 kHz PCM session; `turn_detection` and `transcription` as given."""
    return json.dumps(
        {
            "type": "session.update",
            "event_id": "update",
            "session": {
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, **transcription_and_detection}},
            },
        }
    )


async def realtime_events(ws, until: str, count: int = 1) -> list[dict]:
    """The session's events up to the `count`-th of type `until`."""
    events = []
    while sum(event["type"] == until for event in events) < count:
        events.append(json.loads(await asyncio.wait_for(ws.recv(), 120)))
    return events


async def append_pcm(ws, pcm: np.ndarray) -> None:
    for start in range(0, len(pcm), 2400):  # 100 ms per event
        chunk = base64.b64encode(pcm[start : start + 2400].tobytes()).decode()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))


def realtime_url(server, query: str = "") -> str:
    return server.url.replace("http", "ws") + "/v1/realtime?intent=transcription" + query


def transcribe_24k(server, pcm: np.ndarray, **params) -> str:
    return text_of(
        httpx.post(
            server.url + "/transcribe",
            content=pcm.tobytes(),
            timeout=120,
            params={"sample_rate": 24000, "encoding": "pcm_s16le", **params},
            headers={"content-type": "application/octet-stream"},
        )
    )


def test_realtime_sessions_choose_a_served_model_by_name(server):
    """transcription.model naming a served model chooses it for the turns that follow."""
    pcm = (np.clip(load_audio(SPEECH, 24000), -1, 1) * 32767).astype("<i2")

    async def turn(model: str) -> dict:
        async with websockets.connect(realtime_url(server)) as ws:
            await ws.send(realtime_update(turn_detection=None, transcription={"model": model}))
            await append_pcm(ws, pcm)
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            events = await realtime_events(ws, "conversation.item.input_audio_transcription.completed")
            assert not [event for event in events if event["type"] == "error"], events
            return events[-1]

    assert asyncio.run(turn("tiny"))["transcript"] == transcribe_24k(server, pcm, model="tiny")
    assert asyncio.run(turn("digits"))["transcript"] == transcribe_24k(server, pcm)


def test_an_unknown_model_is_refused_alike_over_http_and_realtime(server):
    """OpenAI's model names are served only as aliases (`--model-alias`): unknown, one is a 404
    model_not_found over HTTP, and the same code and message over /v1/realtime: in the URL the
    session is refused (close 1007); in a session update, an error event, the update is not applied
    (not even its other fields), and the session goes on with the model the URL chose."""
    name = "gpt-4o-transcribe"
    http = post(server, EXAMPLE, "/v1/audio/transcriptions", model=name)
    assert http.status_code == 404, http.text
    expected = http.json()["error"]
    assert expected["code"] == "model_not_found" and expected["param"] == "model"
    pcm = (np.clip(load_audio(SPEECH, 24000), -1, 1) * 32767).astype("<i2")

    async def scenario():
        async with websockets.connect(realtime_url(server, f"&model={name}")) as ws:
            refused = json.loads(await asyncio.wait_for(ws.recv(), 60))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 60)
            close_code = ws.close_code
        async with websockets.connect(realtime_url(server, "&model=tiny")) as ws:
            created = (await realtime_events(ws, "session.created"))[-1]
            await ws.send(realtime_update(turn_detection=None, transcription={"model": name}))
            error = (await realtime_events(ws, "error"))[-1]
            await ws.send(realtime_update(turn_detection=None))
            updated = (await realtime_events(ws, "session.updated"))[-1]
            await append_pcm(ws, pcm)
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            completed = (await realtime_events(ws, "conversation.item.input_audio_transcription.completed"))[-1]
        return refused, close_code, created, error, updated, completed

    refused, close_code, created, error, updated, completed = asyncio.run(scenario())
    assert refused["type"] == "error" and close_code == 1007
    assert (refused["error"]["code"], refused["error"]["message"]) == (expected["code"], expected["message"])
    assert created["session"]["audio"]["input"]["transcription"]["model"] == "tiny", "the URL chose tiny"
    assert (error["error"]["code"], error["error"]["message"]) == (expected["code"], expected["message"])
    assert error["error"]["param"] == "session.audio.input.transcription.model"
    assert error["error"]["event_id"] == "update"
    session = updated["session"]["audio"]["input"]
    assert session["transcription"]["model"] == "tiny" and session["turn_detection"] is None
    assert completed["transcript"] == transcribe_24k(server, pcm, model="tiny")


@needs_data("fsdd")
def test_realtime_deltas_are_never_contradicted_by_the_completed_transcript(server, tmp_path):
    """Spoken digit strings with pauses between them, turns ended by server VAD, on the digits model:
    each item's deltas, joined, are a prefix of its completed transcript, word for word (settled
    text only: no "seve" before "seven three nine")."""
    strings = [load_audio(path, 24000) for path in write_digit_strings(tmp_path, count=3, digits=5)]
    pause = np.zeros(24000, dtype=np.float32)
    pcm = (np.clip(np.concatenate([part for spoken in strings for part in (spoken, pause)]), -1, 1) * 32767).astype(
        "<i2"
    )

    async def session() -> list[dict]:
        async with websockets.connect(realtime_url(server)) as ws:
            await ws.send(realtime_update(turn_detection={"type": "server_vad", "silence_duration_ms": 500}))
            await append_pcm(ws, pcm)
            # Events are handled in order: once this update is answered, every turn before it is.
            await ws.send(realtime_update())
            return await realtime_events(ws, "session.updated", count=2)

    events = asyncio.run(session())
    completed = [event for event in events if event["type"].endswith("transcription.completed")]
    assert len(completed) >= len(strings), [event["type"] for event in events]
    assert any(event["transcript"] for event in completed)
    for event in completed:
        deltas = [
            other["delta"]
            for other in events[: events.index(event)]
            if other["type"].endswith("transcription.delta") and other["item_id"] == event["item_id"]
        ]
        said = "".join(deltas).split()  # whole words: "thr" before "three six" is a contradiction too
        assert event["transcript"].split()[: len(said)] == said, (deltas, event["transcript"])
        assert set(event["transcript"].split()) <= set(DIGITS), event["transcript"]
    assert not [event for event in events if event["type"].endswith("transcription.delta") and not event["delta"]]


# -- n best ---------------------------------------------------------------------------------------------


def test_alternatives_on_transcribe(server):
    body = post(server, EXAMPLE, alternatives="5").json()
    alternatives = body["alternatives"]
    assert 1 <= len(alternatives) <= 5 and alternatives[0]["text"] == body["text"] == "four one five zero two"
    assert [item["score"] for item in alternatives] == sorted((item["score"] for item in alternatives), reverse=True)
    assert len({item["text"] for item in alternatives}) == len(alternatives)
    assert set(alternatives[0]) == {"text", "score"}
    english = post(server, SPEECH, model="tiny", alternatives="10", beam_width="32").json()
    assert len(english["alternatives"]) > 1 and english["alternatives"][0]["text"] == english["text"]
    assert "alternatives" not in post(server, EXAMPLE).json(), "only when asked for"


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"alternatives": "3", "decoder": "greedy"}, "alternatives need beam search"),
        ({"alternatives": "0"}, "alternatives"),
        ({"alternatives": "11"}, "alternatives"),
        ({"alternatives": "many"}, "alternatives"),
    ],
)
def test_bad_alternatives_are_a_422(server, fields, words):
    response = post(server, EXAMPLE, **fields)
    assert response.status_code == 422 and words in response.json()["error"]["message"], response.text


def test_openai_verbose_json_keeps_its_shape(server):
    verbose = post(server, EXAMPLE, "/v1/audio/transcriptions", response_format="verbose_json").json()
    assert set(verbose) == {
        *("task", "language", "duration", "text", "segments", "usage"),
        *("confidence", "decoder", "beam_search"),  # this server's: the digits model decodes with its LM
    }
    assert 0 <= verbose["confidence"] <= 1 and verbose["decoder"] == "beam"
    assert verbose["usage"] == {"type": "duration", "seconds": verbose["duration"]}
    refused = post(server, EXAMPLE, "/v1/audio/transcriptions", response_format="verbose_json", alternatives="3")
    assert refused.status_code == 422 and "POST /transcribe" in refused.json()["error"]["message"]


def test_stream_finals_carry_alternatives_when_the_config_asks(server):
    (final,) = asyncio.run(stream_finals(server, {"alternatives": 3}, EXAMPLE))
    assert final["alternatives"][0]["text"] == final["text"] == "four one five zero two"
    (final,) = asyncio.run(stream_finals(server, {}, EXAMPLE))
    assert "alternatives" not in final
    error, code = asyncio.run(stream_refusal(server, {"alternatives": 3, "decoder": "greedy"}))
    assert "alternatives need beam search" in error["message"] and code == 1007


# -- a restricted vocabulary ---------------------------------------------------------------------------


def words_of(response: httpx.Response) -> set[str]:
    body = response.json()
    assert response.status_code == 200, body
    assert [word["word"] for word in body["words"]] == body["text"].split()
    return set(body["text"].split()) | {word for item in body.get("alternatives", []) for word in item["text"].split()}


@needs_data("fsdd")
def test_phrases_restrict_the_digits_model(server, tmp_path):
    assert text_of(post(server, EXAMPLE, phrases=",".join(DIGITS))) == "four one five zero two"
    assert text_of(post(server, EXAMPLE, phrases=["four one", "five zero two"])) == "four one five zero two"
    for phrases in (["one", "two", "three", "four", "five"], ["yes", "no"], ["Four", "TWO"]):
        allowed = {phrase.lower() for phrase in phrases}
        assert words_of(post(server, EXAMPLE, phrases=phrases, alternatives="5")) <= allowed, phrases
    for path in sorted((DATA / "fsdd" / "recordings").glob("[0-9]_jackson_2.wav")):
        assert words_of(post(server, path, phrases="yes,no,operator")) <= {"yes", "no", "operator"}


def test_phrases_restrict_an_english_model_and_reload_nothing(server):
    before = metric(server, 'asr_decode_worker_restarts_total{model="tiny"}')
    for phrases in (ENGLISH, ENGLISH[:3], ["he was", "not an", "ill disposed young man"], ["the"]):
        given = ",".join(phrase.lower() for phrase in phrases)  # matched in the model's (upper) case
        for decoder_fields in ({}, {"beam_width": "8", "hotwords": "MAN"}):
            response = post(server, SPEECH, model="tiny", phrases=given, alternatives="4", **decoder_fields)
            allowed = {word for phrase in phrases for word in phrase.upper().split()}
            assert words_of(response) <= allowed, (phrases, response.json()["text"])
    assert metric(server, 'asr_decode_worker_restarts_total{model="tiny"}') == before
    assert text_of(post(server, SPEECH, model="tiny")) == text_of(post(server, SPEECH, model="tiny")), (
        "the LM is still there for requests without phrases"
    )


def test_a_huge_phrase_list_is_served(server):
    generator = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    phrases = ["".join(generator.choice(letters, int(generator.integers(2, 9)))) for _ in range(MAX_PHRASES - 10)]
    phrases += ["four", "one", "five", "zero", "two"]
    response = post(server, EXAMPLE, phrases=",".join(phrases))
    assert words_of(response) <= set(phrases)


@pytest.mark.parametrize(
    "phrases, words",
    [
        ("", "at least one"),
        (" , ,", "at least one"),
        ("yes,café", "'é'"),
        ("route 66", "'6'"),
        ("x" * 101, "at most 100"),
        (",".join(["yes"] * (MAX_PHRASES + 1)), f"at most {MAX_PHRASES}"),
    ],
)
def test_phrases_the_model_cannot_write_are_a_422(server, phrases, words):
    response = post(server, EXAMPLE, phrases=phrases)
    assert response.status_code == 422 and words in response.json()["error"]["message"], response.text
    assert response.json()["error"]["param"] == "phrases"


def test_phrases_with_greedy_decoding_are_a_422(server):
    response = post(server, EXAMPLE, phrases="yes,no", decoder="greedy")
    assert response.status_code == 422 and "phrases need beam search" in response.json()["error"]["message"]
    (final,) = asyncio.run(stream_finals(server, {"phrases": ["four one five", "zero", "two"]}, EXAMPLE))
    assert final["text"] == "four one five zero two"
    error, code = asyncio.run(stream_refusal(server, {"phrases": ["naïve"]}))
    assert "'ï'" in error["message"] and code == 1007
