"""embed.toml -> a Triton model repository + the gateway's settings.

The weights are referenced in place (by absolute path in config.pbtxt's
parameters), never copied: jina-v3's external data is 2.3 GB and may sit on a
read-only mount.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import msgspec

from appliance.compile import fidelity
from appliance.compile.engine_choice import EngineChoice, choose_engine
from appliance.compile.pbtxt import model_config_dict, render_pbtxt
from appliance.env import EmbedEnv
from appliance.errors import ConfigError
from appliance.models.engines import EngineName, Precision, cpu_capabilities
from appliance.settings import (
    CompiledAppliance,
    CompiledModel,
    CompiledPreset,
    Fidelity,
    GatewaySettings,
    TritonSettings,
    client_host,
    write_compiled,
)
from appliance.spec.keys import digest, resolve_keys, resolve_store_url
from appliance.spec.loader import load_spec
from appliance.spec.modelinfo import (
    ModelFolderError,
    ModelInfo,
    inspect_model_folder,
    tokenizer_facts,
)
from appliance.spec.schema import ApiKeySpec, BatchingSpec, EmbedSpec, ModelSpec, PresetSpec

log = logging.getLogger(__name__)

DEFAULT_TASK = "retrieval.query"
MODEL_PY = Path(__file__).resolve().parent.parent / "triton" / "model.py"
JINA_HELP = (
    "put jina-embeddings-v3's six files there (see README, 'Serving jina-embeddings-v3'): "
    "model.onnx and model.onnx_data from the model page's onnx/ folder, tokenizer.json, "
    "tokenizer_config.json, special_tokens_map.json and config.json from its root; "
    "or fetch them with `appliance download jinaai/jina-embeddings-v3 --to <that folder>`"
)


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup CPU quota (v2 or v1)."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_quota()
    return min(cpus, max(1, math.ceil(quota))) if quota else cpus


def _cgroup_quota() -> float | None:
    """`podman run --cpus N` as N, or None when no quota is set."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()  # cgroup v2
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        v1 = Path("/sys/fs/cgroup/cpu")
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
        return None if quota_us <= 0 else quota_us / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def resolve_model_path(spec_path: str, base_dir: Path, env: EmbedEnv) -> Path:
    """Relative model paths are relative to `EMBED_MODEL_ROOT`, else to embed.toml's folder."""
    path = Path(spec_path).expanduser()
    if path.is_absolute():
        return path
    return (env.model_root or base_dir) / path


def compile_model(
    index: int,
    spec: ModelSpec,
    spec_all: EmbedSpec,
    base_dir: Path,
    *,
    threads: int = 1,
    capabilities: Sequence[str] = (),
    env: EmbedEnv,
) -> CompiledModel:
    """Validate one `[[models]]` table against its folder, resolve its defaults, choose its engine."""
    key = f"models[{index}]"
    folder = resolve_model_path(spec.path, base_dir, env).resolve()
    try:
        info = inspect_model_folder(folder, spec.kind)
        tokenizer = tokenizer_facts(folder)
    except ModelFolderError as exc:
        problems = "\n    ".join(exc.problems)
        problem = f"model folder {folder} cannot be served:\n    {problems}"
        raise ConfigError(f"{key}.path", problem, _folder_fix(exc)) from None
    tasks = _resolve_tasks(key, spec, info)
    default_task = _resolve_default_task(key, spec, tasks)
    instructions = {t: info.task_instructions.get(t, "") for t in tasks} if spec.task_instructions else {}
    max_tokens = _resolve_max_tokens(key, spec, info, tokenizer.special_tokens)
    dimensions = _resolve_dimensions(key, spec, info)
    batching = spec_all.batching
    task_ids = {t: info.lora_adaptations.index(t) for t in tasks}
    gate = _Gate(
        key,
        folder,
        info,
        spec_all,
        threads=threads,
        capabilities=capabilities,
        env=env,
        tasks=tasks,
        task_ids=task_ids,
        instructions=instructions,
        max_tokens=max_tokens,
    )
    choice = choose_engine(key, spec, quantized_file=info.quantized, capabilities=capabilities, gate=gate)
    max_batch_tokens = batch_tokens_for(choice.engine, batching)
    served = gate.int8_folder() if choice.precision == "int8" and not info.quantized else folder
    log.info("%s (%s): %s %s: %s", key, spec.name, choice.engine, choice.precision, choice.reason)
    return CompiledModel(
        name=spec.name,
        kind=info.kind,
        folder=str(served),
        tasks=tasks,
        task_ids=task_ids,
        default_task=default_task,
        instructions=instructions,
        max_tokens=max_tokens,
        dimensions=dimensions,
        hidden_size=info.hidden_size,
        vocab_size=info.vocab_size or tokenizer.vocab_size,
        pad_id=info.pad_id,
        output_name=info.output_name,
        max_batch_tokens=max_batch_tokens,
        engine=choice.engine,
        precision=choice.precision,
        engine_reason=choice.reason,
        fidelity=_fidelity(choice),
    )


