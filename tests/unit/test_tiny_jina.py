"""Tests for the tiny jina-shaped test model builder."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from appliance.ops.packing import pad_rows
from appliance.testmodels.tiny_jina import LORA_ADAPTATIONS, OUTPUT_FILES, build_tiny_jina, main

Array = npt.NDArray[Any]

HIDDEN = 64
PAD_ID = 1


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One default build shared by the whole module (building is the slow part)."""
    return build_tiny_jina(tmp_path_factory.mktemp("tiny_jina"))


@pytest.fixture(scope="module")
def session(model_dir: Path) -> ort.InferenceSession:
    """CPU onnxruntime session on the built model."""
    return ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Tokenizer:
    """The built fast tokenizer."""
    return Tokenizer.from_file(str(model_dir / "tokenizer.json"))


def _run(
    session: ort.InferenceSession, ids: Array, mask: Array, task: int = 0
) -> tuple[Array, Array]:
    """Run the model and return (text_embeds, decoy pooler)."""
    text_embeds: Array
    decoy: Array
    text_embeds, decoy = session.run(
        ["text_embeds", "13049"],
        {
            "input_ids": ids.astype(np.int64),
            "attention_mask": mask.astype(np.int64),
            "task_id": np.array(task, dtype=np.int64),
        },
    )
    return text_embeds, decoy


def _masked_mean(text_embeds: Array, mask: Array) -> Array:
    """Mean over positions where mask == 1, as the server computes it."""
    weights = mask[..., None].astype(np.float32)
    pooled: Array = (text_embeds * weights).sum(axis=1) / weights.sum(axis=1)
    return pooled


