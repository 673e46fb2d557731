"""Open a model's ONNX Runtime session: the exporter's NaN guards out, its GELUs fused, one slow fusion off.

PyTorch's ONNX export of `scaled_dot_product_attention` (and so jina-v3 exports and the
jina-shaped test assets) wraps every attention softmax in a NaN guard:

    probs = Softmax(scores);  probs = Where(IsNaN(probs), 0.0, probs)

The guard only matters for a query row whose keys are ALL masked out (softmax of all -inf).
Every sequence the appliance runs has at least one real token (`LENGTHS >= 1`, and the mask
only ever hides padding keys), so the guard never changes a value here, yet ONNX Runtime
spends 35-45 % of a long document's run on these two element-wise ops over [batch, heads,
len, len] (e5-small-jina, 8 x 400 tokens: 1.71 s -> 1.10 s per run with the guard gone; the
outputs are bit-identical). `open_session` drops exactly that pattern, in memory: the model
folder is never written, and weights kept in external data are read from the folder as usual.
Graphs with neither this nor the GELU pattern below load from their path unchanged.

It also keeps ONNX Runtime from fusing `Add` + `LayerNormalization` into its contrib
`SkipLayerNormalization` op: on onnxruntime 1.32's CPU provider that one kernel is several times
slower than the ops it replaces. The outputs agree to float rounding.

And the exporter writes GELU as `x * (0.5 * (1 + erf(x / sqrt(2))))`: five element-wise ops over
[batch, len, intermediate] per layer, in an operand order ONNX Runtime's own GeluFusion does not
match (its optimized graph still has every Erf, Div, Add and both Muls).
`fuse_erf_gelus` replaces exactly that pattern with ONNX Runtime's `com.microsoft.Gelu` (the same
function, one pass over the tensor).

Each change is measured by `python -m bench.ort_options` (docs/performance.md, "Decisions").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
from onnx import numpy_helper

PROVIDERS = ["CPUExecutionProvider"]
# ONNX Runtime graph transformers switched off (by name): see the module docstring.
DISABLED_OPTIMIZERS: tuple[str, ...] = ("SkipLayerNormFusion",)
_EXTERNAL_FOLDER = "session.model_external_initializers_file_folder_path"


@dataclass(frozen=True)
class Rewrites:
    """What `open_session` changed in a graph (in memory; the file is never written)."""

    nan_guards: int = 0
    erf_gelus: int = 0

    def __bool__(self) -> bool:
        return bool(self.nan_guards or self.erf_gelus)

    def __str__(self) -> str:
        return f"{self.nan_guards} softmax NaN guards dropped, {self.erf_gelus} erf GELUs fused"


def open_session(
    model_path: Path,
    options: ort.SessionOptions,
    *,
    fuse_gelus: bool = True,
    disabled_optimizers: Sequence[str] = DISABLED_OPTIMIZERS,
) -> tuple[ort.InferenceSession, Rewrites]:
    """The session for `model_path` and what was rewritten in its graph.

    The keyword arguments exist to measure each change undone (`python -m bench.ort_options`);
    the appliance serves the defaults.
    """
    proto = onnx.load(str(model_path), load_external_data=False)
    rewrites = Rewrites(
        nan_guards=strip_softmax_nan_guards(proto), erf_gelus=fuse_erf_gelus(proto) if fuse_gelus else 0
    )
    disabled = list(disabled_optimizers)
    if not rewrites:
        del proto
        return ort.InferenceSession(
            str(model_path), options, providers=PROVIDERS, disabled_optimizers=disabled
        ), rewrites
    options.add_session_config_entry(_EXTERNAL_FOLDER, str(Path(model_path).parent))
    return ort.InferenceSession(
        proto.SerializeToString(), options, providers=PROVIDERS, disabled_optimizers=disabled
    ), rewrites


def strip_softmax_nan_guards(model: onnx.ModelProto) -> int:
    """Rewire `Where(IsNaN(s), 0, s)` with `s = Softmax(...)` to `s`, in place; the count removed."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    constants = {t.name: t for t in graph.initializer}
    replace: dict[str, str] = {}
    dropped: set[int] = set()
    for node in graph.node:
        if node.op_type != "Where" or len(node.input) != 3:
            continue
        condition, fill, value = node.input
        isnan, softmax = producer.get(condition), producer.get(value)
        if (
            isnan is None
            or isnan.op_type != "IsNaN"
            or list(isnan.input) != [value]
            or softmax is None
            or softmax.op_type != "Softmax"
            or not _is_zero(fill, producer, constants)
        ):
            continue
        replace[node.output[0]] = value
        dropped.add(id(node))
    if not dropped:
        return 0
    graph_outputs = {o.name for o in graph.output}
    if graph_outputs & set(replace):
        return 0  # a guarded softmax that is itself a graph output: leave the graph alone
    kept = [node for node in graph.node if id(node) not in dropped]
    for node in kept:
        for index, name in enumerate(node.input):
            if name in replace:
                node.input[index] = replace[name]
    used = {name for node in kept for name in node.input} | graph_outputs
    kept = [node for node in kept if not (node.op_type == "IsNaN" and node.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(kept)
    return len(dropped)


def fuse_erf_gelus(model: onnx.ModelProto) -> int:
    """Replace `x * (0.5 * (1 + Erf(x / sqrt 2)))` (operands of Add and Mul in either order) with
    `com.microsoft.Gelu(x)`, in place; the count fused. Every intermediate must feed only the next op."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    constants = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    protected = {o.name for o in graph.output}

    def scalar(name: str | None) -> float | None:
        return None if name is None else _scalar(name, producer, constants)

    def only_next(node: onnx.NodeProto, op_type: str) -> onnx.NodeProto | None:
        users = consumers.get(node.output[0], [])
        if node.output[0] in protected or len(users) != 1 or users[0].op_type != op_type:
            return None
        return users[0]

    def other(node: onnx.NodeProto, name: str) -> str | None:
        inputs = list(node.input)
        return inputs[1 - inputs.index(name)] if len(inputs) == 2 and name in inputs else None

    fused: dict[int, onnx.NodeProto | None] = {}  # id(node) -> its replacement (None: dropped)
    for erf in [n for n in graph.node if n.op_type == "Erf"]:
        div = producer.get(erf.input[0])
        if (
            div is None
            or div.op_type != "Div"
            or not _near(scalar(div.input[1]), math.sqrt(2.0))
            or _tensor(div.input[1], producer, constants).data_type != onnx.TensorProto.FLOAT
        ):
            continue  # com.microsoft.Gelu has a float kernel on CPU, not float16
        x = div.input[0]
        if only_next(div, "Erf") is None:  # its one reader, so `erf` itself
            continue
        add = only_next(erf, "Add")
        if add is None or not _near(scalar(other(add, erf.output[0])), 1.0):
            continue
        half = only_next(add, "Mul")
        if half is None or not _near(scalar(other(half, add.output[0])), 0.5):
            continue
        times_x = only_next(half, "Mul")
        if times_x is None or other(times_x, half.output[0]) != x:
            continue
        gelu = onnx.helper.make_node(
            "Gelu", [x], [times_x.output[0]], domain="com.microsoft", name=f"{times_x.name or times_x.output[0]}/gelu"
        )
        fused.update({id(div): None, id(erf): None, id(add): None, id(half): None, id(times_x): gelu})
    if not fused:
        return 0
    dropped_inputs = {name for node in graph.node if fused.get(id(node), node) is not node for name in node.input}
    kept = [node for node in (fused.get(id(node), node) for node in graph.node) if node is not None]
    # The dropped ops' own constants (sqrt 2, 1, 0.5) go too: ONNX Runtime warns about unused ones.
    orphans = (
        dropped_inputs - {name for node in kept for name in node.input} - protected - {i.name for i in graph.input}
    )
    kept = [node for node in kept if not (node.op_type == "Constant" and node.output[0] in orphans)]
    del graph.node[:]
    graph.node.extend(kept)
    for tensor in [t for t in graph.initializer if t.name in orphans]:
        graph.initializer.remove(tensor)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return sum(1 for node in fused.values() if node is not None)


def _near(value: float | None, want: float) -> bool:
    return value is not None and abs(value - want) <= 1e-6 * max(1.0, abs(want))


def _tensor(name: str, producer: dict[str, Any], constants: dict[str, onnx.TensorProto]) -> onnx.TensorProto:
    """The constant behind `name` (initializer or Constant node's value); an empty tensor if none."""
    tensor = constants.get(name)
    if tensor is None:
        node = producer.get(name)
        if node is not None and node.op_type == "Constant":
            tensor = next((a.t for a in node.attribute if a.name == "value"), None)
    return tensor if tensor is not None else onnx.TensorProto()


def _scalar(name: str, producer: dict[str, Any], constants: dict[str, onnx.TensorProto]) -> float | None:
    """The value of a one-element constant (initializer or Constant node), else None."""
    tensor = _tensor(name, producer, constants)
    if not tensor.ListFields() or tensor.data_location == onnx.TensorProto.EXTERNAL:  # none, or not inline
        return None
    array = numpy_helper.to_array(tensor)
    return float(array.reshape(-1)[0]) if array.size == 1 else None


def _is_zero(name: str, producer: dict[str, Any], constants: dict[str, onnx.TensorProto]) -> bool:
    return _scalar(name, producer, constants) == 0.0
