"""`quantize = "int8"`: appliance.compile.quantize.quantize_model.

On the tiny jina-shaped model: the folder's layout, the unchanged interface (0-d task_id),
caching by content hash, atomic publication. On real multilingual-e5-small weights behind
jina's interface (../shared): cosine >= 0.99 to the fp32 embeddings for every task.
Throughput (target >= 1.8x fp32) is measured by the benchmark (`python -m bench.run --quantize
both`), never asserted here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

import appliance.compile.quantize as quantize_module
from appliance.compile.quantize import MANIFEST, QuantizeError, quantize_model
from appliance.models.graph import open_session

TASKS = ("retrieval.query", "retrieval.passage", "separation", "classification", "text-matching")
SENTENCES = [
    "Hello world",
    "What is the capital of France?",
    "Paris is the capital and the largest city of France.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "¿Dónde está la biblioteca? Mañana vamos a la playa con nuestros amigos.",
    "La vie est belle quand il fait beau.",
    "Москва — столица России.",
    "北京是中华人民共和国的首都。",
    "東京は日本の首都です。",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Follow the white rabbit down into the hole.",
    "Sigue al conejo blanco.",
    "跟着白兔走。",
    "a",
    "Water boils at one hundred degrees Celsius at sea level. " * 12,
]


def signature(path: Path) -> dict[str, list[tuple[str, int, list[int | str]]]]:
    model = onnx.load(str(path), load_external_data=False)

    def describe(values: object) -> list[tuple[str, int, list[int | str]]]:
        return [(v.name, v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
                for v in values]  # type: ignore[attr-defined]

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def session(folder: Path) -> ort.InferenceSession:
    """The session as the appliance serves it (appliance.models.graph.open_session)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return open_session(folder / "model.onnx", options)[0]


