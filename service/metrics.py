"""Prometheus metrics, prefix `asr_`, in a registry of the app's own. What a model does (queueing,
inference, decoding, its audio, its memory) carries a `model` label; `ModelMetrics` binds them
to one model's name."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("asr_requests", "Requests by endpoint and HTTP status", ["endpoint", "status"],
                                registry=r)
        self.request_seconds = Histogram("asr_request_duration_seconds", "End-to-end request latency (model: "
                                         "the model that answered, empty if none did)", ["endpoint", "model"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("asr_queue_wait_seconds", "Time audio waited for a batch", ["model"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram("asr_inference_seconds", "Model time per batch", ["model"],
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.decode_seconds = Histogram("asr_decode_seconds", "CTC decoding time per request", ["model", "decoder"],
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("asr_batch_size", "Utterances (or chunks) per inference batch", ["model"],
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=r)
        self.audio_seconds = Counter("asr_audio_seconds", "Seconds of audio transcribed", ["endpoint", "model"],
                                     registry=r)
        self.real_time_factor = Histogram("asr_real_time_factor", "Processing time / audio duration per request",
                                          ["model"], buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
                                          registry=r)
        self.active_streams = Gauge("asr_active_streams", "Open websocket streams", registry=r)
        self.queue_depth = Gauge("asr_queue_depth", "Items waiting for inference", ["model"], registry=r)
        self.decode_worker_restarts = Counter("asr_decode_worker_restarts", "Beam-search worker processes restarted "
                                              "after dying or overrunning the decode deadline", ["model"],
                                              registry=r)
        self.decode_workers_alive = Gauge("asr_decode_workers_alive", "Beam-search worker processes running",
                                          ["model"], registry=r)
        self.model_info = Gauge("asr_model_info", "The models being served, 1 each (name: the model's)",
                                ["name", "variant", "provider"], registry=r)
        self.model_memory = Gauge("asr_model_memory_bytes", "Memory a model took at start: inference (its "
                                  "session, warmed up, in the server process) and beam_search (its worker "
                                  "processes)", ["model", "part"], registry=r)

    def model(self, name: str) -> ModelMetrics:
        return ModelMetrics(self, name)


class ModelMetrics:
    """One model's series (created now, so they show from the start, at zero)."""

    def __init__(self, metrics: Metrics, name: str):
        self.name = name
        self.queue_seconds = metrics.queue_seconds.labels(name)
        self.inference_seconds = metrics.inference_seconds.labels(name)
        self.batch_size = metrics.batch_size.labels(name)
        self.real_time_factor = metrics.real_time_factor.labels(name)
        self.queue_depth = metrics.queue_depth.labels(name)
        self.decode_worker_restarts = metrics.decode_worker_restarts.labels(name)
        self.decode_workers_alive = metrics.decode_workers_alive.labels(name)
        self._decode_seconds = metrics.decode_seconds
        self._audio_seconds = metrics.audio_seconds

    def decode_seconds(self, decoder: str):
        return self._decode_seconds.labels(self.name, decoder)

    def audio_seconds(self, endpoint: str):
        return self._audio_seconds.labels(endpoint, self.name)

    def record_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference_seconds.observe(seconds)
