"""One served model: the core's transcription steps (`model.pipeline`) with the server's seams —
the cross-request `Batcher` infers, the beam-search worker processes decode — and its limits,
metrics and errors.

HTTP, the OpenAI-compatible route and streaming finals all go through `Pipeline.transcribe`,
which runs the same steps as the CLI, so the same audio gives the same text whichever way it
arrives. Refusals are domain errors (`service.errors`); the HTTP and websocket layers choose
statuses.
"""

from __future__ import annotations

import asyncio
import dataclasses
from functools import partial

import numpy as np

from model.decoding import Decoded, SearchUnavailable
from model.lexicon import read_lexicon
from model.onnx import OnnxRecognizer
from model.options import DecodeOptions, OptionError, check_options, choose_decoder
from model.pipeline import Decoders, Timings, Transcript, UnusableLogits, Windowing, run_async
from model.pipeline import Pipeline as Steps

from .audio_input import check_usable
from .batching import Batcher, QueueFull
from .beam_workers import BeamSearch, DecoderUnavailable, SearchTooLong
from .errors import AudioTooLarge, Busy, InvalidOption, TooCostly, UnusableAudio
from .metrics import Metrics
from .options import DecodeRequest
from .settings import ModelSpec, Settings

QUICK_GREEDY_SECONDS = 5.0  # greedy decoding of up to this much audio runs on the event loop (<= ~0.35 ms)


