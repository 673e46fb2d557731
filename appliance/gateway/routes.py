"""Route handlers: decode, call the pipeline, encode. Nothing else lives here."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.params import FromPath
from litestar.types import Scope
from prometheus_client import CONTENT_TYPE_LATEST

from appliance import __version__
from appliance.errors import (
    ApplianceError,
    InvalidRequestError,
    ModelNotFoundError,
    RateLimitError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)
from appliance.gateway.admission import OVERLOADED
from appliance.gateway.auth import KeyRing
from appliance.gateway.errors import request_error_from_msgspec
from appliance.gateway.inputs import normalize_input
from appliance.gateway.metrics import GatewayMetrics
from appliance.gateway.schemas import (
    BatchingInfo,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EngineInfo,
    FidelityInfo,
    Info,
    LimitsInfo,
    ModelCard,
    ModelInfo,
    ModelList,
    PresetInfo,
    Token,
    TokenizeRequest,
    TokenizeResponse,
    Usage,
)
from appliance.gateway.state import AppState
from appliance.pipeline.encoding import encode_vectors
from appliance.pipeline.presets import Asked, resolve
from appliance.pipeline.service import EmbedJob, EmbedResult, ModelPipeline
from appliance.settings import CompiledModel, CompiledPreset

T = TypeVar("T", EmbeddingRequest, TokenizeRequest)
InfoPart = TypeVar("InfoPart", BatchingInfo, LimitsInfo)
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {
    t: msgspec.json.Decoder(t) for t in (EmbeddingRequest, TokenizeRequest)
}
_encoder = msgspec.json.Encoder()


async def require_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: a valid Bearer key (when keys are configured); its NAME goes to logs and metrics.

    Async on purpose: Litestar runs a sync guard in a worker thread (a thread hop per request).
    """
    keyring: KeyRing = connection.app.state.keyring  # a guard gets the connection, not the state
    name = keyring.check(connection.headers.get("authorization"))
    log_fields(connection.scope)["key"] = name or "-"


def log_fields(scope: Scope) -> dict[str, Any]:
    """What the request log line and the request counter report (filled as the request goes)."""
    state = scope.setdefault("state", {})
    fields: dict[str, Any] = state.setdefault("log", {})
    return fields


def json_response(payload: object, status: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(payload), status_code=status, media_type="application/json")


async def decode(request: Request[Any, Any, Any], body_type: type[T]) -> T:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"the body must be JSON; send `Content-Type: application/json` (got `{content_type}`)"
        )
    try:
        decoded: T = _decoders[body_type].decode(await request.body())
        return decoded
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise request_error_from_msgspec(exc) from None
    except RecursionError:  # msgspec skipping an unknown, absurdly nested field
        raise InvalidRequestError("the request body nests too deeply") from None
    except UnicodeDecodeError:
        raise InvalidRequestError("the request body is not valid UTF-8") from None


def pipeline_for(state: AppState, model: str) -> tuple[ModelPipeline, CompiledPreset | None]:
    """A served model's name, or a preset's: its pipeline, and the preset."""
    pipelines = state.pipelines
    if model in pipelines:
        return pipelines[model], None
    presets = state.presets
    if model in presets:
        preset = presets[model]
        return pipelines[preset.model], preset
    also = f" (and their presets: {', '.join(presets)})" if presets else ""
    raise ModelNotFoundError(
        f"model `{model}` is not served here; served models: {', '.join(pipelines)}{also}", param="model"
    )


