"""The Triton Python-backend model: one engine (ONNX Runtime or OpenVINO) per instance.

Triton's dynamic batcher hands `execute` requests from many clients at once,
each a padded block [n, L] of token ids with the real LENGTHS and, for jina-v3,
a TASK_ID per row. Here every row of every request is unpadded, grouped by task
(jina's ONNX `task_id` is one 0-d scalar per run), sorted by length and packed
under `max_batch_tokens`, then run, mean-pooled over the mask in fp32 and
L2-normalized. Only pooled vectors leave Triton: EMBEDDING (unit, [n, hidden])
and NORM (the pre-normalization length, [n, 1]).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils

from appliance.models.engines import open_engine
from appliance.ops.packing import pack_by_length, pad_rows
from appliance.ops.pooling import l2_normalize, masked_mean, span_means
from appliance.triton.interface import EMBEDDING, INPUT_IDS, LENGTHS, NORM, SPANS, TASK_ID

# (request index, row index, token ids without padding, late-chunking spans or None)
Array = npt.NDArray[Any]
Row = tuple[int, int, Array, Array | None]
Request = tuple[Array, Array, Array, Array | None]


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.kind = params["kind"]
        self.output_name = params["output_name"]
        self.pad_id = int(params["pad_id"])
        self.max_batch_tokens = int(params["max_batch_tokens"])
        self.max_rows = int(config["max_batch_size"])
        model_path = Path(params["model_dir"]) / "model.onnx"
        cache = params.get("engine_cache_dir")
        self.engine = open_engine(
            model_path,
            engine=params.get("engine", "onnxruntime"),
            precision=params.get("precision", "fp32"),
            output_name=self.output_name,  # by NAME: jina's output 1 is a decoy
            threads=int(params["intra_op_threads"]),
            cache_dir=Path(cache) if cache else None,
        )
        pb_utils.Logger.log_info(f"{model_path}: {self.engine.detail}")
        self.metric_families, self.counters = _counters(config["name"])
        # Counted by `execute`, sent to Triton by a thread of their own: each update is an IPC round
        # trip that would delay every answer (docs/performance.md, "Triton hop").
        self.pending = dict.fromkeys(self.counters, 0)
        self.pending_lock = threading.Lock()
        self.counted = threading.Event()
        self.stopping = False
        self.flusher = threading.Thread(target=self._flush_loop, name="embed-counters", daemon=True)
        self.flusher.start()

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, returned (not sent), so the instance is free when the client's next
        request arrives (appliance/compile/pbtxt.py `queue_policy`); `_flush_loop` sends the counters."""
        try:
            outputs = self._embed([self._read(r) for r in requests])
        except Exception as exc:  # noqa: BLE001 -- one response per request, the error inside it
            error = pb_utils.TritonError(f"inference failed: {type(exc).__name__}: {exc}")
            responses = [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        else:
            responses = [
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(EMBEDDING, unit), pb_utils.Tensor(NORM, norm)]
                )
                for unit, norm in outputs
            ]
        self.counted.set()
        return responses

    def _read(self, request: Any) -> Request:
        ids = pb_utils.get_input_tensor_by_name(request, INPUT_IDS).as_numpy()
        lengths = pb_utils.get_input_tensor_by_name(request, LENGTHS).as_numpy().reshape(-1)
        task = pb_utils.get_input_tensor_by_name(request, TASK_ID)
        tasks = task.as_numpy().reshape(-1) if task is not None else np.zeros(len(lengths), np.int64)
        if ids.ndim != 2 or len(lengths) != ids.shape[0] or len(tasks) != ids.shape[0]:
            raise ValueError(f"INPUT_IDS {ids.shape}, LENGTHS {lengths.shape}, TASK_ID {tasks.shape} disagree")
        if (lengths < 1).any() or (lengths > ids.shape[1]).any():
            raise ValueError("LENGTHS out of range")
        spans_tensor = pb_utils.get_input_tensor_by_name(request, SPANS)
        spans = None
        if spans_tensor is not None:
            spans = spans_tensor.as_numpy().reshape(-1, 2)
            if (
                ids.shape[0] != 1
                or (spans[:, 0] < 0).any()
                or (spans[:, 1] <= spans[:, 0]).any()
                or (spans[:, 1] > lengths[0]).any()
            ):
                raise ValueError("SPANS must be [start, stop) pairs inside a single row")
        return ids, lengths, tasks, spans

    def _embed(self, batch: list[Request]) -> list[tuple[Array, Array]]:
        by_task: dict[int, list[Row]] = defaultdict(list)
        for r, (ids, lengths, tasks, spans) in enumerate(batch):
            for i in range(ids.shape[0]):
                by_task[int(tasks[i])].append((r, i, ids[i, : lengths[i]], spans))
        results: dict[tuple[int, int], Array] = {}
        for task_id, rows in by_task.items():
            for run in pack_by_length([len(row[2]) for row in rows], self.max_batch_tokens, self.max_rows):
                hidden, mask = self._run([rows[i][2] for i in run], task_id)
                means = masked_mean(hidden, mask)
                for j, i in enumerate(run):
                    r, row, _, spans = rows[i]
                    results[(r, row)] = means[j : j + 1] if spans is None else span_means(hidden[j], spans)
        return [
            l2_normalize(np.concatenate([results[(r, i)] for i in range(request[0].shape[0])]))
            for r, request in enumerate(batch)
        ]

    def _run(self, sequences: list[Array], task_id: int) -> tuple[Array, Array]:
        ids, mask = pad_rows(sequences, self.pad_id)
        hidden = self.engine.run(ids, mask, task_id)  # jina's task_id: one 0-d scalar per run
        with self.pending_lock:
            for name, value in (
                ("runs", 1),
                ("rows", len(sequences)),
                ("real", int(mask.sum())),
                ("computed", mask.size),
            ):
                self.pending[name] += value
        return hidden, mask

    def _flush_loop(self) -> None:
        """Send what `execute` counted; after `finalize` asks, one last time, then stop."""
        while True:
            self.counted.wait()
            self.counted.clear()  # before taking the counts: a later set() means later counts
            with self.pending_lock:
                pending, self.pending = self.pending, dict.fromkeys(self.counters, 0)
            try:
                for name, value in pending.items():
                    if value:
                        self.counters[name].increment(value)
            except Exception as exc:  # noqa: BLE001 - the counters never fail the model
                pb_utils.Logger.log_warn(f"metrics not updated: {type(exc).__name__}: {exc}")
            if self.stopping:
                return

    def finalize(self) -> None:
        self.stopping = True
        self.counted.set()
        self.flusher.join(timeout=10)
        self.counters = {}  # metrics before their families
        self.metric_families = []
        del self.engine


def _counters(model: str) -> tuple[list[Any], dict[str, Any]]:
    """Counters exported through Triton's /metrics: padding efficiency = real / computed tokens.

    The families are returned too: a Metric must not outlive its MetricFamily.
    """
    families = {
        "runs": ("embed_triton_ort_runs_total", "ONNX Runtime runs (packed sub-batches)"),
        "rows": ("embed_triton_ort_rows_total", "Sequences run"),
        "real": ("embed_triton_tokens_real_total", "Real (unpadded) tokens run"),
        "computed": ("embed_triton_tokens_computed_total", "Tokens computed including padding"),
    }
    made = {
        key: pb_utils.MetricFamily(name=name, description=text, kind=pb_utils.MetricFamily.COUNTER)
        for key, (name, text) in families.items()
    }
    return list(made.values()), {key: family.Metric(labels={"model": model}) for key, family in made.items()}
