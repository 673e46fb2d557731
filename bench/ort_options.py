"""The graph changes `appliance.models.graph.open_session` makes, each measured on the benchmark's workload.

    python -m bench.ort_options [--model e5-small-jina] [--quantize both] [--rounds 3] [--items 200]

In one process, on the same thread budget, the whole seeded mixed workload embedded the way the
benchmark's in-process baseline does (sorted token-budget batches, tokenization and pooling
included), with the session as the appliance opens it (`served`) and with one change undone at a
time: ONNX Runtime's SkipLayerNormFusion allowed again (`skiplayernorm-fused`), the exporter's
erf GELUs left unfused (`gelu-unfused`). The settings are alternated for `--rounds` rounds (the
order flips each round). Prints tokens/s per round, served / each other setting, and the smallest
cosine between its vectors and the served ones.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from appliance.compile.quantize import quantize_model
from bench.baseline import BaselineModel
from bench.run import resolve_model
from bench.workload import build_workload

# open_session's keyword arguments per setting: the served session, and each change undone.
SETTINGS: dict[str, dict[str, Any]] = {
    "served": {},
    "skiplayernorm-fused": {"disabled_optimizers": ()},
    "gelu-unfused": {"fuse_gelus": False},
}


def compare(folder: Path, items: int, rounds: int, budget: int, threads: int) -> dict[str, object]:
    workload = build_workload(folder, items)
    texts, tokens = workload.texts, workload.total_tokens
    models = {name: BaselineModel(folder, threads, session_kwargs=undo) for name, undo in SETTINGS.items()}
    vectors = {name: model.embed(texts, budget, 64, 0.9)[0] for name, model in models.items()}  # warm-up
    cosines = {name: float(np.min(np.sum(vectors["served"] * v, axis=1))) for name, v in vectors.items()}
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(rounds):
        order = list(models) if round_ % 2 == 0 else list(models)[::-1]
        for name in order:
            started = time.perf_counter()
            models[name].embed(texts, budget, 64, 0.9)
            speeds[name].append(tokens / (time.perf_counter() - started))
    return {"tokens": tokens, "speeds": speeds, "min_cosine": cosines}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ort_options", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="e5-small-jina", help="asset name or model folder")
    p.add_argument("--quantize", choices=("fp32", "int8", "both"), default="both")
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budget", type=int, default=1024, help="token budget per run (the baseline's best)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--quantize-cache", default=str(Path.home() / ".cache" / "embed-appliance" / "quantized"))
    args = p.parse_args(argv)
    source = resolve_model(args.model)
    variants = ["fp32", "int8"] if args.quantize == "both" else [args.quantize]
    print(f"{args.model}: {args.threads} threads, token budget {args.budget}, {args.items} items")
    for variant in variants:
        folder = source if variant == "fp32" else quantize_model(source, Path(args.quantize_cache))
        result = compare(folder, args.items, args.rounds, args.budget, args.threads)
        speeds, cosines = result["speeds"], result["min_cosine"]
        assert isinstance(speeds, dict) and isinstance(cosines, dict)
        for name, values in speeds.items():
            line = f"  {variant} {name:20s} tok/s per round: {', '.join(f'{v:,.0f}' for v in values)}"
            if name != "served":
                ratios = [s / v for s, v in zip(speeds["served"], values)]
                line += (f"; served / this: {', '.join(f'{r:.3f}x' for r in ratios)} "
                         f"(median {statistics.median(ratios):.3f}x), min cosine to served {cosines[name]:.6f}")
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
