"""OpenAI's Realtime transcription protocol at /v1/realtime, for real: the official `openai`
client's realtime interface and a plain websocket client against `python -m service` on loopback,
real recordings, and each turn's transcript checked against POST /transcribe for the same audio."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math

import httpx
import numpy as np
import pytest
import soundfile
import websockets

from model.audio import load_audio

from conftest import REALSPEECH, run_server

LIBRIVOX = REALSPEECH / "audio" / "pocketsphinx" / "test" / "data" / "librivox"
RECORDINGS = [LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{number}.wav" for number in ("0880", "0890", "0870")]
RATE = 24000  # the protocol's PCM rate
CHUNK = RATE // 10  # 100 ms per append


@pytest.fixture(scope="module")
def server(family, request, tmp_path_factory):
    if family != "base":
        pytest.skip("one model family is enough: the protocol does not depend on it")
    folder = request.getfixturevalue("exported_folder")
    with run_server(
        folder,
        "--max-wait-ms",
        "10",
        "--model-name",
        "tiny",
        "--model-alias",
        "whisper-1=tiny",
        log_dir=tmp_path_factory.mktemp("logs"),
    ) as running:
        yield running


def pcm16(path, rate: int = RATE) -> np.ndarray:
    return (np.clip(load_audio(path, rate), -1, 1) * 32767).astype("<i2")


def transcribe_pcm(server, samples: np.ndarray, rate: int = RATE, encoding: str = "pcm_s16le") -> str:
    response = httpx.post(
        server.url + "/transcribe",
        content=samples.tobytes(),
        timeout=60,
        params={"sample_rate": rate, "encoding": encoding},
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    return response.json()["text"]


def b64(samples: np.ndarray) -> str:
    return base64.b64encode(samples.tobytes()).decode()


def test_session_updates_set_the_engines_options():
    from service.realtime_session import Session

    session = Session("digits")
    options = session.stream_options(max_stream_seconds=20)
    assert (options.sample_rate, options.endpointing_ms, options.max_segment_seconds) == (24000, 500, 20)
    assert options.resample_per_segment, "each turn's transcript is the offline one of its audio"
    assert not options.interim_results, "deltas come from finals: partials would go unused"
    session.update(
        {
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": None},
                },
            }
        },
        beta=False,
    )
    options = session.stream_options(max_stream_seconds=600)
    assert (options.sample_rate, options.endpointing_ms, options.max_segment_seconds) == (8000, 500, 30), (
        "a null pause length is OpenAI's default, not an error"
    )
    session.update({"audio": {"input": {"turn_detection": None, "transcription": {"keywords": ["NINE"]}}}}, beta=False)
    assert session.stream_options(600).endpointing_ms is None, "without turn detection, turns end at commits"
    assert session.decode_options().hotwords == ["NINE"]


# -- the official client ------------------------------------------------------------------------------


def test_openai_client_committed_turns_equal_transcribe(server):
    """No turn detection: the client commits after each recording; each `completed` transcript is
    what POST /transcribe gives for that recording's 24 kHz PCM."""
    import openai

    recordings = [pcm16(path) for path in RECORDINGS]

    async def session() -> list:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused")
        events = []
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
            created = await connection.recv()
            assert created.type == "session.created" and created.session.type == "transcription"
            await connection.session.update(
                session={
                    "type": "transcription",
                    "include": ["item.input_audio_transcription.logprobs"],
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": RATE},
                            "turn_detection": None,
                            "transcription": {"model": "whisper-1", "language": "en"},
                        }
                    },
                }
            )
            for samples in recordings:
                for start in range(0, len(samples), CHUNK):
                    await connection.input_audio_buffer.append(audio=b64(samples[start : start + CHUNK]))
                await connection.input_audio_buffer.commit()
            async for event in connection:
                events.append(event)
                if sum(e.type.endswith("transcription.completed") for e in events) == len(recordings):
                    break
        return events

    events = asyncio.run(session())
    updated = next(event for event in events if event.type == "session.updated")
    assert updated.session.audio.input.turn_detection is None
    assert updated.session.audio.input.format.rate == RATE
    committed = [event for event in events if event.type == "input_audio_buffer.committed"]
    completed = [event for event in events if event.type == "conversation.item.input_audio_transcription.completed"]
    assert [event.item_id for event in completed] == [event.item_id for event in committed]
    assert [event.previous_item_id for event in committed] == [None] + [event.item_id for event in committed[:-1]]
    assert not any(event.type.startswith("input_audio_buffer.speech") for event in events), "no VAD, no speech events"
    for samples, event in zip(recordings, completed):
        assert event.transcript == transcribe_pcm(server, samples)
        assert event.usage.type == "duration" and event.usage.seconds == pytest.approx(len(samples) / RATE, abs=0.01)
        assert [logprob.token for logprob in event.logprobs] == event.transcript.split()
        assert all(logprob.logprob <= 0 for logprob in event.logprobs)
        # This server's addition: the transcript's confidence, its weakest word's (0 with no word).
        weakest = min((math.exp(logprob.logprob) for logprob in event.logprobs), default=0.0)
        assert event.confidence == pytest.approx(weakest, abs=1e-4)
    items = {event.item_id for event in committed}
    assert all(event.item_id in items for event in events if event.type.endswith("transcription.delta"))
    for event in completed:  # deltas carry settled text only: joined, they are the completed transcript
        deltas = [e for e in events if e.type.endswith("transcription.delta") and e.item_id == event.item_id]
        assert "".join(delta.delta for delta in deltas) == event.transcript
        assert [logprob.token for delta in deltas for logprob in delta.logprobs] == event.transcript.split()


