"""Prometheus metrics, prefix `asr_`, in a registry of the app's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("asr_requests", "Requests by endpoint and HTTP status", ["endpoint", "status"],
                                registry=r)
        self.request_seconds = Histogram("asr_request_duration_seconds", "End-to-end request latency",
                                         ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("asr_queue_wait_seconds", "Time audio waited for a batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram("asr_inference_seconds", "Model time per batch",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.decode_seconds = Histogram("asr_decode_seconds", "CTC decoding time per request", ["decoder"],
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("asr_batch_size", "Utterances (or chunks) per inference batch",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=r)
        self.audio_seconds = Counter("asr_audio_seconds", "Seconds of audio transcribed", ["endpoint"], registry=r)
        self.real_time_factor = Histogram("asr_real_time_factor", "Processing time / audio duration per request",
                                          buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5), registry=r)
        self.active_streams = Gauge("asr_active_streams", "Open websocket streams", registry=r)
        self.queue_depth = Gauge("asr_queue_depth", "Items waiting for inference", registry=r)
        self.decode_worker_restarts = Counter("asr_decode_worker_restarts", "Beam-search worker processes restarted "
                                              "after dying or overrunning the decode deadline", registry=r)
        self.decode_workers_alive = Gauge("asr_decode_workers_alive", "Beam-search worker processes running",
                                          registry=r)
        self.model_info = Info("asr_model", "The model being served", registry=r)

    def record_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference_seconds.observe(seconds)
