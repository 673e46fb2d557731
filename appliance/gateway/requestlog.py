"""ASGI middleware: request id (accepted from and echoed in X-Request-ID), one log line per request.

Handlers put what they know (model, task, inputs, tokens, key name) into `scope["state"]["log"]`.
Never logs an API key; input text only with `[server] log_inputs = true`.

A request's life in phases, when the server stamps the first byte (appliance/runtime/http_guard.py
puts `(first byte, head parsed)` in `scope["extensions"]["embed.timing"]`): `head` (first byte to
head parsed), `wait` (head parsed to this middleware starting on it: the event loop's backlog,
and the wait for a permit when `[limits] max_queued_requests` is set: Admission is outside), `app`
(to the last byte handed to the socket) and `total`. Without the stamp only `app` and `total` (=
`app`) are known.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("appliance.requests")
SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


OnFinish = Callable[[str, int, dict[str, Any], dict[str, float]], None]
TIMING = "embed.timing"  # (first byte, head parsed) by time.perf_counter(): appliance/runtime/http_guard.py


class RequestLog:
    def __init__(self, app: ASGIApp, *, json_format: bool = False, on_finish: OnFinish | None = None) -> None:
        self.app = app
        self.json_format = json_format
        self.on_finish = on_finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if SAFE_ID.match(given) else uuid.uuid4().hex
        fields: dict[str, Any] = {}
        scope.setdefault("state", {})["log"] = fields
        scope["state"]["request_id"] = request_id
        status = 500
        start = time.perf_counter()
        end = 0.0

        async def send_with_id(message: Message) -> None:
            nonlocal status, end
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                end = time.perf_counter()

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            phases = _phases(scope, start, end or time.perf_counter())
            if scope["path"] not in ("/health", "/ready", "/metrics"):
                self._emit(request_id, scope, status, phases, fields)
            if self.on_finish is not None:
                self.on_finish(scope["path"], status, fields, phases)

    def _emit(
        self, request_id: str, scope: Scope, status: int, phases: dict[str, float], fields: dict[str, Any]
    ) -> None:
        record = {
            "request_id": request_id,
            "method": scope.get("method", "-"),
            "path": scope["path"],
            "status": status,
            "latency_ms": round(phases["total"] * 1000, 2),  # first byte to last, when stamped
            **({"wait_ms": round(phases["wait"] * 1000, 2)} if "wait" in phases else {}),
            **fields,
        }
        if self.json_format:
            log.info(json.dumps(record, ensure_ascii=False))
        else:
            log.info(" ".join(f"{k}={v}" for k, v in record.items()))


def _phases(scope: Scope, start: float, end: float) -> dict[str, float]:
    extensions: dict[str, Any] = scope.get("extensions") or {}
    stamp: tuple[float, float] | None = extensions.get(TIMING)
    if stamp is None:
        return {"app": end - start, "total": end - start}
    first, head = stamp
    return {"head": head - first, "wait": start - head, "app": end - start, "total": end - first}