def test_openai_client_server_vad_turns_equal_transcribe(server):
    """Server VAD (the default): two utterances with pauses between, streamed in 100 ms chunks,
    give speech_started / speech_stopped / committed / completed per turn, and each turn's text is
    POST /transcribe's for exactly the audio of that turn."""
    import openai

    pause = np.zeros(int(1.5 * RATE), dtype="<i2")
    audio = np.concatenate([pcm16(RECORDINGS[0]), pause, pcm16(RECORDINGS[1]), pause])

    async def session() -> list:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused")
        events = []
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
            await connection.session.update(
                session={
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": RATE},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                        }
                    },
                }
            )
            for start in range(0, len(audio), CHUNK):
                await connection.input_audio_buffer.append(audio=b64(audio[start : start + CHUNK]))
            # Events are handled in order: once this update is answered, every append before it has been.
            await connection.session.update(session={"type": "transcription"})
            updates = 0
            async for event in connection:
                events.append(event)
                updates += event.type == "session.updated"
                if updates == 2:
                    break
        return events

    events = asyncio.run(session())
    assert events[0].type == "session.created"
    kinds = [
        event.type
        for event in events
        if event.type.startswith("input_audio_buffer") or event.type.endswith("transcription.completed")
    ]
    turns = len([kind for kind in kinds if kind == "input_audio_buffer.committed"])
    assert turns >= 2, kinds
    assert (
        kinds
        == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.input_audio_transcription.completed",
        ]
        * turns
    )
    started = [event for event in events if event.type == "input_audio_buffer.speech_started"]
    stopped = [event for event in events if event.type == "input_audio_buffer.speech_stopped"]
    completed = [event for event in events if event.type.endswith("transcription.completed")]
    assert (
        [event.item_id for event in started]
        == [event.item_id for event in stopped]
        == [event.item_id for event in completed]
    )
    turn_start = 0
    for begin, end, event in zip(started, stopped, completed):
        assert turn_start <= begin.audio_start_ms < end.audio_end_ms
        turn = audio[turn_start * RATE // 1000 : end.audio_end_ms * RATE // 1000]
        assert event.transcript == transcribe_pcm(server, turn)
        turn_start = end.audio_end_ms
    assert stopped[-1].audio_end_ms > len(audio) * 1000 // RATE - 1500, "the second utterance is a turn"


# -- the protocol's details, with a plain websocket client ---------------------------------------------


async def connect(server, headers: dict | None = None, query: str = "?intent=transcription", **options):
    return await websockets.connect(
        server.url.replace("http", "ws") + "/v1/realtime" + query, additional_headers=headers, **options
    )


async def next_event(socket, kind: str) -> dict:
    """The next event of `kind`, skipping others (deltas, say)."""
    while True:
        event = json.loads(await asyncio.wait_for(socket.recv(), 60))
        if event["type"] == kind:
            return event


def test_g711_and_the_beta_session_update(server):
    """transcription_session.update (the beta name) with G.711 u-law at 8 kHz; the transcript is
    /transcribe's for the same decoded samples. The model is named by an alias, in the URL and in
    the update, as over HTTP."""
    samples = load_audio(RECORDINGS[0], 8000)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 8000, format="RAW", subtype="ULAW")
    ulaw = buffer.getvalue()
    decoded, _ = soundfile.read(
        io.BytesIO(ulaw), samplerate=8000, channels=1, format="RAW", subtype="ULAW", dtype="float32"
    )

    async def session():
        async with await connect(server, query="?intent=transcription&model=whisper-1") as socket:
            created = await next_event(socket, "session.created")
            await socket.send(
                json.dumps(
                    {
                        "type": "transcription_session.update",
                        "session": {
                            "input_audio_format": "g711_ulaw",
                            "turn_detection": None,
                            "input_audio_transcription": {"model": "whisper-1"},
                        },
                    }
                )
            )
            updated = await next_event(socket, "transcription_session.updated")
            for start in range(0, len(ulaw), 800):
                await socket.send(
                    json.dumps(
                        {
                            "type": "input_audio_buffer.append",
                            "audio": base64.b64encode(ulaw[start : start + 800]).decode(),
                        }
                    )
                )
            await socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
            return created, updated, await next_event(socket, "conversation.item.input_audio_transcription.completed")

    created, updated, completed = asyncio.run(session())
    assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert created["session"]["audio"]["input"]["transcription"]["model"] == "whisper-1"
    assert updated["session"]["input_audio_format"] == "g711_ulaw" and updated["session"]["turn_detection"] is None
    assert completed["transcript"] == transcribe_pcm(server, decoded.astype("<f4"), 8000, "pcm_f32le")


