"""The streaming engine: audio in as it arrives, partial results while a segment is open, a final
per segment.

Protocols adapt it (`service.streaming`: /v1/stream's JSON messages; `service.realtime`: OpenAI's
Realtime events): they feed it samples and say when a segment ends; it reports through
`StreamEvents`. It knows nothing of websockets or of the server, and of the model only what
`Recognizer` says, so it runs as well on a stub as on a served model.

Segments end at pauses found by voice-activity detection (`endpointing_ms` of non-speech after
speech; None: never), at `max_segment_seconds`, and when the protocol says so (`finish_segment`:
"finalize", "eof"). A final is the recognizer's transcription of exactly that segment's audio.
Partials decode only the last `partial_window_seconds` of the segment, so their cost stays bounded
however long a stream runs; at most one is in flight, so a slow recognizer gets fewer, never a queue.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import soxr
import webrtcvad  # WebRTC's voice-activity detector: tiny, fast, no model files

SegmentReason = Literal["pause", "length", "finalize", "eof"]


@dataclass(frozen=True)
class StreamOptions:
    """How one stream segments and reports. `reconfigure` applies new ones to the audio that comes next."""

    sample_rate: int = 16000  # Hz of the samples given to `add_samples`; resampled to the recognizer's rate
    interim_results: bool = True  # partials while a segment is open
    endpointing_ms: int | None = 800  # non-speech after speech that ends a segment (counted in 30 ms frames)
    max_segment_seconds: float = 30.0  # a segment this long ends there
    max_stream_seconds: float = math.inf  # audio one stream may hold in all; past it, StreamTooLong
    # Each segment's audio resampled on its own (the resampler flushed when a segment ends), so a
    # segment's transcript equals the offline one of exactly the audio sent during it, at its rate.
    resample_per_segment: bool = False
    partial_window_seconds: float = 8.0  # partials decode at most this much of the segment's end
    partial_every_seconds: float = 0.5  # of new audio between partials
    vad_aggressiveness: int = 2  # WebRTC's mode: 0 (calls the most audio speech) to 3 (the least)

    def __post_init__(self):
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive number of Hz, not {self.sample_rate}")
        if self.endpointing_ms is not None and self.endpointing_ms < VAD_FRAME_MS:
            raise ValueError(
                f"endpointing_ms must be at least one {VAD_FRAME_MS} ms detector frame (or None), "
                f"not {self.endpointing_ms}"
            )
        for name in ("max_segment_seconds", "max_stream_seconds", "partial_window_seconds", "partial_every_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {getattr(self, name)}")
        if self.vad_aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"vad_aggressiveness is WebRTC's mode, 0 to 3, not {self.vad_aggressiveness}")


@dataclass
class Heard:
    """What a recognizer made of a window or a segment. `words`: dicts with `word`, `start` and
    `end` (seconds from the window's or segment's first sample) and `confidence`; `alternatives`:
    the n best transcripts when they were asked for, else None; `search`: how it was decoded
    (`decoder`, and `beam_search` after a beam search), as a transcription response names it."""

    text: str
    words: list[dict] = field(default_factory=list)
    confidence: float = 0.0
    alternatives: list[dict] | None = None
    search: dict[str, str] = field(default_factory=dict)


class SegmentFailed(Exception):
    """The recognizer could not transcribe a segment (busy, unusable audio); `cause` is its own
    error, for the protocol to report (`StreamEvents.failed`)."""

    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


class StreamTooLong(Exception):
    """The stream holds more audio than `max_stream_seconds`."""


class Recognizer(Protocol):
    """What the engine needs of a model: its rate, and two ways to hear audio (mono float32 samples
    at `rate`)."""

    name: str  # in messages
    rate: int  # Hz
    min_samples: int  # the shortest window worth a partial: the model's receptive field, in samples

    async def partial(self, window: np.ndarray) -> Heard | None:
        """A quick (greedy) decode of a segment's last seconds; None when too busy now (the partial is skipped)."""

    async def final(self, segment: np.ndarray) -> Heard:
        """The segment's transcription; an empty `Heard` for silence or audio too short for one
        frame; SegmentFailed when it cannot be had."""


@dataclass
class SegmentEnd:
    """A segment that has just ended, before its transcription. Times in seconds from the stream's start."""

    start: float
    end: float
    reason: SegmentReason
    heard_speech: bool  # the voice-activity detector heard speech in it (always False without endpointing)


class StreamEvents:
    """What a stream reports, in the order it happens. Subclasses send them in a protocol's words."""

    async def speech_started(self, at: float) -> None:
        """The voice-activity detector heard the first speech of the segment, `at` seconds into the stream."""

    async def partial(self, text: str, words: list[dict]) -> None:
        """A greedy decode of the open segment's last seconds; `words`' times within the window."""

    async def segment_ended(self, segment: SegmentEnd) -> bool:
        """The segment is closed; return False to drop it untranscribed."""
        return True

    async def final(
        self,
        text: str,
        words: list[dict],
        start: float,
        end: float,
        confidence: float,
        alternatives: list[dict] | None = None,
        search: dict[str, str] | None = None,
    ) -> None:
        """The segment's transcription (words' times from the stream's start), its confidence, its
        n best transcripts if they were asked for, and how it was decoded (`Heard.search`)."""

    async def failed(self, error: Exception) -> None:
        """The segment could not be transcribed (`error`: the recognizer's own); by default that ends the stream."""
        raise error


