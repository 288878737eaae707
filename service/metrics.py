"""Prometheus metrics, prefix `asr_`, in a registry of the app's own, with the standard `process_*`
series. What a model does (queueing, inference, decoding, its audio, its memory) carries a `model`
label; `ModelMetrics` binds them to one model's name.

Streams (`/v1/stream`, `/v1/realtime`) are counted by the `stream_*` and `realtime_*` methods of
`Metrics`: sessions by protocol and close reason, their audio in `asr_audio_seconds_total` under
the endpoint's path, partial and final latency, realtime events by type and the errors sent.
Request latency carries the request id as an exemplar (shown to scrapers that ask for OpenMetrics).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# A partial result is wanted within a few hundred milliseconds, a final within a second or two.
STREAM_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)

# The streams' latency histograms, by kind: name and what each measures.
STREAM_LATENCIES = {
    "partial": (
        "asr_stream_partial_latency_seconds",
        "From the audio a partial result covers arriving to the partial being sent",
    ),
    "final": (
        "asr_stream_final_latency_seconds",
        "From a segment's end (a pause, a commit, the stream's end) to its final transcript being sent",
    ),
}

# Label values, fixed sets so that clients cannot grow the series: anything else is "other".
PROTOCOLS = {"stream": "/v1/stream", "realtime": "/v1/realtime"}  # protocol -> its endpoint
CLOSE_REASONS = (
    "client_closed",
    "idle",
    "max_audio",
    "max_session",
    "shutdown",
    "refused",
    "unauthorised",
    "too_many_streams",
    "invalid",
    "error",
    "other",
)
REALTIME_EVENTS = (
    # from the client
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    # from the server
    "session.created",
    "session.updated",
    "transcription_session.updated",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed",
    "error",
)


def close_reason(code: int | None, error: str | None = None) -> str:
    """The close reason a session is counted under, from its websocket close code and, where one code
    has several causes, the error code sent with it (`service.sessions`: Closed(1001) is idleness,
    Ending(1001, "server_shutting_down") the shutdown, Ending(1008, "session_expired") the session's
    maximum length). None or 1000: the client ended it (eof, or it went away)."""
    if code in (None, 1000, 1005, 1006):
        return "client_closed"
    if code == 1001:
        return "shutdown" if error == "server_shutting_down" else "idle"
    if code == 1008:
        return "max_session" if error == "session_expired" else "unauthorised"
    if code == 1013:
        return "too_many_streams" if error == "too_many_streams" else "refused"
    return {1003: "invalid", 1007: "invalid", 1009: "max_audio", 1011: "error", 1012: "shutdown"}.get(code, "other")


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "asr_requests", "Requests by endpoint and HTTP status", ["endpoint", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "asr_request_duration_seconds",
            "End-to-end request latency (model: the model that answered, empty if none did)",
            ["endpoint", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "asr_queue_wait_seconds", "Time audio waited for a batch", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "asr_inference_seconds", "Model time per batch", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.decode_seconds = Histogram(
            "asr_decode_seconds",
            "CTC decoding time per request (search: the beam search that ran, empty for greedy)",
            ["model", "decoder", "search"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "asr_batch_size",
            "Utterances (or chunks) per inference batch",
            ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=r,
        )
        self.audio_seconds = Counter(
            "asr_audio_seconds", "Seconds of audio transcribed", ["endpoint", "model"], registry=r
        )
        self.real_time_factor = Histogram(
            "asr_real_time_factor",
            "Processing time / audio duration per request",
            ["model"],
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=r,
        )
        self.active_streams = Gauge("asr_active_streams", "Open websocket streams", registry=r)
        self.stream_sessions = Counter(
            "asr_stream_sessions",
            "Websocket sessions ended, by protocol (stream: /v1/stream, realtime: /v1/realtime) and why they closed",
            ["protocol", "reason"],
            registry=r,
        )
        self.stream_latency = {  # by kind: "partial", "final"
            kind: Histogram(name, documentation, ["protocol", "model"], buckets=STREAM_BUCKETS, registry=r)
            for kind, (name, documentation) in STREAM_LATENCIES.items()
        }
        self.realtime_events = Counter(
            "asr_realtime_events",
            "Realtime events by direction (in: from the "
            "client, out: from the server) and type (other: types not served)",
            ["direction", "type"],
            registry=r,
        )
        self.realtime_errors = Counter(
            "asr_realtime_errors", "Realtime error events sent, by their code", ["code"], registry=r
        )
        self.queue_depth = Gauge("asr_queue_depth", "Items waiting for inference", ["model"], registry=r)
        self.session_batches = Counter(
            "asr_session_batches",
            "Inference batches run, by model and ONNX Runtime session (the --sessions of a model share its queue; "
            '"wide": the session with every core, for lone requests)',
            ["model", "session"],
            registry=r,
        )
        self.queue_capacity = Gauge(
            "asr_queue_capacity",
            "Requests that may wait for or be in inference before 503 (the queue_capacity setting)",
            ["model"],
            registry=r,
        )
        self.decode_worker_restarts = Counter(
            "asr_decode_worker_restarts",
            "Beam-search worker processes restarted after dying or overrunning the decode deadline",
            ["model"],
            registry=r,
        )
        self.decode_workers_alive = Gauge(
            "asr_decode_workers_alive", "Beam-search worker processes running", ["model"], registry=r
        )
        self.model_info = Gauge(
            "asr_model_info",
            "The models being served, 1 each (name: the model's)",
            ["name", "variant", "provider"],
            registry=r,
        )
        self.model_memory = Gauge(
            "asr_model_memory_bytes",
            "Memory a model took at start: inference (its "
            "session, warmed up, in the server process) and beam_search (its worker "
            "processes)",
            ["model", "part"],
            registry=r,
        )
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds...
        for protocol in PROTOCOLS:  # shown from the start, at zero
            for reason in ("client_closed", "error"):
                self.stream_sessions.labels(protocol, reason)
        self.realtime_events.labels("in", "input_audio_buffer.append")
        self.realtime_events.labels("out", "conversation.item.input_audio_transcription.completed")
        self.realtime_errors.labels("invalid_value")

    # -- streams: called by the websocket adapters ------------------------------------------------------

    def stream_closed(self, protocol: str, reason: str) -> None:
        """A session of `protocol` ("stream" or "realtime") ended, for `reason` (one of CLOSE_REASONS)."""
        self.stream_sessions.labels(protocol, reason if reason in CLOSE_REASONS else "other").inc()

    def stream_audio(self, protocol: str, model: str, seconds: float) -> None:
        """Seconds of audio a session received, counted as it arrives (in asr_audio_seconds_total,
        endpoint /v1/stream or /v1/realtime)."""
        self.audio_seconds.labels(PROTOCOLS[protocol], model).inc(seconds)

    def stream_partial(self, protocol: str, model: str, seconds: float) -> None:
        self.stream_latency["partial"].labels(protocol, model).observe(seconds)

    def stream_final(self, protocol: str, model: str, seconds: float) -> None:
        self.stream_latency["final"].labels(protocol, model).observe(seconds)

    def realtime_event(self, direction: str, kind: object) -> None:
        """A realtime event received ("in") or sent ("out"); `kind` is its `type`, whatever the client sent."""
        self.realtime_events.labels(direction, kind if kind in REALTIME_EVENTS else "other").inc()

    def realtime_error(self, code: str) -> None:
        """An `error` event sent; `code` is the server's own (invalid_value, unknown_event, ...)."""
        self.realtime_errors.labels(code if isinstance(code, str) and len(code) <= 64 else "other").inc()

    def model(self, name: str, sessions: int = 1, wide: bool = False) -> ModelMetrics:
        return ModelMetrics(self, name, sessions, wide)