def test_clear_and_recoverable_errors(server):
    """Mistakes get OpenAI's error event (with the client's event_id) and the session goes on."""
    speech = pcm16(RECORDINGS[0])
    mistakes = [
        ("not json", "invalid_json", None),
        (json.dumps([1, 2]), "invalid_event", "type"),
        (
            json.dumps({"type": "input_audio_buffer.append", "audio": "@@not base64@@", "event_id": "e1"}),
            "invalid_value",
            "audio",
        ),
        (
            json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\1\2\3").decode()}),
            "invalid_value",
            "audio",
        ),
        (json.dumps({"type": "response.create", "event_id": "e2"}), "unsupported_event", "type"),
        (json.dumps({"type": "input_audio_buffer.shout"}), "unknown_event", "type"),
        (json.dumps({"type": "session.update", "session": {"type": "realtime"}}), "invalid_value", "session.type"),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 10_000_000}}},
                    },
                }
            ),
            "invalid_value",
            "session.audio.input.format.rate",
        ),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 5}}},
                    },
                }
            ),
            "invalid_value",
            "session.audio.input.turn_detection.silence_duration_ms",
        ),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"format": {"type": "audio/pcmu", "rate": 16000}}},
                    },
                }
            ),
            "invalid_value",
            "session.audio.input.format.rate",
        ),
        (json.dumps({"type": "input_audio_buffer.commit", "event_id": "e3"}), "input_audio_buffer_commit_empty", None),
        (b"\0\0\0\0", "invalid_event", None),
    ]

    async def session():
        errors = []
        async with await connect(server) as socket:
            await next_event(socket, "session.created")
            await socket.send(
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
                    }
                )
            )
            await next_event(socket, "session.updated")
            for message, _, _ in mistakes:
                await socket.send(message)
                errors.append(await next_event(socket, "error"))
            await socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64(speech[:RATE])}))
            await socket.send(json.dumps({"type": "input_audio_buffer.clear"}))
            await next_event(socket, "input_audio_buffer.cleared")
            await socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
            errors.append(await next_event(socket, "error"))  # the cleared audio is gone
            for start in range(0, len(speech), CHUNK):
                await socket.send(
                    json.dumps({"type": "input_audio_buffer.append", "audio": b64(speech[start : start + CHUNK])})
                )
            await socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
            completed = await next_event(socket, "conversation.item.input_audio_transcription.completed")
            return errors, completed

    errors, completed = asyncio.run(session())
    for (message, code, param), error in zip(mistakes, errors):
        assert error["error"]["code"] == code, (message, error)
        assert error["error"]["param"] == param, (message, error)
        assert error["error"]["type"] == "invalid_request_error" and error["error"]["message"]
        assert error["event_id"].startswith("event_")
    assert [error["error"]["event_id"] for error in errors[:5]] == [None, None, "e1", None, "e2"]
    assert errors[-1]["error"]["code"] == "input_audio_buffer_commit_empty"
    assert completed["transcript"] == transcribe_pcm(server, speech), "after the clear: this audio alone"


