"""What the routes share: settings, metrics, and the pipeline once the model is loaded."""

from __future__ import annotations

import logging
from pathlib import Path

from .engine import load_engine
from .errors import Busy
from .metrics import Metrics
from .pipeline import Pipeline
from .settings import Settings

log = logging.getLogger("service")


class Server:
    """What the routes share: settings, metrics, and the pipeline once the model is loaded."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.pipeline: Pipeline | None = None
        self.load_failed = False
        self.streams = 0

    @property
    def model_name(self) -> str:
        if self.settings.model_name:
            return self.settings.model_name
        return self.pipeline.engine.folder.name if self.pipeline else Path(self.settings.model).name

    def load(self) -> None:
        """Load and warm up the model; runs in a thread so /health answers meanwhile."""
        try:
            pipeline = Pipeline(self.settings, load_engine(self.settings), self.metrics)
            pipeline.start()
        except Exception as error:  # in the log; /ready says only that it failed: clients see no paths
            self.load_failed = True
            log.error("could not load the model: %s: %s", type(error).__name__, error)
            return
        self.pipeline = pipeline
        manifest = pipeline.engine.manifest
        # Its name, not its folder: the export manifest's source is a path on this machine.
        self.metrics.model_info.info({"name": self.model_name, "variant": str(manifest.get("variant", "unknown")),
                                      "provider": self.settings.provider})
        log.info("model %s ready", self.model_name)

    def not_ready_reason(self) -> str | None:
        """Why requests cannot be served now, or None when they can."""
        if self.load_failed:
            return "the model could not be loaded; the server's log says why"
        if self.pipeline is None:
            return "the model is loading; retry shortly"
        if not self.pipeline.beam.alive:
            return "no beam-search worker is running; they are being restarted"
        return None

    def require_pipeline(self) -> Pipeline:
        """The pipeline, or Busy while there is none."""
        if self.pipeline is None:
            raise Busy("model_not_ready", self.not_ready_reason(), retry_after=5)
        return self.pipeline
