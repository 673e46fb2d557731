"""Do `appliance.models.graph`'s rewrites help OpenVINO? The exported file against the rewritten one.

    python -m bench.openvino_graph [--model e5-small-jina] [--precision both] [--rounds 3] [--items 200]

In one process, 2 threads (all cores), the benchmark's seeded mixed workload embedded the way the
in-process baseline does (sorted token-budget batches, tokenization and pooling included), by
OpenVINO on the file as exported (`exported`), as the appliance serves it (`served`: the softmax
NaN guards dropped inside OpenVINO's graph, `engines.strip_ov_nan_guards`) and on the graph ONNX
Runtime is served (`rewritten`: NaN guards dropped and erf GELUs fused into com.microsoft.Gelu, in
the ONNX file, written beside hard links to the same weights).
Alternated rounds (the order flips each round); prints tokens/s per round, exported / rewritten,
and the smallest cosine between the two settings' vectors.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from appliance.models.graph import fuse_erf_gelus, strip_softmax_nan_guards
from bench.baseline import BaselineModel
from bench.run import resolve_model
from bench.workload import build_workload


def rewritten_copy(folder: Path, into: Path) -> Path:
    """`folder` with model.onnx rewritten as ONNX Runtime's session sees it; other files hard-linked
    (OpenVINO refuses external data behind a symlink that leaves the model's folder)."""
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    guards, gelus = strip_softmax_nan_guards(proto), fuse_erf_gelus(proto)
    print(f"  rewritten graph: {guards} NaN guards dropped, {gelus} erf GELUs fused")
    onnx.save_model(proto, str(into / "model.onnx"))
    for entry in folder.iterdir():
        if entry.name != "model.onnx":
            os.link(entry.resolve(), into / entry.name)
    return into


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.openvino_graph", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="e5-small-jina")
    p.add_argument("--precision", choices=("fp32", "bf16", "both"), default="both")
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = p.parse_args(argv)
    source = resolve_model(args.model)
    workload = build_workload(source, args.items)
    texts, tokens = workload.texts, workload.total_tokens
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    with tempfile.TemporaryDirectory(prefix=".ov-graph-", dir=source.parent) as tmp:  # same file system
        rewritten = rewritten_copy(source, Path(tmp))
        settings = {"exported": (source, False), "served": (source, True), "rewritten": (rewritten, False)}
        for precision in precisions:
            models = {name: BaselineModel(folder, args.threads, engine="openvino", precision=precision,  # type: ignore[arg-type]
                                          ov_strip_nan_guards=strip)
                      for name, (folder, strip) in settings.items()}
            vectors = {name: m.embed(texts, args.budget, 64, 0.9)[0] for name, m in models.items()}  # warm-up
            cosine = float(np.min(np.sum(vectors["exported"] * vectors["rewritten"], axis=1)))
            speeds: dict[str, list[float]] = {name: [] for name in models}
            for round_ in range(args.rounds):
                for name in (list(models) if round_ % 2 == 0 else list(models)[::-1]):
                    started = time.perf_counter()
                    models[name].embed(texts, args.budget, 64, 0.9)
                    speeds[name].append(tokens / (time.perf_counter() - started))
            for name, values in speeds.items():
                line = f"  openvino {precision} {name:9s} tok/s per round: {', '.join(f'{v:,.0f}' for v in values)}"
                if name != "exported":
                    ratios = [a / b for a, b in zip(values, speeds["exported"])]
                    line += (f"; this / exported {', '.join(f'{r:.3f}x' for r in ratios)} "
                             f"(median {statistics.median(ratios):.3f}x)")
                print(line)
            print(f"  openvino {precision}: min cosine exported vs ONNX-rewritten {cosine:.6f}")
            del models
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