async def refusal(socket) -> tuple[dict, int]:
    error = json.loads(await asyncio.wait_for(socket.recv(), 30))
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(socket.recv(), 30)
    return error, socket.close_code


def test_keys_limits_and_metrics(family, request, tmp_path):
    """API keys as OpenAI clients send them, streams shared with /v1/stream, the message size limit,
    the intent, and the active-streams gauge."""
    if family != "base":
        pytest.skip("one model family is enough")
    folder = request.getfixturevalue("exported_folder")
    with run_server(
        folder, "--api-keys", "k1", "--max-streams", "1", "--stream-max-message-bytes", "4096", log_dir=tmp_path
    ) as server:
        authorised = {"authorization": "Bearer k1"}

        async def scenario():
            results = {}
            async with await connect(server) as socket:
                results["no key"] = await refusal(socket)
            async with await connect(server, {"authorization": "Bearer nope"}) as socket:
                results["wrong key"] = await refusal(socket)
            async with await connect(server, authorised, query="?intent=conversation") as socket:
                results["intent"] = await refusal(socket)
            # The browser form of the key: a subprotocol, beside "realtime".
            async with await connect(server, subprotocols=["realtime", "openai-insecure-api-key.k1"]) as socket:
                results["subprotocol"] = (json.loads(await socket.recv())["type"], socket.subprotocol)
            async with websockets.connect(
                server.url.replace("http", "ws") + "/v1/stream", additional_headers=authorised
            ) as stream:
                await stream.send(json.dumps({"endpointing": False}))
                async with await connect(server, authorised) as socket:
                    results["busy"] = await refusal(socket)
            async with await connect(server, authorised) as socket:
                await next_event(socket, "session.created")
                results["gauge"] = httpx.get(server.url + "/metrics").text
                await socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 5000}))
                results["size"] = await refusal(socket)
            return results

        results = asyncio.run(scenario())
        for case in ("no key", "wrong key"):
            error, code = results[case]
            assert error["type"] == "error" and error["error"]["code"] == "invalid_api_key" and code == 1008
        assert results["intent"][0]["error"]["code"] == "unsupported_intent"
        assert results["subprotocol"] == ("session.created", "realtime")
        error, code = results["busy"]
        assert error["error"]["code"] == "too_many_streams" and "at most 1 streams" in error["error"]["message"]
        assert code == 1013
        assert "asr_active_streams 1.0" in results["gauge"]
        error, code = results["size"]
        assert error["error"]["code"] == "message_too_large" and code == 1009
        assert "asr_active_streams 0.0" in httpx.get(server.url + "/metrics").text
