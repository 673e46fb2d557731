"""What `appliance compile` hands to the running processes (written as JSON).

The gateway and the Triton launcher read only these structs, never embed.toml:
every default has been resolved against the model folder by the compiler.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from appliance.spec.schema import ApiKeySpec, BatchingSpec, LimitsSpec, ModelKind, RateLimitStoreSpec


class Fidelity(msgspec.Struct, frozen=True, kw_only=True):
    """The fidelity gate's measurement behind a non-fp32 precision (appliance/compile/fidelity.py)."""

    min_cosine: float
    threshold: float
    per_task: dict[str, float]
    probes: int
    long_tokens: int
    seconds: float
    cached: bool


class CompiledModel(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: ModelKind
    folder: str
    tasks: list[str]
    task_ids: dict[str, int]
    default_task: str | None
    instructions: dict[str, str]
    max_tokens: int
    dimensions: list[int]
    hidden_size: int
    vocab_size: int
    pad_id: int
    output_name: str
    max_batch_tokens: int  # [batching] max_batch_tokens, or the engine's measured default
    engine: str = "onnxruntime"
    precision: str = "fp32"
    engine_reason: str = ""
    fidelity: Fidelity | None = None

    @property
    def tokenizer_path(self) -> Path:
        return Path(self.folder) / "tokenizer.json"


class CompiledPreset(msgspec.Struct, frozen=True, kw_only=True):
    """A model name that stands for `model` with these fields fixed (`[[presets]]`, or one per task)."""

    name: str
    model: str
    task: str | None = None
    dimensions: int | None = None
    normalized: bool | None = None
    embedding_type: str | None = None
    encoding_format: str | None = None
    automatic: bool = False  # made from the model's tasks, not declared in embed.toml


class TritonSettings(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    model_repository: str
    cache_size_bytes: int = 0


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: int
    log_level: str
    log_format: str
    log_inputs: bool
    triton_url: str
    triton_metrics_url: str
    models: list[CompiledModel]
    presets: list[CompiledPreset] = []
    auth_keys: list[ApiKeySpec]
    rate_limit_store: RateLimitStoreSpec | None = None
    limits: LimitsSpec
    batching: BatchingSpec
    instance_count: int
    threads_per_instance: int


class CompiledAppliance(msgspec.Struct, frozen=True, kw_only=True):
    gateway: GatewaySettings
    triton: TritonSettings


def client_host(bind_host: str) -> str:
    """Where a local client connects to a server bound to `bind_host` (all interfaces -> loopback)."""
    return "127.0.0.1" if bind_host in ("0.0.0.0", "") else bind_host


COMPILED_FILE = "appliance.json"


def write_compiled(out: Path, compiled: CompiledAppliance) -> Path:
    path = out / COMPILED_FILE
    path.write_bytes(msgspec.json.format(msgspec.json.encode(compiled)))
    return path


def read_compiled(runtime_dir: Path) -> CompiledAppliance:
    return msgspec.json.decode((runtime_dir / COMPILED_FILE).read_bytes(), type=CompiledAppliance)