@post("/v1/embeddings", guards=[require_key], status_code=200)
async def create_embeddings(request: Request[Any, Any, Any], state: AppState) -> Response[bytes]:
    # The concurrency permit is taken (or the request refused) by gateway/admission.py, outermost.
    metrics = state.metrics
    key_limits = state.key_limits
    fields = log_fields(request.scope)
    if request.scope["state"].get(OVERLOADED):  # refused here, in full, to carry the key's headers
        metrics.rejected.labels("overloaded").inc()
        exc = state.limiter.overloaded()
        exc.headers = await key_limits.quota_headers(fields.get("key"))
        raise exc
    metrics.in_flight.inc()
    try:
        response = await _embed(request, state, fields)
    except ApplianceError as exc:  # every answer to a key with limits carries OpenAI's headers
        exc.headers = {**(exc.headers or {}), **await key_limits.quota_headers(fields.get("key"))}
        raise
    finally:
        metrics.in_flight.dec()
    response.headers.update(await key_limits.quota_headers(fields.get("key")))
    return response


async def _embed(request: Request[Any, Any, Any], state: AppState, fields: dict[str, Any]) -> Response[bytes]:
    metrics = state.metrics
    key_limits = state.key_limits
    key = fields.get("key")
    try:
        ticket = await key_limits.admit(key)
    except RateLimitError:
        metrics.rejected.labels("key_limit").inc()
        raise
    body = await decode(request, EmbeddingRequest)
    pipeline, preset = pipeline_for(state, body.model)
    normalized = None if body.normalized is msgspec.UNSET else body.normalized
    asked = resolve(
        Asked(
            task=body.task,
            input_type=body.input_type,
            dimensions=body.dimensions,
            normalized=normalized,
            embedding_type=body.embedding_type,
            encoding_format=body.encoding_format,
        ),
        preset,
    )
    inputs = normalize_input(body.input)
    task = pipeline.resolve_task(asked.task, asked.task_param)
    fields.update(model=pipeline.model.name, task=task or "-", inputs=len(inputs))
    if state.settings.log_inputs:
        fields["input"] = inputs
    job = EmbedJob(
        inputs=inputs,
        task=asked.task,
        task_param=asked.task_param,
        dimensions=asked.dimensions,
        normalized=asked.normalized,
        truncate=body.truncate,
        late_chunking=body.late_chunking,
    )
    work = asyncio.ensure_future(pipeline.embed(job))
    try:
        async with asyncio.timeout(state.settings.limits.request_timeout_s):
            result = await asyncio.shield(work)
    except TimeoutError:
        # The client gets its 504 now; the work already handed to Triton runs on and keeps a permit.
        metrics.abandoned.inc()
        state.limiter.hold_until_done(work, metrics.abandoned.dec)
        raise RequestTimeoutError(
            f"no answer within {state.settings.limits.request_timeout_s:g} s; retry, or send fewer inputs"
        ) from None
    await key_limits.charge(key, result.prompt_tokens, ticket)
    _record(metrics, pipeline.model.name, key, len(inputs), result)
    fields["tokens"] = result.prompt_tokens
    vectors = encode_vectors(result.vectors, asked.wire)
    data = [Embedding(embedding=v, index=i) for i, v in enumerate(vectors)]  # type: ignore[arg-type]
    usage = Usage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
    return json_response(EmbeddingResponse(data=data, model=body.model, usage=usage))


def _record(metrics: GatewayMetrics, model: str, key: str | None, inputs: int, result: EmbedResult) -> None:
    metrics.latency.labels("tokenize", model).observe(result.tokenize_s)
    metrics.latency.labels("inference", model).observe(result.infer_s)
    metrics.latency.labels("total", model).observe(result.tokenize_s + result.infer_s)
    metrics.input_tokens.labels(model, key or "-").inc(result.prompt_tokens)
    metrics.inputs.labels(model).inc(inputs)
    for rows, efficiency in result.chunks:
        metrics.chunk_rows.labels(model).observe(rows)
        metrics.padding.labels(model).observe(efficiency)


