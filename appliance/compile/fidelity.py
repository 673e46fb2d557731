"""The fidelity gate: a non-fp32 precision is served only if its vectors match ONNX Runtime fp32.

A fixed probe set (`probe_texts`: 36 short queries and passages in eight scripts, plus one long
input of min(model limit, 2,048) tokens) is tokenized with the model's own tokenizer and task
instructions, every served task taking its turn, then embedded twice the way model.py does
(grouped by task, length-sorted, packed under `max_batch_tokens`, masked mean in fp32, L2):
once with ONNX Runtime fp32 on the source file (the reference) and once with the candidate
engine and precision. The verdict is the smallest cosine between the two.

Measured once and cached as JSON under `$EMBED_CACHE_DIR/fidelity/`, keyed by the weights'
sha256, engine, precision, engine versions, the CPU's capabilities, the served tasks and the
probe set's version, so a restart does not re-run it. The threshold is not in the key: a
changed `min_cosine` is judged against the cached measurement.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from appliance.models.engines import Array, Engine, EngineName, Precision, open_engine
from appliance.ops.packing import pack_by_length, pad_rows
from appliance.ops.pooling import l2_normalize, masked_mean
from appliance.spec.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

PROBE_VERSION = "probes/1"  # bump when the probe set or its tokenization changes
LONG_TOKENS = 2048
THRESHOLDS: dict[str, float] = {"bf16": 0.9999, "int8": 0.99}

_QUERIES = [
    "what is the capital of France",
    "how do vaccines train the immune system",
    "cheap flights to Lisbon in May",
    "symptoms of vitamin D deficiency",
    "wie viele Einwohner hat Berlin",
    "comment apprendre le piano rapidement",
    "cuál es la receta de la paella",
    "какая погода завтра в Москве",
    "如何快速学习机器学习",
    "東京の人口はどれくらいですか",
    "서울에서 부산까지 기차 시간",
    "ما هي عاصمة مصر",
    "भारत की राजधानी क्या है",
    "Ποια είναι η πρωτεύουσα της Ελλάδας",
    "reset my password",
    "follow the white rabbit",
    "?",
    "2 + 2 = 4",
]
_PASSAGES = [
    (
        "The Eiffel Tower was completed in 1889 for the World's Fair and was at first criticised by "
        "many of Paris's leading artists; today it is the most visited paid monument in the world."
    ),
    (
        "Photosynthesis converts light energy into chemical energy: chlorophyll absorbs mostly blue and "
        "red light, water is split, oxygen is released and carbon dioxide is fixed into sugars."
    ),
    (
        "Die Deutsche Bahn kündigte an, im kommenden Jahr mehr als tausend neue Züge einzusetzen, um "
        "Verspätungen zu verringern und das Netz zwischen den großen Städten zu entlasten."
    ),
    (
        "La Revolución Industrial comenzó en Gran Bretaña a finales del siglo XVIII y transformó la "
        "producción textil, el transporte y la vida cotidiana de millones de personas."
    ),
    (
        "Москва — столица России, крупнейший по численности населения город страны и её важнейший "
        "транспортный, научный и культурный центр."
    ),
    "长城是中国古代的军事防御工程，修筑历史可上溯到西周时期，现存的长城遗迹主要为明代所修建。",
    "機械学習は、データから規則性を学び、明示的にプログラムされることなく予測や判断を行う技術である。",
    "القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها، وتقع على ضفاف نهر النيل في شمال البلاد.",
    "हिमालय पर्वत श्रृंखला एशिया में स्थित है और इसमें दुनिया की सबसे ऊँची चोटी माउंट एवरेस्ट शामिल है।",
    (
        "A self-hosted embedding server turns text into vectors, so that documents about the same "
        "thing end up close together and a search can find them by meaning rather than by keywords."
    ),
    (
        "Customers asked for faster delivery, clearer prices and a simpler return policy; the company "
        "answered with a new warehouse, a price calculator and free returns within thirty days."
    ),
    (
        "Le télescope spatial James Webb observe l'univers dans l'infrarouge et permet d'étudier les "
        "premières galaxies formées après le Big Bang."
    ),
    "O Rio Amazonas é o maior rio do mundo em volume de água e atravessa o Peru, a Colômbia e o Brasil.",
    "Il Colosseo, costruito nel primo secolo dopo Cristo, poteva ospitare decine di migliaia di spettatori.",
    (
        "Kubernetes schedules containers onto nodes, restarts them when they fail and scales a "
        "deployment up or down as the load changes."
    ),
    "Water boils at one hundred degrees Celsius at sea level, but at lower temperatures high in the mountains.",
    "서울은 대한민국의 수도이며 정치, 경제, 문화의 중심지로서 천만 명에 가까운 인구가 살고 있다.",
    "Ο Παρθενώνας είναι ναός της αρχαίας Αθήνας, αφιερωμένος στη θεά Αθηνά.",
]


@dataclass(frozen=True)
class GateResult:
    """One measurement: the smallest cosine to ONNX Runtime fp32, overall and per task."""

    engine: EngineName
    precision: Precision
    min_cosine: float
    per_task: dict[str, float]
    probes: int
    long_tokens: int
    seconds: float
    cached: bool = False


def probe_texts() -> list[str]:
    """The fixed probe set (the long input is built from these by `probe_ids`)."""
    return _QUERIES + _PASSAGES


def probe_ids(
    tokenizer_path: Path, tasks: Sequence[str | None], instructions: dict[str, str], max_tokens: int
) -> list[tuple[str | None, list[int]]]:
    """(task, token ids) per probe: tasks in turn, as served (instruction + text + specials).

    The last probe is the long one: all passages repeated up to min(max_tokens + specials, 2048)
    tokens, cut inside the content so it keeps `<s>` ... `</s>`.
    """
    tokenizer = load_tokenizer(tokenizer_path)
    specials = tokenizer.encode("").ids
    head, tail = specials[:1], specials[1:]
    probes: list[tuple[str | None, list[int]]] = []
    for index, text in enumerate(probe_texts()):
        task = tasks[index % len(tasks)]
        prefix = instructions.get(task, "") if task else ""
        probes.append((task, tokenizer.encode(prefix + text).ids))
    target = min(max_tokens + len(specials), LONG_TOKENS)
    content: list[int] = []
    passages = " ".join(_PASSAGES)
    while len(content) < target:
        content += tokenizer.encode(passages, add_special_tokens=False).ids
    long_ids = [*head, *content[: target - len(specials)], *tail]
    probes.append((tasks[0], long_ids))
    return probes


@dataclass(frozen=True)
class Serving:
    """How model.py runs this model: its output, threads, padding id, task ids and packing."""

    output_name: str
    threads: int
    pad_id: int
    task_ids: dict[str, int]
    max_batch_tokens: int
    max_rows: int


def embed_probes(
    probes: Sequence[tuple[str | None, list[int]]],
    model_path: Path,
    serving: Serving,
    *,
    engine: EngineName,
    precision: Precision,
    cache_dir: Path | None = None,
) -> Array:
    """Unit vectors for every probe, computed as model.py computes them."""
    model = open_engine(
        model_path,
        engine=engine,
        precision=precision,
        output_name=serving.output_name,
        threads=serving.threads,
        cache_dir=cache_dir,
    )
    try:
        return embed_with(model, probes, serving)
    finally:
        del model
        gc.collect()


def embed_with(model: Engine, probes: Sequence[tuple[str | None, list[int]]], serving: Serving) -> Array:
    """`embed_probes` on an engine already open: grouped by task, packed, masked mean, L2."""
    out: list[Array | None] = [None] * len(probes)
    by_task: dict[str | None, list[int]] = {}
    for index, (task, _) in enumerate(probes):
        by_task.setdefault(task, []).append(index)
    for task, members in by_task.items():
        lengths = [len(probes[i][1]) for i in members]
        for run in pack_by_length(lengths, serving.max_batch_tokens, serving.max_rows):
            ids, mask = pad_rows([probes[members[j]][1] for j in run], serving.pad_id)
            hidden = model.run(ids, mask, serving.task_ids.get(task, 0) if task else None)
            unit, _ = l2_normalize(masked_mean(hidden, mask))
            for row, j in enumerate(run):
                out[members[j]] = unit[row]
    return np.stack([v for v in out if v is not None])


def cache_key(
    weights: dict[str, str],
    engine: EngineName,
    precision: Precision,
    capabilities: Sequence[str],
    tasks: Sequence[str | None],
    instructions: dict[str, str],
    max_tokens: int,
) -> str:
    """sha256 over everything the measurement depends on (never the threshold)."""
    import onnxruntime
    import openvino

    parts = {
        "probes": PROBE_VERSION,
        "weights": weights,
        "engine": engine,
        "precision": precision,
        "capabilities": sorted(capabilities),
        "tasks": list(tasks),
        "instructions": instructions,
        "max_tokens": min(max_tokens, LONG_TOKENS),
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def measure(
    *,
    reference: Path,
    candidate: Path,
    engine: EngineName,
    precision: Precision,
    key: str,
    cache_dir: Path,
    probes: Sequence[tuple[str | None, list[int]]],
    serving: Serving,
    engine_cache: Path | None = None,
) -> GateResult:
    """The cached verdict for `key`, else measure (reference fp32 ORT, then the candidate) and cache it."""
    path = cache_dir / "fidelity" / f"{key[:32]}.json"
    try:
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return GateResult(**{**saved["result"], "cached": True})
    except (OSError, ValueError, TypeError):
        pass
    started = time.monotonic()
    want = embed_probes(probes, reference / "model.onnx", serving, engine="onnxruntime", precision="fp32")
    got = embed_probes(
        probes, candidate / "model.onnx", serving, engine=engine, precision=precision, cache_dir=engine_cache
    )
    cosines = np.sum(want.astype(np.float64) * got.astype(np.float64), axis=1)
    per_task: dict[str, float] = {}
    for (task, _), cosine in zip(probes, cosines):
        name = task or "(none)"
        per_task[name] = min(per_task.get(name, 1.0), float(cosine))
    result = GateResult(
        engine=engine,
        precision=precision,
        min_cosine=float(cosines.min()),
        per_task=per_task,
        probes=len(probes),
        long_tokens=max(len(ids) for _, ids in probes),
        seconds=round(time.monotonic() - started, 2),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key, "result": asdict(result)}, indent=2) + "\n")
    os.replace(tmp, path)
    log.info(
        "fidelity gate for %s %s: min cosine %.6f to ONNX Runtime fp32 over %d probes (%.1f s)",
        engine,
        precision,
        result.min_cosine,
        result.probes,
        result.seconds,
    )
    return result