VAD_RATE = 16000  # Hz: a rate WebRTC's detector takes
VAD_FRAME_MS = 30  # a frame length it takes
VAD_FRAME = VAD_RATE * VAD_FRAME_MS // 1000  # samples


class SampleBuffer:
    """Samples appended in amortised O(1), joined only when read: a stream of tiny messages must
    not copy its whole open segment on every one. Every 256 appended pieces are joined into one,
    so a stream of one-sample messages does not hold one array object per sample."""

    JOIN_EVERY = 256

    def __init__(self):
        self._chunks: list[np.ndarray] = []  # joined pieces
        self._recent: list[np.ndarray] = []  # fewer than JOIN_EVERY pieces, as they came
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def append(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        self._recent.append(samples)
        self._length += len(samples)
        if len(self._recent) >= self.JOIN_EVERY:
            self._chunks.append(np.concatenate(self._recent))
            self._recent = []

    def tail(self, count: int) -> np.ndarray:
        """The last `count` samples, joining only the pieces that hold them."""
        needed, taken = [], 0
        for piece in reversed(self._chunks + self._recent):
            if taken >= count:
                break
            needed.append(piece)
            taken += len(piece)
        joined = np.concatenate(needed[::-1]) if needed else np.zeros(0, dtype=np.float32)
        return joined[len(joined) - min(count, len(joined)) :]

    def take(self) -> np.ndarray:
        """Every sample, and the buffer is empty again."""
        pieces = self._chunks + self._recent
        joined = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        self._chunks, self._recent, self._length = [], [], 0
        return joined


class PauseDetector:
    """WebRTC's voice-activity detector over a stream, 30 ms frame by frame: when the segment's
    speech began, and whether a long enough pause has followed it. `rate`: Hz of the samples fed."""

    def __init__(self, rate: int, aggressiveness: int):
        self.rate = rate
        self.vad = webrtcvad.Vad(aggressiveness)
        self.pending = np.zeros(0, dtype=np.float32)  # at VAD_RATE, less than a frame
        self.seconds = 0.0  # audio judged so far, from the stream's start
        self.silence_ms = 0  # non-speech since the last speech
        self.heard_speech = False  # in this segment
        self.speech_at = 0.0  # when the segment's speech began, seconds from the stream's start

    def paused(self, samples: np.ndarray, endpointing_ms: int) -> bool:
        """Judge `samples`; True once `endpointing_ms` of non-speech follow speech."""
        audio = samples if self.rate == VAD_RATE else soxr.resample(samples, self.rate, VAD_RATE)
        self.pending = np.concatenate([self.pending, audio])
        frames = len(self.pending) // VAD_FRAME
        pcm = (np.clip(self.pending[: frames * VAD_FRAME], -1, 1) * 32767).astype("<i2")
        self.pending = self.pending[frames * VAD_FRAME :]
        for index in range(frames):
            if self.vad.is_speech(pcm[index * VAD_FRAME : (index + 1) * VAD_FRAME].tobytes(), VAD_RATE):
                if not self.heard_speech:
                    self.speech_at = round(self.seconds, 3)
                self.heard_speech, self.silence_ms = True, 0
            else:
                self.silence_ms += VAD_FRAME_MS
            self.seconds += VAD_FRAME / VAD_RATE
        return self.heard_speech and self.silence_ms >= endpointing_ms

    def next_segment(self) -> None:
        """A segment ended: the next one has heard nothing yet (the frame in progress carries on)."""
        self.silence_ms, self.heard_speech = 0, False

    def restart(self, at: float) -> None:
        """The audio so far was dropped: judge afresh from `at` seconds into the stream."""
        self.next_segment()
        self.pending = np.zeros(0, dtype=np.float32)
        self.seconds = at


class Stream:
    """One stream: samples in (`add_samples`), events out (`events`), the model behind `recognizer`.
    Sample counts are at the recognizer's rate (`rate`), from the stream's start."""

    def __init__(self, events: StreamEvents, recognizer: Recognizer, options: StreamOptions):
        self.events = events
        self.recognizer = recognizer
        self.rate = recognizer.rate
        self.options = options
        self.resampler = self._resampler()
        self.segment = SampleBuffer()
        self.segment_start = 0  # samples before the open segment
        self.received = 0
        self.since_partial = 0
        self.partial: asyncio.Task | None = None  # at most one partial in flight: a busy server skips, never queues
        self.pauses = PauseDetector(self.rate, options.vad_aggressiveness)
        self.speech_announced = False
        self.finals = 0  # answers sent so far: finals, and segments reported failed

    @property
    def max_samples(self) -> float:
        seconds = self.options.max_stream_seconds
        return math.inf if math.isinf(seconds) else int(seconds * self.rate)

    @property
    def held_seconds(self) -> float:
        """The open segment's audio."""
        return len(self.segment) / self.rate

    def _resampler(self) -> soxr.ResampleStream | None:
        rate = self.options.sample_rate
        return None if rate == self.rate else soxr.ResampleStream(rate, self.rate, 1, dtype="float32")

    def reconfigure(self, options: StreamOptions, recognizer: Recognizer | None = None) -> None:
        """New options for the audio that comes next; the open segment keeps what it has. Another
        `recognizer` transcribes from the open segment on; ValueError if it takes audio at another
        rate than this stream's."""
        if recognizer is not None and recognizer.rate != self.rate:
            raise ValueError(
                f"model '{recognizer.name}' takes audio at {recognizer.rate} Hz, this stream's model "
                f"at {self.rate} Hz; open a new stream for it"
            )
        if options.sample_rate != self.options.sample_rate:
            self.flush_resampler()
        self.options = options
        self.recognizer = recognizer or self.recognizer
        self.resampler = self._resampler()

    async def add_samples(self, samples: np.ndarray) -> None:
        """Mono float samples at `options.sample_rate`; StreamTooLong past `max_stream_seconds`."""
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples)
        self.received += len(samples)
        if self.received > self.max_samples:
            raise StreamTooLong(f"the stream is over its limit of {self.max_samples / self.rate:g} s of audio")
        self.segment.append(samples.astype(np.float32, copy=False))
        self.since_partial += len(samples)
        endpointing = self.options.endpointing_ms
        if endpointing is not None:
            paused = self.pauses.paused(samples, endpointing)
            if self.pauses.heard_speech and not self.speech_announced:
                self.speech_announced = True
                await self.events.speech_started(self.pauses.speech_at)
            if paused:
                await self.finish_segment("pause")
                return
        if len(self.segment) >= self.options.max_segment_seconds * self.rate:
            await self.finish_segment("length")
        elif self.options.interim_results and self.since_partial >= self.options.partial_every_seconds * self.rate:
            self.start_partial()

    def start_partial(self) -> None:
        """Decode the segment's last seconds in the background while audio keeps arriving; if the
        previous partial is still running, skip this one, so a slow server sends partials less
        often instead of falling behind."""
        if self.partial is not None:
            if not self.partial.done():
                return
            self.partial.result()  # a failed partial (e.g. the client went away) ends the stream here
        self.since_partial = 0
        window = self.segment.tail(int(self.options.partial_window_seconds * self.rate))
        if len(window) >= self.recognizer.min_samples:
            self.partial = asyncio.create_task(self._send_partial(window))

    async def _send_partial(self, window: np.ndarray) -> None:
        heard = await self.recognizer.partial(window)
        if heard is not None:
            await self.events.partial(heard.text, heard.words)

    async def settle_partial(self) -> None:
        """Wait for the partial in flight, so that it never arrives after its segment's final."""
        partial, self.partial = self.partial, None
        if partial is not None:
            await partial

    def cancel_partial(self) -> None:
        """The stream is over: stop the partial in flight, or read a failed one's error (the
        stream's end already reported it), so that asyncio has nothing left to complain about."""
        if self.partial is None:
            return
        if not self.partial.done():
            self.partial.cancel()
        elif not self.partial.cancelled():
            self.partial.exception()

    async def finish_segment(self, reason: SegmentReason = "finalize") -> None:
        """Send the final for the audio so far (all of it, nothing trimmed) and start a new segment."""
        await self.settle_partial()
        if self.options.resample_per_segment and reason != "eof":
            self.flush_resampler()
            self.resampler = self._resampler()
        segment, start, heard_speech = self.segment.take(), self.segment_start, self.pauses.heard_speech
        self.segment_start += len(segment)
        self.since_partial, self.speech_announced = 0, False
        self.pauses.next_segment()
        if len(segment) == 0:
            return
        offset, end = round(start / self.rate, 3), round((start + len(segment)) / self.rate, 3)
        if not await self.events.segment_ended(SegmentEnd(offset, end, reason, heard_speech)):
            return
        try:
            heard = await self.recognizer.final(segment)
        except SegmentFailed as failure:
            await self.events.failed(failure.cause)
            self.finals += 1  # an answer all the same: the client waited for it (not idleness)
            return
        words = [
            {
                **word,
                "start": round(word["start"] + start / self.rate, 3),
                "end": round(word["end"] + start / self.rate, 3),
            }
            for word in heard.words
        ]
        await self.events.final(heard.text, words, offset, end, heard.confidence, heard.alternatives, heard.search)
        self.finals += 1

    def discard_segment(self) -> None:
        """Drop the open segment's audio untranscribed; the stream's clock runs on."""
        self.cancel_partial()
        self.partial = None
        self.resampler = self._resampler()  # what it held belonged to the dropped audio
        self.segment_start += len(self.segment.take())
        self.since_partial, self.speech_announced = 0, False
        self.pauses.restart(self.segment_start / self.rate)

    def flush_resampler(self) -> None:
        """Into the open segment: the samples the resampler still holds."""
        if self.resampler is not None:
            tail = self.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            self.segment.append(tail.astype(np.float32, copy=False))
