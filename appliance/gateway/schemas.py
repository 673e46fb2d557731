"""Request and response bodies (msgspec Structs), shaped as OpenAI's and Jina's APIs."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]


InputItem = NonEmptyStr | int | list[int]


class EmbeddingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /v1/embeddings`: OpenAI's fields plus Jina's. Unknown fields (e.g. `user`) are ignored, as OpenAI does.

    `input`: a string, a list of strings, one list of token ids, or a list of token-id lists.
    `model`: a served model or a preset of one (GET /v1/models lists both).
    """

    input: NonEmptyStr | Annotated[list[InputItem], msgspec.Meta(min_length=1)]
    model: str
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, msgspec.Meta(ge=1)] | None = None
    user: str | None = None
    task: str | None = None
    input_type: str | None = None  # `query` = task retrieval.query; `passage` / `document` = retrieval.passage
    embedding_type: Literal["float", "base64", "binary", "ubinary"] | None = None
    normalized: bool | msgspec.UnsetType = msgspec.UNSET  # unset: true (or the preset's); null is refused
    truncate: bool = False
    late_chunking: bool = False


class TokenizeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /tokenize`: the tokens the embedding path would feed the model."""

    input: NonEmptyStr | Annotated[list[NonEmptyStr], msgspec.Meta(min_length=1)]
    model: str
    task: str | None = None
    input_type: str | None = None
    add_special_tokens: bool = True  # as TEI and vLLM: false leaves out `<s>` ... `</s>`


class Token(msgspec.Struct, frozen=True):
    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class TokenizeResponse(msgspec.Struct, frozen=True):
    tokens: list[list[Token]]
    model: str


class Embedding(msgspec.Struct, frozen=True):
    embedding: list[float] | str  # binary/ubinary: integers (valid JSON numbers)
    index: int
    object: str = "embedding"


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(msgspec.Struct, frozen=True):
    data: list[Embedding]
    model: str
    usage: Usage
    object: str = "list"


class ModelCard(msgspec.Struct, frozen=True, kw_only=True):
    """OpenAI's model object; `root` is the served model (vLLM's field), `parent` set for a preset."""

    id: str
    created: int = 0
    owned_by: str = "embed-appliance"
    object: str = "model"
    root: str
    parent: str | None = None


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelCard]
    object: str = "list"


class ErrorBody(msgspec.Struct, frozen=True):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(msgspec.Struct, frozen=True):
    error: ErrorBody


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: str
    tasks: list[str]
    default_task: str | None
    task_instructions: dict[str, str]
    dimensions: list[int]
    max_tokens: int
    hidden_size: int
    engine: EngineInfo


class FidelityInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The fidelity gate's measurement: min cosine of the probe set to ONNX Runtime fp32."""

    min_cosine: float
    threshold: float
    per_task: dict[str, float]
    probes: int
    long_tokens: int


class EngineInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Which engine runs the model, at which precision, and why (`auto`'s reasoning)."""

    name: str
    precision: str
    reason: str
    fidelity: FidelityInfo | None
    max_batch_tokens: int  # padded tokens per engine run ([batching] max_batch_tokens, or the engine's default)


class PresetInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A preset: `name` serves `model` with these fields fixed (null: the request's, or the default)."""

    name: str
    model: str
    task: str | None
    dimensions: int | None
    normalized: bool | None
    embedding_type: str | None
    encoding_format: str | None
    automatic: bool


class BatchingInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Triton's dynamic batcher as configured (the HTTP contract; embed.toml's `[batching]` may differ)."""

    max_batch_size: int
    preferred_batch_sizes: list[int]
    max_queue_delay_us: int
    max_batch_tokens: int | None  # as set; each model's engine says what it runs with


class LimitsInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What one request may ask for, and the backpressure limits."""

    max_inputs_per_request: int
    max_tokens_per_request: int
    max_body_bytes: int
    max_concurrent_requests: int
    max_queued_requests: int
    queue_timeout_s: float
    request_timeout_s: float
    triton_max_queue_size: int
    triton_queue_timeout_ms: int
    max_connections: int
    header_timeout_s: float
    # Where the keys' per-minute windows live: "memory" (each replica counts alone) or "redis" (shared)
    key_limit_store: str = "memory"


class Info(msgspec.Struct, frozen=True, kw_only=True):
    """`GET /info`: what is served and how, as compiled from embed.toml."""

    version: str
    models: list[ModelInfo]
    presets: list[PresetInfo]
    batching: BatchingInfo
    limits: LimitsInfo
    instance_count: int
    threads_per_instance: int


class Status(msgspec.Struct, frozen=True):
    status: str
