"""What a change of input shape costs each engine: one short query, a new length against the same one.

    python -m bench.openvino_shapes [--model e5-small-jina] [--calls 80] [--lengths 5,40]

In one process, 2 threads, each engine as the appliance serves it (`open_engine`): ONNX Runtime fp32
and OpenVINO (bf16 where the CPU runs it, else f32). Every length of the range runs once first (so
every shape has been seen). Then, per draw, a random length runs twice in a row: the first call
follows a call of another shape (`changed`), the second repeats its shape (`same`); the engines take
turns per draw, so host noise falls on both. Then two cached shapes one token apart alternating against
one of them repeated.
Prints p50s and the p50 of the per-draw difference (the cost of the change).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import numpy as np

from appliance.models.engines import Engine, Precision, cpu_capabilities, open_engine
from appliance.spec.modelinfo import inspect_model_folder
from bench.run import resolve_model


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.openvino_shapes", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="e5-small-jina")
    p.add_argument("--calls", type=int, default=80, help="draws (each two calls per engine)")
    p.add_argument("--lengths", default="5,40", help="lowest,highest tokens of a query")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    folder = resolve_model(args.model)
    info = inspect_model_folder(folder, None)
    low, high = (int(x) for x in args.lengths.split(","))
    ov_precision: Precision = "bf16" if "BF16" in cpu_capabilities() else "fp32"
    engines: dict[str, Engine] = {
        "onnxruntime fp32": open_engine(
            folder / "model.onnx",
            engine="onnxruntime",
            precision="fp32",
            output_name=info.output_name,
            threads=args.threads,
        ),
        f"openvino {ov_precision}": open_engine(
            folder / "model.onnx",
            engine="openvino",
            precision=ov_precision,
            output_name=info.output_name,
            threads=args.threads,
        ),
    }
    rng = np.random.default_rng(0)
    task = 0 if info.lora_adaptations else None

    def call(engine: Engine, length: int) -> float:
        ids = rng.integers(5, min(info.vocab_size, 30_000), (1, length))
        mask = np.ones((1, length), np.int64)
        started = time.perf_counter()
        engine.run(ids, mask, task)
        return (time.perf_counter() - started) * 1000

    for length in range(low, high + 1):
        for engine in engines.values():
            call(engine, length)
    changed: dict[str, list[float]] = {name: [] for name in engines}
    same: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.calls):
        length = int(rng.integers(low, high + 1))
        for name, engine in engines.items():
            changed[name].append(call(engine, length))
            same[name].append(call(engine, length))
    long_ = low + 3 * (high - low) // 4
    short = long_ - 1  # the same compute, a different shape
    print(f"{folder.name}: one row of {low}-{high} tokens, {args.calls} draws, {args.threads} threads")
    for name, engine in engines.items():
        alternating = [call(engine, short if i % 2 else long_) for i in range(2 * args.calls)]
        repeated = [call(engine, long_) for _ in range(args.calls)]
        cost = statistics.median(a - b for a, b in zip(changed[name], same[name]))
        print(
            f"  {name:18s} changed shape p50 {statistics.median(changed[name]):6.2f} ms, same shape "
            f"{statistics.median(same[name]):6.2f} ms, cost of the change p50 {cost:5.2f} ms; "
            f"{short}/{long_} alternating {statistics.median(alternating):6.2f} ms vs {long_} repeated "
            f"{statistics.median(repeated):6.2f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
