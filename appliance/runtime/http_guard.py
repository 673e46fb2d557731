"""uvicorn's httptools protocol with three things it lacks: a deadline for the request head, a bound
on open connections, and a timestamp of each request's first byte.

uvicorn (0.54) closes a keep-alive connection idle after a response, but a connection that never
sends a complete request head (nothing, or headers a byte at a time) stays open for ever, and it
accepts every connection: 4,000 such connections were measured still open after 10 s (issue 17).
Here a connection must deliver a complete head within `head_timeout_s` of connecting (and of the
first byte of each later request), or it is closed; beyond `max_connections` open connections a new
one gets a canned 503 and is closed at once, before any parsing. Written by hand because uvicorn has
neither knob (`limit_concurrency` still accepts and parses every connection) and its protocol class
is the documented extension point (`uvicorn.run(http=...)`).

The first byte's time goes into the ASGI scope (`scope["extensions"]["embed.timing"]`), so the
gateway's request metric covers a request from its first byte to its last, including the time it
waited for the event loop (README, "Metrics").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from appliance.errors import TooManyConnectionsError
from appliance.gateway.errors import error_body
from appliance.gateway.requestlog import TIMING  # scope["extensions"][TIMING] = (first byte, head parsed)


@dataclass
class ConnectionGuard:
    """Shared by every connection of one server: the limits and the count of open connections."""

    max_connections: int
    head_timeout_s: float
    on_refused: Callable[[str], None] = lambda reason: None  # "max_connections" | "head_timeout"
    on_open_changed: Callable[[int], None] = lambda count: None
    open: int = 0
    refusal: bytes = field(init=False)

    def __post_init__(self) -> None:
        exc = TooManyConnectionsError(f"too many open connections (at most {self.max_connections}); retry shortly")
        body = error_body(exc)
        self.refusal = (
            f"HTTP/1.1 {exc.status_code} {HTTPStatus(exc.status_code).phrase}\r\n"
            f"content-type: application/json\r\nretry-after: {exc.retry_after}\r\n"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode() + body

    def protocol(self) -> type[HttpToolsProtocol]:
        """The protocol class to hand to uvicorn as `http=`."""
        guard = self

        class GuardedHttpToolsProtocol(HttpToolsProtocol):
            _admitted = False
            _head_timer: asyncio.TimerHandle | None = None
            _first_byte = 0.0

            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                if guard.open >= guard.max_connections:
                    self.transport = transport  # for connection_lost's own bookkeeping
                    transport.write(guard.refusal)
                    transport.close()
                    guard.on_refused("max_connections")
                    return
                self._admitted = True
                guard.open += 1
                guard.on_open_changed(guard.open)
                super().connection_made(transport)
                self._arm_head_timer()

            def connection_lost(self, exc: Exception | None) -> None:
                self._disarm_head_timer()
                if self._admitted:
                    self._admitted = False
                    guard.open -= 1
                    guard.on_open_changed(guard.open)
                    super().connection_lost(exc)

            def data_received(self, data: bytes) -> None:
                if self._admitted:
                    super().data_received(data)

            def on_message_begin(self) -> None:
                super().on_message_begin()
                self._first_byte = time.perf_counter()
                if self._head_timer is None:  # a later request on a kept-alive connection
                    self._arm_head_timer()

            def on_headers_complete(self) -> None:
                self._disarm_head_timer()
                extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
                extensions[TIMING] = (self._first_byte, time.perf_counter())
                super().on_headers_complete()

            def _arm_head_timer(self) -> None:
                self._head_timer = self.loop.call_later(guard.head_timeout_s, self._head_timed_out)

            def _disarm_head_timer(self) -> None:
                if self._head_timer is not None:
                    self._head_timer.cancel()
                    self._head_timer = None

            def _head_timed_out(self) -> None:
                self._head_timer = None
                if self.cycle is not None and not self.cycle.response_complete:
                    self._arm_head_timer()  # a pipelined head behind a response in progress: not before it ends
                    return
                if not self.transport.is_closing():
                    guard.on_refused("head_timeout")
                    self.transport.close()

        return GuardedHttpToolsProtocol
