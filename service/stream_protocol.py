"""uvicorn's websocket protocol, with two changes.

A message over the size limit gets our JSON error before the 1009 close, like every other refused
stream (on /v1/realtime, in OpenAI's shape). The protocol refuses such a frame from its header,
before reading it, so a 20 MiB frame costs nothing; but on its own it closes with a bare 1009 and
the client never learns why.

On shutdown, an open session is left to the app, which transcribes what it holds, sends it and
closes (1001); on its own the protocol closes it at once with 1012. uvicorn still cancels any
session left at the end of the grace period.
"""

from __future__ import annotations

import json

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame, Opcode


class StreamProtocol(WebSocketsSansIOProtocol):
    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent:
            return  # the app's session sees the server's `stopping` event and ends itself
        super().shutdown()

    def handle_parser_exception(self) -> None:
        if isinstance(self.conn.parser_exc, PayloadTooBig) and self.handshake_complete and not self.close_sent:
            message = f"a message is over the limit of {self.config.ws_max_size} bytes"
            error = {"type": "error", "error": "stream_error", "message": message}
            if self.scope.get("path") == "/v1/realtime":  # OpenAI's error event
                error = {
                    "type": "error",
                    "event_id": None,
                    "error": {
                        "type": "invalid_request_error",
                        "code": "message_too_large",
                        "message": message,
                        "param": None,
                        "event_id": None,
                    },
                }
            # The protocol object already queued its close frame, so this text frame is written
            # by hand, unmasked as a server's frames are, ahead of it.
            self.transport.write(Frame(Opcode.TEXT, json.dumps(error).encode()).serialize(mask=False))
        super().handle_parser_exception()