@post("/tokenize", guards=[require_key], status_code=200)
async def tokenize(request: Request[Any, Any, Any], state: AppState) -> Response[bytes]:
    body = await decode(request, TokenizeRequest)
    pipeline, preset = pipeline_for(state, body.model)
    asked = resolve(Asked(task=body.task, input_type=body.input_type), preset)
    task = pipeline.resolve_task(asked.task, asked.task_param)
    fields = log_fields(request.scope)
    fields.update(model=pipeline.model.name, task=task or "-")
    texts = [body.input] if isinstance(body.input, str) else body.input
    pieces = await asyncio.to_thread(pipeline.encoder.pieces, texts, task, add_special_tokens=body.add_special_tokens)
    tokens = [[Token(p.id, p.text, p.special, p.start, p.stop) for p in seq] for seq in pieces]
    return json_response(TokenizeResponse(tokens=tokens, model=body.model))


def _card(name: str, preset: CompiledPreset | None) -> ModelCard:
    return ModelCard(id=name, root=preset.model if preset else name, parent=preset.model if preset else None)


@get("/v1/models", guards=[require_key])
async def list_models(state: AppState) -> Response[bytes]:
    presets = state.presets
    cards = [_card(name, None) for name in state.pipelines] + [_card(n, p) for n, p in presets.items()]
    return json_response(ModelList(data=cards))


@get("/v1/models/{model_id:str}", guards=[require_key])
async def get_model(state: AppState, model_id: FromPath[str]) -> Response[bytes]:
    _, preset = pipeline_for(state, model_id)
    return json_response(_card(model_id, preset))


@get("/info", guards=[require_key])
async def info(state: AppState) -> Response[bytes]:
    settings = state.settings
    models = [
        ModelInfo(
            name=p.model.name,
            kind=p.model.kind,
            tasks=p.model.tasks,
            default_task=p.model.default_task,
            task_instructions=p.model.instructions,
            dimensions=p.model.dimensions,
            max_tokens=p.model.max_tokens,
            hidden_size=p.model.hidden_size,
            engine=_engine_info(p.model),
        )
        for p in state.pipelines.values()
    ]
    presets = [
        PresetInfo(
            name=p.name,
            model=p.model,
            task=p.task,
            dimensions=p.dimensions,
            normalized=p.normalized,
            embedding_type=p.embedding_type,
            encoding_format=p.encoding_format,
            automatic=p.automatic,
        )
        for p in settings.presets
    ]
    return json_response(
        Info(
            version=__version__,
            models=models,
            presets=presets,
            batching=_info_of(BatchingInfo, settings.batching),
            limits=msgspec.structs.replace(
                _info_of(LimitsInfo, settings.limits), key_limit_store=state.key_limits.store
            ),
            instance_count=settings.instance_count,
            threads_per_instance=settings.threads_per_instance,
        )
    )


def _info_of(info_type: type[InfoPart], spec: msgspec.Struct) -> InfoPart:
    """The HTTP contract's struct filled from the compiled settings: new settings fields stay out of it."""
    return msgspec.convert(msgspec.structs.asdict(spec), info_type)


def _engine_info(model: CompiledModel) -> EngineInfo:
    gate = model.fidelity
    return EngineInfo(
        name=model.engine,
        precision=model.precision,
        reason=model.engine_reason,
        max_batch_tokens=model.max_batch_tokens,
        fidelity=None
        if gate is None
        else FidelityInfo(
            min_cosine=gate.min_cosine,
            threshold=gate.threshold,
            per_task=gate.per_task,
            probes=gate.probes,
            long_tokens=gate.long_tokens,
        ),
    )


@get("/metrics")
async def metrics(state: AppState) -> Response[bytes]:
    gateway_metrics = state.metrics
    return Response(await gateway_metrics.render(), media_type=CONTENT_TYPE_LATEST)


@get("/health")
async def health() -> Response[bytes]:
    return json_response({"status": "ok"})


@get("/ready")
async def ready(state: AppState) -> Response[bytes]:
    if await state.backend.ready(list(state.pipelines)):
        return json_response({"status": "ready"})
    response = json_response({"status": "loading"}, status=503)
    response.headers["Retry-After"] = "1"
    return response


ROUTES = [create_embeddings, tokenize, list_models, get_model, info, metrics, health, ready]
