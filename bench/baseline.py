"""The practical limit: ONNX Runtime called in-process on the same model and the same cores.

No server, no HTTP, no queue: tokenize the texts (the model's own tokenizer), sort ALL of them by
length, cut them into token-budget batches (rows x longest <= budget; optionally also closing a
batch when the next row is much shorter than its longest), run, masked-mean, L2. Several budgets
and both packers are tried and the best is kept: the best batching for a workload known in advance. The same total thread
budget as the appliance: `threads` intra-op threads (default: every core this process may use),
one inter-op thread.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.models.engines import (
    Array,
    Engine,
    EngineName,
    OnnxRuntimeEngine,
    OpenVinoEngine,
    Precision,
    feed_for,
    ort_options,
)
from appliance.models.graph import Rewrites
from appliance.ops.packing import pack_by_length, pad_rows, padding_efficiency
from appliance.ops.pooling import l2_normalize, masked_mean
from appliance.spec.tokenizer import load_tokenizer
from bench.stats import NoiseMeter, latency_stats
from bench.workload import Item, Workload


@dataclass
class BaselineModel:
    """One engine in-process, configured like a careful in-process user would.

    `engine="onnxruntime"` (the baseline): the session the appliance serves
    (appliance/models/graph.py: NaN guards dropped, GELUs fused, SkipLayerNormFusion off), so
    appliance/baseline measures serving overhead; raw_graph=True runs the file as exported with
    ONNX Runtime's defaults, as TEI and Infinity do. `engine="openvino"`: the appliance's
    OpenVINO engine at `precision` (the in-process twin of what it serves).
    """

    folder: Path
    threads: int
    spinning: bool = True  # ORT's default: best for a process that does nothing else
    raw_graph: bool = False
    # Keyword arguments for open_session (e.g. fuse_gelus=False): bench/ort_options.py undoes one change.
    session_kwargs: dict[str, Any] = field(default_factory=dict)
    engine: EngineName = "onnxruntime"
    precision: Precision = "fp32"
    cache_dir: Path | None = None  # OpenVINO's compiled-model cache
    ov_strip_nan_guards: bool = True  # as served; bench/openvino_graph.py measures without

    def __post_init__(self) -> None:
        started = time.perf_counter()
        output = _output_name(self.folder)
        self.rewrites = Rewrites()
        if self.engine == "openvino":
            self.model: Engine = OpenVinoEngine(self.folder / "model.onnx", output, self.threads, self.precision,
                                                cache_dir=self.cache_dir, strip_nan_guards=self.ov_strip_nan_guards)
        elif self.raw_graph:
            import onnxruntime as ort

            self.model = _RawOrt(ort.InferenceSession(str(self.folder / "model.onnx"), _options(self.threads,
                                 self.spinning), providers=["CPUExecutionProvider"]), output, self.precision)
        else:
            ort_engine = OnnxRuntimeEngine(self.folder / "model.onnx", output, self.threads, self.precision,
                                           stop_spinning=not self.spinning, **self.session_kwargs)
            self.rewrites = ort_engine.rewrites
            self.model = ort_engine
        self.load_seconds = time.perf_counter() - started
        config = json.loads((self.folder / "config.json").read_text())
        self.pad_id = int(config.get("pad_token_id") or 0)
        adaptations = config.get("lora_adaptations")
        self.task_id = adaptations.index("retrieval.query") if adaptations else None  # the appliance default
        self.tokenizer = load_tokenizer(self.folder / "tokenizer.json")

    @property
    def label(self) -> str:
        return f"{self.engine} {self.precision}" + (" (graph as exported)" if self.raw_graph else "")

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]

    def run(self, seqs: Sequence[Sequence[int]]) -> np.ndarray:
        """Unit vectors for one batch: pad to its longest row, run, masked mean (fp32), L2."""
        ids, mask = pad_rows(seqs, self.pad_id)
        hidden = self.model.run(ids, mask, self.task_id)
        unit, _ = l2_normalize(masked_mean(hidden, mask))  # the appliance's own pooling
        return unit

    def embed(self, texts: list[str], budget: int, max_rows: int,
              min_fill: float = 0.0) -> tuple[np.ndarray, list[list[int]], list[int]]:
        ids = self.tokenize(texts)
        lengths = [len(s) for s in ids]
        batches = pack_by_length(lengths, budget, max_rows, min_fill=min_fill)
        out = np.empty((len(ids), 0), dtype=np.float32)
        for batch in batches:
            vectors = self.run([ids[i] for i in batch])
            if out.shape[1] == 0:
                out = np.empty((len(ids), vectors.shape[1]), dtype=np.float32)
            out[batch] = vectors
        return out, batches, lengths


def _output_name(folder: Path) -> str:
    """jina's `text_embeds` (never the decoy), else BERT's `last_hidden_state` (the appliance's rule)."""
    from appliance.spec.modelinfo import inspect_model_folder

    return inspect_model_folder(folder, None).output_name


def _options(threads: int, spinning: bool) -> Any:
    return ort_options(threads, stop_spinning=False, spinning=spinning)


@dataclass
class _RawOrt:
    """The exported file in a plain ONNX Runtime session (no appliance rewrites)."""

    session: Any
    output_name: str
    precision: Precision
    name: EngineName = "onnxruntime"
    detail: str = "onnxruntime, graph as exported"

    def __post_init__(self) -> None:
        self.input_names = {i.name for i in self.session.get_inputs()}

    def run(self, ids: Array, mask: Array, task_id: int | None) -> Array:
        feed = feed_for(self.input_names, ids, mask, task_id)
        return np.asarray(self.session.run([self.output_name], feed)[0])


def saturated(model: BaselineModel, workload: Workload, budgets: Sequence[int], *, max_rows: int = 64,
              fills: Sequence[float] = (0.0, 0.9), deadline_s: float = 600.0,
              min_seconds: float = 0.0) -> dict[str, object]:
    """The whole workload at once, best over the token budgets x packers tried (tokenization included).

    `fills`: 0.0 = plain sorted token-budget batches; 0.9 = also padding-aware (rows >= 90 % of
    the batch's longest, or within 8 tokens of it). Each configuration embeds the workload again
    while it has run less than `min_seconds` (whole passes; the servers' loops do the same).
    """
    texts = workload.texts
    # Warm-up: one whole pass, so no measured configuration pays ONNX Runtime's first-time
    # allocations for new shapes (measured first, the first configuration lost up to 40 %).
    model.embed(texts, min(budgets), max_rows, fills[-1])
    runs = []
    started_all = time.monotonic()
    for budget, min_fill in ((b, f) for f in fills for b in budgets):
        if time.monotonic() - started_all > deadline_s:
            break
        meter = NoiseMeter().start()
        started = time.perf_counter()
        passes = 0
        while True:
            _, batches, lengths = model.embed(texts, budget, max_rows, min_fill)
            passes += 1
            seconds = time.perf_counter() - started
            if seconds >= min_seconds or time.monotonic() - started_all > deadline_s:
                break
        noise = meter.stop()
        runs.append({
            "budget_tokens": budget,
            "min_fill": min_fill,
            "passes": passes,
            "seconds": round(seconds, 3),
            "tokens_per_s": round(passes * sum(lengths) / seconds, 1),
            "embeddings_per_s": round(passes * len(lengths) / seconds, 2),
            "batches": len(batches),
            "padding_efficiency": round(padding_efficiency(lengths, batches), 4),
            **noise,
        })
    best = max(runs, key=lambda r: float(r["tokens_per_s"]))  # type: ignore[arg-type]
    return {**best, "tried": runs}


def request_latency(model: BaselineModel, requests: Sequence[Sequence[Item]], *, budget: int, max_rows: int = 64,
                    min_fill: float = 0.0, repeats: int, deadline_s: float) -> dict[str, object]:
    """Closed loop, one caller: each request embedded on its own (sorted + packed inside it)."""
    latencies: list[float] = []
    tokens = 0
    started = time.monotonic()
    index = 0
    while index < repeats and time.monotonic() - started < deadline_s:
        request = requests[index % len(requests)]
        t0 = time.perf_counter()
        model.embed([i.text for i in request], budget, max_rows, min_fill)
        latencies.append(time.perf_counter() - t0)
        tokens += sum(i.tokens for i in request)
        index += 1
    busy = sum(latencies)
    return {
        "requests": len(latencies),
        "tokens_per_s": round(tokens / busy, 1) if busy else 0.0,
        **latency_stats(latencies),
    }
