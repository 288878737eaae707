"""uvicorn's server and HTTP protocol (h11), with graceful endings.

- `GracefulServer` sets the app's `stopping` event when a shutdown begins, so that open streams
  transcribe what they hold, send it and close (1001) within the grace period, instead of the
  bare 1012 uvicorn sends them at once (`StreamProtocol.shutdown` leaves them to the app).
- `HTTPProtocol` keeps an idle keep-alive connection open for `LINGER_SECONDS` when the server
  shuts down, rather than closing it at once while its client may be sending the next request (a
  connection error, no answer); a request that comes meanwhile is answered, with
  `Connection: close`, as is any request in flight.
- Each request's scope says whether its connection is lost (`CONNECTION_LOST`).
- A request whose head is over h11's size limit gets 414 (the target is too long) or 431 (the
  headers), in the API's JSON error shape, and the connection is drained before it is closed,
  so that the client reads the answer instead of a reset.
"""

from __future__ import annotations

import http
import json
import logging

import h11
import uvicorn
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol

from .logs import new_request_id

log = logging.getLogger("service")

# A scope key: a callable that says whether the request's connection is closed. uvicorn's send
# drops an answer to a closed connection without a word; `RequestMetrics` counts it as such.
CONNECTION_LOST = "w2v.connection_lost"
LINGER_SECONDS = 2.0  # how long an idle connection stays open on shutdown, or drains after a refusal
CLOSE = (b"connection", b"close")


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, stopping):
        super().__init__(config)
        self.stopping = stopping  # an asyncio.Event the app's streams watch

    async def shutdown(self, sockets=None) -> None:
        self.stopping.set()
        await super().shutdown(sockets)


class HTTPProtocol(H11Protocol):
    draining = False  # the server is shutting down: answer what comes, then close
    refused = False  # a request's head was too large: what follows it is read and dropped

    def shutdown(self) -> None:
        self.draining = True
        if self.cycle is None or self.cycle.response_complete:
            self.loop.call_later(LINGER_SECONDS, self._close_if_idle)
        else:
            self._close_after_response()

    def _close_after_response(self) -> None:
        self.cycle.keep_alive = False
        if not self.cycle.response_started:
            self.cycle.default_headers = [*self.cycle.default_headers, CLOSE]

    def _close_if_idle(self) -> None:
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            super().shutdown()

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        if cycle is not None and CONNECTION_LOST not in cycle.scope:
            # Closing: the client half-closed (uvicorn closes on EOF) and the loss is not reported yet.
            cycle.scope[CONNECTION_LOST] = lambda: cycle.disconnected or self.transport.is_closing()
        if self.draining and self.cycle is not None and not self.cycle.response_complete:
            self._close_after_response()

    def send_400_response(self, msg: str) -> None:
        limit = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        head, _ = self.conn.trailing_data
        if len(head) <= limit:
            return super().send_400_response(msg)
        if b"\r\n" not in head:
            status, code, message = 414, "uri_too_long", f"the request's target is over the limit of {limit} bytes"
        else:
            status, code, message = 431, "headers_too_large", f"the request's head is over the limit of {limit} bytes"
        rid = new_request_id()  # no request was read, so no id came with one: a new one, for the log and the client
        log.info("%d %s: %s", status, code, message, extra={"request_id": rid})
        body = json.dumps(
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": code,
                    "request_id": rid,
                }
            },
            separators=(",", ":"),
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            CLOSE,
            (b"x-request-id", rid.encode()),
        ]
        reason = http.HTTPStatus(status).phrase.encode()
        for event in (
            h11.Response(status_code=status, headers=headers, reason=reason),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        # Closing now, with the rest of the request unread, would reset the connection before the
        # client reads the answer: stop writing, drop what still comes, and close a little later.
        self.refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
