"""Open a model's ONNX Runtime session, minus the exporter's softmax NaN guards and one slow fusion.

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
Graphs without the pattern (BERT/MiniLM exports) load from their path unchanged.

It also keeps ONNX Runtime from fusing `Add` + `LayerNormalization` into its contrib
`SkipLayerNormalization` op: on onnxruntime 1.32's CPU provider that one kernel is several times
slower than the ops it replaces (e5-small-jina, 8 x 128 tokens: 21.7 ms per run in 24
SkipLayerNormalization nodes against 3.2 ms of LayerNormalization plus ~2 ms more of Add), so a
run is 10 % faster in fp32 and 15 % in int8 without it (MiniLM: 10 %); the outputs agree to float
rounding. bench/ort_options.py measures it on the benchmark's workload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
from onnx import numpy_helper

PROVIDERS = ["CPUExecutionProvider"]
# ONNX Runtime graph transformers switched off (by name): see the module docstring.
DISABLED_OPTIMIZERS: tuple[str, ...] = ("SkipLayerNormFusion",)
_EXTERNAL_FOLDER = "session.model_external_initializers_file_folder_path"


def open_session(model_path: Path, options: ort.SessionOptions) -> tuple[ort.InferenceSession, int]:
    """The session for `model_path` and how many softmax NaN guards were dropped from its graph."""
    proto = onnx.load(str(model_path), load_external_data=False)
    removed = strip_softmax_nan_guards(proto)
    disabled = list(DISABLED_OPTIMIZERS)
    if not removed:
        del proto
        return ort.InferenceSession(str(model_path), options, providers=PROVIDERS, disabled_optimizers=disabled), 0
    options.add_session_config_entry(_EXTERNAL_FOLDER, str(Path(model_path).parent))
    return ort.InferenceSession(proto.SerializeToString(), options, providers=PROVIDERS,
                                disabled_optimizers=disabled), removed


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
        if (isnan is None or isnan.op_type != "IsNaN" or list(isnan.input) != [value]
                or softmax is None or softmax.op_type != "Softmax" or not _is_zero(fill, producer, constants)):
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


def _is_zero(name: str, producer: dict[str, Any], constants: dict[str, onnx.TensorProto]) -> bool:
    tensor = constants.get(name)
    if tensor is None:
        node = producer.get(name)
        if node is None or node.op_type != "Constant":
            return False
        tensor = next((a.t for a in node.attribute if a.name == "value"), None)
    if tensor is None or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return False
    array = numpy_helper.to_array(tensor)
    return bool(array.size == 1 and float(array.reshape(-1)[0]) == 0.0)
