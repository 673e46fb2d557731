"""The shape of embed.toml: frozen msgspec Structs that reject unknown keys.

This module is the one place that knows the file's layout. Defaults that depend
on the model folder (tasks, dimensions, max_tokens) stay `None` here and are
resolved by the compiler, which can read the folder.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{64}$")]
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
ModelKind = Literal["jina-v3", "sentence-transformer"]
EngineSetting = Literal["auto", "onnxruntime", "openvino"]
PrecisionSetting = Literal["auto", "fp32", "bf16", "int8"]
Cosine = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]


class Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every table: immutable, unknown keys are an error naming their path."""


class ServerSpec(Base, frozen=True):
    """`[server]`: where the gateway listens and where Triton listens (loopback)."""

    host: str = "0.0.0.0"
    port: Port = 8080
    triton_host: str = "127.0.0.1"
    triton_http_port: Port = 8000
    triton_grpc_port: Port = 8001
    triton_metrics_port: Port = 8002
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    log_inputs: bool = False  # debug switch: put input text into the request log lines


class ModelSpec(Base, frozen=True):
    """`[[models]]`: one served model."""

    name: ModelName
    path: str
    kind: ModelKind | None = None
    default_task: str | None = None  # unset: retrieval.query when served, else the first served task
    tasks: list[str] | None = None
    task_instructions: bool = True
    max_tokens: PositiveInt | None = None
    dimensions: list[PositiveInt] | None = None
    # Which engine runs the model, at which precision. "auto" picks, on this CPU, the fastest choice
    # that passes the fidelity gate: bf16 on OpenVINO where the CPU runs bf16 natively, else fp32
    # on ONNX Runtime; never int8; an already quantized file stays on ONNX Runtime (README,
    # "Engines and precision"). "int8" is ONNX Runtime's dynamic quantization, made once and cached.
    engine: EngineSetting = "auto"
    precision: PrecisionSetting = "auto"
    # The fidelity gate: the smallest cosine allowed between the probe set's vectors at the served
    # precision and at ONNX Runtime fp32 (default 0.9999 for bf16, 0.99 for int8).
    min_cosine: Cosine | None = None
    # One preset per served task, named `<name>-query`, `<name>-passage`, `<name>-<task>` (jina-v3 only).
    task_presets: bool = True


class PresetSpec(Base, frozen=True):
    """`[[presets]]`: a model name that fixes a served model's task, dimensions and output defaults.

    For clients that can set only `model` (LangChain, LlamaIndex, the OpenAI SDK without extra_body).
    What the vector is (`task`, `dimensions`, `normalized`) is fixed: a request asking otherwise is
    a 400. The wire format (`embedding_type`, `encoding_format`) is a default the request may override.
    """

    name: ModelName
    model: str
    task: str | None = None
    dimensions: PositiveInt | None = None
    normalized: bool | None = None
    embedding_type: Literal["float", "base64", "binary", "ubinary"] | None = None
    encoding_format: Literal["float", "base64"] | None = None


class BatchingSpec(Base, frozen=True):
    """`[batching]`: Triton's dynamic batcher and the packer inside model.py."""

    max_batch_size: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    preferred_batch_sizes: list[PositiveInt] = []
    # 0: no waiting at idle; under load requests queue while the instance is busy and are batched anyway.
    max_queue_delay_us: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    # Padded tokens per engine run; unset = the measured best per engine: 1024 for ONNX Runtime,
    # 2048 for OpenVINO (docs/performance.md, "Decisions").
    max_batch_tokens: Annotated[int, msgspec.Meta(ge=16)] | None = None


class InstancesSpec(Base, frozen=True):
    """`[instances]`: model instances and ONNX Runtime threads per instance.

    `threads = 0` means: the CPUs this container may use, divided by `count`.
    """

    count: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    threads: Annotated[int, msgspec.Meta(ge=0, le=256)] = 0


class ApiKeySpec(Base, frozen=True):
    """One entry of `[auth] keys`: exactly one of `sha256`, `env`, `key`."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    sha256: Sha256Hex | None = None
    env: EnvName | None = None
    key: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None


class CacheSpec(Base, frozen=True):
    """`[cache]`: Triton's response cache for repeated inputs (keyed on the exact token ids sent)."""

    enabled: bool = False
    size_mb: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 256


class RateLimitStoreSpec(Base, frozen=True):
    """`[auth.rate_limit_store]`: keep the keys' per-minute windows in Redis, shared by every replica.

    Unset: each gateway counts on its own (N replicas give a key N times its quota). Exactly one of
    `url` / `url_env` (a URL with a password belongs in a Secret). If the store stops answering, the
    gateway keeps serving with per-replica limits until it answers again (README, "Scaling out").
    """

    url: str | None = None  # redis://[:password@]host:6379/0, rediss:// (TLS), redis+unix:///path (Valkey too)
    url_env: EnvName | None = None
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 250  # per store call; slower = unreachable
    retry_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0  # after a failure, per replica this long
    key_prefix: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "embed-appliance"


class AuthSpec(Base, frozen=True):
    """`[auth]`: API keys. No keys means an open server (logged as a warning)."""

    keys: list[ApiKeySpec] = []
    rate_limit_store: RateLimitStoreSpec | None = None


class LimitsSpec(Base, frozen=True):
    """`[limits]`: what one request may ask for (defaults follow OpenAI's API)."""

    max_inputs_per_request: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 2048
    max_tokens_per_request: Annotated[int, msgspec.Meta(ge=1)] = 300_000
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 16 * 1024 * 1024
    # Backpressure: requests beyond this many in flight get 429 + Retry-After at once. A request
    # answered 504 still counts while its work runs on in Triton (`embed_abandoned_requests`).
    max_concurrent_requests: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 64
    # ...unless a queue is set: then up to this many more wait for a permit, in arrival order, each
    # at most queue_timeout_s (capped by request_timeout_s), then 429. With few permits it keeps
    # them busy under overload (appliance/gateway/limits.py). 0: no queue.
    max_queued_requests: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    queue_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 2.0
    # A request not answered within this time ends in 504 (never a hang).
    request_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0
    # Triton's queue policy, off unless set: at most this many queued requests per model (then
    # 429), each rejected after queue_timeout_ms in the queue (then 503; never longer than
    # request_timeout_s). Off by default: any queue policy costs Triton's batcher its prefetching,
    # and then a request arriving while the instance is busy can wait 500 ms at low load
    # (appliance/compile/pbtxt.py `queue_policy`). The gateway's two limits above bound the load.
    triton_max_queue_size: Annotated[int, msgspec.Meta(ge=0)] = 0
    triton_queue_timeout_ms: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Connections: beyond this many open, a new one gets 503 and is closed at once; one that has
    # not sent a complete request head this long after connecting (or after the first byte of a
    # later request) is closed (appliance/runtime/http_guard.py). uvicorn has neither.
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1024
    header_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0


class EmbedSpec(Base, frozen=True):
    """The whole embed.toml."""

    models: list[ModelSpec]
    presets: list[PresetSpec] = []
    server: ServerSpec = ServerSpec()
    batching: BatchingSpec = BatchingSpec()
    instances: InstancesSpec = InstancesSpec()
    limits: LimitsSpec = LimitsSpec()
    cache: CacheSpec = CacheSpec()
    auth: AuthSpec = AuthSpec()