def _cosine(a: Array, b: Array) -> float:
    """Cosine similarity of two vectors."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _encode(tokenizer: Tokenizer, text: str) -> Array:
    """Token ids of ``text`` as a 1-row batch."""
    return np.array([tokenizer.encode(text).ids], dtype=np.int64)


def _dims(tensor_type: onnx.TypeProto.Tensor) -> list[str | int]:
    """Symbolic or fixed size of every axis of a graph input/output."""
    return [d.dim_param or d.dim_value for d in tensor_type.shape.dim]


def test_build_writes_exactly_the_six_jina_files(model_dir: Path) -> None:
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(OUTPUT_FILES)
    assert len(OUTPUT_FILES) == 6


def test_onnx_inputs_have_jina_names_dtypes_and_shapes(model_dir: Path) -> None:
    graph = onnx.load(str(model_dir / "model.onnx"), load_external_data=False).graph
    inputs = {i.name: i.type.tensor_type for i in graph.input}
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "task_id"]
    for name in ("input_ids", "attention_mask"):
        assert inputs[name].elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in inputs[name].shape.dim] == ["batch_size", "sequence_length"]
    assert inputs["task_id"].elem_type == onnx.TensorProto.INT64
    assert inputs["task_id"].HasField("shape") and len(inputs["task_id"].shape.dim) == 0


def test_onnx_outputs_are_text_embeds_then_decoy_pooler(model_dir: Path) -> None:
    graph = onnx.load(str(model_dir / "model.onnx"), load_external_data=False).graph
    assert [o.name for o in graph.output] == ["text_embeds", "13049"]
    text_embeds, decoy = (o.type.tensor_type for o in graph.output)
    assert text_embeds.elem_type == decoy.elem_type == onnx.TensorProto.FLOAT
    assert _dims(text_embeds) == ["batch_size", "sequence_length", HIDDEN]
    assert _dims(decoy) == ["batch_size", HIDDEN]


def test_every_initializer_is_stored_in_model_onnx_data(model_dir: Path) -> None:
    model = onnx.load(str(model_dir / "model.onnx"), load_external_data=False)
    assert model.graph.initializer, "expected weights as initializers"
    end = 0
    for tensor in model.graph.initializer:
        assert tensor.data_location == onnx.TensorProto.EXTERNAL, tensor.name
        info = {entry.key: entry.value for entry in tensor.external_data}
        assert info["location"] == "model.onnx_data", tensor.name
        end = max(end, int(info.get("offset", 0)) + int(info["length"]))
    assert end <= (model_dir / "model.onnx_data").stat().st_size
    # The graph file holds no weights, only structure.
    assert (model_dir / "model.onnx").stat().st_size < 100_000


def test_onnxruntime_runs_the_model(session: ort.InferenceSession, tokenizer: Tokenizer) -> None:
    ids = _encode(tokenizer, "Hello world")
    text_embeds, decoy = _run(session, ids, np.ones_like(ids))
    assert text_embeds.dtype == decoy.dtype == np.float32
    assert text_embeds.shape == (1, ids.shape[1], HIDDEN)
    assert decoy.shape == (1, HIDDEN)
    assert np.isfinite(text_embeds).all() and np.isfinite(decoy).all()
    assert text_embeds.std() > 0.1, "outputs should not be degenerate"


def test_hello_world_tokenizes_to_bos_text_eos(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("Hello world").ids
    assert ids[0] == 0 and ids[-1] == 2
    assert len(ids) > 2 and 3 not in ids


def test_tokenizer_uses_xlm_roberta_special_ids(model_dir: Path, tokenizer: Tokenizer) -> None:
    assert [tokenizer.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    vocab_size = tokenizer.get_vocab_size()
    assert tokenizer.token_to_id("<mask>") == vocab_size - 1
    config = json.loads((model_dir / "config.json").read_text())
    assert config["vocab_size"] == vocab_size


def test_pair_encoding_uses_the_xlm_roberta_template(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("Hello", "world").ids
    assert ids[0] == 0 and ids[-1] == 2
    assert ids.count(2) == 3  # <s> A </s> </s> B </s>


def test_any_script_tokenizes_and_unknown_characters_become_unk(tokenizer: Tokenizer) -> None:
    for text in ["", "   ", "Привет мир", "こんにちは", "🙂🚀", "𓀀 ꙮ", "a\tb\nc", "<mask> <s>"]:
        ids = tokenizer.encode(text).ids
        assert ids[0] == 0 and ids[-1] == 2
    assert 3 in tokenizer.encode("𓀀").ids


def test_tokenizer_json_enables_no_padding_or_truncation(model_dir: Path) -> None:
    data = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert data["padding"] is None and data["truncation"] is None
    assert data["model"]["type"] == "Unigram" and data["model"]["unk_id"] == 3
    assert data["pre_tokenizer"]["type"] == "Metaspace"
    assert data["decoder"]["type"] == "Metaspace"


def test_config_files_are_jina_like(model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["XLMRobertaLoRA"]
    assert config["hidden_size"] == HIDDEN and config["intermediate_size"] == 4 * HIDDEN
    assert config["max_position_embeddings"] == 8194
    assert config["lora_adaptations"] == list(LORA_ADAPTATIONS)
    assert set(config["task_instructions"]) == set(LORA_ADAPTATIONS)
    assert config["matryoshka_dimensions"] == [32, 64]
    assert config["test_assets"]["seed"] == 0
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tok_config["model_max_length"] == 8194
    assert tok_config["tokenizer_class"] == "XLMRobertaTokenizer"
    assert tok_config["padding_side"] == "right"
    special = json.loads((model_dir / "special_tokens_map.json").read_text())
    assert special["pad_token"] == "<pad>" and special["mask_token"] == "<mask>"


@pytest.mark.parametrize("task", [0, 4])
def test_padding_on_the_right_does_not_change_real_positions(
    session: ort.InferenceSession, tokenizer: Tokenizer, task: int
) -> None:
    texts = ["Hello world", "The quick brown fox jumps over the lazy dog, again and again."]
    rows = [tokenizer.encode(t).ids for t in texts]
    ids, mask = pad_rows(rows, PAD_ID)
    padded, _ = _run(session, ids, mask, task)
    for i, row in enumerate(rows):
        alone, _ = _run(session, np.array([row]), np.ones((1, len(row))), task)
        np.testing.assert_allclose(padded[i, : len(row)], alone[0], atol=1e-5)


def test_attention_mask_really_hides_padded_positions(
    session: ort.InferenceSession, tokenizer: Tokenizer
) -> None:
    row = tokenizer.encode("Hello world").ids
    ids = np.array([row + [PAD_ID] * 5])
    real = np.array([[1] * len(row) + [0] * 5])
    masked, _ = _run(session, ids, real)
    unmasked, _ = _run(session, ids, np.ones_like(ids))
    # Same ids, same real positions pooled; only the mask on the padding differs.
    a, b = _masked_mean(masked, real)[0], _masked_mean(unmasked, real)[0]
    assert 1.0 - _cosine(a, b) > 1e-3


def test_each_task_gives_a_clearly_different_embedding(
    session: ort.InferenceSession, tokenizer: Tokenizer
) -> None:
    for text in ["Hello world", "Paris is the capital and the largest city of France."]:
        ids = _encode(tokenizer, text)
        mask = np.ones_like(ids)
        pooled = [
            _masked_mean(_run(session, ids, mask, task)[0], mask)[0]
            for task in range(len(LORA_ADAPTATIONS))
        ]
        for (i, a), (j, b) in combinations(enumerate(pooled), 2):
            assert 1.0 - _cosine(a, b) >= 0.02, (text, i, j)


def test_decoy_pooler_output_is_not_the_masked_mean(
    session: ort.InferenceSession, tokenizer: Tokenizer
) -> None:
    ids = _encode(tokenizer, "Paris is the capital and the largest city of France.")
    mask = np.ones_like(ids)
    text_embeds, decoy = _run(session, ids, mask)
    assert _cosine(_masked_mean(text_embeds, mask)[0], decoy[0]) < 0.99


def test_two_builds_are_byte_identical(model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_jina(tmp_path / "again")
    build_tiny_jina(again)  # rebuilding in place must not append to model.onnx_data
    for name in OUTPUT_FILES:
        assert (again / name).read_bytes() == (model_dir / name).read_bytes(), name


def test_single_token_and_3000_token_inputs_run(session: ort.InferenceSession) -> None:
    rng = np.random.default_rng(1)
    for length in (1, 3000):
        ids = rng.integers(4, 1000, size=(1, length))
        text_embeds, decoy = _run(session, ids, np.ones_like(ids), task=1)
        assert text_embeds.shape == (1, length, HIDDEN) and decoy.shape == (1, HIDDEN)
        assert np.isfinite(text_embeds).all()


def test_smaller_sizes_build_and_run(tmp_path: Path) -> None:
    out = build_tiny_jina(tmp_path, hidden=32, layers=1, heads=2, seed=7)
    config = json.loads((out / "config.json").read_text())
    assert config["matryoshka_dimensions"] == [32]
    assert config["test_assets"]["seed"] == 7
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([[0, 5, 6, 2]])
    text_embeds, decoy = _run(sess, ids, np.ones_like(ids), task=3)
    assert text_embeds.shape == (1, 4, 32) and decoy.shape == (1, 32)


def test_cli_writes_the_six_files(tmp_path: Path) -> None:
    assert main([str(tmp_path / "cli")]) == 0
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(OUTPUT_FILES)
