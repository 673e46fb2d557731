"""`python -m bench.run [--quick] [--model NAME|PATH ...] [--engines auto,onnxruntime:fp32,...]`

One command for the whole benchmark. Per model:

1. a fixed seeded multilingual workload (bench/workload.py), tokenized with the model's tokenizer;
2. the baseline: ONNX Runtime fp32 in-process on the graph the appliance serves, sorted
   token-budget batches (bench/baseline.py); and the file as exported (as TEI and Infinity run it);

then per served variant (`--engines`: `auto`, or ENGINE:PRECISION such as `openvino:bf16`,
`onnxruntime:int8`; `--quantize fp32|int8|both` is `onnxruntime:fp32` / `onnxruntime:int8`):

3. what the appliance serves for it, resolved by the product's own compiler (`auto` runs the
   fidelity gate here, once, cached);
4. its in-process twin: the same engine, precision and file, in-process like the baseline;
5. the appliance: `appliance serve` on loopback ports, closed-loop HTTP clients with requests of
   1, 8 and 64 inputs at several concurrency levels (bench/appliance_client.py);
6. Infinity on the same ONNX file (first variant only), when the model is a plain
   sentence-transformer and the bench venv exists (bench/infinity.py, bench/setup-infinity.sh);
7. achieved GFLOP/s against this CPU's peak for the precision (bench/compute.py);

then prints a table, writes `results/<stamp>.json` (and `latest.json`) and a latency-vs-throughput
PNG. Every loop is bounded in count and time; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import onnxruntime

from appliance.compile.compiler import available_cpus, compile_spec
from appliance.env import EmbedEnv
from appliance.models.engines import cpu_capabilities
from appliance.models.graph import DISABLED_OPTIMIZERS
from appliance.settings import CompiledModel
from appliance.spec.loader import parse_spec
from appliance.spec.schema import BatchingSpec
from bench import appliance_client as ac
from bench import infinity as inf
from bench.baseline import BaselineModel, request_latency, saturated
from bench.compute import compute_report, cpu_facts
from bench.stats import NoiseMeter
from bench.workload import SHORT, Item, Workload, build_workload

REPO = Path(__file__).resolve().parent.parent
SCHEMA = 2
TARGETS = {
    "saturated_vs_twin": 0.95,  # >= x the served engine in-process (serving overhead; docs/performance.md)
    "added_idle_latency_ms": 2.0,  # <= ms p50 over the ORT fp32 baseline's single call
    "padding_efficiency": 0.90,  # >=
    "saturated_vs_infinity": 1.5,  # >=
    "startup_excluding_model_load_s": 10.0,  # <
}
# `auto`'s gain over the ORT fp32 baseline (saturated tokens/s), per model (docs/performance.md, "OpenVINO")
GAIN_TARGETS = {"jina-v3-random": 1.9, "e5-small-jina": 1.35}
QUANTIZE_VARIANTS = {"fp32": ["onnxruntime:fp32"], "int8": ["onnxruntime:int8"],
                     "both": ["onnxruntime:fp32", "onnxruntime:int8"]}
# Appliance batching for the run: the product's own defaults (embed.toml's [batching] with nothing
# set), written out so the JSON says what ran; --queue-delay-us / --max-batch-tokens override.
_DEFAULTS = BatchingSpec()
# max_batch_tokens is left to the compiler (per engine) unless --max-batch-tokens sets it.
BATCHING: dict[str, int] = {"max_batch_size": _DEFAULTS.max_batch_size,
                            "max_queue_delay_us": _DEFAULTS.max_queue_delay_us}


def asset_dirs() -> list[Path]:
    roots = [os.environ.get("BENCH_ASSETS"), os.environ.get("TEST_ASSETS_OUT"), "/work/assets",
             str(REPO.parent / "assets"), str(Path.home() / ".cache" / "embed-appliance-assets")]
    return [Path(r) for r in roots if r]


def resolve_model(spec: str) -> Path:
    """A folder path, or an asset name looked up in $BENCH_ASSETS, /work/assets, ~/.cache/..."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    for root in asset_dirs():
        if (root / spec / "model.onnx").is_file():
            return (root / spec).resolve()
    tool = REPO.parent / "shared" / "tools" / "test-assets" / "test-assets"
    hint = f"python3 {tool} {spec} /work/assets/{spec}" if tool.exists() else "see ../shared/tools/test-assets"
    raise SystemExit(f"bench: model `{spec}` not found (looked in {', '.join(map(str, asset_dirs()))}); build it: {hint}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    import openvino

    flags = cpu_facts()["flags"]
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": sorted(f for f in flags if "bf16" in f or "amx" in f or "vnni" in f or f == "avx512f"),
        "openvino_capabilities": cpu_capabilities(),
        "cpus_available": available_cpus(),
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__.split("-")[0],
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def short_requests(workload: Workload, count: int) -> list[list[Item]]:
    shorts = [i for i in workload.items if i.kind == SHORT] or workload.items[:1]
    return [[shorts[k % len(shorts)]] for k in range(count)]


def requests_of(workload: Workload, size: int, count: int) -> list[list[Item]]:
    """`count` requests of `size` inputs, taken in workload order (wrapping around)."""
    items = workload.items
    return [[items[(k * size + j) % len(items)] for j in range(size)] for k in range(count)]


def best_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    best = max(results, key=lambda r: float(r["tokens_per_s"]))
    return {**best, "repeats": [{k: r.get(k) for k in ("tokens_per_s", "p50_ms", "foreign_cpu_share")}
                                for r in results]}


def merged_padding(requests: Sequence[Sequence[Item]], group: int, batching: dict[str, int]) -> float:
    """The packer's real/computed when Triton hands model.py `group` requests at once.

    The gateway chunks each request (pack_by_length); the dynamic batcher merges up to
    max_batch_size rows from `group` waiting requests; model.py repacks their rows together.
    """
    from appliance.ops.packing import pack_by_length
    from appliance.ops.packing import padding_efficiency as packer_efficiency

    budget, rows = batching["max_batch_tokens"], batching["max_batch_size"]
    chunks: list[list[int]] = []
    for request in requests:
        lengths = [i.tokens for i in request]
        chunks += [[lengths[i] for i in run] for run in pack_by_length(lengths, budget, rows)]
    real = 0
    computed = 0.0
    index = 0
    while index < len(chunks):
        merged: list[int] = []
        taken = 0
        while index < len(chunks) and taken < group and len(merged) + len(chunks[index]) <= rows:
            merged += chunks[index]
            index += 1
            taken += 1
        if not merged:  # a chunk alone is at most max_batch_size rows
            merged = chunks[index]
            index += 1
        runs = pack_by_length(merged, budget, rows)
        real += sum(merged)
        computed += sum(merged) / packer_efficiency(merged, runs)
    return round(real / computed, 4) if computed else 1.0


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.sizes = [int(x) for x in args.sizes.split(",")]
        self.concurrency = [int(x) for x in args.concurrency.split(",")]
        self.latency_sizes = [int(x) for x in args.latency_sizes.split(",")]
        self.threads = args.threads or available_cpus()
        self.batching = dict(BATCHING)
        if args.queue_delay_us is not None:
            self.batching["max_queue_delay_us"] = args.queue_delay_us
        if args.max_batch_tokens is not None:
            self.batching["max_batch_tokens"] = args.max_batch_tokens
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-", dir=args.workdir))

    def log(self, message: str) -> None:
        print(f"bench [{time.strftime('%H:%M:%S')}] {message}", flush=True)

    # ---- baseline and in-process twins ----------------------------------------------------
    def run_baseline(self, folder: Path, workload: Workload, *, engine: str = "onnxruntime",
                     precision: str = "fp32", label: str = "baseline") -> dict[str, Any]:
        """An engine in-process: saturated (best budget x packer), idle single query, latency by size."""
        a = self.args
        self.log(f"{label}: {engine} {precision} in-process, {self.threads} threads, {folder}")
        model = BaselineModel(folder, self.threads, raw_graph=a.raw_graph and label == "baseline",
                              engine=engine, precision=precision, cache_dir=EmbedEnv().engine_cache_dir)  # type: ignore[arg-type]
        self.log(f"{label}: {model.model.detail}")
        budgets = [int(x) for x in a.baseline_budgets.split(",")]
        meter = NoiseMeter().start()
        runs = [saturated(model, workload, budgets, deadline_s=a.deadline, min_seconds=a.min_seconds)
                for _ in range(a.repeats)]
        sat = best_of(runs)
        sat["noise"] = meter.stop()
        self.log(f"{label}: saturated {sat['tokens_per_s']} tok/s (budget {sat['budget_tokens']}, "
                 f"min fill {sat['min_fill']}, padding {sat['padding_efficiency']})")
        budget = int(sat["budget_tokens"])  # the best packing on this workload, for every request below
        fill = float(sat["min_fill"])
        idle = request_latency(model, short_requests(workload, a.idle_calls), budget=budget, min_fill=fill,
                               repeats=a.idle_calls, deadline_s=a.deadline)
        by_size = {}
        for size in self.latency_sizes:
            by_size[str(size)] = request_latency(model, requests_of(workload, size, a.latency_calls), budget=budget,
                                                 min_fill=fill, repeats=a.latency_calls, deadline_s=a.deadline)
        self.log(f"{label}: idle single short query p50 {idle['p50_ms']} ms")
        result = {
            "engine": engine,
            "precision": precision,
            "detail": model.model.detail,
            "threads": self.threads,
            "intra_op_spinning": model.spinning,
            "raw_graph": model.raw_graph,
            "softmax_nan_guards_dropped": model.rewrites.nan_guards,
            "erf_gelus_fused": model.rewrites.erf_gelus,
            "ort_disabled_optimizers": [] if model.raw_graph or engine != "onnxruntime" else list(DISABLED_OPTIMIZERS),
            "ort_session_load_s": round(model.load_seconds, 3),
            "saturated": sat,
            "padding_efficiency": sat["padding_efficiency"],
            "idle_single": idle,
            "latency_by_size": by_size,
        }
        del model
        gc.collect()
        return result

    def run_exported(self, folder: Path, workload: Workload, baseline: dict[str, Any]) -> dict[str, Any]:
        """ONNX Runtime fp32 on the file as exported (TEI's and Infinity's graph): saturated only, at
        the baseline's best budget and packer."""
        a = self.args
        model = BaselineModel(folder, self.threads, raw_graph=True)
        budget, fill = int(baseline["saturated"]["budget_tokens"]), float(baseline["saturated"]["min_fill"])
        sat = saturated(model, workload, [budget], fills=(fill,), deadline_s=a.deadline, min_seconds=a.min_seconds)
        self.log(f"baseline (graph as exported): saturated {sat['tokens_per_s']} tok/s")
        del model
        gc.collect()
        return {"engine": "onnxruntime", "precision": "fp32", "raw_graph": True, "saturated": sat}

    def resolve(self, source: Path, variant: str) -> tuple[CompiledModel, float]:
        """What the appliance serves for `variant`, by the product's own compiler (gate included)."""
        toml = (f'[[models]]\nname = "{ac.APPLIANCE_MODEL}"\npath = "{source}"\ntask_instructions = false\n'
                + "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.variant_keys(variant).items())
                + "[batching]\n" + "".join(f"{k} = {v}\n" for k, v in self.batching.items())
                + f"[instances]\ncount = {self.args.appliance_instances}\nthreads = {self.args.appliance_threads}\n")
        started = time.monotonic()
        compiled = compile_spec(parse_spec(toml), source, self.workdir / f"resolve-{len(list(self.workdir.iterdir()))}")
        return compiled.gateway.models[0], round(time.monotonic() - started, 2)

    def variant_keys(self, variant: str) -> dict[str, object]:
        keys: dict[str, object] = {} if self.args.min_cosine is None else {"min_cosine": self.args.min_cosine}
        if variant == "auto":
            return keys
        engine, precision = variant.split(":")
        return {"engine": engine, "precision": precision, **keys}

    # ---- servers (appliance / Infinity) ----------------------------------------------------
    def drive(self, target: ac.Target, workload: Workload) -> dict[str, Any]:
        """Idle latency, the closed-loop grid over the whole workload, latency by request size."""
        a = self.args
        asyncio.run(ac.warm_up(target, workload.items[:16]))
        # One unmeasured pass over the whole workload, as the baseline gets before its loops: the
        # server's ONNX Runtime sees the workload's shapes once (first-time allocations per shape).
        asyncio.run(ac.closed_loop(target, workload.requests(8), 4, deadline_s=a.deadline))
        idle = asyncio.run(ac.closed_loop(target, short_requests(workload, a.idle_calls), 1, deadline_s=a.deadline))
        lean = ac.one_at_a_time(target, short_requests(workload, a.idle_calls), deadline_s=a.deadline)
        self.log(f"{target.name}: idle single short query p50 {idle['p50_ms']} ms (httpx), "
                 f"{lean['p50_ms']} ms (http.client)")
        grid = []
        for size in self.sizes:
            requests = workload.requests(size)
            for concurrency in self.concurrency:
                if concurrency > len(requests):
                    continue
                runs = [asyncio.run(ac.closed_loop(target, requests, concurrency, deadline_s=a.deadline,
                                                   min_seconds=a.min_seconds))
                        for _ in range(a.repeats)]
                point = {"request_size": size, **best_of(runs)}
                grid.append(point)
                self.log(f"{target.name}: size {size:>3} x concurrency {concurrency:>2}: "
                         f"{point['tokens_per_s']:>8} tok/s  p50 {point['p50_ms']:>9} ms  "
                         f"p99 {point['p99_ms']:>9} ms  foreign cpu {point['foreign_cpu_share']}"
                         + (f"  ERRORS: {point['errors'][:2]}" if point["errors"] else ""))
        by_size = {}
        for size in self.latency_sizes:
            by_size[str(size)] = asyncio.run(ac.closed_loop(
                target, requests_of(workload, size, a.latency_calls), 1, deadline_s=a.deadline))
        complete = [g for g in grid if g["complete"]] or grid
        best = max(complete, key=lambda g: float(g["tokens_per_s"]))
        return {"idle_single": idle, "idle_single_lean_client": lean, "grid": grid, "saturated": best, "latency_by_size": by_size}

    def run_appliance(self, folder: Path, workload: Workload, ort_load_s: float | None,
                      variant: str = "auto", max_batch_tokens: int = 1024) -> dict[str, Any]:
        toml = ("[batching]\n" + "".join(f"{k} = {v}\n" for k, v in self.batching.items())
                + f"[instances]\ncount = {self.args.appliance_instances}\nthreads = {self.args.appliance_threads}\n")
        self.log(f"appliance: starting `appliance serve` ({folder}, {variant})")
        running = ac.start_appliance(folder, self.workdir / f"app{len(list(self.workdir.iterdir()))}",
                                     toml_extra=toml, ort_load_s=ort_load_s, model_extra=self.variant_keys(variant))
        self.log(f"appliance: ready in {running.startup['serve_to_ready_s']} s "
                 f"({running.startup['excluding_model_load_s']} s without the model load)")
        try:
            result = self.drive(running.target, workload)
        finally:
            running.stop()
        batching = {**self.batching, "max_batch_tokens": max_batch_tokens}  # as compiled for this engine
        sizes = {}
        for size in self.sizes:
            requests = workload.requests(size)
            sizes[str(size)] = {
                "per_request": ac.derived_padding_efficiency(requests, batching["max_batch_tokens"],
                                                             batching["max_batch_size"]),
                **{f"merged_c{c}": merged_padding(requests, c, batching) for c in self.concurrency},
            }
        best = result["saturated"]
        at_best = merged_padding(workload.requests(best["request_size"]), best["concurrency"], batching)
        # The target's number: the appliance's packer on the whole mixed workload at once (as the
        # baseline's batches are), i.e. what model.py does when the queue holds all of it.
        from appliance.ops.packing import pack_by_length
        from appliance.ops.packing import padding_efficiency as packer_efficiency

        lengths = [i.tokens for i in workload.items]
        mixed = round(packer_efficiency(lengths, pack_by_length(lengths, batching["max_batch_tokens"],
                                                                batching["max_batch_size"])), 4)
        return {
            "startup": running.startup,
            "batching": batching,
            "instances": self.args.appliance_instances,
            "threads": self.args.appliance_threads or "auto (cores / instances)",
            **result,
            "padding_efficiency": {"mixed_workload": mixed, "saturated_point": at_best, "by_request_size": sizes},
        }

    def run_infinity(self, folder: Path, workload: Workload) -> dict[str, Any]:
        why = inf.can_serve(folder)
        if why:
            return {"skipped": why}
        venv = inf.find_bench_venv(self.args.bench_venv)
        if venv is None:
            return {"skipped": "no bench venv with infinity_emb: run `bash bench/setup-infinity.sh`"}
        self.log(f"infinity: starting infinity_emb ({venv})")
        running = inf.start_infinity(venv, folder, self.workdir / "infinity")
        self.log(f"infinity: healthy in {running.startup['start_to_health_s']} s")
        try:
            result = self.drive(running.target, workload)
        finally:
            running.stop()
        return {"startup": running.startup, "engine": "optimum (ONNX Runtime), --pooling-method mean", **result}

    # ---- one model ---------------------------------------------------------------------------
    def run_model(self, spec: str, variants: Sequence[str]) -> list[dict[str, Any]]:
        a = self.args
        source = resolve_model(spec)
        items = a.items or (48 if self.quick else 200)
        workload = build_workload(source, items, seed=a.seed, max_tokens=a.max_tokens)
        self.log(f"model {spec}: {workload.summary()}")
        systems = set(a.systems.split(","))
        skipped = {"skipped": "not asked"}
        baseline = self.run_baseline(source, workload) if "baseline" in systems else skipped
        exported = (self.run_exported(source, workload, baseline) if "baseline" in systems and not a.quick
                    else {"skipped": "not asked" if "baseline" not in systems else "quick run"})
        entries = []
        for number, variant in enumerate(variants):
            served, resolve_s = self.resolve(source, variant)
            self.log(f"[{variant}] serves {served.engine} {served.precision}: {served.engine_reason} "
                     f"(resolved in {resolve_s} s)")
            entry: dict[str, Any] = {
                "model": spec, "path": str(source), "served_folder": served.folder, "variant": variant,
                "engine": served.engine, "precision": served.precision, "engine_reason": served.engine_reason,
                "fidelity": None if served.fidelity is None else msgspec.to_builtins(served.fidelity),
                "resolve_s": resolve_s, "workload": workload.summary(), "baseline": baseline,
                "baseline_exported": exported,
            }
            same_as_baseline = (served.engine, served.precision, Path(served.folder)) == ("onnxruntime", "fp32", source)
            if "baseline" not in systems:
                entry["twin"] = skipped
            elif same_as_baseline:
                entry["twin"] = {**baseline, "same_as_baseline": True}
            else:
                entry["twin"] = self.run_baseline(Path(served.folder), workload, engine=served.engine,
                                                  precision=served.precision, label=f"twin {variant}")
            load = _get(entry, "twin", "ort_session_load_s")
            entry["appliance"] = (self.run_appliance(source, workload, load, variant, served.max_batch_tokens)
                                  if "appliance" in systems else skipped)
            if "infinity" in systems and number == 0:
                entry["infinity"] = self.run_infinity(source, workload)
            else:
                entry["infinity"] = {"skipped": "not asked" if "infinity" not in systems else
                                     "Infinity is measured once per model, with the first variant"}
            lengths = [i.tokens for i in workload.items]
            entry["compute"] = compute_report(source, lengths, self.threads, {
                "baseline": ("fp32", _get(entry, "baseline", "saturated", "tokens_per_s")),
                "twin": (served.precision, _get(entry, "twin", "saturated", "tokens_per_s")),
                "appliance": (served.precision, _get(entry, "appliance", "saturated", "tokens_per_s")),
            })
            entry["ratios"], entry["targets"] = evaluate(entry)
            entries.append(entry)
        return entries


def _get(d: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if a and b else None


def evaluate(entry: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    base_sat = _get(entry, "baseline", "saturated", "tokens_per_s")
    twin_sat = _get(entry, "twin", "saturated", "tokens_per_s")
    app_sat = _get(entry, "appliance", "saturated", "tokens_per_s")
    inf_sat = _get(entry, "infinity", "saturated", "tokens_per_s")
    exported_sat = _get(entry, "baseline_exported", "saturated", "tokens_per_s")
    base_idle = _get(entry, "baseline", "idle_single", "p50_ms")
    twin_idle = _get(entry, "twin", "idle_single", "p50_ms")
    app_idle = _get(entry, "appliance", "idle_single", "p50_ms")
    app_idle_lean = _get(entry, "appliance", "idle_single_lean_client", "p50_ms")
    ratios = {
        # the user's gain: the appliance against ONNX Runtime fp32 in-process on the rewritten graph
        "appliance_over_baseline": _ratio(app_sat, base_sat),
        # serving overhead: the appliance against its own engine and precision in-process
        "appliance_over_twin": _ratio(app_sat, twin_sat),
        "twin_over_baseline": _ratio(twin_sat, base_sat),
        "appliance_over_exported_graph": _ratio(app_sat, exported_sat),
        "baseline_over_exported_graph": _ratio(base_sat, exported_sat),
        "appliance_over_infinity": _ratio(app_sat, inf_sat),
        "added_idle_latency_vs_twin_ms": round(app_idle_lean - twin_idle, 3) if app_idle_lean and twin_idle else None,
        # What the appliance adds over the in-process call, measured with a client that costs next
        # to nothing (http.client); with httpx the client's own CPU is counted in too.
        "added_idle_latency_ms": round(app_idle_lean - base_idle, 3) if app_idle_lean and base_idle else None,
        "added_idle_latency_httpx_ms": round(app_idle - base_idle, 3) if app_idle and base_idle else None,
    }
    padding = _get(entry, "appliance", "padding_efficiency", "mixed_workload")
    startup = _get(entry, "appliance", "startup", "excluding_model_load_s")

    def check(value: Any, target: float, higher_is_better: bool) -> dict[str, Any]:
        met = None if value is None else (value >= target if higher_is_better else value <= target)
        return {"value": value, "target": target, "met": met}

    gain = GAIN_TARGETS.get(Path(str(entry["model"])).name) if entry.get("variant") == "auto" else None
    targets = {
        "saturated_vs_twin": check(ratios["appliance_over_twin"], TARGETS["saturated_vs_twin"], True),
        "gain_vs_ort_fp32_baseline": (check(ratios["appliance_over_baseline"], gain, True) if gain
                                      else {"value": ratios["appliance_over_baseline"], "target": None, "met": None}),
        "added_idle_latency_ms": check(ratios["added_idle_latency_ms"], TARGETS["added_idle_latency_ms"], False),
        "padding_efficiency": check(padding, TARGETS["padding_efficiency"], True),
        "saturated_vs_infinity": check(ratios["appliance_over_infinity"], TARGETS["saturated_vs_infinity"], True),
        "startup_excluding_model_load_s": check(startup, TARGETS["startup_excluding_model_load_s"], False),
    }
    return ratios, targets


def int8_ratios(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e8 in (e for e in entries if e["precision"] == "int8" and e["engine"] == "onnxruntime"):
        e32 = next((e for e in entries if (e["engine"], e["precision"]) == ("onnxruntime", "fp32")
                    and e["model"] == e8["model"]), None)
        if e32 is None:
            continue
        row: dict[str, Any] = {"model": e8["model"]}
        for system in ("twin", "appliance"):
            a, b = _get(e8, system, "saturated", "tokens_per_s"), _get(e32, system, "saturated", "tokens_per_s")
            row[f"{'baseline' if system == 'twin' else system}_int8_over_fp32"] = _ratio(a, b)
        row["target"] = 1.8
        out.append(row)
    return out


def print_summary(result: dict[str, Any]) -> None:
    print()
    m = result["machine"]
    print(f"CPU: {m['cpu_model']} ({m['cpus_available']} cores; flags {' '.join(m['cpu_flags']) or 'none'}; "
          f"OpenVINO capabilities {', '.join(m['openvino_capabilities'])}), onnxruntime {m['onnxruntime']}, "
          f"openvino {m['openvino']}")
    for e in result["models"]:
        print(f"\n== {e['model']} [{e['variant']}: {e['engine']} {e['precision']}]  {e['workload']['items']} texts, "
              f"{e['workload']['total_tokens']} tokens ==")
        print(f"  why: {e['engine_reason']}")
        print(f"{'system':<10} {'tok/s':>9} {'emb/s':>8} {'p50 ms':>10} {'p95 ms':>10} {'p99 ms':>10} "
              f"{'padding':>8}  {'idle 1-query p50 (http.client / httpx)':>38}")
        for system in ("baseline", "exported", "twin", "appliance", "infinity"):
            s = e.get("baseline_exported" if system == "exported" else system, {})
            if system == "exported" and "saturated" in s:
                print(f"{system:<10} {s['saturated']['tokens_per_s']:>9}  (ONNX Runtime fp32 on the file as exported)")
                continue
            if system == "twin" and s.get("same_as_baseline"):
                print(f"{system:<10} = baseline")
                continue
            if "skipped" in s:
                print(f"{system:<10} skipped: {s['skipped']}")
                continue
            sat = s["saturated"]
            pad = s["padding_efficiency"] if system in ("baseline", "twin") else (
                _get(s, "padding_efficiency", "mixed_workload") if system == "appliance" else None)
            where = "" if system in ("baseline", "twin") else f"  (size {sat['request_size']} x c{sat['concurrency']})"
            p50 = sat.get("p50_ms", "-")
            print(f"{system:<10} {sat['tokens_per_s']:>9} {sat['embeddings_per_s']:>8} {p50!s:>10} "
                  f"{sat.get('p95_ms', '-')!s:>10} {sat.get('p99_ms', '-')!s:>10} {pad if pad is not None else '-'!s:>8}  "
                  f"{_get(s, 'idle_single_lean_client', 'p50_ms') or '-'!s:>18} / {s['idle_single']['p50_ms']} ms{where}")
        for system in ("baseline", "twin", "appliance"):
            s = e.get(system, {})
            if "latency_by_size" in s and not s.get("same_as_baseline"):
                cells = "  ".join(f"{n} inputs: {v['p50_ms']} ms p50, {v['tokens_per_s']} tok/s"
                                  for n, v in s["latency_by_size"].items())
                print(f"  {system} one caller: {cells}")
        if "startup" in e.get("appliance", {}):
            print(f"  appliance start-up: {e['appliance']['startup']}")
        print(f"  ratios: {e['ratios']}")
        compute = e["compute"]
        for system, c in compute["achieved"].items():
            print(f"  {system}: {c['gflops']} GFLOP/s = {c['share_of_peak']} of the {c['precision']} peak "
                  f"({compute['peak_derivation'][c['precision']]})")
        for name, t in e["targets"].items():
            mark = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
            print(f"  target {name:<32} {t['value']!s:>10} vs {t['target']!s:<6} {mark}")
    for row in result.get("int8_over_fp32", []):
        print(f"\nint8 / fp32 ({row['model']}): baseline {row['baseline_int8_over_fp32']}, "
              f"appliance {row['appliance_int8_over_fp32']} (target {row['target']})")


def write_plot(json_path: Path, png_path: Path, bench_venv: str | None) -> str:
    """Draw with matplotlib here if importable, else with the bench venv's Python, else skip."""
    try:
        import matplotlib  # noqa: F401

        from bench.plot import plot

        plot(json.loads(json_path.read_text()), png_path)
        return str(png_path)
    except ImportError:
        pass
    venv = inf.find_bench_venv(bench_venv)
    if venv is None or not (venv / "bin" / "python").exists():
        return "skipped: matplotlib is not installed (run `bash bench/setup-infinity.sh` for the bench venv)"
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "bench.plot", str(json_path), str(png_path)],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=300, check=False)
    if done.returncode != 0:
        return f"skipped: plotting failed: {done.stderr[-500:]}"
    return str(png_path)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small workload, few points: a smoke run (~1-2 min)")
    p.add_argument("--model", action="append", help="asset name or folder (repeatable); default: minilm, e5-small-jina")
    p.add_argument("--engines", default=None,
                   help="served variants: auto and/or ENGINE:PRECISION (onnxruntime:fp32, onnxruntime:int8, "
                        "openvino:fp32, openvino:bf16), comma-separated; default auto")
    p.add_argument("--min-cosine", type=float, default=None,
                   help="[[models]] min_cosine for every variant (the fidelity gate's threshold)")
    p.add_argument("--quantize", choices=("fp32", "int8", "both"), default=None,
                   help="shorthand: onnxruntime:fp32 / onnxruntime:int8 / both")
    p.add_argument("--systems", default="baseline,appliance,infinity")
    p.add_argument("--items", type=int, default=0, help="workload size (default 200, quick 48)")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--max-tokens", type=int, default=None, help="cap content tokens (default: the model's limit)")
    p.add_argument("--sizes", default=None, help="request sizes (inputs per request), default 1,8,64")
    p.add_argument("--concurrency", default=None, help="closed-loop clients, default 1,4,16")
    p.add_argument("--latency-sizes", default=None, help="one-caller latency for these sizes, default 1,8,32")
    p.add_argument("--latency-calls", type=int, default=None, help="requests per latency size (default 8, quick 3)")
    p.add_argument("--idle-calls", type=int, default=None, help="single short queries at idle (default 60, quick 15)")
    p.add_argument("--repeats", type=int, default=1, help="repeat each throughput point, keep the best")
    p.add_argument("--baseline-budgets", default=None, help="token budgets the baseline tries (keeps the best)")
    p.add_argument("--min-seconds", type=float, default=None,
                   help="each throughput loop repeats whole passes over the workload until it has run this "
                        "long (default 10, quick 0: one pass)")
    p.add_argument("--deadline", type=float, default=None, help="seconds per measured loop (default 300, quick 60)")
    p.add_argument("--raw-graph", action="store_true",
                   help="baseline runs the graph as exported with ONNX Runtime's defaults (default: as served)")
    p.add_argument("--threads", type=int, default=0, help="baseline ORT threads (default: all available cores)")
    p.add_argument("--appliance-instances", type=int, default=1, help="[instances] count")
    p.add_argument("--appliance-threads", type=int, default=0, help="[instances] threads (0 = auto: cores / count)")
    p.add_argument("--queue-delay-us", type=int, default=None, help="[batching] max_queue_delay_us (product default)")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="[batching] max_batch_tokens (product default)")
    p.add_argument("--bench-venv", default=None, help="venv made by bench/setup-infinity.sh")
    p.add_argument("--cache-dir", default=None,
                   help="$EMBED_CACHE_DIR for the run: int8 twins, fidelity verdicts, OpenVINO's cache "
                        "(default: $EMBED_CACHE_DIR, else ~/.cache/embed-appliance)")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--workdir", default=None, help="where stacks run (default: a temp dir)")
    args = p.parse_args(argv)
    quick = args.quick
    args.model = args.model or (["minilm"] if quick else ["minilm", "e5-small-jina"])
    args.sizes = args.sizes or ("1,8,64" if not quick else "1,8")
    args.concurrency = args.concurrency or ("1,4,16" if not quick else "1,4")
    args.latency_sizes = args.latency_sizes or ("1,8,32" if not quick else "1,8")
    args.latency_calls = args.latency_calls or (3 if quick else 8)
    args.idle_calls = args.idle_calls or (15 if quick else 60)
    args.baseline_budgets = args.baseline_budgets or ("2048" if quick else "1024,2048,4096,16384")
    args.deadline = args.deadline or (60.0 if quick else 300.0)
    if args.min_seconds is None:
        args.min_seconds = 0.0 if quick else 10.0
    args.engines = args.engines or ",".join(QUANTIZE_VARIANTS[args.quantize] if args.quantize else ["auto"])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cache_dir:
        os.environ["EMBED_CACHE_DIR"] = str(Path(args.cache_dir).resolve())
    bench = Bench(args)
    variants = args.engines.split(",")
    started = time.time()
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "command": "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": args.quick,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "workdir")},
        "targets": TARGETS,
        "models": [],
    }
    meter = NoiseMeter().start()
    try:
        for spec in args.model:
            result["models"].extend(bench.run_model(spec, variants))
    finally:
        shutil.rmtree(bench.workdir, ignore_errors=True)
    result["int8_over_fp32"] = int8_ratios(result["models"])
    result["noise"] = meter.stop()
    result["seconds"] = round(time.time() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    json_path = out / f"bench-{stamp}.json"
    png_path = out / f"bench-{stamp}.png"
    result["plot"] = str(png_path)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    result["plot"] = write_plot(json_path, png_path, args.bench_venv)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    shutil.copyfile(json_path, out / "latest.json")
    print_summary(result)
    print(f"\nJSON: {json_path}\nplot: {result['plot']}")
    if result["noise"]["foreign_cpu_share"] > 0.05:
        print(f"WARNING: other processes used {result['noise']['foreign_cpu_share']:.0%} of the CPU during the run: "
              "the numbers are lower and noisier than on a quiet machine.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
