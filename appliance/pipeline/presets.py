"""A request's model name, task and `input_type`, and its preset's fixed fields -> what to run.

What the vector is (task, dimensions, normalized) is fixed by a preset: a request asking otherwise
is a 400, never silently a different vector under the preset's name. The wire format is only a
default: the OpenAI SDK always sends `encoding_format`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, cast

from appliance.errors import InvalidRequestError
from appliance.pipeline.encoding import EmbeddingType
from appliance.settings import CompiledPreset

# Cohere / Voyage / NVIDIA NIM's `input_type` -> jina-v3's task.
INPUT_TYPES = {"query": "retrieval.query", "passage": "retrieval.passage", "document": "retrieval.passage"}

V = TypeVar("V", str, int, bool)


@dataclass(frozen=True)
class Asked:
    """The fields of one request that a preset may fix."""

    task: str | None = None
    input_type: str | None = None
    dimensions: int | None = None
    normalized: bool | None = None
    embedding_type: str | None = None
    encoding_format: str | None = None


@dataclass(frozen=True)
class Resolved:
    task: str | None
    task_param: str  # the request field the task came from, for error messages
    dimensions: int | None
    normalized: bool
    wire: EmbeddingType  # embedding_type (request, then preset), else encoding_format (the same), else float


_NO_PRESET = CompiledPreset(name="", model="")  # fixes nothing: the request's own fields, else the defaults


def resolve(asked: Asked, preset: CompiledPreset | None) -> Resolved:
    task, param = requested_task(asked.task, asked.input_type)
    preset = preset or _NO_PRESET
    return Resolved(
        task=_fixed(preset, "task", preset.task, task, param),
        task_param=param,
        dimensions=_fixed(preset, "dimensions", preset.dimensions, asked.dimensions, "dimensions"),
        normalized=_fixed(preset, "normalized", preset.normalized, asked.normalized, "normalized") is not False,
        wire=cast(
            EmbeddingType,
            asked.embedding_type or preset.embedding_type or asked.encoding_format or preset.encoding_format or "float",
        ),
    )


def requested_task(task: str | None, input_type: str | None) -> tuple[str | None, str]:
    """`task`, or the task `input_type` names; both given must agree."""
    if input_type is None:
        return task, "task"
    if input_type not in INPUT_TYPES:
        accepted = ", ".join(f"`{k}`" for k in INPUT_TYPES)
        raise InvalidRequestError(
            f"unknown input_type `{input_type}`; accepted values: {accepted} (or send `task`)", param="input_type"
        )
    mapped = INPUT_TYPES[input_type]
    if task is not None and task != mapped:
        raise InvalidRequestError(
            f"task `{task}` and input_type `{input_type}` (= task `{mapped}`) disagree; send one of them",
            param="input_type",
        )
    return mapped, "task" if task is not None else "input_type"


def _fixed(preset: CompiledPreset, field: str, fixed: V | None, asked: V | None, param: str) -> V | None:
    if fixed is None or asked is None or asked == fixed:
        return fixed if fixed is not None else asked
    raise InvalidRequestError(
        f"model `{preset.name}` is `{preset.model}` with {field} = {_show(fixed)}; the request asks "
        f"{param} = {_show(asked)}: drop `{param}`, or send model `{preset.model}`",
        param=param,
    )


def _show(value: object) -> str:
    return f"`{value}`" if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
