"""Samples -> transcription, as `model.transcribe` does it, with batching across requests, async and
metrics: windows for long audio, batched inference, stitching, decoding.

HTTP, the OpenAI-compatible route and streaming finals all go through `Pipeline.transcribe`,
so the same audio gives the same text whichever way it arrives, and the same as the CLI.
Refusals are domain errors (`service.errors`); the HTTP and websocket layers choose statuses.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from model.decoding import HOTWORD_WEIGHT, MAX_ALTERNATIVES, BeamOptions, Decoded, check_phrases, greedy_decode, \
    letters
from model.lexicon import read_lexicon
from model.onnx import OnnxRecognizer
from model.phrases import MAX_PHRASES, PhraseError, in_alphabet_case
from model.transcribe import UnusableLogits, Windowing, check_finite, choose_decoder, window_samples
from model.windows import stitch

from .audio_input import check_usable
from .batching import Batcher, QueueFull
from .beam_workers import BeamSearch, DecoderUnavailable, SearchTooLong
from .errors import AudioTooLarge, Busy, InvalidOption, TooCostly, UnusableAudio
from .metrics import Metrics
from .settings import ModelSpec, Settings


def _some_words(schema: dict) -> None:
    """The schema says what `phrases`' check refuses: an empty list, and items with no word (blank,
    or only the commas that separate phrases)."""
    for choice in schema.get("anyOf", [schema]):
        if choice.get("type") == "array":
            choice["minItems"] = 1
            choice["items"] = {**choice.get("items", {}), "pattern": r"[^\s,]"}


class DecodeOptions(BaseModel):
    model_config = {"extra": "forbid"}

    decoder: Literal["greedy", "beam"] | None = Field(
        None, description="default: beam with an LM or when hotwords, alternatives or phrases are asked for, "
                          "else greedy")
    beam_width: int | None = Field(None, ge=1, le=1024)
    hotwords: list[str] = Field(default_factory=list, max_length=100,
                                description="beam search only: words to favour, in any letter case")
    hotword_weight: float = Field(HOTWORD_WEIGHT, ge=0, le=100)
    word_timestamps: bool = True
    alternatives: int | None = Field(None, ge=1, le=MAX_ALTERNATIVES,
                                     description="beam search only: the answer's `alternatives`, the n best "
                                                 "transcripts with their scores, best first")
    phrases: list[str] | None = Field(None, max_length=MAX_PHRASES, json_schema_extra=_some_words,
                                      description="beam search only: the only words or phrases the transcript may "
                                                  "hold (repeated or comma-separated); a transcript is a sequence "
                                                  "of whole phrases, or empty if none fits the audio")

    @field_validator("phrases")
    @classmethod
    def _some_phrases(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not any(phrase.strip() for phrase in value):
            raise ValueError("give at least one word or phrase, or leave phrases out")
        return value


@dataclass
class Timings:
    queue: float = 0.0
    inference: float = 0.0
    decode: float = 0.0


@dataclass
class Transcription:
    text: str
    words: list[dict]
    duration: float
    decoder: str
    timings: Timings = field(default_factory=Timings)
    alternatives: list[dict] | None = None  # when asked for: [{"text", "score"}, ...], best first
    model: str = ""  # the model's name
    confidence: float = 0.0  # the weakest word's (`model.decoding.Decoded.confidence`)

    def to_dict(self) -> dict:
        """As /transcribe answers: `alternatives` only when asked for."""
        body = asdict(self)
        if self.alternatives is None:
            del body["alternatives"]
        return body


class Pipeline:
    """One model: its engine, batching queue and beam-search workers."""

    def __init__(self, settings: Settings, spec: ModelSpec, engine: OnnxRecognizer, metrics: Metrics):
        self.settings = settings
        self.name = spec.name
        self.lm = spec.lm
        self.engine = engine
        self.metrics = metrics.model(spec.name)
        self.rate = engine.sampling_rate
        self.windowing = Windowing(settings.chunk_seconds, settings.chunk_context_seconds)
        self.batcher = Batcher(engine, settings.max_batch_size, settings.max_wait_ms, settings.queue_capacity,
                               on_batch=self.metrics.record_batch, name=spec.name,
                               max_batch_samples=int(settings.max_batch_audio_seconds * self.rate))
        self.beam = BeamSearch(engine.vocab, spec.lm, settings.lm_alpha, settings.lm_beta,
                               settings.decode_workers, settings.decode_queue_capacity,
                               settings.decode_timeout_seconds, on_restart=self.metrics.decode_worker_restarts.inc,
                               lexicon=read_lexicon(spec.lexicon) if spec.lexicon is not None else None)

    def start(self) -> None:
        self.batcher.start()
        self.beam.start()
        warm = np.random.default_rng(0).standard_normal(self.rate).astype(np.float32) * 0.1
        self.engine.logits([warm])  # the first run allocates and plans; do it before the first request

    def stop(self) -> None:
        self.batcher.stop()
        self.beam.close()

    async def logits(self, samples: np.ndarray) -> tuple[np.ndarray, Timings]:
        """Busy when the inference queue is full."""
        windows, pieces = window_samples(samples, self.engine, self.windowing)
        try:
            results = await self.batcher.infer(pieces)
        except QueueFull as error:
            raise Busy("overloaded", f"{error}; retry shortly", retry_after=1) from None
        finally:
            self.metrics.queue_depth.set(self.batcher.depth)
        for result in results:
            self.metrics.queue_seconds.observe(result.queue_ms / 1000)
        timings = Timings(queue=max(r.queue_ms for r in results), inference=sum(r.inference_ms for r in results))
        return stitch(windows, [result.logits for result in results]), timings

    def decoder(self, options: DecodeOptions) -> str:
        """The decoder a request gets: what it asks for, else beam search if there is an LM or it
        needs one (alternatives, phrases), else greedy."""
        needs_beam = bool(options.hotwords or options.alternatives or options.phrases)
        return choose_decoder(options.decoder, self.lm is not None or needs_beam)

    def check_options(self, options: DecodeOptions) -> None:
        """What the request model cannot know: this server's limits, and this model's alphabet."""
        limit = self.settings.max_beam_width
        if options.beam_width is not None and options.beam_width > limit:
            raise InvalidOption("invalid_parameter", f"beam_width {options.beam_width} is over this server's "
                                                     f"limit of {limit}", "beam_width")
        if self.decoder(options) == "greedy":
            for name in ("hotwords", "alternatives", "phrases"):
                if getattr(options, name):
                    raise InvalidOption("invalid_parameter", f"{name} need beam search; greedy decoding gives one "
                                                             "transcript of any words (leave decoder out, or set "
                                                             "decoder=beam)", name)
        if options.phrases:
            try:
                check_phrases(self.engine.vocab, options.phrases)
            except PhraseError as error:
                raise InvalidOption("invalid_phrases", f"phrases: {error}", "phrases") from None

    def check_cost(self, seconds: float, options: DecodeOptions) -> None:
        """Refuse, before any work, a beam search longer than this server's limit: on noise it costs
        up to ~50 ms a second of audio, and one past the decode deadline fails however often it is
        retried."""
        limit = self.settings.max_beam_audio_seconds
        if self.decoder(options) == "beam" and seconds > limit:
            raise AudioTooLarge("audio_too_long_for_beam_search", f"the audio is {seconds:.1f} s long; beam search "
                                                                  f"takes at most {limit:g} s on this server (ask "
                                                                  "for decoder=greedy, or send shorter audio)",
                                "decoder")

    async def transcribe(self, samples: np.ndarray, options: DecodeOptions) -> Transcription:
        self.check_options(options)
        check_usable(samples, self.engine.min_samples, self.rate)
        self.check_cost(len(samples) / self.rate, options)
        logits, timings = await self.logits(samples)
        try:
            check_finite(logits)
        except UnusableLogits as error:
            raise UnusableAudio("unusable_audio", str(error)) from None
        decoder = self.decoder(options)
        started = time.perf_counter()
        decoded = (await self.decode(logits, decoder, options)).mark(self.settings.min_confidence)
        timings.decode = (time.perf_counter() - started) * 1000
        self.metrics.decode_seconds(decoder).observe(timings.decode / 1000)
        words = [asdict(word) for word in decoded.words] if options.word_timestamps else []
        alternatives = [asdict(item) for item in decoded.alternatives] if options.alternatives else None
        return Transcription(decoded.text, words, round(len(samples) / self.rate, 3), decoder, timings, alternatives,
                             self.name, round(decoded.confidence, 4))

    async def decode(self, logits: np.ndarray, decoder: str, options: DecodeOptions) -> Decoded:
        """Busy when no beam-search worker can take the search now."""
        if decoder == "greedy":  # in a thread: an hour of audio is 180,000 frames to walk
            return await asyncio.to_thread(greedy_decode, self.engine.vocab, logits, self.engine.frame_seconds)
        hotwords = in_alphabet_case(options.hotwords, letters(self.engine.vocab))
        beam = BeamOptions(options.beam_width or self.settings.beam_width, hotwords,
                           options.hotword_weight, options.alternatives or 0,
                           tuple(options.phrases) if options.phrases else None)
        try:
            return await self.beam.decode(logits, self.engine.frame_seconds, beam)
        except DecoderUnavailable as error:
            raise Busy("decoder_unavailable", f"{error}; retry shortly", retry_after=1) from None
        except SearchTooLong as error:
            raise TooCostly("beam_search_too_long", str(error)) from None
