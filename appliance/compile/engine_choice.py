"""`engine` x `precision` of one `[[models]]` table -> what is served, and why.

Pure: the CPU's capabilities and the fidelity gate come in as arguments, so every branch is
unit-tested without the CPU or the model it needs (tests/unit/test_engine_choice.py).

`auto` picks the fastest choice that passes the gate on this CPU (docs/performance.md, "OpenVINO"):
bf16 on OpenVINO where the CPU runs bf16 natively; else fp32 on ONNX Runtime (OpenVINO f32
measured no faster); never int8 (it moves vectors beyond the bf16 gate). A file that is already
quantized stays on ONNX Runtime, whose dynamic-quantization kernels ran ~3x faster than OpenVINO's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.compile.fidelity import THRESHOLDS, GateResult
from appliance.errors import ConfigError
from appliance.models.engines import EngineName, Precision
from appliance.spec.schema import ModelSpec

log = logging.getLogger(__name__)

# (engine, precision) -> the gate's measurement for it
Gate = Callable[[EngineName, Precision], GateResult]


@dataclass(frozen=True)
class EngineChoice:
    engine: EngineName
    precision: Precision
    reason: str
    gate: GateResult | None = None
    threshold: float | None = None


def choose_engine(
    key: str, spec: ModelSpec, *, quantized_file: bool, capabilities: Sequence[str], gate: Gate
) -> EngineChoice:
    """Resolve `engine` / `precision` for `key` (`models[i]`); a choice that cannot be served is a ConfigError."""
    caps = ", ".join(capabilities) or "none reported"
    bf16 = "BF16" in capabilities
    if quantized_file:
        return _quantized_file(key, spec)
    if spec.precision == "auto":
        if spec.engine == "onnxruntime":
            return EngineChoice("onnxruntime", "fp32", "engine = onnxruntime: fp32 (auto never picks int8)")
        fallback: EngineName = "openvino" if spec.engine == "openvino" else "onnxruntime"
        if not bf16:
            return EngineChoice(
                fallback,
                "fp32",
                f"precision auto: this CPU has no native bf16 (OpenVINO "
                f"OPTIMIZATION_CAPABILITIES: {caps}), so fp32 on {fallback}",
            )
        threshold = _threshold(spec, "bf16")
        result = gate("openvino", "bf16")
        if result.min_cosine >= threshold:
            return EngineChoice(
                "openvino",
                "bf16",
                f"precision auto: the CPU runs bf16 natively ({caps}) and "
                f"bf16 passed the fidelity gate (min cosine {result.min_cosine:.6f} >= {threshold})",
                result,
                threshold,
            )
        log.warning(
            "%s: bf16 failed the fidelity gate (min cosine %.6f < %s): serving fp32 on %s",
            key,
            result.min_cosine,
            threshold,
            fallback,
        )
        return EngineChoice(
            fallback,
            "fp32",
            f"precision auto: bf16 failed the fidelity gate (min cosine "
            f"{result.min_cosine:.6f} < {threshold}), so fp32 on {fallback}",
            result,
            threshold,
        )
    if spec.precision == "fp32":
        engine: EngineName = "openvino" if spec.engine == "openvino" else "onnxruntime"
        return EngineChoice(
            engine,
            "fp32",
            f"precision = fp32 on {engine}"
            + (" (engine auto: ONNX Runtime fp32 measured as fast as OpenVINO f32)" if spec.engine == "auto" else ""),
        )
    if spec.precision == "bf16":
        if spec.engine == "onnxruntime":
            raise ConfigError(
                f"{key}.engine",
                "ONNX Runtime has no bf16 path on CPU",
                'set engine = "openvino" (or "auto") for bf16, or precision = "fp32"',
            )
        if not bf16:
            raise ConfigError(
                f"{key}.precision",
                f"this CPU does not run bf16 natively (OpenVINO OPTIMIZATION_CAPABILITIES: {caps})",
                'use precision = "auto" (fp32 here) or "fp32"',
            )
        return _gated(key, spec, "openvino", "bf16", gate)
    # int8
    if spec.engine == "openvino":
        raise ConfigError(
            f"{key}.engine",
            "int8 is served by ONNX Runtime only (its dynamic-quantization ops ran ~3x slower in OpenVINO)",
            'set engine = "auto" or "onnxruntime" for int8',
        )
    return _gated(key, spec, "onnxruntime", "int8", gate)


def _gated(key: str, spec: ModelSpec, engine: EngineName, precision: Precision, gate: Gate) -> EngineChoice:
    threshold = _threshold(spec, precision)
    result = gate(engine, precision)
    if result.min_cosine < threshold:
        raise ConfigError(
            f"{key}.precision",
            f"{precision} on {engine} failed the fidelity gate: min cosine {result.min_cosine:.6f} to ONNX "
            f"Runtime fp32 is below {threshold} (worst task: {min(result.per_task, key=result.per_task.__getitem__)})",
            f'use precision = "auto" (it falls back to fp32) or "fp32"; or, if these vectors are good '
            f"enough for you, set {key}.min_cosine below {result.min_cosine:.6f}",
        )
    return EngineChoice(
        engine,
        precision,
        f"precision = {precision} on {engine}: passed the fidelity gate "
        f"(min cosine {result.min_cosine:.6f} >= {threshold})",
        result,
        threshold,
    )


def _quantized_file(key: str, spec: ModelSpec) -> EngineChoice:
    if spec.precision in ("fp32", "bf16"):
        raise ConfigError(
            f"{key}.precision",
            f"the model file is already quantized (int8 ops): its {spec.precision} weights cannot be recovered from it",
            'use precision = "auto" to serve the file as it is, or point `path` at the float export',
        )
    if spec.engine == "openvino":
        log.warning(
            "%s: engine = openvino on an already quantized file: ONNX Runtime's int8 ops ran ~3x "
            "slower in OpenVINO than in ONNX Runtime",
            key,
        )
        return EngineChoice("openvino", "int8", "engine = openvino asked for a quantized file (served as is)")
    return EngineChoice(
        "onnxruntime",
        "int8",
        "the file is already quantized (int8 ops): served as it is on "
        "ONNX Runtime, whose int8 kernels ran ~3x faster than OpenVINO's on it",
    )


def _threshold(spec: ModelSpec, precision: str) -> float:
    return spec.min_cosine if spec.min_cosine is not None else THRESHOLDS[precision]
