"""Resident memory and load time of one model instance, per engine and precision.

    python -m bench.memory [--model jina-v3-random] [--engines onnxruntime:fp32,openvino:bf16] [--cache DIR]

Each engine is opened in a fresh process (as Triton's stub opens it: `appliance.models.engines.
open_engine`, the instance's threads, OpenVINO's compiled-model cache under --cache), then runs a
few batches of the benchmark's shapes (8 x 128 tokens, 1 x 2048). Reported per engine: load
seconds (cold: empty cache; warm: the same cache again), VmRSS after loading and after the runs,
and VmHWM (the peak); after the runs also RssAnon (heap: weights converted or copied, activations)
and RssFile (memory-mapped files: clean pages the kernel can drop and read again). Opened twice
per engine, so the warm (cached) start is measured too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def child(folder: Path, engine: str, precision: str, threads: int, cache: Path | None) -> dict[str, object]:
    """In this process: open, run, report (called through `--child`)."""
    from appliance.models.engines import open_engine
    from appliance.spec.modelinfo import inspect_model_folder

    info = inspect_model_folder(folder, None)
    base = _status_mb("VmRSS")
    started = time.perf_counter()
    model = open_engine(folder / "model.onnx", engine=engine, precision=precision,  # type: ignore[arg-type]
                        output_name=info.output_name, threads=threads, cache_dir=cache)
    load_s = time.perf_counter() - started
    loaded = _status_mb("VmRSS")
    runs = []
    rng = np.random.default_rng(0)
    for rows, length in ((8, 128), (1, 2048), (8, 128)):
        length = min(length, info.model_max_length)
        ids = rng.integers(5, 1000, (rows, length)).astype(np.int64)
        mask = np.ones_like(ids)
        t0 = time.perf_counter()
        model.run(ids, mask, 0 if info.kind == "jina-v3" else None)
        runs.append(round(time.perf_counter() - t0, 3))
    return {"engine": engine, "precision": precision, "load_s": round(load_s, 2), "rss_before_mb": base,
            "rss_loaded_mb": loaded, "rss_after_runs_mb": _status_mb("VmRSS"), "peak_mb": _status_mb("VmHWM"),
            "anon_mb": _status_mb("RssAnon"), "file_mb": _status_mb("RssFile"), "run_s": runs,
            "detail": model.detail}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="jina-v3-random")
    p.add_argument("--engines", default="onnxruntime:fp32,openvino:bf16")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--cache", default=None, help="OpenVINO cache dir (default: a fresh temp dir)")
    p.add_argument("--child", nargs=4, metavar=("FOLDER", "ENGINE", "PRECISION", "CACHE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        folder, engine, precision, cache = args.child
        print(json.dumps(child(Path(folder), engine, precision, args.threads, Path(cache) if cache else None)))
        return 0
    from bench.run import cpu_model, resolve_model

    folder = resolve_model(args.model)
    print(f"{args.model} ({folder}), {args.threads} threads, CPU: {cpu_model()}")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        cache = Path(args.cache or tmp)
        for pair in args.engines.split(","):
            engine, precision = pair.split(":")
            for start in ("cold", "warm"):
                done = subprocess.run([sys.executable, "-m", "bench.memory", "--threads", str(args.threads),
                                       "--child", str(folder), engine, precision, str(cache / engine)],
                                      capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(f"  {engine} {precision} {start}: failed: {done.stderr[-800:]}")
                    break
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"  {engine:11s} {precision} {start}: load {r['load_s']} s, RSS loaded {r['rss_loaded_mb']} MB, "
                      f"after runs {r['rss_after_runs_mb']} MB (anonymous {r['anon_mb']}, file-backed "
                      f"{r['file_mb']}), peak {r['peak_mb']} MB; runs {r['run_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
