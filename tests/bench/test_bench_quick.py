"""A quick benchmark run completes and its JSON has every field. No timing is asserted.

Runs the one command (`python -m bench.run --quick`) as a user would, on the tiny jina-shaped
model the project builds itself: baseline + the real appliance over HTTP. Infinity is added when
the bench venv (`bash bench/setup-infinity.sh`) and the all-MiniLM asset (../shared) are present;
otherwise that test skips and says why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.assets import REPO, shared_asset

pytestmark = [pytest.mark.bench, pytest.mark.e2e]

LATENCY = {"p50_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms"}
LOOP = {"concurrency", "requests", "requests_planned", "complete", "wall_s", "tokens", "tokens_per_s",
        "embeddings_per_s", "errors", "foreign_cpu_share", *LATENCY}
TOP = {"schema", "command", "quick", "started_at", "machine", "settings", "targets", "models", "int8_over_fp32",
       "noise", "seconds", "plot"}
MACHINE = {"cpu_model", "cpu_flags", "openvino_capabilities", "cpus_available", "onnxruntime", "openvino", "python"}
TARGETS = {"saturated_vs_twin", "added_idle_latency_ms", "padding_efficiency", "saturated_vs_infinity",
           "startup_excluding_model_load_s"}
ENTRY_TARGETS = TARGETS | {"gain_vs_ort_fp32_baseline"}


def run_quick(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "results"
    # no --workdir: the stacks run in a short /tmp dir (supervisord's AF_UNIX socket path is <= 107 bytes)
    command = [sys.executable, "-m", "bench.run", "--quick", "--out", str(out),
               "--cache-dir", str(tmp_path / "cache"), *args]
    done = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{command}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "JSON:" in done.stdout and "target" in done.stdout, done.stdout[-2000:]
    latest = out / "latest.json"
    assert latest.is_file()
    return json.loads(latest.read_text())  # type: ignore[no-any-return]


def check_server(section: dict[str, Any], sizes: set[int]) -> None:
    assert LOOP <= set(section["idle_single"]), section["idle_single"]
    assert section["idle_single"]["requests"] > 0 and not section["idle_single"]["errors"]
    lean = section["idle_single_lean_client"]
    assert lean["requests"] > 0 and not lean["errors"] and lean["p50_ms"] > 0, lean
    grid = section["grid"]
    assert {g["request_size"] for g in grid} == sizes
    for point in grid:
        assert LOOP | {"request_size", "repeats"} <= set(point), point
        assert point["complete"] and not point["errors"], point
        assert point["tokens_per_s"] > 0
    assert LOOP <= set(section["saturated"])
    for row in section["latency_by_size"].values():
        assert LOOP <= set(row) and row["requests"] > 0


def check_result(result: dict[str, Any], *, infinity: bool) -> dict[str, Any]:
    assert TOP <= set(result), TOP - set(result)
    assert MACHINE <= set(result["machine"])
    assert result["machine"]["cpu_model"]
    assert set(result["targets"]) == TARGETS
    entry = result["models"][0]
    assert {"model", "path", "served_folder", "variant", "engine", "precision", "engine_reason", "fidelity",
            "workload", "baseline", "baseline_exported", "twin", "appliance", "infinity", "compute", "ratios",
            "targets"} <= set(entry)
    workload = entry["workload"]
    assert workload["items"] == 48 and workload["total_tokens"] > 0
    assert set(workload["mix"]) == {"short", "passage", "long"}

    base = entry["baseline"]
    assert {"threads", "ort_session_load_s", "saturated", "padding_efficiency", "idle_single",
            "latency_by_size"} <= set(base)
    assert {"tokens_per_s", "embeddings_per_s", "padding_efficiency", "budget_tokens", "min_fill", "tried"} <= set(base["saturated"])
    assert 0 < base["padding_efficiency"] <= 1
    assert LATENCY <= set(base["idle_single"])
    assert set(base["latency_by_size"]) == {"1", "8"}

    app = entry["appliance"]
    assert {"startup", "batching", "idle_single", "grid", "saturated", "latency_by_size", "padding_efficiency"} <= set(app)
    assert {"serve_to_ready_s", "triton_model_load_s", "ort_session_load_s", "excluding_model_load_s"} <= set(app["startup"])
    assert app["startup"]["serve_to_ready_s"] > 0
    check_server(app, {1, 8})
    padding = app["padding_efficiency"]
    assert 0 < padding["saturated_point"] <= 1 and 0 < padding["mixed_workload"] <= 1
    assert set(padding["by_request_size"]) == {"1", "8"}

    twin = entry["twin"]
    assert twin.get("same_as_baseline") or {"saturated", "idle_single", "engine", "precision"} <= set(twin)
    compute = entry["compute"]
    assert compute["flops_per_token"] > 0 and set(compute["peak_gflops"]) == {"fp32", "bf16", "int8"}
    assert {"baseline", "twin", "appliance"} <= set(compute["achieved"])

    ratios = entry["ratios"]
    assert {"appliance_over_baseline", "appliance_over_twin", "twin_over_baseline", "appliance_over_infinity",
            "added_idle_latency_ms", "added_idle_latency_httpx_ms"} <= set(ratios)
    assert ratios["appliance_over_baseline"] is not None and ratios["appliance_over_twin"] is not None
    assert set(entry["targets"]) == ENTRY_TARGETS
    for target in entry["targets"].values():
        assert {"value", "target", "met"} == set(target)
    if infinity:
        check_server(entry["infinity"], {1, 8})
        assert ratios["appliance_over_infinity"] is not None
    return entry


def test_quick_run_baseline_and_appliance(tiny_jina_dir: Path, tmp_path: Path) -> None:
    """`auto` and ONNX Runtime fp32 forced: each with its in-process twin and the appliance."""
    result = run_quick(tmp_path, "--model", str(tiny_jina_dir), "--systems", "baseline,appliance",
                       "--engines", "auto,onnxruntime:fp32")
    entry = check_result(result, infinity=False)
    assert entry["infinity"] == {"skipped": "not asked"}
    auto, fp32 = result["models"]
    assert (auto["variant"], fp32["variant"]) == ("auto", "onnxruntime:fp32")
    assert (fp32["engine"], fp32["precision"]) == ("onnxruntime", "fp32") and fp32["twin"]["same_as_baseline"]
    if auto["precision"] == "bf16":
        assert auto["twin"]["engine"] == "openvino" and auto["fidelity"]["min_cosine"] >= 0.9999
    assert result["plot"].endswith(".png") or result["plot"].startswith("skipped:")


def test_quick_run_with_infinity(tmp_path: Path) -> None:
    from bench.infinity import find_bench_venv

    if find_bench_venv() is None:
        pytest.skip("no bench venv with Infinity (bash bench/setup-infinity.sh): Infinity part skipped")
    minilm = shared_asset("minilm")
    result = run_quick(tmp_path, "--model", str(minilm))
    check_result(result, infinity=True)
    assert Path(result["plot"]).is_file(), result["plot"]
