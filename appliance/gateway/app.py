"""The Litestar app factory: lifespan opens the backend and tokenizers, routes stay thin."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import numpy as np
from litestar import Litestar, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.handlers import BaseRouteHandler
from pydantic_settings import BaseSettings, SettingsConfigDict

from appliance.compile.settings import GatewaySettings, read_compiled
from appliance.errors import ApplianceError, ModelNotFoundError
from appliance.gateway.auth import KeyRing
from appliance.gateway.errors import (
    handle_appliance_error,
    handle_http_exception,
    handle_unexpected,
    request_error_from_msgspec,
)
from appliance.gateway.schemas import Embedding, EmbeddingRequest, EmbeddingResponse, ModelCard, ModelList, Usage
from appliance.pipeline.backend import EmbeddingBackend, TritonBackend
from appliance.pipeline.service import ModelPipeline

log = logging.getLogger("appliance.gateway")
_request_decoder = msgspec.json.Decoder(EmbeddingRequest)
_encoder = msgspec.json.Encoder()


class GatewayEnv(BaseSettings):
    """The gateway's environment, read once when the app is built."""

    model_config = SettingsConfigDict(env_prefix="EMBED_")
    runtime_dir: Path


def require_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    keyring: KeyRing = connection.app.state.keyring
    keyring.check(connection.headers.get("authorization"))


def _json(payload: msgspec.Struct, status: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(payload), status_code=status, media_type="application/json")


@post("/v1/embeddings", guards=[require_key], status_code=200)
async def create_embeddings(request: Request, state: State) -> Response[bytes]:
    try:
        body = _request_decoder.decode(await request.body())
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise request_error_from_msgspec(exc) from None
    pipeline = _pipeline(state, body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    result = await pipeline.embed(texts, task=body.task, dimensions=body.dimensions)
    if body.encoding_format == "base64":
        vectors: list[list[float] | str] = [
            base64.b64encode(v.astype("<f4", copy=False).tobytes()).decode("ascii") for v in result.vectors
        ]
    else:
        vectors = result.vectors.tolist()
    data = [Embedding(embedding=v, index=i) for i, v in enumerate(vectors)]
    usage = Usage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
    return _json(EmbeddingResponse(data=data, model=body.model, usage=usage))


def _pipeline(state: State, model: str) -> ModelPipeline:
    pipelines: dict[str, ModelPipeline] = state.pipelines
    if model not in pipelines:
        raise ModelNotFoundError(
            f"model `{model}` is not served here; served models: {', '.join(pipelines)}", param="model"
        )
    return pipelines[model]


@get("/v1/models", guards=[require_key])
async def list_models(state: State) -> Response[bytes]:
    return _json(ModelList(data=[ModelCard(id=name) for name in state.pipelines]))


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready")
async def ready(state: State) -> Response[dict[str, str]]:
    backend: EmbeddingBackend = state.backend
    if await backend.ready(list(state.pipelines)):
        return Response({"status": "ready"}, status_code=200)
    return Response({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})


def create_app(settings: GatewaySettings, backend: EmbeddingBackend | None = None) -> Litestar:
    """Build the gateway for compiled `settings`; `backend` defaults to Triton at `settings.triton_url`."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        active = backend or TritonBackend(settings.triton_url)
        app.state.backend = active
        app.state.pipelines = {m.name: ModelPipeline(m, active) for m in settings.models}
        try:
            yield
        finally:
            await active.close()

    keyring = KeyRing.from_specs(settings.auth_keys)
    if keyring.open:
        log.warning("no API keys configured: /v1 endpoints are open")
    return Litestar(
        route_handlers=[create_embeddings, list_models, health, ready],
        lifespan=[lifespan],
        state=State({"keyring": keyring}),
        exception_handlers={
            ApplianceError: handle_appliance_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        openapi_config=None,
    )


def create_app_from_env() -> Litestar:
    """Uvicorn factory: reads the compiled settings from `EMBED_RUNTIME_DIR`."""
    env = GatewayEnv()  # type: ignore[call-arg]
    return create_app(read_compiled(env.runtime_dir).gateway)
