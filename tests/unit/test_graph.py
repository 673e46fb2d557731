"""The softmax NaN-guard rewrite: exactly the exporter's pattern goes, and nothing changes a value."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from appliance.models.graph import (
    DISABLED_OPTIMIZERS,
    Rewrites,
    fuse_erf_gelus,
    open_session,
    strip_softmax_nan_guards,
)


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
    session, rewrites = open_session(tiny_jina_dir / "model.onnx", ort.SessionOptions())
    assert rewrites == Rewrites() and not rewrites and "task_id" in {i.name for i in session.get_inputs()}


def e5_inputs() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(2)
    ids = rng.integers(5, 20000, (3, 40)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 9:] = 0  # padded rows included
    mask[2, 1:] = 0
    return [{"input_ids": ids, "attention_mask": mask, "task_id": np.array(task, np.int64)} for task in range(5)]


def from_proto(model: onnx.ModelProto, folder: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(folder))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(DISABLED_OPTIMIZERS))


def test_e5_small_jina_loses_its_twelve_guards_and_no_bit_of_output(e5_small_jina_dir: Path) -> None:
    """External weights still come from the (unchanged) folder."""
    path = e5_small_jina_dir / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    assert strip_softmax_nan_guards(model) == 12
    rewritten = from_proto(model, e5_small_jina_dir)
    raw = from_proto(onnx.load(str(path), load_external_data=False), e5_small_jina_dir)
    for inputs in e5_inputs():
        assert np.array_equal(rewritten.run(["text_embeds"], inputs)[0], raw.run(["text_embeds"], inputs)[0])


def test_e5_small_jina_gets_twelve_fused_gelus_with_the_same_values(e5_small_jina_dir: Path) -> None:
    path = e5_small_jina_dir / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    ops = Counter(n.op_type for n in model.graph.node)
    assert fuse_erf_gelus(model) == 12
    after = Counter(n.op_type for n in model.graph.node)
    assert after["Gelu"] == 12 and after["Erf"] == 0
    for op, per_gelu in (("Div", 1), ("Erf", 1), ("Add", 1), ("Mul", 2)):
        assert after[op] == ops[op] - 12 * per_gelu, op
    assert ops["Constant"] - after["Constant"] <= 36  # only their own constants, if nothing else used them
    fused = from_proto(model, e5_small_jina_dir)
    raw = from_proto(onnx.load(str(path), load_external_data=False), e5_small_jina_dir)
    for inputs in e5_inputs():
        np.testing.assert_allclose(fused.run(["text_embeds"], inputs)[0], raw.run(["text_embeds"], inputs)[0],
                                   rtol=0, atol=1e-5)


def test_open_session_serves_e5_small_jina_rewritten_and_close_to_onnx_runtime_defaults(
    e5_small_jina_dir: Path,
) -> None:
    path = e5_small_jina_dir / "model.onnx"
    served, rewrites = open_session(path, ort.SessionOptions())
    assert rewrites == Rewrites(nan_guards=12, erf_gelus=12)
    assert str(rewrites) == "12 softmax NaN guards dropped, 12 erf GELUs fused"
    _, unfused = open_session(path, ort.SessionOptions(), fuse_gelus=False)  # bench/ort_options.py's undo
    assert unfused == Rewrites(nan_guards=12, erf_gelus=0)
    default = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for inputs in e5_inputs():
        np.testing.assert_allclose(served.run(["text_embeds"], inputs)[0], default.run(["text_embeds"], inputs)[0],
                                   rtol=0, atol=1e-4)


def gelu_graph(*, half: float = 0.5, root: float = math.sqrt(2.0), x_used_elsewhere: bool = False,
               order: str = "half-first") -> onnx.ModelProto:
    """y = x * (0.5 * (1 + erf(x / sqrt 2))) as the exporter writes it, with knobs to break the pattern."""
    mul_half = (helper.make_node("Mul", ["half", "plus1"], ["halved"]) if order == "half-first"
                else helper.make_node("Mul", ["plus1", "half"], ["halved"]))
    nodes = [
        helper.make_node("Div", ["x", "root"], ["scaled"]),
        helper.make_node("Erf", ["scaled"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["plus1"]),
        mul_half,
        helper.make_node("Mul", ["x", "halved"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if x_used_elsewhere:  # an intermediate read by another op: the pattern is not exclusive
        nodes.append(helper.make_node("Identity", ["erf"], ["erf_copy"]))
        outputs.append(helper.make_tensor_value_info("erf_copy", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)], outputs,
        [helper.make_tensor("root", TensorProto.FLOAT, [], [root]),
         helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
         helper.make_tensor("half", TensorProto.FLOAT, [], [half])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("order", ["half-first", "half-second"])
def test_the_exporters_gelu_becomes_one_gelu_op_with_the_same_values(order: str) -> None:
    x = np.linspace(-6, 6, 1001, dtype=np.float32).reshape(7, 143)
    model = gelu_graph(order=order)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    assert fuse_erf_gelus(model) == 1
    assert [(n.op_type, n.domain) for n in model.graph.node] == [("Gelu", "com.microsoft")]
    assert not model.graph.initializer  # sqrt 2, 1 and 0.5 went with their ops
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", [{"half": 0.25}, {"root": 2.0}, {"x_used_elsewhere": True}])
def test_a_gelu_lookalike_is_left_alone(variant: dict[str, object]) -> None:
    model = gelu_graph(**variant)  # type: ignore[arg-type]
    nodes = [n.op_type for n in model.graph.node]
    assert fuse_erf_gelus(model) == 0
    assert [n.op_type for n in model.graph.node] == nodes


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
    undone = optimized_ops(tmp_path, "undone", lambda o: open_session(path, o, disabled_optimizers=()))
    assert by_default == ["SkipLayerNormalization"] == undone  # what would happen without the switch
    assert served == ["Add", "LayerNormalization"]
