"""ONNX Runtime's graph transformers the appliance switches off, measured on the benchmark's workload.

    python -m bench.ort_options [--model e5-small-jina] [--quantize both] [--rounds 3] [--items 200]

In one process, on the same 2-thread budget, the whole seeded mixed workload embedded the way the
benchmark's in-process baseline does (sorted token-budget batches, tokenization and pooling
included), with `appliance.models.graph.DISABLED_OPTIMIZERS` as the appliance opens sessions
(`served`) and with ONNX Runtime's defaults (`ort-default`), alternated for `--rounds` rounds
(the order flips each round). Prints tokens/s per round, the ratio served / ort-default and the
smallest cosine between the two settings' vectors.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from appliance.compile.quantize import quantize_model
from appliance.models import graph
from bench.baseline import BaselineModel
from bench.run import resolve_model
from bench.workload import build_workload

SETTINGS = {"served": graph.DISABLED_OPTIMIZERS, "ort-default": ()}


def open_model(folder: Path, disabled: tuple[str, ...], threads: int) -> BaselineModel:
    saved = graph.DISABLED_OPTIMIZERS
    graph.DISABLED_OPTIMIZERS = disabled
    try:
        return BaselineModel(folder, threads)
    finally:
        graph.DISABLED_OPTIMIZERS = saved


def compare(folder: Path, items: int, rounds: int, budget: int, threads: int) -> dict[str, object]:
    workload = build_workload(folder, items)
    texts, tokens = workload.texts, workload.total_tokens
    models = {name: open_model(folder, disabled, threads) for name, disabled in SETTINGS.items()}
    vectors = {name: model.embed(texts, budget, 64, 0.9)[0] for name, model in models.items()}  # warm-up
    cosine = float(np.min(np.sum(vectors["served"] * vectors["ort-default"], axis=1)))
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(rounds):
        order = list(models) if round_ % 2 == 0 else list(models)[::-1]
        for name in order:
            started = time.perf_counter()
            models[name].embed(texts, budget, 64, 0.9)
            speeds[name].append(tokens / (time.perf_counter() - started))
    return {"tokens": tokens, "speeds": speeds, "min_cosine": cosine,
            "ratios": [s / d for s, d in zip(speeds["served"], speeds["ort-default"])]}


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
    print(f"{args.model}: served = disabled {list(graph.DISABLED_OPTIMIZERS)}; ort-default = nothing disabled; "
          f"{args.threads} threads, budget {args.budget}")
    for variant in variants:
        folder = source if variant == "fp32" else quantize_model(source, Path(args.quantize_cache))
        result = compare(folder, args.items, args.rounds, args.budget, args.threads)
        speeds, ratios = result["speeds"], result["ratios"]
        assert isinstance(speeds, dict) and isinstance(ratios, list)
        for name, values in speeds.items():
            print(f"  {variant} {name:12s} tok/s per round: {', '.join(f'{v:,.0f}' for v in values)}")
        print(f"  {variant} served / ort-default: {', '.join(f'{r:.3f}x' for r in ratios)} "
              f"(median {statistics.median(ratios):.3f}x); min cosine between them {result['min_cosine']:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