def _fidelity(choice: EngineChoice) -> Fidelity | None:
    if choice.gate is None or choice.threshold is None:
        return None
    g = choice.gate
    return Fidelity(
        min_cosine=round(g.min_cosine, 7),
        threshold=choice.threshold,
        per_task={t: round(c, 7) for t, c in g.per_task.items()},
        probes=g.probes,
        long_tokens=g.long_tokens,
        seconds=g.seconds,
        cached=g.cached,
    )


class _Gate:
    """The fidelity gate for one model, measured only when `choose_engine` asks (and cached)."""

    def __init__(
        self,
        key: str,
        folder: Path,
        info: ModelInfo,
        spec: EmbedSpec,
        *,
        threads: int,
        capabilities: Sequence[str],
        env: EmbedEnv,
        tasks: list[str],
        task_ids: dict[str, int],
        instructions: dict[str, str],
        max_tokens: int,
    ) -> None:
        self.key, self.folder, self.info, self.spec = key, folder, info, spec
        self.threads, self.capabilities, self.env = threads, capabilities, env
        self.tasks, self.task_ids, self.instructions, self.max_tokens = tasks, task_ids, instructions, max_tokens
        self._int8: Path | None = None

    def int8_folder(self) -> Path:
        if self._int8 is None:
            self._int8 = _quantized(self.key, self.folder, self.env.quantize_cache_dir)
        return self._int8

    def __call__(self, engine: EngineName, precision: Precision) -> fidelity.GateResult:
        from appliance.compile.quantize import sha256_memo

        cache = self.env.cache_root
        candidate = self.int8_folder() if precision == "int8" else self.folder
        try:
            weights = {p.name: sha256_memo(p, cache / "quantized") for p in sorted(self.folder.glob("model.onnx*"))}
            tasks: list[str | None] = list(self.tasks) or [None]
            key = fidelity.cache_key(
                weights, engine, precision, self.capabilities, tasks, self.instructions, self.max_tokens
            )
            probes = fidelity.probe_ids(self.folder / "tokenizer.json", tasks, self.instructions, self.max_tokens)
            batching = self.spec.batching
            return fidelity.measure(
                reference=self.folder,
                candidate=candidate,
                engine=engine,
                precision=precision,
                key=key,
                cache_dir=cache,
                probes=probes,
                engine_cache=self.env.engine_cache_dir,
                serving=fidelity.Serving(
                    output_name=self.info.output_name,
                    threads=self.threads,
                    pad_id=self.info.pad_id,
                    task_ids=self.task_ids,
                    max_batch_tokens=batch_tokens_for(engine, batching),
                    max_rows=batching.max_batch_size,
                ),
            )
        except OSError as exc:
            raise ConfigError(
                f"{self.key}.precision",
                f"the fidelity gate could not run: {exc}",
                "make $EMBED_CACHE_DIR a writable folder",
            ) from None
        except Exception as exc:  # noqa: BLE001 - either engine's own error types; the gate must not crash start-up
            raise ConfigError(
                f"{self.key}.path",
                f"the model could not be run for the fidelity gate ({engine} {precision}): "
                f"{type(exc).__name__}: {str(exc)[:500]}",
                f'check the folder with `appliance verify {self.folder}`, or set {self.key}.precision = "fp32"',
            ) from None


