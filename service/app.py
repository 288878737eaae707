"""The FastAPI application: lifespan, error handlers, metrics middleware and the routers."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from .engine import load_engine
from .errors import ApiError, api_error_handler, http_error_handler, validation_error_handler
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
        self.load_error: str | None = None
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
        except Exception as error:  # reported by /ready and the log; the process keeps answering /health
            self.load_error = f"{type(error).__name__}: {error}"
            log.error("could not load the model: %s", self.load_error)
            return
        self.pipeline = pipeline
        manifest = pipeline.engine.manifest
        self.metrics.model_info.info({"name": self.model_name, "variant": str(manifest.get("variant", "unknown")),
                                      "source": str(manifest.get("source", self.settings.model)),
                                      "provider": self.settings.provider})
        log.info("model %s ready", self.model_name)

    def require_pipeline(self) -> Pipeline:
        if self.pipeline is None:
            detail = f": {self.load_error}" if self.load_error else "; retry shortly"
            raise ApiError(503, "model_not_ready", f"the model is not loaded yet{detail}",
                           headers={"Retry-After": "5"})
        return self.pipeline


def create_app(settings: Settings) -> FastAPI:
    server = Server(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        loader = threading.Thread(target=server.load, name="model-loader", daemon=True)
        loader.start()
        yield
        await asyncio.to_thread(loader.join)
        if server.pipeline:
            server.pipeline.stop()

    app = FastAPI(title="w2v-asr", version="0.1.0", lifespan=lifespan,
                  description="wav2vec 2.0 speech recognition: batched ONNX inference, KenLM beam search, streaming")
    app.state.server = server
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = route.path if route is not None else "unmatched"
        server.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        server.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)
        return response

    from . import routes, streaming

    app.include_router(routes.health)
    app.include_router(routes.api)
    app.include_router(streaming.router)
    return app
