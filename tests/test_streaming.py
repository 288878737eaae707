"""The streaming engine (`model.streaming.Stream`) on its own: no server, no model. A stub
recognizer hears each segment as its length, so the tests see exactly which samples each final
and partial was given; the audio is real numpy audio through the real resampler and WebRTC's
voice-activity detector."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import soxr

from model.streaming import (
    Heard,
    SampleBuffer,
    SegmentEnd,
    SegmentFailed,
    Stream,
    StreamEvents,
    StreamOptions,
    StreamTooLong,
)

RATE = 16000


def voiced(seconds: float, rate: int = RATE, pitch: float = 140.0) -> np.ndarray:
    """A vowel-like sound: a 140 Hz buzz with 24 harmonics, in syllables of 4 a second; WebRTC's
    detector calls every frame of it speech."""
    t = np.arange(int(seconds * rate)) / rate
    buzz = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 25))
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.3 * buzz / np.abs(buzz).max() * syllables).astype(np.float32)


def silence(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.float32)


class StubRecognizer:
    """Hears a segment as "<samples> samples", one word spanning it from 0.1 s; `gate`, when
    given, holds every partial until it is set; `failure` makes every final fail with it."""

    name = "stub"

    def __init__(self, rate: int = RATE, gate: asyncio.Event | None = None, failure: Exception | None = None):
        self.rate, self.min_samples = rate, 400
        self.gate, self.failure = gate, failure
        self.windows: list[np.ndarray] = []
        self.segments: list[np.ndarray] = []

    async def partial(self, window: np.ndarray) -> Heard | None:
        self.windows.append(window)
        if self.gate is not None:
            await self.gate.wait()
        return Heard(f"{len(window)} samples")

    async def final(self, segment: np.ndarray) -> Heard:
        self.segments.append(segment)
        if self.failure is not None:
            raise SegmentFailed(self.failure)
        words = [{"word": "segment", "start": 0.1, "end": len(segment) / self.rate, "confidence": 0.9}]
        return Heard(f"{len(segment)} samples", words, 0.9)


class Recorded(StreamEvents):
    """Every event, in order, as (name, details)."""

    def __init__(self):
        self.log: list[tuple[str, object]] = []

    async def speech_started(self, at: float) -> None:
        self.log.append(("speech_started", at))

    async def partial(self, text: str, words: list[dict]) -> None:
        self.log.append(("partial", text))

    async def segment_ended(self, segment: SegmentEnd) -> bool:
        self.log.append(("segment_ended", segment))
        return True

    async def final(self, text, words, start, end, confidence, alternatives=None, search=None) -> None:
        self.log.append(("final", {"text": text, "words": words, "start": start, "end": end, "confidence": confidence}))

    async def failed(self, error: Exception) -> None:
        self.log.append(("failed", error))

    def named(self, name: str) -> list:
        return [details for kind, details in self.log if kind == name]


async def feed(stream: Stream, audio: np.ndarray, chunk_seconds: float = 0.1, rate: int = RATE) -> None:
    """As a client sends it: in chunks, the event loop free between them (as a websocket's receive leaves it)."""
    step = int(chunk_seconds * rate)
    for at in range(0, len(audio), step):
        await stream.add_samples(audio[at : at + step])
        await asyncio.sleep(0)


def test_pauses_end_segments_and_finals_cover_every_sample_once():
    audio = np.concatenate([silence(0.5), voiced(1.0), silence(1.0), voiced(0.6), silence(0.6)])

    async def run():
        events, recognizer = Recorded(), StubRecognizer()
        stream = Stream(events, recognizer, StreamOptions(endpointing_ms=300, interim_results=False))
        await feed(stream, audio)
        await stream.finish_segment("eof")
        return events, recognizer, stream

    events, recognizer, stream = asyncio.run(run())
    ended = events.named("segment_ended")
    assert [segment.reason for segment in ended] == ["pause", "pause", "eof"]
    assert [segment.heard_speech for segment in ended] == [True, True, False]
    # Each pause is found within the 100 ms chunk in which 300 ms of non-speech followed the speech.
    assert 1.8 <= ended[0].end <= 2.0 and 3.4 <= ended[1].end <= 3.6, ended
    # Speech is heard where the voice starts (0.5 s, 2.5 s), to one 30 ms frame.
    starts = events.named("speech_started")
    assert len(starts) == 2 and abs(starts[0] - 0.5) <= 0.03 and abs(starts[1] - 2.5) <= 0.03, starts
    # The segments tile the stream: no sample lost, none given twice.
    assert np.array_equal(np.concatenate(recognizer.segments), audio)
    finals = events.named("final")
    assert [final["start"] for final in finals] == [0.0, ended[0].end, ended[1].end]
    assert [final["end"] for final in finals] == [segment.end for segment in ended]
    assert finals[-1]["end"] == round(len(audio) / RATE, 3) and stream.finals == 3
    # Words' times move from the segment's start to the stream's.
    assert [final["words"][0]["start"] for final in finals] == [round(final["start"] + 0.1, 3) for final in finals]
    assert finals[1]["text"] == f"{len(recognizer.segments[1])} samples"


def test_long_segments_end_at_max_segment_seconds_without_endpointing():
    async def run():
        events, recognizer = Recorded(), StubRecognizer()
        stream = Stream(
            events, recognizer, StreamOptions(endpointing_ms=None, max_segment_seconds=1.0, interim_results=False)
        )
        await feed(stream, voiced(2.5))
        await stream.finish_segment("eof")
        return events, recognizer

    events, recognizer = asyncio.run(run())
    assert [(s.reason, s.start, s.end) for s in events.named("segment_ended")] == [
        ("length", 0.0, 1.0),
        ("length", 1.0, 2.0),
        ("eof", 2.0, 2.5),
    ]
    assert events.named("speech_started") == []  # the detector is off
    assert [len(segment) for segment in recognizer.segments] == [RATE, RATE, RATE // 2]


def test_partials_come_every_half_second_over_the_segments_last_seconds_and_before_its_final():
    async def run():
        events, recognizer = Recorded(), StubRecognizer()
        stream = Stream(events, recognizer, StreamOptions(endpointing_ms=None, partial_window_seconds=1.0))
        await feed(stream, voiced(3.0))
        await stream.finish_segment("finalize")
        return events, recognizer

    events, recognizer = asyncio.run(run())
    audio = voiced(3.0)
    # One every 0.5 s of audio; at most the last 1.0 s, and exactly the segment's last samples.
    assert [len(window) for window in recognizer.windows] == [8000, 16000, 16000, 16000, 16000, 16000]
    assert np.array_equal(recognizer.windows[2], audio[RATE // 2 : 3 * RATE // 2])
    assert [kind for kind, _ in events.log] == ["partial"] * 6 + ["segment_ended", "final"]


def test_a_slow_partial_is_not_queued_behind_another():
    async def run():
        gate = asyncio.Event()
        events, recognizer = Recorded(), StubRecognizer(gate=gate)
        stream = Stream(events, recognizer, StreamOptions(endpointing_ms=None))
        await feed(stream, voiced(2.0))
        held = len(recognizer.windows)  # the first partial still waits: none other was started
        gate.set()  # the next chunk starts one at once, over the whole segment so far
        await asyncio.sleep(0)
        await feed(stream, voiced(1.0))
        await stream.finish_segment("finalize")
        return held, events, recognizer

    held, events, recognizer = asyncio.run(run())
    assert held == 1
    assert [len(window) for window in recognizer.windows] == [8000, 33600, 41600]
    assert events.named("partial") == ["8000 samples", "33600 samples", "41600 samples"]


def test_audio_at_another_rate_is_resampled_per_segment_as_offline():
    audio = voiced(1.0, rate=8000)

    async def run():
        events, recognizer = Recorded(), StubRecognizer()
        stream = Stream(
            events,
            recognizer,
            StreamOptions(sample_rate=8000, endpointing_ms=None, interim_results=False, resample_per_segment=True),
        )
        await feed(stream, audio, rate=8000)
        await stream.finish_segment("finalize")
        await feed(stream, audio, rate=8000)
        await stream.finish_segment("finalize")
        return recognizer

    recognizer = asyncio.run(run())
    offline = soxr.resample(audio, 8000, RATE)
    assert len(recognizer.segments) == 2
    for segment in recognizer.segments:  # each the whole 1 s, as resampled in one go
        assert len(segment) == len(offline) == RATE
        assert np.allclose(segment, offline, atol=1e-4)


def test_a_stream_over_its_limit_of_audio_is_refused():
    async def run():
        stream = Stream(Recorded(), StubRecognizer(), StreamOptions(max_stream_seconds=1.0, endpointing_ms=None))
        await feed(stream, voiced(1.0))
        await stream.add_samples(silence(0.01))

    with pytest.raises(StreamTooLong, match="over its limit of 1 s of audio"):
        asyncio.run(run())


def test_a_failed_segment_is_reported_and_by_default_ends_the_stream():
    failure = RuntimeError("the recognizer is busy")

    async def run(events: StreamEvents):
        stream = Stream(events, StubRecognizer(failure=failure), StreamOptions(endpointing_ms=None))
        await feed(stream, voiced(0.5))
        await stream.finish_segment("finalize")
        return stream

    events = Recorded()
    stream = asyncio.run(run(events))
    assert (
        events.named("failed") == [failure] and events.named("final") == [] and stream.finals == 1
    )  # a failure answers the client too
    with pytest.raises(RuntimeError, match="the recognizer is busy"):
        asyncio.run(run(StreamEvents()))


def test_a_discarded_segment_is_never_transcribed_and_the_clock_runs_on():
    async def run():
        events, recognizer = Recorded(), StubRecognizer()
        stream = Stream(events, recognizer, StreamOptions(endpointing_ms=1000))
        await feed(stream, np.concatenate([voiced(0.6), silence(0.6)]))  # a pause too short to end the segment
        stream.discard_segment()
        await feed(stream, np.concatenate([silence(0.3), voiced(0.5)]))
        await stream.finish_segment("finalize")
        return events, recognizer

    events, recognizer = asyncio.run(run())
    assert len(recognizer.segments) == 1 and np.array_equal(
        recognizer.segments[0], np.concatenate([silence(0.3), voiced(0.5)])
    )
    assert [(f["start"], f["end"]) for f in events.named("final")] == [(1.2, 2.0)]
    # The detector judges afresh from 1.2 s: the second speech starts at 1.5 s.
    starts = events.named("speech_started")
    assert len(starts) == 2 and abs(starts[0]) <= 0.03 and abs(starts[1] - 1.5) <= 0.03, starts


def test_reconfigure_keeps_the_open_segment_and_refuses_a_model_at_another_rate():
    async def run():
        events, recognizer = Recorded(), StubRecognizer()
        stream = Stream(events, recognizer, StreamOptions(endpointing_ms=None, interim_results=False))
        await feed(stream, voiced(0.5))
        with pytest.raises(ValueError, match="takes audio at 8000 Hz, this stream's model at 16000 Hz"):
            stream.reconfigure(StreamOptions(), StubRecognizer(rate=8000))
        other = StubRecognizer()
        stream.reconfigure(StreamOptions(sample_rate=8000, endpointing_ms=None, interim_results=False), other)
        await feed(stream, voiced(0.5, rate=8000), rate=8000)
        stream.flush_resampler()
        await stream.finish_segment("eof")
        return recognizer, other

    recognizer, other = asyncio.run(run())
    assert recognizer.segments == [] and len(other.segments) == 1
    assert abs(len(other.segments[0]) - RATE) <= 1  # 0.5 s at 16 kHz, then 0.5 s at 8 kHz resampled


@pytest.mark.parametrize(
    "options, problem",
    [
        (dict(endpointing_ms=10), "endpointing_ms must be at least one 30 ms"),
        (dict(sample_rate=0), "sample_rate must be a positive"),
        (dict(max_segment_seconds=0), "max_segment_seconds must be a positive"),
        (dict(vad_aggressiveness=4), "vad_aggressiveness is WebRTC's mode"),
    ],
)
def test_options_out_of_range_say_what_is_wrong(options, problem):
    with pytest.raises(ValueError, match=problem):
        StreamOptions(**options)


def test_sample_buffer_joins_many_tiny_pieces_and_reads_any_tail():
    buffer, audio = SampleBuffer(), np.arange(1000, dtype=np.float32)
    for sample in audio:
        buffer.append(audio[int(sample) : int(sample) + 1])
    buffer.append(audio[:0])
    assert len(buffer) == 1000 and len(buffer._chunks) == 1000 // SampleBuffer.JOIN_EVERY
    assert np.array_equal(buffer.tail(300), audio[-300:]) and np.array_equal(buffer.tail(5000), audio)
    assert np.array_equal(buffer.take(), audio) and len(buffer) == 0 and len(buffer.take()) == 0