# `[batching] max_batch_tokens` when unset, per engine (measured: docs/performance.md, "OpenVINO").
BATCH_TOKENS: dict[str, int] = {"onnxruntime": 1024, "openvino": 2048}


def batch_tokens_for(engine: str, batching: BatchingSpec) -> int:
    return batching.max_batch_tokens or BATCH_TOKENS[engine]


def _quantized(key: str, folder: Path, cache: Path) -> Path:
    from appliance.compile.quantize import (  # onnxruntime.quantization: only when asked
        QuantizeError,
        quantize_model,
    )

    try:
        return quantize_model(folder, cache).resolve()
    except (QuantizeError, OSError) as exc:
        raise ConfigError(
            f"{key}.precision",
            f"could not make the int8 model in {cache}: {exc}",
            'make $EMBED_CACHE_DIR a writable folder with room for the int8 model, or set precision = "auto"',
        ) from None


def _folder_fix(exc: ModelFolderError) -> str:
    if exc.truncated:
        return "the weights file is incomplete (an interrupted copy or download): fetch model.onnx_data again"
    if any(p.startswith("missing file") for p in exc.problems):
        return (
            JINA_HELP
            if exc.kind == "jina-v3"
            else ("a sentence-transformer folder needs model.onnx (its ONNX export), tokenizer.json and config.json")
        )
    return "point `path` at a folder holding the model's ONNX export, tokenizer.json and config.json"


def _resolve_tasks(key: str, spec: ModelSpec, info: ModelInfo) -> list[str]:
    if info.kind != "jina-v3":
        for name in ("tasks", "default_task"):
            if getattr(spec, name) is not None:
                raise ConfigError(f"{key}.{name}", "a sentence-transformer model has no tasks", f"remove `{name}`")
        return []
    if spec.tasks is None:
        return list(info.lora_adaptations)
    for task in spec.tasks:
        if task not in info.lora_adaptations:
            raise ConfigError(
                f"{key}.tasks",
                f"unknown task `{task}`",
                f"use names from the model's lora_adaptations: {', '.join(info.lora_adaptations)}",
            )
    if not spec.tasks:
        raise ConfigError(f"{key}.tasks", "empty list", "list at least one task, or remove the key to expose all")
    return list(spec.tasks)


def _resolve_default_task(key: str, spec: ModelSpec, tasks: list[str]) -> str | None:
    if not tasks:
        return None
    if spec.default_task is None:  # the reference design's default: jina-v3 is mostly asked queries
        return DEFAULT_TASK if DEFAULT_TASK in tasks else tasks[0]
    if spec.default_task not in tasks:
        raise ConfigError(
            f"{key}.default_task", f"`{spec.default_task}` is not a served task", f"use one of: {', '.join(tasks)}"
        )
    return spec.default_task


def _resolve_max_tokens(key: str, spec: ModelSpec, info: ModelInfo, specials: int) -> int:
    limit = info.model_max_length - specials
    if spec.max_tokens is None:
        return info.default_max_tokens(specials)
    if spec.max_tokens > limit:
        raise ConfigError(
            f"{key}.max_tokens",
            f"{spec.max_tokens} is more than the model takes ({limit} content tokens)",
            f"set max_tokens <= {limit} or remove it",
        )
    return spec.max_tokens


