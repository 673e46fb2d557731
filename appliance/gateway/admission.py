"""Outermost ASGI middleware: the concurrency gate of POST /v1/embeddings, and cheap refusals.

Under overload most requests are refused, so a refusal must cost little next to an answer: in the
full Litestar path (request log line, routing, the key guard, an exception, its handler, JSON) a
429 cost the gateway 0.65-0.69 ms of CPU, 16 % of a whole 200 on tiny-jina
(docs/performance.md, "Cheap refusals"). Here it is a constant response written before the body
is read, the body left unparsed, one counter, and at most one log line per `LOG_EVERY_S` saying how
many were refused. With `[limits] max_queued_requests` a request finding no permit first waits in
line for one (`ConcurrencyLimiter.queue_for`), before its body is read, and is refused only when
the line is full or its wait runs out.

A refusal here comes before authentication: an overloaded server says so to any caller (TEI
checks its permit first in the handler, after its API-key layer; here the refusal is cheaper than
the key check it would wait for). Where keys have per-minute limits,
OpenAI's `x-ratelimit-*` headers belong on every answer to those keys, so the refusal goes the full
way instead (the route raises it with the headers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from appliance.gateway.errors import error_body
from appliance.gateway.limits import ConcurrencyLimiter
from appliance.gateway.requestlog import SAFE_ID

log = logging.getLogger("appliance.gateway")
GATED = "/v1/embeddings"
OVERLOADED = "overloaded"  # scope["state"][OVERLOADED]: the gate was full; the route refuses in full
LOG_EVERY_S = 10.0


class Admission:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: ConcurrencyLimiter,
        queue_timeout_s: float,
        full_refusals: bool,
        on_refused: Callable[[], None],
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.queue_timeout_s = queue_timeout_s
        self.full_refusals = full_refusals
        self.on_refused = on_refused
        exc = limiter.overloaded()
        self.body = error_body(exc)
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
            (b"retry-after", str(exc.retry_after).encode()),
            (b"retry-after-ms", str(exc.retry_after * 1000).encode()),
        ]
        self.refused_since_log = 0
        self.logged_at = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] != GATED:
            await self.app(scope, receive, send)
            return
        limiter = self.limiter
        if not limiter.try_take() and not (limiter.max_queued and await limiter.queue_for(self.queue_timeout_s)):
            if self.full_refusals:
                scope.setdefault("state", {})[OVERLOADED] = True
                await self.app(scope, receive, send)
            else:
                await self._refuse(scope, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            limiter.release()

    async def _refuse(self, scope: Scope, send: Send) -> None:
        headers = self.headers
        for name, value in scope["headers"]:
            if name == b"x-request-id" and SAFE_ID.match(value.decode("latin-1")):  # echoed, as RequestLog does
                headers = [*headers, (b"x-request-id", value)]
                break
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": 429, "headers": headers}
        body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": self.body, "more_body": False}
        await send(start)
        await send(body)
        self.on_refused()
        self.refused_since_log += 1
        now = time.monotonic()
        if now - self.logged_at >= LOG_EVERY_S:
            log.warning(
                "overloaded: refused %d requests (429) at the limit of %d concurrent requests "
                "([limits] max_concurrent_requests) since the last such line",
                self.refused_since_log,
                self.limiter.limit,
            )
            self.refused_since_log = 0
            self.logged_at = now
