"""`quantize = "int8"`: a dynamically quantized copy of a model folder, cached by content hash.

`quantize_model(source, cache_dir)` returns a folder that serves exactly like `source`:

- `model.onnx` (+ `model.onnx_data` when the source keeps its weights outside the graph) holds
  ONNX Runtime's dynamic int8 quantization (`onnxruntime.quantization.quantize_dynamic`): the
  weights of every MatMul with a constant B become int8, activations are quantized per call
  (uint8), everything else (embeddings, LoRA adapters, LayerNorm, attention math) stays fp32.
  The graph's interface is unchanged: the same input and output names, types and shapes
  (jina-v3: `input_ids`, `attention_mask`, 0-d `task_id` -> `text_embeds`); this is checked
  before the folder is published.
- every other file of the source folder (tokenizer.json, tokenizer_config.json,
  special_tokens_map.json, config.json, ...) is a symlink to the original: nothing but the
  graph and its weights is copied.
- `quantize.json` records the source, the source hashes, the recipe and how long it took.

The result lives in `cache_dir/int8-<key>/`, where `key` is the sha256 of the source `model.onnx`
and `model.onnx_data` bytes plus the recipe. A second call with the same source returns the same
folder at once (the hashes of a 2.3 GB file are memoized by path, size and mtime, so a restart
does not re-read the weights). The folder is built in a temporary directory inside `cache_dir`
and renamed into place only when complete; concurrent callers serialize on a lock file, so a
reader never sees a half-written model. The source folder is only read (it may be read-only).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx

from appliance.spec.modelinfo import tensor_signature

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx_data"
MANIFEST = "quantize.json"
# Bump when a change alters the bytes produced for the same source.
OP_TYPES = ["MatMul"]
RECIPE: dict[str, object] = {
    "recipe": "ort-dynamic-int8/1",
    "op_types": OP_TYPES,  # MatMul with a constant B only: the weights, not the LoRA adapters
    "weight_type": "QInt8",  # s8 weights x u8 activations: the VNNI / AVX-512 / AVX2 int8 kernels
    "activation_type": "QUInt8",
    "per_channel": True,  # per output column: cos 0.984 -> 0.994 on e5-small-jina (per-tensor fails 0.99)
    "reduce_range": False,
}
_HASH_CHUNK = 16 * 1024 * 1024
_SKIP = {MODEL_FILE, DATA_FILE, ".test-assets.json", MANIFEST}


class QuantizeError(RuntimeError):
    """The source cannot be quantized, or the result would not serve like the source."""


def quantize_model(source_folder: Path, cache_dir: Path) -> Path:
    """The int8 twin of `source_folder` (built once, then reused from `cache_dir`)."""
    source = Path(source_folder).resolve()
    model = source / MODEL_FILE
    if not model.is_file():
        raise QuantizeError(f"{model} not found: nothing to quantize")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    hashes = {name: sha256_memo(source / name, cache) for name in (MODEL_FILE, DATA_FILE) if (source / name).is_file()}
    key = cache_key(hashes)
    final = cache / f"int8-{key[:24]}"
    if (final / MANIFEST).is_file():
        return final
    with _locked(cache / f".int8-{key[:24]}.lock"):
        if (final / MANIFEST).is_file():  # another process finished it while we waited
            return final
        if final.exists():  # a leftover without a manifest is never served
            shutil.rmtree(final)
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-int8-{key[:12]}-", dir=cache))
        try:
            _build(source, tmp)
            _write_manifest(tmp, source, hashes, key, time.monotonic() - started)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("quantized %s to int8 in %.1f s: %s", source, time.monotonic() - started, final)
    return final


def cache_key(hashes: dict[str, str]) -> str:
    """sha256 over the source files' sha256 and the recipe."""
    digest = hashlib.sha256()
    for name in sorted(hashes):
        digest.update(f"{name}={hashes[name]}\n".encode())
    digest.update(json.dumps(RECIPE, sort_keys=True).encode())
    return digest.hexdigest()


def _build(source: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    external = (source / DATA_FILE).is_file()
    # ORT writes a shape-inferred copy NEXT TO its input: give it the files in our own temp dir,
    # never the (possibly read-only) source folder. onnx refuses external data behind a symlink
    # or a hard link ("potential hardlink attack"), so the graph and its weights are copied
    # (once per source: a 2.3 GB copy is a few seconds next to a minute of quantization).
    work = out / ".work"
    work.mkdir()
    for name in (MODEL_FILE, DATA_FILE):
        if (source / name).is_file():
            shutil.copyfile(source / name, work / name)
    raw = work / "quantized.onnx"
    quantize_dynamic(
        work / MODEL_FILE,
        raw,
        op_types_to_quantize=list(OP_TYPES),
        per_channel=bool(RECIPE["per_channel"]),
        reduce_range=bool(RECIPE["reduce_range"]),
        weight_type=QuantType.QInt8,
        use_external_data_format=True,  # sizes are unknown here; re-saved below under the real names
        extra_options={"MatMulConstBOnly": True},
    )
    proto = onnx.load(str(raw), load_external_data=True)
    _check_interface(onnx.load(str(source / MODEL_FILE), load_external_data=False), proto)
    if external:
        onnx.save_model(
            proto,
            str(out / MODEL_FILE),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=DATA_FILE,
            size_threshold=1024,
        )
    else:
        onnx.save_model(proto, str(out / MODEL_FILE))
    del proto
    shutil.rmtree(work)
    for written in out.iterdir():
        written.chmod(0o644)  # readable by whoever serves it (tempfile and onnx default to 0600)
    for entry in sorted(source.iterdir()):
        if entry.name not in _SKIP and not entry.name.startswith("."):
            (out / entry.name).symlink_to(entry)
    os.chmod(out, 0o755)


def _signature(model: onnx.ModelProto) -> dict[str, list[tuple[str, tuple[int, list[int | str]]]]]:
    return {
        name: list(tensor_signature(values).items())
        for name, values in (("inputs", model.graph.input), ("outputs", model.graph.output))
    }


def _check_interface(source: onnx.ModelProto, quantized: onnx.ModelProto) -> None:
    want, got = _signature(source), _signature(quantized)
    if want != got:
        raise QuantizeError(f"quantization changed the model's interface: {want} -> {got}")


def _write_manifest(out: Path, source: Path, hashes: dict[str, str], key: str, seconds: float) -> None:
    import onnxruntime

    files = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file() and not p.is_symlink()}
    manifest = {
        "source": str(source),
        "source_sha256": hashes,
        "key": key,
        **RECIPE,
        "onnxruntime": onnxruntime.__version__,
        "files": files,
        "seconds": round(seconds, 2),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def sha256_memo(path: Path, cache: Path) -> str:
    """sha256 of `path`, remembered in `cache` by (path, size, mtime_ns, inode)."""
    stat = path.stat()
    stamp = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}
    memo = cache / ".hashes" / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".json")
    try:
        saved = json.loads(memo.read_text())
        if {k: saved.get(k) for k in stamp} == stamp and isinstance(saved.get("sha256"), str):
            return str(saved["sha256"])
    except (OSError, ValueError):
        pass
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**stamp, "sha256": value}))
    os.replace(tmp, memo)
    return value


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
