"""The soak's websocket clients (`bench/soak.py`): streams on both protocols, and clients that abort,
squat and flood; and SIGTERM with streams open.

Each client runs its sessions back to back until `stop` (a `time.monotonic()` value) in an event
loop of its own thread, and tallies what it saw in a `StreamTally`: sessions, finals, and every
close by code. A session that ends any way its client did not ask for and the server's limits do
not explain (a 1006 drop, a 1011, a connection error) is `lost`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import websockets

CHUNK_SECONDS = 0.1  # audio per message
SPEED = 4.0  # audio sent this many times faster than real time


@dataclass
class StreamTally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    sessions: Counter = field(default_factory=Counter)  # client kind -> sessions begun
    finals: int = 0  # finals (/v1/stream) and completed turns (/v1/realtime) with text
    closes: Counter = field(default_factory=Counter)  # (client kind, close code) -> sessions
    lost: list = field(default_factory=list)  # what went wrong, for sessions that ended unexplained

    def add(self, **counts) -> None:
        with self.lock:
            for name, value in counts.items():
                if name == "finals":
                    self.finals += value
                elif name == "lost":
                    self.lost.append(value)


RATE = 16000  # the streams' sample rate (the protocol's default)


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


async def _stream_session(url: str, audio: np.ndarray, tally: StreamTally) -> int:
    """/v1/stream: config, audio a little faster than real time, eof; the finals until the close."""
    async with websockets.connect(url + "/v1/stream") as socket:
        await socket.send(json.dumps({"interim_results": True}))
        step = int(RATE * CHUNK_SECONDS)
        data = pcm16(audio)
        for start in range(0, len(audio), step):
            await socket.send(data[2 * start : 2 * (start + step)])
            await asyncio.sleep(CHUNK_SECONDS / SPEED)
        await socket.send(json.dumps({"type": "eof"}))
        async for message in socket:
            event = json.loads(message)
            if event["type"] == "final" and event["text"]:
                tally.add(finals=1)
    return socket.close_code


async def _realtime_session(url: str, audio24k: np.ndarray, tally: StreamTally) -> int:
    """/v1/realtime: a session without turn detection, the audio appended, one commit, its transcript."""
    async with websockets.connect(url + "/v1/realtime?intent=transcription") as socket:
        await socket.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
                }
            )
        )
        step = int(24000 * CHUNK_SECONDS)
        for start in range(0, len(audio24k), step):
            chunk = base64.b64encode(pcm16(audio24k[start : start + step])).decode()
            await socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            await asyncio.sleep(CHUNK_SECONDS / SPEED)
        await socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
        async for message in socket:
            event = json.loads(message)
            if event["type"].endswith("transcription.completed"):
                tally.add(finals=1 if event["transcript"] else 0)
                await socket.close()
            elif event["type"].endswith("transcription.failed"):
                tally.add(lost=f"realtime: {event['error']['code']}")
                await socket.close()
    return socket.close_code


async def _aborting_session(url: str, audio: np.ndarray, _: StreamTally) -> int:
    """Half the audio, then the TCP connection dropped with no close frame."""
    socket = await websockets.connect(url + "/v1/stream")
    await socket.send("{}")
    await socket.send(pcm16(audio[: len(audio) // 2]))
    socket.transport.abort()
    return 0  # the client's own doing


async def _squatting_session(url: str, _: np.ndarray, __: StreamTally) -> int:
    """Control messages only (finalize, empty frames): the server must close it as idle."""
    async with websockets.connect(url + "/v1/stream") as socket:
        await socket.send("{}")
        try:
            while True:
                await socket.send(json.dumps({"type": "finalize"}))
                await socket.send(b"")
                await asyncio.sleep(1.0)
        except websockets.ConnectionClosed:
            pass
    return socket.close_code


async def _flooding_session(url: str, _: np.ndarray, __: StreamTally) -> int:
    """Thousands of 2-byte frames, then a message nested 50,000 deep: the server answers 1007."""
    async with websockets.connect(url + "/v1/stream") as socket:
        await socket.send(json.dumps({"interim_results": False}))
        try:
            for _ in range(5000):
                await socket.send(b"\1\0")
            await socket.send("[" * 50_000 + "]" * 50_000)
            async for _ in socket:
                pass
        except websockets.ConnectionClosed:
            pass
    return socket.close_code


SESSIONS = {
    "stream": _stream_session,
    "realtime": _realtime_session,
    "abort": _aborting_session,
    "squat": _squatting_session,
    "flood": _flooding_session,
}
# The close codes each kind of client may get without anything being wrong: 1013 is a full server.
EXPECTED = {
    "stream": {1000, 1013},
    "realtime": {1000, 1013},
    "abort": {0},
    "squat": {1001, 1013},
    "flood": {1007, 1013},
}


def client(kind: str, url: str, recordings: list[np.ndarray], tally: StreamTally, stop: float) -> None:
    """Sessions of one kind back to back until `stop`."""
    import soxr

    async def run() -> None:
        index = 0
        while time.monotonic() < stop:
            audio = recordings[index % len(recordings)]
            index += 1
            if kind == "realtime":
                audio = soxr.resample(audio, 16000, 24000)
            with tally.lock:
                tally.sessions[kind] += 1
            try:
                code = await SESSIONS[kind](url, audio, tally)
            except (OSError, websockets.WebSocketException) as error:
                tally.add(lost=f"{kind}: {type(error).__name__}: {error}")
                await asyncio.sleep(0.5)
                continue
            with tally.lock:
                tally.closes[kind, code] += 1
            if code not in EXPECTED[kind]:
                tally.add(lost=f"{kind}: closed with {code}")
            if code == 1013 or kind == "abort":  # a full server; an abort a second, not a connection storm
                await asyncio.sleep(1.0)

    asyncio.run(run())


def sigterm_during_streams(server, recordings: list[np.ndarray], count: int = 4) -> tuple[int, int, int]:
    """Open `count` streams, send each a recording, SIGTERM the server; (streams, those that got a
    "closing" message, a final covering all the audio they sent and close 1001, the server's exit code)."""
    url = server.url.replace("http", "ws")

    async def one(audio: np.ndarray, sent: asyncio.Event) -> bool:
        async with websockets.connect(url + "/v1/stream") as socket:
            await socket.send(json.dumps({"endpointing": False, "interim_results": False}))
            data = pcm16(audio)
            for start in range(0, len(data), 3200):
                await socket.send(data[start : start + 3200])
            sent.set()
            received = [json.loads(message) async for message in socket]
        kinds = [event["type"] for event in received]
        # The final must cover all the audio sent before the signal (its text may rightly be empty:
        # the soak's English speech is not what a digits model transcribes).
        covered = kinds[-1:] == ["final"] and received[-1]["end"] >= len(audio) / RATE - 0.05
        return kinds[-2:] == ["closing", "final"] and covered and socket.close_code == 1001

    async def run() -> list[bool]:
        sent = [asyncio.Event() for _ in range(count)]
        sessions = [
            asyncio.ensure_future(one(recordings[index % len(recordings)], sent[index])) for index in range(count)
        ]
        for event in sent:
            await event.wait()
        server.process.send_signal(15)
        return list(await asyncio.gather(*sessions, return_exceptions=True))

    results = asyncio.run(run())
    exit_code = server.process.wait(120)
    return count, sum(result is True for result in results), exit_code
