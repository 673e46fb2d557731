"""One small seam over the two CPU engines: `Engine.run(ids, mask, task_id) -> last hidden state`.

model.py, the compiler's fidelity gate and the benchmark's in-process twins all open their
engine here, so what is measured in-process is what Triton serves:

- `onnxruntime`: the session `appliance.models.graph.open_session` opens (NaN guards dropped,
  erf GELUs fused, SkipLayerNormFusion off). Its precision is the file's: fp32, or int8 for a
  quantized file (`precision = "int8"` points it at the cached int8 twin).
- `openvino`: OpenVINO's CPU plugin on the same ONNX file (`INFERENCE_PRECISION_HINT` f32 or bf16),
  `INFERENCE_NUM_THREADS` = the instance's threads, one infer request, dynamic batch and length,
  its compiled-model cache (`CACHE_DIR`) under the appliance's cache dir so a restart does not
  recompile. Of ONNX Runtime's graph changes only the softmax NaN guards are dropped, inside
  OpenVINO's own graph (`strip_ov_nan_guards`); the GELU fusion did not help OpenVINO
  (docs/performance.md, "OpenVINO and the graph rewrites").

The output is taken by NAME (jina-v3's second output is a decoy) and returned as float32.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

EngineName = Literal["onnxruntime", "openvino"]
Precision = Literal["fp32", "bf16", "int8"]
Array = npt.NDArray[Any]
# OpenVINO's INFERENCE_PRECISION_HINT per precision ("int8": a quantized file, its own int8 ops).
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


class Engine(Protocol):
    """A loaded model: one run of a padded batch under one task."""

    name: EngineName
    precision: Precision
    detail: str  # one line for the log: what was opened and how

    def run(self, ids: Array, mask: Array, task_id: int | None) -> Array:
        """[b, s] int64 ids and mask (and jina's task index) -> [b, s, hidden] float32."""
        ...


def feed_for(input_names: set[str], ids: Array, mask: Array, task_id: int | None) -> dict[str, Array]:
    """The model's inputs: jina's 0-d `task_id` (one task per run), BERT's token_type_ids."""
    feed = {"input_ids": ids, "attention_mask": mask}
    if "task_id" in input_names:
        feed["task_id"] = np.array(task_id or 0, dtype=np.int64)
    if "token_type_ids" in input_names:
        feed["token_type_ids"] = np.zeros_like(ids)
    return feed


class OnnxRuntimeEngine:
    name: EngineName = "onnxruntime"

    def __init__(
        self,
        model_path: Path,
        output_name: str,
        threads: int,
        precision: Precision = "fp32",
        *,
        stop_spinning: bool = True,
        **session_kwargs: Any,
    ) -> None:
        from appliance.models.graph import open_session

        self.precision = precision
        self.output_name = output_name
        self.session, self.rewrites = open_session(
            model_path, ort_options(threads, stop_spinning=stop_spinning), **session_kwargs
        )
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.detail = f"onnxruntime {precision}, {threads} threads, {self.rewrites or 'graph as exported'}"

    def run(self, ids: Array, mask: Array, task_id: int | None) -> Array:
        (hidden,) = self.session.run([self.output_name], feed_for(self.input_names, ids, mask, task_id))
        return np.asarray(hidden)


def ort_options(threads: int, *, stop_spinning: bool = True, spinning: bool = True) -> Any:
    """intra-op `threads`, one inter-op thread, full graph optimization.

    Workers spin inside a run (a short query is ~1.5 ms faster than with blocking waits);
    `stop_spinning` stops them the moment a run returns, so an idle instance burns no core that
    another instance or the gateway needs (the in-process baseline keeps ORT's default).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if stop_spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


class OpenVinoEngine:
    name: EngineName = "openvino"

    def __init__(
        self,
        model_path: Path,
        output_name: str,
        threads: int,
        precision: Precision = "fp32",
        *,
        cache_dir: Path | None = None,
        strip_nan_guards: bool = True,
        properties: dict[str, Any] | None = None,
        rewrite: Callable[[Any], object] | None = None,
    ) -> None:
        """`properties` (more OpenVINO properties) and `rewrite` (applied to the read `ov.Model` before
        compiling) are for bench/openvino_precision.py's experiments; the product passes neither."""
        import openvino as ov

        self.precision = precision
        core = ov.Core()
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
            **(properties or {}),
        }
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(cache_dir)
        model = core.read_model(str(model_path))  # external data is memory-mapped, not copied
        self.nan_guards = strip_ov_nan_guards(model) if strip_nan_guards else 0
        if rewrite is not None:
            rewrite(model)
        self.compiled = core.compile_model(model, "CPU", config)
        del model
        self.input_names = {port.get_any_name() for port in self.compiled.inputs}
        self.output = self.compiled.output(output_name)
        self.request = self.compiled.create_infer_request()
        ran = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.detail = (
            f"openvino {ov.__version__.split('-')[0]} {precision} (inference precision {ran}), "
            f"{threads} threads, {self.nan_guards} softmax NaN guards dropped, cache {cache_dir or 'off'}"
        )

    def run(self, ids: Array, mask: Array, task_id: int | None) -> Array:
        result = self.request.infer(feed_for(self.input_names, ids, mask, task_id), share_inputs=True)
        return np.asarray(result[self.output], dtype=np.float32)


def strip_ov_nan_guards(model: Any) -> int:
    """Rewire `Select(IsNaN(s), 0, s)` with `s = Softmax(...)` to `s` in an OpenVINO model; the count.

    The exporter's guard never fires here (every run has a real token; appliance/models/graph.py)
    and OpenVINO computes it: dropping it was +8 % (bf16) to +19 % (f32) on e5-small-jina's mixed
    workload (`python -m bench.openvino_graph`, docs/performance.md "OpenVINO").
    """
    dropped = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Select":
            continue
        condition, value = op.input_value(0).get_node(), op.input_value(2)
        if (
            condition.get_type_name() == "IsNaN"
            and condition.input_value(0) == value
            and value.get_node().get_type_name() == "Softmax"
        ):
            op.output(0).replace(value)
            dropped += 1
    return dropped


def open_engine(
    model_path: Path,
    *,
    engine: EngineName,
    precision: Precision,
    output_name: str,
    threads: int,
    cache_dir: Path | None = None,
    stop_spinning: bool = True,
) -> Engine:
    """The engine Triton's model.py serves with (and the gate and benchmark measure)."""
    if engine == "openvino":
        return OpenVinoEngine(model_path, output_name, threads, precision, cache_dir=cache_dir)
    return OnnxRuntimeEngine(model_path, output_name, threads, precision, stop_spinning=stop_spinning)


def cpu_capabilities() -> list[str]:
    """What OpenVINO's CPU plugin runs natively here (`OPTIMIZATION_CAPABILITIES`: FP32, BF16, INT8...)."""
    import openvino as ov

    return sorted(str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