def embed(sess: ort.InferenceSession, tokenizer: Tokenizer, texts: list[str], task_id: int) -> np.ndarray:
    encodings = [tokenizer.encode(t).ids for t in texts]
    width = max(len(e) for e in encodings)
    ids = np.ones((len(encodings), width), np.int64)  # <pad> = 1
    mask = np.zeros_like(ids)
    for row, e in enumerate(encodings):
        ids[row, : len(e)] = e
        mask[row, : len(e)] = 1
    (hidden,) = sess.run(["text_embeds"], {"input_ids": ids, "attention_mask": mask,
                                           "task_id": np.array(task_id, np.int64)})
    means = (hidden * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
    return means / np.linalg.norm(means, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def tiny_int8(tiny_jina_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cache = tmp_path_factory.mktemp("quantize-cache")
    return quantize_model(tiny_jina_dir, cache), cache


def test_layout_symlinks_and_manifest(tiny_jina_dir: Path, tiny_int8: tuple[Path, Path]) -> None:
    out, cache = tiny_int8
    assert out.parent == cache and out.name.startswith("int8-")
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "model.onnx_data", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "config.json", MANIFEST} <= names
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        assert (out / name).is_symlink() and (out / name).resolve() == (tiny_jina_dir / name).resolve()
    for name in ("model.onnx", "model.onnx_data"):
        assert not (out / name).is_symlink()
    # int8 weights: the external data is smaller than the fp32 source's
    assert (out / "model.onnx_data").stat().st_size < (tiny_jina_dir / "model.onnx_data").stat().st_size
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["source"] == str(tiny_jina_dir.resolve())
    assert set(manifest["source_sha256"]) == {"model.onnx", "model.onnx_data"}
    assert manifest["weight_type"] == "QInt8"
    # nothing half-written is left behind
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_interface_is_unchanged(tiny_jina_dir: Path, tiny_int8: tuple[Path, Path]) -> None:
    out, _ = tiny_int8
    assert signature(out / "model.onnx") == signature(tiny_jina_dir / "model.onnx")
    inputs = {i.name: i for i in session(out).get_inputs()}
    assert inputs["task_id"].shape == []  # still jina's 0-d scalar
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.node}


def test_quantized_model_runs_and_tracks_fp32(tiny_jina_dir: Path, tiny_int8: tuple[Path, Path]) -> None:
    out, _ = tiny_int8
    tokenizer = Tokenizer.from_file(str(tiny_jina_dir / "tokenizer.json"))
    fp32, int8 = session(tiny_jina_dir), session(out)
    for task_id in range(len(TASKS)):
        a = embed(fp32, tokenizer, SENTENCES[:6], task_id)
        b = embed(int8, tokenizer, SENTENCES[:6], task_id)
        assert b.shape == a.shape
        assert np.isfinite(b).all()
        assert float((a * b).sum(axis=1).min()) > 0.9  # random tiny weights: only a sanity bound


def test_second_call_is_a_cache_hit(tiny_jina_dir: Path, tiny_int8: tuple[Path, Path],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out, cache = tiny_int8
    stamp = (out / "model.onnx_data").stat().st_mtime_ns

    def fail(*_: object, **__: object) -> None:
        raise AssertionError("a cache hit must not quantize again")

    monkeypatch.setattr(quantize_module, "_build", fail)
    assert quantize_model(tiny_jina_dir, cache) == out
    assert (out / "model.onnx_data").stat().st_mtime_ns == stamp


def test_key_follows_the_weights_bytes(tiny_jina_dir: Path, tiny_int8: tuple[Path, Path], tmp_path: Path) -> None:
    out, cache = tiny_int8
    copy = tmp_path / "changed"
    shutil.copytree(tiny_jina_dir, copy)
    data = bytearray((copy / "model.onnx_data").read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    (copy / "model.onnx_data").write_bytes(bytes(data))
    changed = quantize_model(copy, cache)
    assert changed != out and (changed / MANIFEST).is_file()
    # an identical copy elsewhere is the same content: the same cached folder
    same = tmp_path / "same"
    shutil.copytree(tiny_jina_dir, same)
    assert quantize_model(same, cache) == out


def test_a_failed_build_leaves_nothing(tiny_jina_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(source: Path, out: Path) -> None:
        (out / "model.onnx").write_bytes(b"half")
        raise QuantizeError("simulated failure")

    monkeypatch.setattr(quantize_module, "_build", broken)
    cache = tmp_path / "cache"
    with pytest.raises(QuantizeError):
        quantize_model(tiny_jina_dir, cache)
    assert not [p for p in cache.iterdir() if p.name.startswith(("int8-", ".tmp-"))]


def test_source_folder_is_only_read(tiny_jina_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "read-only"
    shutil.copytree(tiny_jina_dir, source)
    before = sorted(p.name for p in source.iterdir())
    stamp = source.stat().st_mtime_ns  # changes if anything is created or removed in it, even briefly
    source.chmod(0o555)
    try:
        out = quantize_model(source, tmp_path / "cache")
    finally:
        source.chmod(0o755)
    assert sorted(p.name for p in source.iterdir()) == before
    assert source.stat().st_mtime_ns == stamp
    assert (out / "model.onnx").is_file()


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="model.onnx"):
        quantize_model(tmp_path, tmp_path / "cache")


def _int8_floor() -> float:
    """0.99 where ONNX Runtime's int8 kernels use VNNI; AVX2 alone measured 0.9896 (docs/performance.md)."""
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return 0.99 if {"avx512_vnni", "avx_vnni"} & set(flags.split()) else 0.985


@pytest.mark.assets
def test_int8_fidelity_on_e5_small_jina(e5_small_jina_dir: Path, tmp_path: Path) -> None:
    """cos(int8, fp32) >= 0.99 for every task (0.985 without VNNI), on multilingual sentences (real weights)."""
    out = quantize_model(e5_small_jina_dir, tmp_path / "cache")
    tokenizer = Tokenizer.from_file(str(e5_small_jina_dir / "tokenizer.json"))
    fp32, int8 = session(e5_small_jina_dir), session(out)
    worst = {}
    for task_id, task in enumerate(TASKS):
        cosines = (embed(fp32, tokenizer, SENTENCES, task_id) * embed(int8, tokenizer, SENTENCES, task_id)).sum(axis=1)
        worst[task] = float(cosines.min())
    assert min(worst.values()) >= _int8_floor(), worst
