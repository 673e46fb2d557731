"""Engines and precision on the real stack: OpenVINO fp32 equals the ORT reference, `auto`, the gate.

One stack serves tiny-jina three ways: `engine = "openvino"` at fp32, `auto` (bf16 on a CPU that
runs it natively and passes the gate), and `auto` with a `min_cosine` bf16 cannot reach (so the
gate refuses and fp32 is served). An explicit `precision = "bf16"` with that threshold must stop
start-up naming the key and the measured cosine.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.models.engines import cpu_capabilities
from harness.reference import Reference
from harness.served import JINA_TASKS, Served, assert_matches_reference, stop_cleanly
from harness.stack import Stack, model_toml, ports_toml

OV_FP32 = "tiny-openvino-fp32"
AUTO = "tiny-auto"
STRICT = "tiny-auto-strict"
UNREACHABLE = 0.99999999  # a min cosine bf16 never reaches on these weights (measured ~0.99998)
TEXTS = ["hello world", "Represent this sentence, please.", "Die Katze sitzt auf der Matte. " * 12,
         "東京の人口はどれくらいですか", "a " * 300]

CAPABILITIES = cpu_capabilities()
HAS_BF16 = "BF16" in CAPABILITIES
NO_BF16 = f"this CPU has no native bf16 (OpenVINO OPTIMIZATION_CAPABILITIES: {', '.join(CAPABILITIES)})"


@pytest.fixture(scope="module")
def engines_stack(tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path) -> Iterator[Served]:
    toml = (
        ports_toml()
        + "[batching]\nmax_batch_size = 32\nmax_queue_delay_us = 20000\nmax_batch_tokens = 2048\n"
        + model_toml(OV_FP32, tiny_jina_dir, engine="openvino", precision="fp32")
        + model_toml(AUTO, tiny_jina_dir)
        + model_toml(STRICT, tiny_jina_dir, min_cosine=UNREACHABLE)
    )
    stack = Stack(tmp_path_factory.mktemp("engines-stack"), toml).start()
    try:
        yield Served(stack, key=None)
    finally:
        stop_cleanly(stack)


def engine_of(served: Served, model: str) -> dict[str, Any]:
    info = httpx.get(f"{served.base_url}/info", timeout=10).json()
    return next(m["engine"] for m in info["models"] if m["name"] == model)


def test_openvino_fp32_equals_the_onnx_runtime_reference_for_every_task(
    engines_stack: Served, tiny_ref: Reference
) -> None:
    assert engine_of(engines_stack, OV_FP32)["name"] == "openvino"
    for task in JINA_TASKS:
        vectors, _ = engines_stack.embed(OV_FP32, TEXTS, task=task)
        for text, got in zip(TEXTS, vectors):
            assert_matches_reference(got, tiny_ref.embed(text, task), f"{task} {text[:20]!r}")


def test_openvino_fp32_holds_under_a_mixed_concurrent_load(engines_stack: Served, tiny_ref: Reference) -> None:
    """Requests of every task and several sizes for all three models at once, merged inside Triton."""
    jobs = [(model, task, TEXTS[: 1 + i % len(TEXTS)]) for i, (model, task) in enumerate(
        (m, t) for _ in range(3) for m in (OV_FP32, AUTO, STRICT) for t in JINA_TASKS)]

    def run(job: tuple[str, str, list[str]]) -> tuple[str, str, list[str], list[Any]]:
        model, task, texts = job
        return model, task, texts, engines_stack.embed(model, texts, task=task)[0]

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(run, jobs))
    for model, task, texts, vectors in results:
        for text, got in zip(texts, vectors):
            want = tiny_ref.embed(text, task)
            if model == AUTO and HAS_BF16:
                assert float(got @ want) >= 0.9999, f"{model} {task} {text[:20]!r}: cosine {got @ want:.6f}"
            else:
                assert_matches_reference(got, want, f"{model} {task} {text[:20]!r}")


def test_auto_says_which_engine_runs_and_why(engines_stack: Served) -> None:
    engine = engine_of(engines_stack, AUTO)
    if not HAS_BF16:
        assert (engine["name"], engine["precision"]) == ("onnxruntime", "fp32")
        assert "no native bf16" in engine["reason"] and engine["fidelity"] is None
        return
    assert (engine["name"], engine["precision"]) == ("openvino", "bf16")
    gate = engine["fidelity"]
    assert gate["min_cosine"] >= gate["threshold"] == 0.9999
    assert set(gate["per_task"]) == set(JINA_TASKS) and gate["probes"] >= 33 and gate["long_tokens"] == 2048
    assert f"{gate['min_cosine']:.6f}" in engine["reason"] and "BF16" in engine["reason"]
    assert "openvino bf16" in engines_stack.stack.log()


@pytest.mark.skipif(not HAS_BF16, reason=NO_BF16)
def test_auto_falls_back_to_fp32_when_the_gate_refuses_and_logs_the_cosine(
    engines_stack: Served, tiny_ref: Reference
) -> None:
    engine = engine_of(engines_stack, STRICT)
    assert (engine["name"], engine["precision"]) == ("onnxruntime", "fp32")
    assert engine["fidelity"]["threshold"] == UNREACHABLE
    measured = f"{engine['fidelity']['min_cosine']:.6f}"
    assert "failed the fidelity gate" in engine["reason"] and measured in engine["reason"]
    assert f"bf16 failed the fidelity gate (min cosine {measured}" in engines_stack.stack.log()
    vectors, _ = engines_stack.embed(STRICT, TEXTS[:2], task="retrieval.query")
    for text, got in zip(TEXTS, vectors):
        assert_matches_reference(got, tiny_ref.embed(text, "retrieval.query"), text)


@pytest.mark.skipif(not HAS_BF16, reason=NO_BF16)
def test_an_explicit_bf16_that_fails_the_gate_stops_start_up_naming_the_key_and_the_cosine(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    toml = ports_toml() + model_toml("m", tiny_jina_dir, precision="bf16", min_cosine=UNREACHABLE)
    stack = Stack(tmp_path, toml).start(wait=False)
    assert stack.process is not None
    try:
        code = stack.process.wait(timeout=120)
    finally:
        stack.stop()
    log = stack.log()
    assert code != 0, log[-3000:]
    assert "models[0].precision" in log and "failed the fidelity gate: min cosine 0.99" in log, log[-3000:]
    assert "min_cosine" in log, log[-3000:]  # the fix names the option


@pytest.mark.assets
@pytest.mark.skipif(not HAS_BF16, reason=NO_BF16)
def test_e5_small_jina_in_bf16_stays_within_cosine_0_9999_of_the_fp32_reference(
    tmp_path: Path, e5_small_jina_dir: Path, e5_ref: Reference
) -> None:
    stack = Stack(tmp_path, ports_toml() + model_toml("e5", e5_small_jina_dir, precision="bf16")).start()
    served = Served(stack, key=None)
    try:
        engine = engine_of(served, "e5")
        assert (engine["name"], engine["precision"]) == ("openvino", "bf16")
        texts = ["follow the white rabbit", "sigue al conejo blanco", "跟着白兔走", "folge dem weißen Kaninchen",
                 "The museum's collection includes more than 3000 paintings. " * 20]
        worst = 1.0
        for task in JINA_TASKS:
            vectors, _ = served.embed("e5", texts, task=task)
            worst = min(worst, *(float(v @ e5_ref.embed(t, task)) for t, v in zip(texts, vectors)))
        assert worst >= 0.9999, f"min cosine bf16 vs fp32 reference {worst:.6f}"
        assert engine["fidelity"]["min_cosine"] >= 0.9999
    finally:
        stop_cleanly(stack)
