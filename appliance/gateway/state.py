"""The gateway's application state, typed: what `create_app` and its lifespan put there, what handlers read."""

from __future__ import annotations

from litestar.datastructures import State

from appliance.gateway.auth import KeyRing
from appliance.gateway.limits import ConcurrencyLimiter, KeyLimits
from appliance.gateway.metrics import GatewayMetrics
from appliance.pipeline.backend import EmbeddingBackend
from appliance.pipeline.service import ModelPipeline
from appliance.settings import CompiledPreset, GatewaySettings


class AppState(State):
    """Handlers declare `state: AppState`; Litestar builds it from the app's state for each request."""

    settings: GatewaySettings
    keyring: KeyRing
    presets: dict[str, CompiledPreset]
    metrics: GatewayMetrics
    limiter: ConcurrencyLimiter
    key_limits: KeyLimits
    backend: EmbeddingBackend  # opened by the lifespan
    pipelines: dict[str, ModelPipeline]  # opened by the lifespan (tokenizers loaded)
