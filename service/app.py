"""The FastAPI application: lifespan, error handlers, metrics middleware and the routers."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from .errors import ServiceError
from .http_errors import (
    ApiError,
    api_error_handler,
    error_body,
    http_error_handler,
    internal_error_handler,
    service_error_handler,
    validation_error_handler,
)
from .http_protocol import CONNECTION_LOST
from .logs import RequestIdMiddleware
from .metrics import Metrics
from .server import Server
from .settings import Settings

log = logging.getLogger("service")

# The longest path and query: h11 refuses a request head over 16 KiB when it arrives in pieces
# (`service.http_protocol` answers that with 414 too), so a longer one must not depend on luck.
MAX_URL_BYTES = 16 * 1024


class RequestMetrics:
    """Counts every HTTP response by route and status: 500s when the app raised, and
    "disconnected" for clients gone before their answer (whose work it then stops, if it can) or
    gone when it was sent (a client that half-closes its side: uvicorn closes the connection). Its latency is
    labelled with the model that answered (`request.state.model`, which the routes set)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if len(scope["raw_path"]) + len(scope["query_string"]) > MAX_URL_BYTES:
            self.metrics.requests.labels("unmatched", "414").inc()
            message = f"the URL is over the limit of {MAX_URL_BYTES} bytes; send options as form fields"
            return await JSONResponse(error_body("uri_too_long", message, status=414), 414)(scope, receive, send)
        started = time.perf_counter()
        state = scope.setdefault("state", {})  # request.state: the routes say there which model answers
        status, answered, gone = "500", asyncio.Event(), asyncio.Event()
        body_read = asyncio.Event()
        undelivered = False  # the connection was closed when the answer began

        async def receive_body():
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body"):
                body_read.set()
            return message

        async def send_status(message):
            nonlocal status, undelivered
            if message["type"] == "http.response.start":
                status = str(message["status"])
                undelivered = scope.get(CONNECTION_LOST, bool)()
            elif not message.get("more_body"):
                answered.set()
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, receive_body, send_status))
        watcher = asyncio.ensure_future(_watch_disconnect(receive, body_read, answered, gone, handler))
        try:
            await handler
            if gone.is_set() or undelivered:  # answered into a closed connection
                log.info(
                    "%s %s: the client disconnected before the answer (%s, not delivered)",
                    scope["method"],
                    scope["path"],
                    status,
                )
                status = "disconnected"
        except (ClientDisconnect, asyncio.CancelledError) as error:
            if not gone.is_set() and not isinstance(error, ClientDisconnect):
                # Not the client: uvicorn cancels what outlives the shutdown grace period.
                status = "503"
                body = error_body("shutting_down", "the server is shutting down; retry", status=503)
                await _send_json(send, 503, body)
                return
            status = "disconnected"
            log.info("%s %s: the client disconnected before the answer", scope["method"], scope["path"])
        finally:
            watcher.cancel()
            route = scope.get("route")
            endpoint = route.path if route is not None else "unmatched"
            self.metrics.requests.labels(endpoint, status).inc()
            rid = state.get("request_id")  # an exemplar: which request a latency was, for OpenMetrics scrapers
            self.metrics.request_seconds.labels(endpoint, state.get("model", "")).observe(
                time.perf_counter() - started, exemplar={"request_id": rid} if rid else None
            )


async def _watch_disconnect(
    receive, body_read: asyncio.Event, answered: asyncio.Event, gone: asyncio.Event, handler: asyncio.Future
) -> None:
    """Once the body is read, the next thing the server hears is the client leaving: cancel its work."""
    await body_read.wait()
    message = await receive()
    if message["type"] == "http.disconnect" and not answered.is_set():
        gone.set()
        handler.cancel()


async def _send_json(send, status: int, body: dict) -> None:
    response = JSONResponse(body, status, headers={"Retry-After": "5", "Connection": "close"})
    try:
        await response({"type": "http"}, None, send)
    except Exception:  # the response had begun, or the connection is gone: nothing more to say
        pass


class App(FastAPI):
    """FastAPI with `RequestIdMiddleware` outside even Starlette's error middleware, so that a 500's
    answer and log lines carry the request's id too."""

    def build_middleware_stack(self):
        return RequestIdMiddleware(super().build_middleware_stack())


def create_app(settings: Settings, on_load_failure=None) -> FastAPI:
    """The app; `on_load_failure` is called if a model cannot be loaded (the command line stops the
    server then; without it, /ready says so)."""
    server = Server(settings, on_load_failure)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        loader = threading.Thread(target=server.load, name="model-loader", daemon=True)
        loader.start()
        yield
        await asyncio.to_thread(loader.join)
        server.stop()

    # The schema and its pages are served by api_docs.router, behind the API keys like the API they describe.
    app = App(
        title="w2v-asr",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        description="wav2vec 2.0 speech recognition: batched ONNX inference, KenLM beam search, streaming",
    )
    app.state.server = server
    app.add_exception_handler(ServiceError, service_error_handler)
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    app.add_exception_handler(Exception, internal_error_handler)
    app.add_middleware(RequestMetrics, metrics=server.metrics)
    if settings.cors_origins:  # outermost of the app's own: a preflight needs no key and counts as no request
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-request-id", "openai-beta"],
            expose_headers=[
                "x-request-id",
                "retry-after",
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
            ],
            max_age=600,
        )

    from . import api_docs, realtime, routes, streaming, web

    app.include_router(routes.health)
    app.include_router(routes.api)
    app.include_router(api_docs.router)
    app.include_router(streaming.router)
    app.include_router(realtime.router)
    if settings.web_ui:
        app.include_router(web.router)
    return app
