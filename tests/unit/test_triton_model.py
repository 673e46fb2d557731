"""model.py in-process: its `execute` with a small stand-in for `triton_python_backend_utils`.

The engine is real (ONNX Runtime on the tiny jina model); only Triton's Python-backend module is
a fake, defined here. What is checked: one response per request, rows of many requests grouped by
task and packed by length give the vectors each row gives alone, late-chunking spans, errors
inside the responses, and the padding counters.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from appliance.triton.interface import EMBEDDING, INPUT_IDS, LENGTHS, NORM, SPANS, TASK_ID

MODEL_PY = "appliance.triton.model"


class Tensor:
    def __init__(self, name: str, array: np.ndarray[Any, Any]) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray[Any, Any]:
        return self.array


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor], error: Exception | None = None) -> None:
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


class TritonError(Exception):
    pass


class Metric:
    def __init__(self, labels: dict[str, str]) -> None:
        self.labels, self.value = labels, 0

    def increment(self, value: int) -> None:
        self.value += value


class MetricFamily:
    COUNTER = "counter"

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name, self.metrics = name, []

    def Metric(self, labels: dict[str, str]) -> Metric:
        metric = Metric(labels)
        self.metrics.append(metric)
        return metric


class Logger:
    lines: ClassVar[list[str]] = []

    @classmethod
    def log_info(cls, text: str) -> None:
        cls.lines.append(text)

    log_warn = log_info


def get_input_tensor_by_name(request: dict[str, np.ndarray[Any, Any]], name: str) -> Tensor | None:
    return Tensor(name, request[name]) if name in request else None


@pytest.fixture(scope="module")
def model_module() -> Iterator[types.ModuleType]:
    fake = types.ModuleType("triton_python_backend_utils")
    for obj in (Tensor, InferenceResponse, TritonError, MetricFamily, Logger, get_input_tensor_by_name):
        setattr(fake, obj.__name__, obj)
    sys.modules["triton_python_backend_utils"] = fake
    sys.modules.pop(MODEL_PY, None)
    try:
        yield importlib.import_module(MODEL_PY)
    finally:
        sys.modules.pop(MODEL_PY, None)
        del sys.modules["triton_python_backend_utils"]


@pytest.fixture(scope="module")
def model(model_module: types.ModuleType, tiny_jina_dir: Path) -> Iterator[Any]:
    parameters = {
        "model_dir": str(tiny_jina_dir),
        "kind": "jina-v3",
        "output_name": "text_embeds",
        "pad_id": "1",
        "intra_op_threads": "1",
        "max_batch_tokens": "64",  # small: the rows below need several packed runs
        "engine": "onnxruntime",
        "precision": "fp32",
    }
    config = {"name": "tiny", "max_batch_size": 8, "parameters": {k: {"string_value": v} for k, v in parameters.items()}}
    instance = model_module.TritonPythonModel()
    instance.initialize({"model_config": json.dumps(config)})
    yield instance
    instance.finalize()


def request(rows: list[list[int]], task: int, spans: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    width = max(len(r) for r in rows)
    ids = np.ones((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    out = {
        INPUT_IDS: ids,
        LENGTHS: np.array([[len(r)] for r in rows], np.int64),
        TASK_ID: np.full((len(rows), 1), task, np.int64),
    }
    if spans is not None:
        out[SPANS] = np.array(spans, np.int64).reshape(1, -1)
    return out


def rows_of(seed: int, n: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[0, *rng.integers(5, 200, int(rng.integers(1, 30))).tolist(), 2] for _ in range(n)]


def test_one_response_per_request_each_row_a_unit_vector(model: Any) -> None:
    requests = [request(rows_of(1, 3), 0), request(rows_of(2, 1), 4)]
    responses = model.execute(requests)
    assert len(responses) == 2 and all(r.error is None for r in responses)
    for req, resp in zip(requests, responses, strict=True):
        unit, norm = resp.outputs[EMBEDDING], resp.outputs[NORM]
        assert unit.shape == (req[INPUT_IDS].shape[0], 64) and norm.shape == (req[INPUT_IDS].shape[0], 1)
        np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
        assert (norm > 0).all()


def test_rows_batched_across_requests_and_tasks_equal_each_row_alone(model: Any) -> None:
    batch = [request(rows_of(10 + t, 4), t) for t in range(5)]
    together = [r.outputs[EMBEDDING] for r in model.execute(batch)]
    for t, req in enumerate(batch):
        for i in range(req[INPUT_IDS].shape[0]):
            length = int(req[LENGTHS][i, 0])
            alone = model.execute([request([req[INPUT_IDS][i, :length].tolist()], t)])[0].outputs[EMBEDDING]
            np.testing.assert_allclose(together[t][i], alone[0], atol=1e-5, err_msg=f"task {t} row {i}")


def test_the_task_changes_the_vector(model: Any) -> None:
    rows = rows_of(3, 1)
    a, b = (model.execute([request(rows, t)])[0].outputs[EMBEDDING] for t in (0, 1))
    assert not np.allclose(a, b, atol=1e-3)


def test_late_chunking_pools_each_span_and_a_whole_row_span_is_the_rows_vector(model: Any) -> None:
    row = rows_of(4, 1)[0]
    n = len(row)
    spans = model.execute([request([row], 0, [(0, n // 2), (n // 2, n), (0, n)])])[0].outputs[EMBEDDING]
    whole = model.execute([request([row], 0)])[0].outputs[EMBEDDING]
    assert spans.shape == (3, 64)
    np.testing.assert_allclose(spans[2], whole[0], atol=1e-5)
    assert not np.allclose(spans[0], spans[1], atol=1e-3)


@pytest.mark.parametrize(
    "bad",
    [
        {LENGTHS: np.array([[99]], np.int64)},  # longer than the row
        {SPANS: np.array([[3, 2]], np.int64)},  # stop before start
    ],
)
def test_a_bad_request_gets_its_error_inside_the_responses(model: Any, bad: dict[str, Any]) -> None:
    good = request(rows_of(5, 1), 0)
    broken = {**request(rows_of(6, 1), 0), **bad}
    responses = model.execute([good, broken])
    assert len(responses) == 2
    assert all(isinstance(r.error, TritonError) and "inference failed" in str(r.error) for r in responses)


def test_the_padding_counters_count_real_and_computed_tokens(model: Any) -> None:
    model.execute([request(rows_of(7, 6), 0)])
    model.counted.set()
    families = {f.name: f.metrics[0] for f in model.metric_families}
    deadline = time.monotonic() + 10
    while families["embed_triton_ort_runs_total"].value == 0 and time.monotonic() < deadline:
        pass  # the flusher thread sends the counts
    real = families["embed_triton_tokens_real_total"].value
    computed = families["embed_triton_tokens_computed_total"].value
    assert families["embed_triton_ort_runs_total"].value >= 1
    assert 0 < real <= computed
