"""What the routes share: settings, metrics, and each model's pipeline once it is loaded."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from model.decoding import one_line

from .engine import load_engines
from .errors import Busy, UnknownModel, shorten
from .metrics import Metrics
from .pipeline import Pipeline
from .rate_limits import RateLimits
from .settings import Settings

log = logging.getLogger("service")


def resident_bytes(pid: int | None = None) -> int:
    """A process's resident memory (Linux; 0 where /proc cannot say)."""
    try:
        status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) * 1024 if match else 0


class Server:
    """The models (each with its own engine, batching queue and beam-search workers), loaded one
    after the other by `load`, the default first; requests choose one by name."""

    def __init__(self, settings: Settings, on_load_failure: Callable[[], None] | None = None):
        self.settings = settings
        self.metrics = Metrics()
        self.rate_limits = RateLimits(settings.rate_limit_requests, settings.rate_limit_audio_seconds)
        self.pipelines: dict[str, Pipeline] = {}  # the models loaded and warmed up, by name
        self.loading: str | None = settings.default.name  # the model being loaded, None once all are
        self.failed: str | None = None  # the model that could not be loaded
        self.load_error: str | None = None  # why: it stops the server
        self.on_load_failure = on_load_failure  # called once a model fails to load (None: /ready says it)
        self.streams = 0
        self.stopping = asyncio.Event()  # set on SIGTERM: streams finish what they hold and close

    @property
    def model_name(self) -> str:
        """The default model's name."""
        return self.settings.default.name

    @property
    def served_names(self) -> list[str]:
        """The models' own names, the default first."""
        return [spec.name for spec in self.settings.models]

    @property
    def model_names(self) -> list[str]:
        """Every name a request may choose a model by: the models' own, then their aliases."""
        return [*self.served_names, *self.settings.aliases]

    def resolve(self, name: str | None) -> str:
        """The served model a name (an alias, or None: the default) stands for; UnknownModel if none."""
        name = name or self.model_name
        name = self.settings.aliases.get(name, name)
        if name not in self.served_names:
            raise UnknownModel(
                "model_not_found",
                f"The model {shorten(name)} does not exist on this server; it serves: {', '.join(self.model_names)}",
                "model",
            )
        return name

    def load(self) -> None:
        """Load and warm up every model, and start its workers; runs in a thread so /health answers
        meanwhile. The first model that fails stops the loading (and, through on_load_failure, the server)."""
        for spec in self.settings.models:
            self.loading = spec.name
            before = resident_bytes()
            pipeline = None
            try:
                engines, wide = load_engines(self.settings, spec)
                pipeline = Pipeline(self.settings, spec, engines, self.metrics, wide)
                pipeline.start()
            except Exception as error:  # in the log; /ready says only that it failed: clients see no paths
                self.failed, self.load_error = spec.name, f"model '{spec.name}' could not be loaded: {one_line(error)}"
                if pipeline is not None:
                    pipeline.stop()
                if self.on_load_failure is not None:
                    self.on_load_failure()
                else:
                    log.error("%s", self.load_error)
                return
            self._report(pipeline, resident_bytes() - before)
            self.pipelines[spec.name] = pipeline
        self.loading = None

    def _report(self, pipeline: Pipeline, inference_bytes: int) -> None:
        """Memory and variant of a model just loaded: in the log and in /metrics."""
        workers = [resident_bytes(worker.process.pid) for worker in pipeline.beam.workers]
        name = pipeline.name
        pipeline.metrics.queue_capacity.set(self.settings.queue_capacity)
        self.metrics.model_memory.labels(name, "inference").set(max(inference_bytes, 0))
        self.metrics.model_memory.labels(name, "beam_search").set(sum(workers))
        # Its name, not its folder: the export manifest's source is a path on this machine.
        self.metrics.model_info.labels(
            name, str(pipeline.engine.manifest.get("variant", "unknown")), self.settings.provider
        ).set(1)
        spec = next(spec for spec in self.settings.models if spec.name == name)
        lm = spec.lm.name if spec.lm is not None else "no language model"
        lexicon = f", lexicon {spec.lexicon.name}" if spec.lexicon is not None else ""
        log.info(
            "model %s ready: %.0f MB in the server process (%s, warmed up); beam search (%s%s): %d "
            "worker process(es), %.0f MB in all",
            name,
            inference_bytes / 2**20,
            self.settings.layout,
            lm,
            lexicon,
            len(workers),
            sum(workers) / 2**20,
        )

    def stop(self) -> None:
        for pipeline in self.pipelines.values():
            pipeline.stop()

    def not_ready_reason(self) -> str | None:
        """Why not every model can serve now, or None when all can."""
        if self.failed is not None:
            return f"model '{self.failed}' could not be loaded; the server's log says why"
        if self.loading is not None:
            return (
                f"model '{self.loading}' is loading ({len(self.pipelines) + 1} of {len(self.served_names)}); "
                "retry shortly"
            )
        for name, pipeline in self.pipelines.items():
            if not pipeline.beam.alive:
                return f"model '{name}': no beam-search worker is running; they are being restarted"
        return None

    def pipeline(self, name: str | None = None) -> Pipeline:
        """The pipeline of the named model or alias (None: the default); UnknownModel if nothing has
        that name, Busy while it is not loaded."""
        name = self.resolve(name)
        pipeline = self.pipelines.get(name)
        if pipeline is None:
            reason = self.not_ready_reason() or "the model is loading; retry shortly"
            raise Busy("model_not_ready", reason, retry_after=5)
        return pipeline
