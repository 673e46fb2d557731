"""Can OpenVINO's bf16 be brought closer to fp32? The fidelity gate's measurement under several settings.

    python -m bench.openvino_precision [--model jina-v3-random] [--variants all]

The fidelity gate's own probe set and arithmetic (`appliance.compile.fidelity`: 37 probes, every task
in turn, one long input, packed and pooled as model.py does), ONNX Runtime fp32 as the reference, 2
threads. Each variant is the served OpenVINO engine (`OpenVinoEngine`: softmax NaN guards dropped)
with one change:

- `bf16`: as served (`INFERENCE_PRECISION_HINT` bf16).
- `bf16-no-snippets`: `SNIPPETS_MODE` DISABLE (attention not fused into one bf16 subgraph).
- `bf16-accuracy`: `EXECUTION_MODE_HINT` ACCURACY beside the bf16 hint.
- `bf16-marked`: every MatMul and Softmax marked `precise_0` and `disable_fp16_compression_0` in its
  rt_info (OpenVINO's keep-in-f32 marks); the census shows whether the CPU plugin kept any in f32.
- `typed`: f32 inference, but every MatMul with constant weights typed bf16 in the graph itself
  (Convert -> MatMul bf16 -> Convert), so only those run bf16: attention, LoRA, GELU stay f32.
- `f32`: OpenVINO f32 (how close the two engines are without bf16).

Prints per variant: min / median cosine to the reference, the long probe's, the runtime graph's
node census by precision (FullyConnected, MatMul, Subgraph, Eltwise, MVN), and the gate's time.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from appliance.compile.fidelity import Serving, embed_probes, embed_with, probe_ids
from appliance.models.engines import OpenVinoEngine, Precision
from appliance.spec.modelinfo import inspect_model_folder
from bench.run import resolve_model

CENSUS = ("FullyConnected", "MatMul", "Subgraph", "Eltwise", "MVN")


def mark_precise(model: Any) -> None:
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("MatMul", "Softmax"):
            for key in ("precise_0", "disable_fp16_compression_0"):
                op.get_rt_info()[key] = True


def type_weight_matmuls_bf16(model: Any) -> None:
    import openvino.opset13 as ops

    def constant_weights(node: Any) -> bool:
        while node.get_type_name() in ("Transpose", "Reshape", "Convert"):
            node = node.input_value(0).get_node()
        return bool(node.get_type_name() == "Constant")

    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul" or not constant_weights(op.input_value(1).get_node()):
            continue
        attrs = op.get_attributes()
        typed = ops.matmul(
            ops.convert(op.input_value(0), "bf16"),
            ops.convert(op.input_value(1), "bf16"),
            attrs["transpose_a"],
            attrs["transpose_b"],
        )
        back = ops.convert(typed, "f32")
        for target in list(op.output(0).get_target_inputs()):
            target.replace_source_output(back.output(0))


# name -> (precision, extra OpenVINO properties, graph rewrite)
VARIANTS: dict[str, tuple[Precision, dict[str, Any], Callable[[Any], object] | None]] = {
    "bf16": ("bf16", {}, None),
    "bf16-no-snippets": ("bf16", {"SNIPPETS_MODE": "DISABLE"}, None),
    "bf16-accuracy": ("bf16", {"EXECUTION_MODE_HINT": "ACCURACY"}, None),
    "bf16-marked": ("bf16", {}, mark_precise),
    "typed": ("fp32", {}, type_weight_matmuls_bf16),
    "f32": ("fp32", {}, None),
}


def census(engine: OpenVinoEngine) -> str:
    count: collections.Counter[str] = collections.Counter()
    for op in engine.compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind in CENSUS:
            count[f"{kind} {info['runtimePrecision'].astype(str)}"] += 1
    return ", ".join(f"{k} {v}" for k, v in sorted(count.items()))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.openvino_precision", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="jina-v3-random")
    p.add_argument("--variants", default="all", help=f"comma-separated of {', '.join(VARIANTS)} (default all)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    folder = resolve_model(args.model)
    info = inspect_model_folder(folder, None)
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    tasks: list[str | None] = list(info.lora_adaptations) or [None]
    probes = probe_ids(folder / "tokenizer.json", tasks, info.task_instructions, info.default_max_tokens(2))
    task_ids = {t: i for i, t in enumerate(info.lora_adaptations)}
    # max_batch_tokens 2048: OpenVINO's default (appliance/compile/compiler.py BATCH_TOKENS)
    serving = Serving(info.output_name, args.threads, info.pad_id, task_ids, 2048, 64)
    started = time.monotonic()
    want = embed_probes(probes, folder / "model.onnx", serving, engine="onnxruntime", precision="fp32")
    print(
        f"{folder.name}: {len(probes)} probes, longest {max(len(i) for _, i in probes)} tokens; "
        f"ONNX Runtime fp32 reference in {time.monotonic() - started:.1f} s"
    )
    for name in names:
        precision, properties, rewrite = VARIANTS[name]
        started = time.monotonic()
        engine = OpenVinoEngine(
            folder / "model.onnx", info.output_name, args.threads, precision, properties=properties, rewrite=rewrite
        )
        got = embed_with(engine, probes, serving)
        cosines = np.sum(want.astype(np.float64) * got.astype(np.float64), axis=1)
        print(
            f"  {name:17s} min {cosines.min():.6f}  median {statistics.median(cosines):.6f}  "
            f"long {cosines[-1]:.6f}  ({time.monotonic() - started:.1f} s)\n"
            f"  {'':17s} runtime graph: {census(engine)}"
        )
        del engine
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
