"""The softmax NaN-guard rewrite: exactly the exporter's pattern goes, and nothing changes a value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from appliance.models.graph import DISABLED_OPTIMIZERS, open_session, strip_softmax_nan_guards


def attention_graph(*, fill: float = 0.0, guard_input: str = "probs", as_output: bool = False) -> onnx.ModelProto:
    """scores [b, h, q, k] + additive mask -> Softmax -> Where(IsNaN(p), fill, p) -> MatMul with V."""
    nodes = [
        helper.make_node("Add", ["scores", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        helper.make_node("IsNaN", [guard_input], ["is_nan"]),
        helper.make_node("Where", ["is_nan", "zero", "probs"], ["guarded"]),
        helper.make_node("MatMul", ["guarded", "v"], ["out"]),
    ]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)]
    if as_output:
        outputs.append(helper.make_tensor_value_info("guarded", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "attention",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("scores", "mask", "v")],
        outputs,
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [fill])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["out"], feed)[0])


def feed(rng: np.random.Generator, *, all_masked_row: bool = False) -> dict[str, np.ndarray]:
    mask = np.zeros((2, 1, 1, 5), np.float32)
    mask[1, ..., 3:] = np.finfo(np.float32).min  # padding keys of the second sequence
    scores = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    if all_masked_row:
        scores[0, 0, 0, :] = -np.inf
    return {"scores": scores, "mask": mask, "v": rng.standard_normal((2, 3, 5, 4)).astype(np.float32)}


def test_the_guard_goes_and_the_outputs_are_bit_identical() -> None:
    rng = np.random.default_rng(0)
    model = attention_graph()
    before = run(model, data := feed(rng))
    assert strip_softmax_nan_guards(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Add", "Softmax", "MatMul"]
    assert np.array_equal(run(model, data), before)


def test_what_the_guard_would_have_caught_is_a_row_with_every_key_masked() -> None:
    """The one case the guard exists for; the appliance never sends it (LENGTHS >= 1)."""
    rng = np.random.default_rng(1)
    model = attention_graph()
    guarded = run(model, data := feed(rng, all_masked_row=True))
    strip_softmax_nan_guards(model)
    bare = run(model, data)
    assert np.isfinite(guarded).all() and np.isnan(bare[0, 0, 0]).all()
    assert np.array_equal(bare[1], guarded[1])


@pytest.mark.parametrize("variant", [{"fill": 1.0}, {"guard_input": "masked"}, {"as_output": True}])
def test_anything_but_the_exact_pattern_is_left_alone(variant: dict[str, object]) -> None:
    model = attention_graph(**variant)  # type: ignore[arg-type]
    nodes = [n.op_type for n in model.graph.node]
    assert strip_softmax_nan_guards(model) == 0
    assert [n.op_type for n in model.graph.node] == nodes


def test_open_session_loads_a_graph_without_the_pattern_from_its_path(tiny_jina_dir: Path) -> None:
    session, dropped = open_session(tiny_jina_dir / "model.onnx", ort.SessionOptions())
    assert dropped == 0 and "task_id" in {i.name for i in session.get_inputs()}


def test_e5_small_jina_loses_its_twelve_guards_and_no_bit_of_output(e5_small_jina_dir: Path) -> None:
    """External weights still come from the (unchanged) folder; padded rows included."""
    path = e5_small_jina_dir / "model.onnx"
    rewritten, dropped = open_session(path, ort.SessionOptions())
    # The same transformers switched off, so the guards are the only difference.
    raw = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                               disabled_optimizers=list(DISABLED_OPTIMIZERS))
    default = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert dropped == 12
    rng = np.random.default_rng(2)
    ids = rng.integers(5, 20000, (3, 40)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 1:] = 0
    for task in range(5):
        inputs = {"input_ids": ids, "attention_mask": mask, "task_id": np.array(task, np.int64)}
        got = rewritten.run(["text_embeds"], inputs)[0]
        assert np.array_equal(got, raw.run(["text_embeds"], inputs)[0])
        np.testing.assert_allclose(got, default.run(["text_embeds"], inputs)[0], rtol=0, atol=1e-4)


def residual_layernorm_graph() -> onnx.ModelProto:
    """x + skip -> LayerNormalization over [batch, seq, hidden]: ONNX Runtime fuses it into SkipLayerNormalization."""
    hidden = 8
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "skip"], ["sum"]),
         helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["out"], axis=-1, epsilon=1e-12)],
        "residual",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", "s", hidden]) for n in ("x", "skip")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "s", hidden])],
        [helper.make_tensor("gamma", TensorProto.FLOAT, [hidden], np.linspace(0.5, 1.5, hidden)),
         helper.make_tensor("beta", TensorProto.FLOAT, [hidden], np.linspace(-0.1, 0.1, hidden))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def optimized_ops(tmp_path: Path, name: str, open_: object) -> list[str]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{name}.onnx")
    open_(options)  # type: ignore[operator]
    return [n.op_type for n in onnx.load(str(tmp_path / f"{name}.onnx")).graph.node]


def test_open_session_keeps_onnx_runtime_from_fusing_skip_layer_normalization(tmp_path: Path) -> None:
    """ORT's SkipLayerNormalization CPU kernel is the slow one (see appliance/models/graph.py)."""
    path = tmp_path / "residual.onnx"
    onnx.save(residual_layernorm_graph(), str(path))
    by_default = optimized_ops(tmp_path, "default",
                               lambda o: ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"]))
    served = optimized_ops(tmp_path, "served", lambda o: open_session(path, o))
    assert by_default == ["SkipLayerNormalization"]  # what would happen without the switch
    assert served == ["Add", "LayerNormalization"]
