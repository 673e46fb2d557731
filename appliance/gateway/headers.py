"""ASGI middleware: refuse oversized header blocks (431) before any other work.

uvicorn checks header size only while a header block is still arriving; a large block that
arrives in one read passes. A flood of headers costs real CPU in every layer after this one.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from appliance.errors import HeadersTooLargeError
from appliance.gateway.errors import error_body

MAX_HEADERS = 100
MAX_HEADER_BYTES = 16 * 1024


class HeaderLimits:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        too_large = f"request headers too large (at most {MAX_HEADERS} headers, {MAX_HEADER_BYTES} bytes)"
        self.refusal = error_body(HeadersTooLargeError(too_large))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            headers = list(scope.get("headers") or [])
            if len(headers) > MAX_HEADERS or sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
                start: HTTPResponseStartEvent = {
                    "type": "http.response.start",
                    "status": HeadersTooLargeError.status_code,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(self.refusal)).encode()),
                    ],
                }
                body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": self.refusal, "more_body": False}
                await send(start)
                await send(body)
                return
        await self.app(scope, receive, send)