def _resolve_dimensions(key: str, spec: ModelSpec, info: ModelInfo) -> list[int]:
    supported = info.matryoshka_dimensions if info.kind == "jina-v3" else [info.hidden_size]
    if info.hidden_size not in supported:
        supported = sorted({*supported, info.hidden_size})
    if spec.dimensions is None:
        return supported
    if not spec.dimensions:
        raise ConfigError(f"{key}.dimensions", "empty list", f"list sizes from {supported}, or remove the key")
    bad = [d for d in spec.dimensions if d not in supported]
    if bad:
        raise ConfigError(f"{key}.dimensions", f"{bad} not supported by this model", f"use values from {supported}")
    return sorted(set(spec.dimensions))


def compile_spec(
    spec: EmbedSpec,
    base_dir: Path,
    out: Path,
    *,
    capabilities: Sequence[str] | None = None,
    env: EmbedEnv | None = None,
) -> CompiledAppliance:
    """Validate the whole spec, then write the Triton repository and settings into `out`."""
    env = EmbedEnv() if env is None else env
    instances = spec.instances
    threads = instances.threads or max(1, available_cpus() // instances.count)
    if capabilities is None:
        capabilities = cpu_capabilities()
    models = [
        compile_model(i, m, spec, base_dir, threads=threads, capabilities=capabilities, env=env)
        for i, m in enumerate(spec.models)
    ]
    presets = compile_presets(spec, models)
    repo = out / "triton"
    if repo.exists():
        shutil.rmtree(repo)
    for model in models:
        _write_triton_model(repo, model, spec, threads, env.engine_cache_dir)
    server = spec.server
    compiled = CompiledAppliance(
        gateway=GatewaySettings(
            host=server.host,
            port=server.port,
            log_level=server.log_level,
            log_format=server.log_format,
            log_inputs=server.log_inputs,
            triton_metrics_url=f"http://{client_host(server.triton_host)}:{server.triton_metrics_port}/metrics",
            triton_url=f"{client_host(server.triton_host)}:{server.triton_http_port}",
            models=models,
            presets=presets,
            auth_keys=[_hash_plaintext(k) for k in spec.auth.keys],
            rate_limit_store=spec.auth.rate_limit_store,
            limits=spec.limits,
            batching=spec.batching,
            instance_count=instances.count,
            threads_per_instance=threads,
        ),
        triton=TritonSettings(
            host=server.triton_host,
            http_port=server.triton_http_port,
            grpc_port=server.triton_grpc_port,
            metrics_port=server.triton_metrics_port,
            model_repository=str(repo),
            cache_size_bytes=spec.cache.size_mb * 1024 * 1024 if spec.cache.enabled else 0,
        ),
    )
    write_compiled(out, compiled)
    return compiled


# The automatic presets' suffixes: `-query` / `-passage` as NVIDIA's embedding NIM names them.
TASK_SUFFIXES = {"retrieval.query": "query", "retrieval.passage": "passage"}


def preset_name(model: str, task: str) -> str:
    """`jina-embeddings-v3` + `retrieval.passage` -> `jina-embeddings-v3-passage`."""
    return f"{model}-{TASK_SUFFIXES.get(task, task.replace('.', '-'))}"


def compile_presets(spec: EmbedSpec, models: list[CompiledModel]) -> list[CompiledPreset]:
    """One automatic preset per served task (unless `task_presets = false`), then `[[presets]]`.

    A declared preset named like an automatic one replaces it; any other clash is an error.
    """
    served = {m.name: m for m in models}
    presets: dict[str, CompiledPreset] = {}
    for index, (model_spec, model) in enumerate(zip(spec.models, models)):
        if not model_spec.task_presets:
            continue
        for task in model.tasks:
            name = preset_name(model.name, task)
            if name in served or name in presets:
                other = "a model" if name in served else "another model's preset"
                raise ConfigError(
                    f"models[{index}].task_presets",
                    f"the preset `{name}` for task {task} has the name of {other}",
                    "rename one of the models, or set task_presets = false",
                )
            presets[name] = CompiledPreset(name=name, model=model.name, task=task, automatic=True)
    declared: set[str] = set()
    for index, entry in enumerate(spec.presets):
        preset = _compile_preset(f"presets[{index}]", entry, served)
        if entry.name in served:
            raise ConfigError(
                f"presets[{index}].name",
                f"`{entry.name}` is also a model's name",
                "give the preset a name no model has",
            )
        if entry.name in declared:
            raise ConfigError(
                f"presets[{index}].name", f"`{entry.name}` is declared twice", "give every preset a unique name"
            )
        declared.add(entry.name)
        presets[entry.name] = preset
    return list(presets.values())


def _compile_preset(key: str, entry: PresetSpec, served: dict[str, CompiledModel]) -> CompiledPreset:
    model = served.get(entry.model)
    if model is None:
        raise ConfigError(
            f"{key}.model",
            f"`{entry.model}` is not a served model",
            f"use the name of a [[models]] table: {', '.join(served)}",
        )
    if entry.task is not None and not model.tasks:
        raise ConfigError(f"{key}.task", f"`{model.name}` has no tasks", "remove `task`")
    if entry.task is not None and entry.task not in model.tasks:
        raise ConfigError(
            f"{key}.task",
            f"`{entry.task}` is not a task `{model.name}` serves",
            f"use one of: {', '.join(model.tasks)}",
        )
    if entry.dimensions is not None and entry.dimensions not in model.dimensions:
        raise ConfigError(
            f"{key}.dimensions",
            f"{entry.dimensions} is not a size `{model.name}` serves",
            f"use one of: {', '.join(map(str, model.dimensions))}",
        )
    return CompiledPreset(
        name=entry.name,
        model=model.name,
        task=entry.task,
        dimensions=entry.dimensions,
        normalized=entry.normalized,
        embedding_type=entry.embedding_type,
        encoding_format=entry.encoding_format,
    )


def _hash_plaintext(entry: ApiKeySpec) -> ApiKeySpec:
    """Plaintext keys are hashed before anything is written to the runtime folder (limits kept)."""
    if entry.key is None:
        return entry
    return msgspec.structs.replace(entry, key=None, sha256=digest(entry.key).hex())


def _write_triton_model(repo: Path, model: CompiledModel, spec: EmbedSpec, threads: int, engine_cache: Path) -> None:
    parameters = {
        "model_dir": model.folder,
        "kind": model.kind,
        "output_name": model.output_name,
        "pad_id": str(model.pad_id),
        "intra_op_threads": str(threads),
        "max_batch_tokens": str(model.max_batch_tokens),
        "engine": model.engine,
        "precision": model.precision,
        "engine_cache_dir": str(engine_cache),
    }
    config = model_config_dict(
        model,
        spec.batching,
        spec.limits,
        instance_count=spec.instances.count,
        response_cache=spec.cache.enabled,
        parameters=parameters,
    )
    version_dir = repo / model.name / "1"
    version_dir.mkdir(parents=True)
    (repo / model.name / "config.pbtxt").write_text(render_pbtxt(config), encoding="utf-8")
    shutil.copyfile(MODEL_PY, version_dir / "model.py")


def compile_file(config_path: Path, out: Path, env: EmbedEnv | None = None) -> CompiledAppliance:
    """`appliance compile`: load, validate and compile an embed.toml file."""
    spec = load_spec(config_path)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    compiled = compile_spec(spec, config_path.resolve().parent, out, env=env)
    resolve_keys(spec.auth.keys)  # an env key that is not set stops start-up here, naming it
    if spec.auth.rate_limit_store is not None:
        resolve_store_url(spec.auth.rate_limit_store)  # likewise its URL: set, and a scheme we speak
    if not spec.auth.keys:
        log.warning(
            "embed.toml declares no [auth] keys: the API is open to anyone who can reach port %d", spec.server.port
        )
    for entry in spec.auth.keys:
        if entry.key is not None:
            log.warning("auth key `%s` is written in plaintext in embed.toml; prefer sha256 = or env =", entry.name)
    return compiled
