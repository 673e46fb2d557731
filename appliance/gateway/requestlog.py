"""ASGI middleware: request id (accepted from and echoed in X-Request-ID), one log line per request.

Handlers put what they know (model, task, inputs, tokens, key name) into `scope["state"]["log"]`.
Never logs an API key; input text only with `[server] log_inputs = true`.
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
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


OnFinish = Callable[[str, int, dict[str, Any]], None]


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
        request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        fields: dict[str, Any] = {}
        scope.setdefault("state", {})["log"] = fields
        scope["state"]["request_id"] = request_id
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if scope["path"] not in ("/health", "/ready", "/metrics"):
                self._emit(request_id, scope, status, time.perf_counter() - start, fields)
            if self.on_finish is not None:
                self.on_finish(scope["path"], status, fields)

    def _emit(self, request_id: str, scope: Scope, status: int, seconds: float, fields: dict[str, Any]) -> None:
        record = {
            "request_id": request_id,
            "method": scope.get("method", "-"),
            "path": scope["path"],
            "status": status,
            "latency_ms": round(seconds * 1000, 2),
            **fields,
        }
        if self.json_format:
            log.info(json.dumps(record, ensure_ascii=False))
        else:
            log.info(" ".join(f"{k}={v}" for k, v in record.items()))
