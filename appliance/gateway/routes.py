"""Route handlers: decode, call the pipeline, encode. Nothing else lives here."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import msgspec
from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers import BaseRouteHandler

from appliance import __version__
from appliance.errors import ModelNotFoundError
from appliance.gateway.auth import KeyRing
from appliance.gateway.errors import request_error_from_msgspec
from appliance.gateway.inputs import normalize_input
from appliance.gateway.schemas import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    Info,
    ModelCard,
    ModelInfo,
    ModelList,
    Token,
    TokenizeRequest,
    TokenizeResponse,
    Usage,
)
from appliance.pipeline.encoding import encode_vectors
from appliance.pipeline.service import EmbedJob, ModelPipeline

T = TypeVar("T")
_decoders = {t: msgspec.json.Decoder(t) for t in (EmbeddingRequest, TokenizeRequest)}
_encoder = msgspec.json.Encoder()


def require_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    keyring: KeyRing = connection.app.state.keyring
    keyring.check(connection.headers.get("authorization"))


def json_response(payload: object, status: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(payload), status_code=status, media_type="application/json")


async def decode(request: Request, body_type: type[T]) -> T:
    try:
        return _decoders[body_type].decode(await request.body())  # type: ignore[no-any-return]
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise request_error_from_msgspec(exc) from None


def pipeline_for(state: State, model: str) -> ModelPipeline:
    pipelines: dict[str, ModelPipeline] = state.pipelines
    if model not in pipelines:
        raise ModelNotFoundError(
            f"model `{model}` is not served here; served models: {', '.join(pipelines)}", param="model"
        )
    return pipelines[model]


@post("/v1/embeddings", guards=[require_key], status_code=200)
async def create_embeddings(request: Request, state: State) -> Response[bytes]:
    body = await decode(request, EmbeddingRequest)
    pipeline = pipeline_for(state, body.model)
    job = EmbedJob(
        inputs=normalize_input(body.input),
        task=body.task,
        dimensions=body.dimensions,
        normalized=body.normalized,
        truncate=body.truncate,
        late_chunking=body.late_chunking,
    )
    result = await pipeline.embed(job)
    wire = body.embedding_type or body.encoding_format or "float"
    vectors = encode_vectors(result.vectors, wire)
    data = [Embedding(embedding=v, index=i) for i, v in enumerate(vectors)]  # type: ignore[arg-type]
    usage = Usage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
    return json_response(EmbeddingResponse(data=data, model=body.model, usage=usage))


@post("/tokenize", guards=[require_key], status_code=200)
async def tokenize(request: Request, state: State) -> Response[bytes]:
    body = await decode(request, TokenizeRequest)
    pipeline = pipeline_for(state, body.model)
    task = pipeline.resolve_task(body.task)
    texts = [body.input] if isinstance(body.input, str) else body.input
    pieces = await asyncio.to_thread(pipeline.encoder.pieces, texts, task)
    tokens = [[Token(p.id, p.text, p.special, p.start, p.stop) for p in seq] for seq in pieces]
    return json_response(TokenizeResponse(tokens=tokens, model=body.model))


@get("/v1/models", guards=[require_key])
async def list_models(state: State) -> Response[bytes]:
    return json_response(ModelList(data=[ModelCard(id=name) for name in state.pipelines]))


@get("/v1/models/{model_id:str}", guards=[require_key])
async def get_model(state: State, model_id: str) -> Response[bytes]:
    return json_response(ModelCard(id=pipeline_for(state, model_id).model.name))


@get("/info", guards=[require_key])
async def info(state: State) -> Response[bytes]:
    settings = state.settings
    models = [
        ModelInfo(
            name=p.model.name, kind=p.model.kind, tasks=p.model.tasks, default_task=p.model.default_task,
            task_instructions=p.model.instructions, dimensions=p.model.dimensions,
            max_tokens=p.model.max_tokens, hidden_size=p.model.hidden_size,
        )
        for p in state.pipelines.values()
    ]
    return json_response(
        Info(
            version=__version__, models=models, batching=settings.batching, limits=settings.limits,
            instance_count=settings.instance_count, threads_per_instance=settings.threads_per_instance,
        )
    )


@get("/health")
async def health() -> Response[bytes]:
    return json_response({"status": "ok"})


@get("/ready")
async def ready(state: State) -> Response[bytes]:
    if await state.backend.ready(list(state.pipelines)):
        return json_response({"status": "ready"})
    response = json_response({"status": "loading"}, status=503)
    response.headers["Retry-After"] = "1"
    return response


ROUTES = [create_embeddings, tokenize, list_models, get_model, info, health, ready]