class Pipeline:
    """One model: its engines (ONNX Runtime sessions, one batch loop each on one queue), batching
    queue and beam-search workers, behind the core's steps."""

    def __init__(
        self,
        settings: Settings,
        spec: ModelSpec,
        engines: list[OnnxRecognizer],
        metrics: Metrics,
        wide: OnnxRecognizer | None = None,
    ):
        self.settings = settings
        self.name = spec.name
        self.lm = spec.lm
        self.engines = engines
        self.wide = wide  # the session with every core, for lone requests (service.batching)
        self.engine = engines[0]  # what every session shares: vocabulary, frames, sample rate
        engine = self.engine
        self.metrics = metrics.model(spec.name, sessions=len(engines), wide=wide is not None)
        self.rate = engine.sampling_rate
        windowing = Windowing(settings.chunk_seconds, settings.chunk_context_seconds)
        self.steps = Steps(engine, spec.lm is not None, windowing, settings.beam_width, spec.name)
        self.batcher = Batcher(
            engines,
            settings.batch_size,
            settings.max_wait_ms,
            settings.queue_capacity,
            on_batch=self.metrics.record_batch,
            name=spec.name,
            max_batch_samples=int(settings.max_batch_audio_seconds * self.rate),
            wide=wide,
        )
        lexicon = read_lexicon(spec.lexicon) if spec.lexicon is not None else None
        self.decoders = Decoders(engine.vocab, engine.frame_seconds, spec.lm, spec.lm_alpha, spec.lm_beta, lexicon)
        self.beam = BeamSearch(
            self.decoders,
            settings.decode_workers,
            settings.decode_queue_capacity,
            settings.decode_timeout_seconds,
            on_restart=self.metrics.decode_worker_restarts.inc,
        )

    def start(self) -> None:
        self.batcher.start()
        self.beam.start()
        warm = np.random.default_rng(0).standard_normal(self.rate).astype(np.float32) * 0.1
        for engine in (*self.engines, *([self.wide] if self.wide else [])):  # the first run allocates and plans
            engine.logits([warm])

    def stop(self) -> None:
        self.batcher.stop()
        self.beam.close()

    def options(self, request: DecodeRequest) -> DecodeOptions:
        """A request's options as the core takes them, with this server's min_confidence."""
        try:
            return request.options(self.settings.min_confidence)
        except OptionError as error:
            raise InvalidOption("invalid_parameter", str(error), error.field) from None

    def decoder(self, request: DecodeRequest) -> str:
        """The decoder a request gets, by the core's one rule (`model.options.choose_decoder`)."""
        return choose_decoder(self.options(request), self.lm is not None)

    def check_options(self, request: DecodeRequest) -> None:
        """What the request model cannot know: this server's limits, and this model's alphabet."""
        limit = self.settings.max_beam_width
        if request.beam_width is not None and request.beam_width > limit:
            raise InvalidOption(
                "invalid_parameter",
                f"beam_width {request.beam_width} is over this server's limit of {limit}",
                "beam_width",
            )
        try:
            check_options(self.options(request), self.engine.vocab, self.lm is not None)
        except OptionError as error:
            raise InvalidOption(
                "invalid_phrases" if error.unwritable else "invalid_parameter", str(error), error.field
            ) from None

    def check_cost(self, seconds: float, request: DecodeRequest) -> None:
        """Refuse, before any work, a beam search longer than this server's limit: on noise it costs
        up to ~50 ms a second of audio, and one past the decode deadline fails however often it is
        retried."""
        limit = self.settings.max_beam_audio_seconds
        if self.decoder(request) == "beam" and seconds > limit:
            raise AudioTooLarge(
                "audio_too_long_for_beam_search",
                f"the audio is {seconds:.1f} s long; beam search "
                f"takes at most {limit:g} s on this server (ask "
                "for decoder=greedy, or send shorter audio)",
                "decoder",
            )

    async def infer(self, pieces: list[np.ndarray], timings: Timings) -> list[np.ndarray]:
        """The `infer` seam: the pieces batched with other requests' (`Batcher`); their wait and
        inference times go into `timings`. Busy when the inference queue is full."""
        try:
            results = await self.batcher.infer(pieces)
        except QueueFull as error:
            raise Busy("overloaded", f"{error}; retry shortly", retry_after=1) from None
        finally:
            self.metrics.queue_depth.set(self.batcher.depth)
        for result in results:
            self.metrics.queue_seconds.observe(result.queue_ms / 1000)
        timings.queue = max(result.queue_ms for result in results)
        timings.inference = sum(result.inference_ms for result in results)
        return [result.logits for result in results]

    async def decode_step(self, logits: np.ndarray, options: DecodeOptions) -> Decoded:
        """The `decode` seam: greedy on the event loop for a few seconds of audio (0.2 ms for 2.5 s,
        less than a worker thread's round trip), else in a thread (an hour of audio is 180,000 frames
        to walk); beam search in a worker process. Busy when no worker can take the search now."""
        if options.decoder == "greedy":
            if len(logits) * self.engine.frame_seconds <= QUICK_GREEDY_SECONDS:
                return self.decoders.decode(logits, options)
            return await asyncio.to_thread(self.decoders.decode, logits, options)
        try:
            return await self.beam.decode(logits, options)
        except DecoderUnavailable as error:
            raise Busy("decoder_unavailable", f"{error}; retry shortly", retry_after=1) from None
        except SearchTooLong as error:
            raise TooCostly("beam_search_too_long", str(error)) from None
        except SearchUnavailable as error:
            raise InvalidOption("invalid_parameter", str(error), "beam_search") from None

    async def logits(self, samples: np.ndarray) -> tuple[np.ndarray, Timings]:
        """One utterance's stitched (frames, vocab) logits, as the steps infer them. Busy when the
        inference queue is full."""
        timings = Timings()
        (logits,) = await run_async(
            self.steps.logits_steps([samples]), partial(self.infer, timings=timings), self.decode_step
        )
        return logits, timings

    async def decode(self, logits: np.ndarray, decoder: str, request: DecodeRequest) -> Decoded:
        """Logits from `logits`, decoded with `decoder` and the request's options (a stream's partials)."""
        options = dataclasses.replace(self.options(request), decoder=decoder)
        return await self.decode_step(logits, self.steps.resolve(options))

    async def transcribe(self, samples: np.ndarray, request: DecodeRequest) -> Transcript:
        """Samples at the model's rate -> its transcript, every option checked before any work."""
        self.check_options(request)
        check_usable(samples, self.engine.min_samples, self.rate)
        self.check_cost(len(samples) / self.rate, request)
        timings = Timings()
        try:
            (result,) = await run_async(
                self.steps.transcribe_steps([samples], self.options(request)),
                partial(self.infer, timings=timings),
                self.decode_step,
            )
        except UnusableLogits as error:
            raise UnusableAudio("unusable_audio", str(error)) from None
        result.timings.queue, result.timings.inference = timings.queue, timings.inference
        self.metrics.decode_seconds(result.decoder, result.beam_search).observe(result.timings.decode / 1000)
        if not request.word_timestamps:
            result.words = []
        return result
