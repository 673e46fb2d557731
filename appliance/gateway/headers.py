"""ASGI middleware: refuse oversized header blocks (431) before any other work.

uvicorn checks header size only while a header block is still arriving; a large block that
arrives in one read passes. A flood of headers costs real CPU in every layer after this one.
"""

from __future__ import annotations

import msgspec
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from appliance.gateway.schemas import ErrorBody, ErrorResponse

MAX_HEADERS = 100
MAX_HEADER_BYTES = 16 * 1024


class HeaderLimits:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        body = ErrorResponse(error=ErrorBody(
            message=f"request headers too large (at most {MAX_HEADERS} headers, {MAX_HEADER_BYTES} bytes)",
            type="invalid_request_error",
        ))
        self.refusal = msgspec.json.encode(body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            headers = list(scope.get("headers") or [])
            if len(headers) > MAX_HEADERS or sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
                start: HTTPResponseStartEvent = {
                    "type": "http.response.start",
                    "status": 431,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self.refusal)).encode())],
                }
                body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": self.refusal, "more_body": False}
                await send(start)
                await send(body)
                return
        await self.app(scope, receive, send)
