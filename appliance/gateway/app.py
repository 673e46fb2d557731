"""The Litestar app factory: the lifespan opens the backend and tokenizers; routes stay thin."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Response, get
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp

from appliance.errors import ApplianceError
from appliance.gateway.admission import Admission
from appliance.gateway.auth import KeyRing
from appliance.gateway.docs import docs_handlers
from appliance.gateway.errors import (
    handle_appliance_error,
    handle_http_exception,
    handle_unexpected,
)
from appliance.gateway.headers import HeaderLimits
from appliance.gateway.limits import ConcurrencyLimiter, KeyLimits, KeyRateLimiter
from appliance.gateway.metrics import GatewayMetrics
from appliance.gateway.openapi import openapi_document
from appliance.gateway.requestlog import RequestLog
from appliance.gateway.routes import ROUTES, json_response
from appliance.gateway.shared_limits import SharedKeyRateLimiter
from appliance.gateway.state import AppState
from appliance.pipeline.backend import EmbeddingBackend, TritonBackend
from appliance.pipeline.service import ModelPipeline
from appliance.settings import GatewaySettings
from appliance.spec.keys import resolve_store_url

log = logging.getLogger("appliance.gateway")


def create_app(settings: GatewaySettings, backend: EmbeddingBackend | None = None) -> Litestar:
    """Build the gateway for compiled `settings`; `backend` defaults to Triton at `settings.triton_url`."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        active = backend or TritonBackend(settings.triton_url)
        app.state.backend = active
        if shared is not None:
            await shared.start()
        app.state.pipelines = {
            m.name: ModelPipeline(m, active, settings.limits, max_rows=settings.batching.max_batch_size)
            for m in settings.models
        }
        try:
            yield
        finally:
            await active.close()

    document = openapi_document()

    @get("/openapi.json", include_in_schema=False)
    async def openapi() -> Response[bytes]:
        return json_response(document)

    keyring = KeyRing.from_specs(settings.auth_keys)
    if keyring.open:
        log.warning("no API keys configured: /v1 endpoints are open")
    metrics = GatewayMetrics(settings.triton_metrics_url)
    per_key = {
        k.name: (k.requests_per_minute, k.tokens_per_minute)
        for k in settings.auth_keys
        if k.requests_per_minute or k.tokens_per_minute
    }
    store = settings.rate_limit_store
    shared = SharedKeyRateLimiter(resolve_store_url(store), per_key, store, metrics) if store else None
    key_limits: KeyLimits = shared or KeyRateLimiter(per_key)

    def count_request(path: str, status: int, fields: dict[str, Any], phases: dict[str, float]) -> None:
        if path in ("/v1/embeddings", "/tokenize"):
            code = str(status)
            metrics.requests.labels(
                path, fields.get("model", "-"), fields.get("task", "-"), code, fields.get("key", "-")
            ).inc()
            for phase, seconds in phases.items():
                metrics.http_latency.labels(path, code, phase).observe(seconds)

    def request_log(app: ASGIApp) -> ASGIApp:
        return RequestLog(app, json_format=settings.log_format == "json", on_finish=count_request)

    limits = settings.limits
    limiter = ConcurrencyLimiter(limits.max_concurrent_requests, limits.max_queued_requests)
    metrics.queued.set_function(lambda: limiter.queued)

    def refused() -> None:
        metrics.rejected.labels("overloaded").inc()
        metrics.requests.labels("/v1/embeddings", "-", "-", "429", "-").inc()

    def admission(app: ASGIApp) -> ASGIApp:
        return Admission(
            app,
            limiter=limiter,
            queue_timeout_s=min(limits.queue_timeout_s, limits.request_timeout_s),
            full_refusals=bool(per_key),
            on_refused=refused,
        )

    return Litestar(
        route_handlers=[*ROUTES, openapi, *docs_handlers()],
        lifespan=[lifespan],
        middleware=[admission, HeaderLimits, request_log],  # outermost first
        state=AppState(
            {
                "keyring": keyring,
                "settings": settings,
                "presets": {p.name: p for p in settings.presets},
                "metrics": metrics,
                "limiter": limiter,
                "key_limits": key_limits,
            }
        ),
        exception_handlers={
            ApplianceError: handle_appliance_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        request_max_body_size=settings.limits.max_body_bytes,
        openapi_config=None,
        logging_config=None,  # keep configure_logging()'s handlers: Litestar's default replaces the root handler
    )
