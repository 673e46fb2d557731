"""`choose_engine`: engine x precision x the CPU's capabilities x the fidelity gate's outcome."""

from __future__ import annotations

import pytest

from appliance.compile.engine_choice import choose_engine
from appliance.compile.fidelity import GateResult
from appliance.errors import ConfigError
from appliance.models.engines import EngineName, Precision
from appliance.spec.schema import ModelSpec

WITH_BF16 = ["BF16", "FP32", "INT8"]
WITHOUT_BF16 = ["FP32", "INT8"]


class FakeGate:
    """Returns a fixed min cosine and records what was measured."""

    def __init__(self, cosine: float) -> None:
        self.cosine = cosine
        self.calls: list[tuple[str, str]] = []

    def __call__(self, engine: EngineName, precision: Precision) -> GateResult:
        self.calls.append((engine, precision))
        return GateResult(engine=engine, precision=precision, min_cosine=self.cosine,
                          per_task={"retrieval.query": self.cosine}, probes=37, long_tokens=2048, seconds=0.1)


def spec(**fields: object) -> ModelSpec:
    return ModelSpec(name="m", path="/m", **fields)  # type: ignore[arg-type]


def choose(model: ModelSpec, capabilities: list[str], gate: FakeGate, *, quantized: bool = False):  # type: ignore[no-untyped-def]
    return choose_engine("models[0]", model, quantized_file=quantized, capabilities=capabilities, gate=gate)


def test_auto_serves_bf16_on_openvino_when_the_cpu_has_bf16_and_the_gate_passes() -> None:
    gate = FakeGate(0.99998)
    choice = choose(spec(), WITH_BF16, gate)
    assert (choice.engine, choice.precision) == ("openvino", "bf16")
    assert gate.calls == [("openvino", "bf16")]
    assert "0.999980" in choice.reason and "BF16" in choice.reason
    assert choice.threshold == 0.9999


def test_auto_falls_back_to_fp32_on_onnxruntime_naming_the_cosine_when_the_gate_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    choice = choose(spec(), WITH_BF16, FakeGate(0.998))
    assert (choice.engine, choice.precision) == ("onnxruntime", "fp32")
    assert "0.998000" in choice.reason and choice.gate is not None
    assert "0.998000" in caplog.text


def test_auto_without_bf16_serves_fp32_on_onnxruntime_without_running_the_gate() -> None:
    gate = FakeGate(1.0)
    choice = choose(spec(), WITHOUT_BF16, gate)
    assert (choice.engine, choice.precision) == ("onnxruntime", "fp32")
    assert gate.calls == [] and "no native bf16" in choice.reason


def test_engine_openvino_with_auto_precision_keeps_openvino_for_the_fp32_fallback() -> None:
    assert choose(spec(engine="openvino"), WITHOUT_BF16, FakeGate(1.0)).engine == "openvino"
    assert choose(spec(engine="openvino"), WITH_BF16, FakeGate(0.9)).engine == "openvino"


def test_auto_never_picks_int8_and_engine_onnxruntime_means_fp32() -> None:
    gate = FakeGate(1.0)
    choice = choose(spec(engine="onnxruntime"), WITH_BF16, gate)
    assert (choice.engine, choice.precision) == ("onnxruntime", "fp32") and gate.calls == []


def test_forced_fp32_runs_no_gate_and_picks_onnxruntime_under_engine_auto() -> None:
    gate = FakeGate(0.0001)
    assert (choose(spec(precision="fp32"), WITH_BF16, gate).engine, gate.calls) == ("onnxruntime", [])
    assert choose(spec(precision="fp32", engine="openvino"), WITH_BF16, gate).engine == "openvino"


def test_explicit_bf16_that_fails_the_gate_stops_start_up_naming_the_key_and_the_cosine() -> None:
    with pytest.raises(ConfigError) as info:
        choose(spec(precision="bf16"), WITH_BF16, FakeGate(0.9991))
    assert info.value.key == "models[0].precision"
    assert "0.999100" in str(info.value) and "min_cosine" in str(info.value)


def test_explicit_bf16_on_a_cpu_without_bf16_stops_start_up() -> None:
    with pytest.raises(ConfigError) as info:
        choose(spec(precision="bf16"), WITHOUT_BF16, FakeGate(1.0))
    assert info.value.key == "models[0].precision" and "bf16" in str(info.value)


def test_bf16_on_onnxruntime_and_int8_on_openvino_are_refused_naming_the_engine_key() -> None:
    for model in (spec(precision="bf16", engine="onnxruntime"), spec(precision="int8", engine="openvino")):
        with pytest.raises(ConfigError) as info:
            choose(model, WITH_BF16, FakeGate(1.0))
        assert info.value.key == "models[0].engine"


def test_min_cosine_overrides_the_threshold_in_both_directions() -> None:
    assert choose(spec(min_cosine=0.999), WITH_BF16, FakeGate(0.9995)).precision == "bf16"
    assert choose(spec(min_cosine=0.999999), WITH_BF16, FakeGate(0.99999)).precision == "fp32"
    with pytest.raises(ConfigError):
        choose(spec(precision="int8", min_cosine=0.999), WITH_BF16, FakeGate(0.995))
    assert choose(spec(precision="int8"), WITH_BF16, FakeGate(0.995)).precision == "int8"


def test_an_already_quantized_file_stays_on_onnxruntime_without_a_gate() -> None:
    gate = FakeGate(0.0)
    choice = choose(spec(), WITH_BF16, gate, quantized=True)
    assert (choice.engine, choice.precision, gate.calls) == ("onnxruntime", "int8", [])
    with pytest.raises(ConfigError) as info:
        choose(spec(precision="bf16"), WITH_BF16, gate, quantized=True)
    assert info.value.key == "models[0].precision" and "already quantized" in str(info.value)