class ModelMetrics:
    """One model's series (created now, so they show from the start, at zero)."""

    def __init__(self, metrics: Metrics, name: str, sessions: int = 1, wide: bool = False):
        self.name = name
        labels = [str(index) for index in range(sessions)] + (["wide"] if wide else [])  # the batcher's session order
        self.session_batches = [metrics.session_batches.labels(name, label) for label in labels]
        self.queue_seconds = metrics.queue_seconds.labels(name)
        self.inference_seconds = metrics.inference_seconds.labels(name)
        self.batch_size = metrics.batch_size.labels(name)
        self.real_time_factor = metrics.real_time_factor.labels(name)
        self.queue_depth = metrics.queue_depth.labels(name)
        self.decode_worker_restarts = metrics.decode_worker_restarts.labels(name)
        self.decode_workers_alive = metrics.decode_workers_alive.labels(name)
        self.queue_capacity = metrics.queue_capacity.labels(name)
        self._decode_seconds = metrics.decode_seconds
        self._audio_seconds = metrics.audio_seconds
        for protocol, endpoint in PROTOCOLS.items():  # stream series too, at zero until the first stream
            for histogram in metrics.stream_latency.values():
                histogram.labels(protocol, name)
            metrics.audio_seconds.labels(endpoint, name)

    def decode_seconds(self, decoder: str, search: str | None = None):
        return self._decode_seconds.labels(self.name, decoder, search or "")

    def audio_seconds(self, endpoint: str):
        return self._audio_seconds.labels(endpoint, self.name)

    def record_batch(self, size: int, seconds: float, session: int = 0) -> None:
        self.batch_size.observe(size)
        self.inference_seconds.observe(seconds)
        self.session_batches[session].inc()
