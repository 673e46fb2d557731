"""Render a Triton `config.pbtxt` through Triton's own `ModelConfig` protobuf.

Never a string template: the dict is parsed into the protobuf (so a typo in a
field name fails here, not at Triton start) and printed with `text_format`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from appliance.settings import CompiledModel
from appliance.spec.schema import BatchingSpec, LimitsSpec
from appliance.triton.interface import EMBEDDING, INPUT_IDS, LENGTHS, NORM, SPANS, TASK_ID


def model_config_dict(
    model: CompiledModel,
    batching: BatchingSpec,
    limits: LimitsSpec,
    *,
    instance_count: int,
    response_cache: bool = False,
    parameters: dict[str, str],
) -> dict[str, Any]:
    """The config of one served model as a dict in ModelConfig's JSON form."""
    inputs: list[dict[str, Any]] = [
        # Each request is [n, longest-of-request]; requests of different lengths
        # may share one execute() (ragged), where model.py repacks them by length.
        {"name": INPUT_IDS, "data_type": "TYPE_INT64", "dims": [-1], "allow_ragged_batch": True},
        {"name": LENGTHS, "data_type": "TYPE_INT64", "dims": [1]},
    ]
    if model.kind == "jina-v3":
        # Triton has no 0-d inputs: one task id per row, grouped into ONNX's scalar in model.py.
        inputs.append({"name": TASK_ID, "data_type": "TYPE_INT64", "dims": [1]})
    # Late chunking: one row whose [start, stop) spans are pooled separately (flat pairs).
    inputs.append(
        {"name": SPANS, "data_type": "TYPE_INT64", "dims": [-1], "allow_ragged_batch": True, "optional": True}
    )
    dynamic: dict[str, Any] = {"max_queue_delay_microseconds": batching.max_queue_delay_us}
    if limits.triton_max_queue_size or limits.triton_queue_timeout_ms:
        dynamic["default_queue_policy"] = queue_policy(limits)
    if batching.preferred_batch_sizes:
        dynamic["preferred_batch_size"] = list(batching.preferred_batch_sizes)
    config: dict[str, Any] = {
        "name": model.name,
        "backend": "python",
        "max_batch_size": batching.max_batch_size,
        "input": inputs,
        "output": [
            {"name": EMBEDDING, "data_type": "TYPE_FP32", "dims": [model.hidden_size]},
            {"name": NORM, "data_type": "TYPE_FP32", "dims": [1]},
        ],
        "dynamic_batching": dynamic,
        "instance_group": [{"count": instance_count, "kind": "KIND_CPU"}],
        "parameters": {key: {"string_value": value} for key, value in sorted(parameters.items())},
    }
    if response_cache:
        config["response_cache"] = {"enable": True}
    return config


def queue_policy(limits: LimitsSpec) -> dict[str, Any]:
    """Triton's queue policy, written only when `[limits]` asks for one.

    Any queue policy turns off the dynamic batcher's payload prefetching, and then Triton 2.51 does
    not wake its batcher for a request that arrives while the model instance is busy: at low load
    such a request waits out the batcher's 500 ms idle sleep. The 2nd and later chunks of a request
    the gateway splits arrive exactly then (tiny-jina, 20 requests of 6 chunks one after another:
    6.6 s in Triton's queue with a policy, under 0.25 s without; tests/e2e/test_back_to_back.py).
    The gateway bounds the load without it (`max_concurrent_requests`, `request_timeout_s`).
    """
    policy: dict[str, Any] = {"timeout_action": "REJECT"}
    if limits.triton_max_queue_size:
        policy["max_queue_size"] = limits.triton_max_queue_size
    # Nothing waits in Triton's queue longer than the gateway waits for its answer: past
    # request_timeout_s the client has its 504, and running the work would only delay others.
    timeouts_us = [round(limits.request_timeout_s * 1_000_000)]
    if limits.triton_queue_timeout_ms:
        timeouts_us.append(limits.triton_queue_timeout_ms * 1000)
    policy["default_timeout_microseconds"] = min(timeouts_us)
    return policy


def render_pbtxt(config: dict[str, Any]) -> str:
    """Parse into `ModelConfig` (validating every field name) and print as text."""
    proto = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return str(text_format.MessageToString(proto))
