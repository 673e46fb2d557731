"""The full embeddings API against the real stack: every parameter, every refusal, every endpoint.

Two stacks from `tests.e2e.api_fixtures` (module-scoped): `api` (tiny-jina + minilm + tiny-plain from
one embed.toml, behind a key) and `tight` (tight [limits], models with max_tokens = 16). Every
vector is compared with `expected_vectors` (the in-process ONNX Runtime Reference), never with the
appliance's own code.
"""

# ruff: noqa: F811  (pytest fixtures imported from api_fixtures are redefined as test parameters)
from __future__ import annotations

import asyncio
import base64
import json
import math
import select
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema_rs
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from harness.openai_errors import assert_openai_error
from harness.reference import Reference
from tests.e2e.api_fixtures import (  # noqa: F401  (fixtures are used by name)
    ALIAS,
    API_KEY,
    DEMO,
    DEMO16,
    DEMO_HIDDEN,
    F64,
    JINA_TASKS,
    MAIN_BATCHING,
    PASSAGE32,
    PLAIN,
    SHORT_MAX_TOKENS,
    TEXTS,
    TIGHT_LIMITS,
    TINY,
    TINY16,
    TINY_DIMS,
    TINY_VOCAB,
    Api,
    api,
    assert_close,
    content_ids,
    decode_item,
    demo_reference,
    expected_vectors,
    items_in_order,
    specials,
    tight,
    tiny_reference,
)

pytestmark = pytest.mark.e2e

LONG_TEXT = "the quick brown fox jumps over the lazy dog " * 4  # > 16 tokens for both tokenizers


@pytest.fixture(scope="module")
def refs(tiny_reference: Reference, demo_reference: Reference) -> dict[str, Reference]:
    """Which Reference (model folder) stands behind each served model name."""
    return {TINY: tiny_reference, PLAIN: tiny_reference, TINY16: tiny_reference,
            DEMO: demo_reference, DEMO16: demo_reference}


# How each served model resolves a request without `task`, and whether it prepends instructions.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    TINY: {"default_task": "retrieval.query", "instructions": True},
    TINY16: {"default_task": "retrieval.query", "instructions": True},
    PLAIN: {"default_task": "separation", "instructions": False},
    DEMO: {},
    DEMO16: {},
}


# ================================================================================================
# 1. Every parameter and combination that must work (table-driven, checked against the Reference)
# ================================================================================================

# (request fields, the wire format the response must use): `embedding_type` overrides `encoding_format`
WIRES: list[tuple[dict[str, str], str]] = [
    ({}, "float"),
    ({"encoding_format": "float"}, "float"),
    ({"encoding_format": "base64"}, "base64"),
    ({"embedding_type": "float"}, "float"),
    ({"embedding_type": "base64"}, "base64"),
    ({"embedding_type": "binary"}, "binary"),
    ({"embedding_type": "ubinary"}, "ubinary"),
    ({"encoding_format": "base64", "embedding_type": "float"}, "float"),
    ({"encoding_format": "float", "embedding_type": "ubinary"}, "ubinary"),
    ({"encoding_format": "base64", "embedding_type": "binary"}, "binary"),
    ({"encoding_format": "float", "embedding_type": "base64"}, "base64"),
]
SHAPES = ("str", "strs", "ids", "idss")  # "a", ["a", "b", "c"], [1, 2, 3], [[1, 2], [3]]


@dataclass(frozen=True)
class Combo:
    model: str
    task: str | None
    shape: str
    late_chunking: bool
    normalized: bool
    dimensions: int | None
    wire: tuple[dict[str, str], str]

    @property
    def id(self) -> str:
        wire = "+".join(f"{k}={v}" for k, v in self.wire[0].items()) or "no-format"
        return (f"{self.model}-{self.task or 'default-task'}-{self.shape}-"
                f"{'late' if self.late_chunking else 'plain'}-{'norm' if self.normalized else 'raw'}-"
                f"dims={self.dimensions}-{wire}")


def _combos() -> list[Combo]:
    plan: list[tuple[str, list[str | None], list[int | None]]] = [
        (TINY, [None, "retrieval.query", "retrieval.passage", "separation", "classification", "text-matching"],
         [None, 32, 64]),
        (DEMO, [None], [None, DEMO_HIDDEN]),
        (PLAIN, [None, "retrieval.passage"], [None, 32]),
    ]
    out: list[Combo] = []
    counter = 0
    for model, tasks, dims in plan:
        for task in tasks:
            for shape in SHAPES:
                for late in (False, True):
                    for normalized in (True, False):
                        out.append(Combo(model, task, shape, late, normalized, dims[counter % len(dims)],
                                         WIRES[(counter * 3 + len(out) // len(WIRES)) % len(WIRES)]))
                        counter += 1
    return out


COMBOS = _combos()


def shaped_inputs(ref: Reference, shape: str) -> tuple[Any, list[str] | list[list[int]]]:
    """(the `input` field, the list of inputs it stands for)."""
    if shape == "str":
        return TEXTS[0], [TEXTS[0]]
    if shape == "strs":
        return TEXTS[1:4], TEXTS[1:4]
    if shape == "ids":
        ids = content_ids(ref, TEXTS[2])
        return ids, [ids]
    lists = [content_ids(ref, t) for t in TEXTS[:3]]
    return lists, lists


def check_vectors(items: list[Any], want: list[F64], wire: str, normalized: bool, what: str) -> None:
    """Decode each item per `wire` and compare with the expected vectors."""
    assert len(items) == len(want)
    for i, (item, vector) in enumerate(zip(items, want)):
        label = f"{what} input {i}"
        if wire in ("binary", "ubinary"):
            assert isinstance(item, list) and all(isinstance(b, int) for b in item), label
            assert len(item) == math.ceil(len(vector) / 8), f"{label}: {len(item)} bytes for {len(vector)} dims"
            low, high = (-128, 127) if wire == "binary" else (0, 255)
            assert all(low <= b <= high for b in item), f"{label}: {item}"
            packed = np.array(item, dtype=np.int16) + (128 if wire == "binary" else 0)
            bits = np.unpackbits(packed.astype(np.uint8))[: len(vector)].astype(bool)
            stable = np.abs(vector) > 1e-4 * np.abs(vector).max()  # signs float noise cannot flip
            assert np.array_equal(bits[stable], (vector > 0)[stable]), f"{label}: bits are not the signs"
            assert not np.unpackbits(packed.astype(np.uint8))[len(vector):].any(), f"{label}: padding bits set"
            continue
        assert isinstance(item, str) if wire == "base64" else isinstance(item, list), f"{label}: {type(item)}"
        got = decode_item(item)
        if normalized:
            assert abs(np.linalg.norm(got) - 1.0) < 1e-4, f"{label}: norm {np.linalg.norm(got)}"
            assert_close(got, vector, label)
        else:
            assert_close(got, vector, label, relative=True)


@pytest.mark.parametrize("combo", COMBOS, ids=[c.id for c in COMBOS])
def test_every_parameter_combination_returns_the_reference_vectors(
    api: Api, refs: dict[str, Reference], combo: Combo
) -> None:
    ref = refs[combo.model]
    field_input, inputs = shaped_inputs(ref, combo.shape)
    body: dict[str, Any] = {"model": combo.model, "input": field_input, **combo.wire[0]}
    if combo.task is not None:
        body["task"] = combo.task
    if combo.dimensions is not None:
        body["dimensions"] = combo.dimensions
    if not combo.normalized:
        body["normalized"] = False
    if combo.late_chunking:
        body["late_chunking"] = True
    result = api.embeddings(body)
    want = expected_vectors(ref, inputs, task=combo.task, dimensions=combo.dimensions,
                            normalized=combo.normalized, late_chunking=combo.late_chunking,
                            **MODEL_DEFAULTS[combo.model])
    assert result["model"] == combo.model
    assert result["usage"] == {"prompt_tokens": want.tokens, "total_tokens": want.tokens}
    check_vectors(items_in_order(result, len(inputs)), want.vectors, combo.wire[1], combo.normalized, combo.id)


# ================================================================================================
# 2. Every refusal: status, OpenAI error type, param (and code / message where it matters)
# ================================================================================================


@dataclass(frozen=True)
class Bad:
    """A request the appliance must refuse, and exactly how."""

    id: str
    body: Any = None  # JSON-encoded unless `raw` is given
    status: int = 400
    type: str = "invalid_request_error"
    param: Any = ...  # ... = not checked (e.g. Litestar's own errors)
    code: Any = ...
    says: tuple[str, ...] = ()  # fragments the message must contain ({long_tokens} etc. are filled in)
    stack: str = "api"
    method: str = "POST"
    path: str = "/v1/embeddings"
    raw: bytes | None = None
    chunked: bool = False  # send `raw` with Transfer-Encoding: chunked (no Content-Length)
    headers: dict[str, str] = field(default_factory=dict)


def _b(model: str = TINY, **fields: Any) -> dict[str, Any]:
    return {"model": model, **fields}


BAD: list[Bad] = [
    # --- input shapes
    Bad("empty-string", _b(input=""), param="input"),
    Bad("empty-list", _b(input=[]), param="input"),
    Bad("empty-string-in-list", _b(input=["a", ""]), param="input[1]"),
    Bad("null-element", _b(input=["a", "b", None]), param="input[2]"),
    Bad("object-element", _b(input=["a", {"text": "b"}]), param="input[1]"),
    Bad("boolean-element", _b(input=["a", True]), param="input[1]"),
    Bad("string-list-then-int", _b(input=["a", "b", "c", 3]), param="input[3]", says=("input[3]",)),
    Bad("ids-then-string", _b(input=[3, "a"]), param="input[1]", says=("input[1]",)),
    Bad("id-lists-then-string", _b(input=[[3], "a"]), param="input[1]"),
    Bad("id-lists-then-int", _b(input=[[3], [4], 5]), param="input[2]"),
    Bad("float-in-ids", _b(input=[5, 1.5]), param="input[1]"),
    Bad("float-in-id-lists", _b(input=[[5], [6, 2.5]]), param="input[1][1]"),
    Bad("boolean-in-id-lists", _b(input=[[5], [6, False]]), param="input[1][1]"),
    Bad("lists-nested-too-deep", _b(input=[[[5]]]), param="input[0][0]"),
    Bad("empty-id-list", _b(input=[[5], []]), param="input[1]"),
    Bad("input-is-an-object", _b(input={"text": "a"}), param="input"),
    Bad("input-is-a-number", _b(input=5), param="input"),
    Bad("input-missing", {"model": TINY}, param=None, says=("input",)),
    # --- token ids outside the vocabulary: 400, like every other invalid input
    Bad("token-id-equal-to-vocab-size", _b(input=[5, TINY_VOCAB]), param="input", code="invalid_token_id",
        says=(str(TINY_VOCAB), f"0..{TINY_VOCAB - 1}")),
    Bad("negative-token-id", _b(input=[-1]), param="input", says=("-1",)),
    Bad("token-id-out-of-vocab-in-second-list", _b(input=[[5], [6, TINY_VOCAB + 7]]), param="input[1]"),
    Bad("token-id-beyond-int64", _b(input=[2**64]), param="input"),
    Bad("token-id-beyond-demo-vocab", _b(DEMO, input=[101, 30522, 102]), param="input", says=("30522",)),
    Bad("late-chunking-token-id-out-of-vocab", _b(input=[[5], [TINY_VOCAB]], late_chunking=True),
        param="input[1]"),
    # --- input_type and presets
    Bad("unknown-input-type", _b(input="a", input_type="search_query"), param="input_type",
        says=("search_query", "`query`, `passage`, `document`")),
    Bad("input-type-disagrees-with-task", _b(input="a", input_type="query", task="retrieval.passage"),
        param="input_type", says=("disagree",)),
    Bad("input-type-on-a-sentence-transformer", _b(DEMO, input="a", input_type="query"), param="input_type",
        says=("no tasks",)),
    Bad("task-disagrees-with-preset", _b("tiny-jina-passage", input="a", task="retrieval.query"), param="task",
        says=("tiny-jina-passage", "retrieval.passage", f"send model `{TINY}`")),
    Bad("input-type-disagrees-with-preset", _b(PASSAGE32, input="a", input_type="query"), param="input_type"),
    Bad("dimensions-disagree-with-preset", _b(PASSAGE32, input="a", dimensions=64), param="dimensions",
        says=("32", "64")),
    Bad("preset-of-a-model-without-presets", _b("tiny-plain-query", input="a"), status=404, param="model",
        code="model_not_found"),
    # --- model
    Bad("unknown-model", _b("no-such-model", input="a"), status=404, param="model", code="model_not_found",
        says=("no-such-model", TINY, DEMO, PLAIN)),
    Bad("model-missing", {"input": "a"}, says=("model",)),
    Bad("model-not-a-string", _b(5, input="a"), param="model"),  # type: ignore[arg-type]
    # --- task
    Bad("unknown-task", _b(input="a", task="summarization"), param="task", says=("summarization", *JINA_TASKS)),
    Bad("task-not-a-string", _b(input="a", task=3), param="task"),
    Bad("task-on-the-sentence-transformer", _b(DEMO, input="a", task="retrieval.query"), param="task",
        says=(DEMO,)),
    # --- dimensions
    Bad("unsupported-dimensions", _b(input="a", dimensions=48), param="dimensions", says=("48", "32, 64")),
    Bad("dimensions-larger-than-hidden", _b(input="a", dimensions=1024), param="dimensions", says=("32, 64",)),
    Bad("dimensions-zero", _b(input="a", dimensions=0), param="dimensions"),
    Bad("dimensions-negative", _b(input="a", dimensions=-32), param="dimensions"),
    Bad("dimensions-not-in-this-models-list", _b(PLAIN, input="a", dimensions=64), param="dimensions",
        says=("use one of: 32",)),
    Bad("dimensions-on-the-sentence-transformer", _b(DEMO, input="a", dimensions=32), param="dimensions",
        says=(str(DEMO_HIDDEN),)),
    Bad("dimensions-boolean", _b(input="a", dimensions=True), param="dimensions"),
    Bad("dimensions-string", _b(input="a", dimensions="32"), param="dimensions"),
    Bad("dimensions-fraction", _b(input="a", dimensions=32.5), param="dimensions"),
    # --- formats and flags
    Bad("encoding-format-unknown", _b(input="a", encoding_format="int8"), param="encoding_format"),
    Bad("encoding-format-binary-is-jina-only", _b(input="a", encoding_format="binary"), param="encoding_format"),
    Bad("embedding-type-unknown", _b(input="a", embedding_type="int4"), param="embedding_type"),
    Bad("embedding-type-wrong-case", _b(input="a", embedding_type="BINARY"), param="embedding_type"),
    Bad("normalized-integer", _b(input="a", normalized=1), param="normalized"),
    Bad("normalized-null", _b(input="a", normalized=None), param="normalized"),
    Bad("truncate-string", _b(input="a", truncate="yes"), param="truncate"),
    Bad("late-chunking-integer", _b(input="a", late_chunking=0), param="late_chunking"),
    Bad("user-not-a-string", _b(input="a", user=7), param="user"),
    # --- late chunking specifics
    Bad("late-chunking-input-without-content-tokens", _b(DEMO, input=["a", " "], late_chunking=True),
        param="input[1]"),
    Bad("late-chunking-empty-id-list", _b(input=[[5], []], late_chunking=True), param="input[1]"),
    # --- the body itself
    Bad("invalid-json", raw=b'{"model": "tiny-jina", "input": ', param=None, says=("JSON",)),
    Bad("not-json-at-all", raw=b"model=tiny-jina&input=a", param=None, says=("JSON",)),
    Bad("empty-body", raw=b"", param=None),
    Bad("nan-is-not-json", raw=b'{"model": "tiny-jina", "input": "a", "dimensions": NaN}', param=None),
    Bad("lone-surrogate", raw=b'{"model": "tiny-jina", "input": "a\\ud800b"}', param=None),
    Bad("body-is-an-array", [{"model": TINY, "input": "a"}], param=None),
    Bad("body-is-null", None, raw=b"null", param=None),
    Bad("body-is-a-string", "tiny-jina", param=None),
    Bad("wrong-content-type", raw=b'{"model": "tiny-jina", "input": "a"}', status=415,
        headers={"Content-Type": "text/plain"}, says=("Content-Type",)),
    # --- auth (the `api` stack has one key)
    Bad("no-api-key", _b(input="a"), status=401, code="invalid_api_key", headers={"Authorization": ""}),
    Bad("wrong-api-key", _b(input="a"), status=401, code="invalid_api_key",
        headers={"Authorization": "Bearer sk-wrong"}),
    Bad("basic-auth-instead-of-bearer", _b(input="a"), status=401, code="invalid_api_key",
        headers={"Authorization": f"Basic {API_KEY}"}),
    # --- other endpoints
    Bad("unknown-model-by-id", None, status=404, method="GET", path="/v1/models/no-such-model", param="model",
        code="model_not_found", says=(TINY, DEMO, PLAIN)),
    Bad("unknown-route", None, status=404, method="GET", path="/v1/nothing-here"),
    Bad("wrong-method", None, status=405, method="GET", path="/v1/embeddings"),
    Bad("tokenize-unknown-model", _b("no-such-model", input="a"), status=404, path="/tokenize", param="model",
        code="model_not_found"),
    Bad("tokenize-unknown-task", _b(input="a", task="nope"), path="/tokenize", param="task"),
    Bad("tokenize-task-on-sentence-transformer", _b(DEMO, input="a", task="separation"), path="/tokenize",
        param="task"),
    Bad("tokenize-empty-input", _b(input=""), path="/tokenize", param="input"),
    Bad("tokenize-empty-string-in-list", _b(input=["a", ""]), path="/tokenize", param="input[1]"),
    # --- length and [limits] (the `tight` stack: max_tokens 16, 4 inputs, 50 tokens, 2048 bytes)
    Bad("over-long-input-without-truncate", _b(TINY16, input=["short", LONG_TEXT], task="text-matching"), stack="tight",
        param="input[1]", code="context_length_exceeded",
        says=("input[1]", "{tiny_long} tokens", str(SHORT_MAX_TOKENS), "truncate")),
    Bad("over-long-input-on-the-sentence-transformer", _b(DEMO16, input=[LONG_TEXT]), stack="tight",
        param="input[0]", code="context_length_exceeded", says=("input[0]", "{demo_long} tokens")),
    Bad("over-long-token-ids-without-truncate", _b(TINY16, input=[[7] * (SHORT_MAX_TOKENS + 3)]), stack="tight",
        param="input", code="context_length_exceeded",
        says=(f"{SHORT_MAX_TOKENS + 3} token ids", f"limit of {SHORT_MAX_TOKENS + 2}")),
    Bad("over-long-with-the-instruction", _b(TINY16, input="capital of France and Germany", task="retrieval.query"),
        stack="tight", param="input[0]", code="context_length_exceeded", says=("{tiny_query} tokens",)),
    Bad("late-chunking-over-max-tokens", _b(TINY16, input=["first input here now", "second input here"],
                                            late_chunking=True, task="text-matching"),
        stack="tight", param="input", code="context_length_exceeded", says=("{tiny_late} tokens",)),
    Bad("late-chunking-ignores-truncate-when-over", _b(TINY16, input=[LONG_TEXT], late_chunking=True,
                                                       truncate=True),
        stack="tight", param="input", code="context_length_exceeded"),
    Bad("too-many-inputs", _b(TINY16, input=["a"] * 5), stack="tight", param="input",
        says=("5 inputs", str(TIGHT_LIMITS["max_inputs_per_request"]))),
    Bad("too-many-token-id-inputs", _b(TINY16, input=[[5]] * 5), stack="tight", param="input"),
    Bad("too-many-tokens-per-request", _b(TINY16, input=[LONG_TEXT] * 4, truncate=True), stack="tight",
        param="input", says=(f"{4 * (SHORT_MAX_TOKENS + 2)} tokens", str(TIGHT_LIMITS["max_tokens_per_request"]))),
    Bad("body-over-max-body-bytes", _b(TINY16, input="x" * TIGHT_LIMITS["max_body_bytes"]), stack="tight",
        status=413),
    Bad("chunked-body-over-max-body-bytes", stack="tight", status=413, chunked=True,
        raw=json.dumps(_b(TINY16, input="y" * TIGHT_LIMITS["max_body_bytes"])).encode()),
]


@pytest.fixture(scope="module")
def token_counts(refs: dict[str, Reference]) -> dict[str, int]:
    """Content-token counts the 400 messages must state (from the Reference tokenizers)."""
    tiny, demo = refs[TINY], refs[DEMO]
    return {
        "tiny_long": len(content_ids(tiny, LONG_TEXT)),
        "demo_long": len(content_ids(demo, LONG_TEXT)),
        "tiny_query": len(content_ids(tiny, tiny.instruction("retrieval.query") + "capital of France and Germany")),
        "tiny_late": len(content_ids(tiny, "first input here now")) + len(content_ids(tiny, "second input here")),
    }


def send(target: Api, case: Bad) -> httpx.Response:
    if case.method == "GET":
        return target.get(case.path, headers=case.headers)
    if case.chunked:
        assert case.raw is not None
        payload = case.raw

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(payload), 512):
                yield payload[start:start + 512]

        return target.client.post(case.path, content=chunks(),
                                  headers={"Content-Type": "application/json", **case.headers})
    if case.raw is not None:
        return target.post(case.path, content=case.raw, headers=case.headers)
    return target.post(case.path, case.body, headers=case.headers)


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_every_bad_request_is_refused_with_its_status_type_and_param(
    api: Api, tight: Api, token_counts: dict[str, int], case: Bad
) -> None:
    response = send(api if case.stack == "api" else tight, case)
    error = assert_openai_error(response, case.status, case.type, case.param, case.code)
    for fragment in case.says:
        fragment = fragment.format(**token_counts)
        assert fragment in error["message"], f"{fragment!r} not in {error['message']!r}"


def test_the_over_long_counts_in_the_table_really_are_over_the_limit(token_counts: dict[str, int]) -> None:
    assert min(token_counts.values()) > SHORT_MAX_TOKENS, token_counts


# ================================================================================================
# 3. Length: truncate cuts the content, keeps the specials, equals the Reference on the cut sequence
# ================================================================================================


@pytest.mark.parametrize(
    ("model", "task", "field_input"),
    [
        (TINY16, None, ["short", LONG_TEXT]),
        (TINY16, "retrieval.query", ["capital of France and Germany", LONG_TEXT]),  # the instruction is content too
        (DEMO16, None, [LONG_TEXT, "short"]),
        (TINY16, None, "tokens"),  # token ids: [[7] * 40, [8, 9]]
    ],
    ids=["tiny-strings", "tiny-with-instruction", "sentence-transformer", "token-ids"],
)
def test_truncate_true_cuts_the_content_keeps_the_specials_and_equals_the_reference(
    tight: Api, refs: dict[str, Reference], model: str, task: str | None, field_input: Any
) -> None:
    ref = refs[model]
    inputs: list[Any] = [[7] * 40, [8, 9]] if field_input == "tokens" else field_input
    body: dict[str, Any] = {"model": model, "input": inputs, "truncate": True, "encoding_format": "float"}
    if task:
        body["task"] = task
    result = tight.embeddings(body)
    want = expected_vectors(ref, inputs, task=task, truncate_to=SHORT_MAX_TOKENS, **MODEL_DEFAULTS[model])
    got = [decode_item(v) for v in items_in_order(result, len(inputs))]
    for i, (g, w) in enumerate(zip(got, want.vectors)):
        assert_close(g, w, f"input {i}")
    assert result["usage"]["prompt_tokens"] == want.tokens
    uncut = expected_vectors(ref, inputs, task=task, **MODEL_DEFAULTS[model])
    instruction = ref.instruction(task) if task else ""
    for i, item in enumerate(inputs):
        strings = isinstance(item, str)
        length = len(content_ids(ref, instruction + item)) if strings else len(item)
        limit = SHORT_MAX_TOKENS if strings else SHORT_MAX_TOKENS + 2  # ids: the specials' places too
        changed = float(np.abs(got[i] - uncut.vectors[i]).max()) > 1e-3
        assert changed == (length > limit), f"input {i} ({length} tokens): cut={changed}"


def test_truncate_changes_nothing_for_inputs_within_the_limit(tight: Api, refs: dict[str, Reference]) -> None:
    plain = tight.embeddings({"model": TINY16, "input": ["short one", "two"], "encoding_format": "float"})
    cut = tight.embeddings({"model": TINY16, "input": ["short one", "two"], "truncate": True,
                            "encoding_format": "float"})
    assert plain["data"] == cut["data"]
    assert plain["usage"] == cut["usage"]


# ================================================================================================
# 4. Output encodings: binary / ubinary bits are the signs, base64 is exactly the float32 vector
# ================================================================================================


@pytest.mark.parametrize(
    "extra",
    [{"model": TINY}, {"model": TINY, "dimensions": 32}, {"model": DEMO}, {"model": TINY, "normalized": False},
     {"model": TINY, "late_chunking": True, "task": "retrieval.passage"}],
    ids=["tiny", "tiny-32", "minilm", "tiny-raw", "tiny-late"],
)
def test_binary_and_ubinary_are_the_packed_signs_and_base64_is_the_exact_float32_vector(
    api: Api, extra: dict[str, Any]
) -> None:
    base = {"input": TEXTS, **extra}
    floats = items_in_order(api.embeddings({**base, "encoding_format": "float"}), len(TEXTS))
    b64 = items_in_order(api.embeddings({**base, "encoding_format": "base64"}), len(TEXTS))
    b64_jina = items_in_order(api.embeddings({**base, "embedding_type": "base64"}), len(TEXTS))
    ubinary = items_in_order(api.embeddings({**base, "embedding_type": "ubinary"}), len(TEXTS))
    binary = items_in_order(api.embeddings({**base, "embedding_type": "binary"}), len(TEXTS))
    for i in range(len(TEXTS)):
        vector = np.asarray(floats[i], dtype=np.float32)  # JSON float -> the float32 the server had
        decoded = np.frombuffer(base64.b64decode(b64[i]), dtype="<f4")
        assert np.array_equal(decoded, vector), f"input {i}: base64 is not the float vector"
        assert b64_jina[i] == b64[i]
        want = np.packbits(vector > 0)
        assert ubinary[i] == want.tolist(), f"input {i}: ubinary {ubinary[i]} != packbits(v > 0) {want.tolist()}"
        assert binary[i] == (want.astype(np.int16) - 128).tolist(), f"input {i}: binary != ubinary - 128"
        assert len(ubinary[i]) == math.ceil(len(vector) / 8)


def test_binary_first_dimension_is_the_most_significant_bit(api: Api) -> None:
    """The documented packing, checked on one vector bit by bit (not through numpy.packbits)."""
    vector = decode_item(items_in_order(api.embeddings({"model": TINY, "input": "bit order",
                                                        "encoding_format": "float"}), 1)[0])
    packed = items_in_order(api.embeddings({"model": TINY, "input": "bit order", "embedding_type": "ubinary"}),
                            1)[0]
    for d, value in enumerate(vector):
        bit = (packed[d // 8] >> (7 - d % 8)) & 1
        assert bit == (1 if value > 0 else 0), f"dimension {d}: value {value}, bit {bit}"


# ================================================================================================
# 5. normalized = false: the raw mean-pooled vector, truncated to `dimensions`, never renormalized
# ================================================================================================


@pytest.mark.parametrize(
    ("model", "task", "dimensions"),
    [(TINY, None, None), (TINY, "retrieval.query", 32), (TINY, "separation", 64), (DEMO, None, None),
     (PLAIN, None, 32)],
)
def test_normalized_false_is_the_reference_raw_mean_truncated_to_dimensions(
    api: Api, refs: dict[str, Reference], model: str, task: str | None, dimensions: int | None
) -> None:
    ref = refs[model]
    body: dict[str, Any] = {"model": model, "input": TEXTS, "normalized": False, "encoding_format": "float"}
    body.update({k: v for k, v in (("task", task), ("dimensions", dimensions)) if v is not None})
    got = [decode_item(v) for v in items_in_order(api.embeddings(body), len(TEXTS))]
    defaults = MODEL_DEFAULTS[model]
    run_task = task or defaults.get("default_task")
    for i, text in enumerate(TEXTS):
        raw = ref.raw(text, run_task, instructions=defaults.get("instructions", True))
        want = raw[:dimensions] if dimensions else raw
        assert_close(got[i], want, f"input {i}", relative=True)
        assert abs(np.linalg.norm(got[i]) - 1.0) > 1e-3, "the raw vector came back normalized"
        unit = got[i] / np.linalg.norm(got[i])
        assert_close(unit, ref.embed(text, run_task, dimensions=dimensions,
                                     instructions=defaults.get("instructions", True)), f"input {i} renormalized")


# ================================================================================================
# 6. Late chunking: one sequence, each input's span pooled (inside Triton); context changes vectors
# ================================================================================================


@pytest.mark.parametrize(
    ("model", "task"),
    [(TINY, "retrieval.passage"), (TINY, "text-matching"), (TINY, "retrieval.query"), (DEMO, None), (PLAIN, None)],
)
def test_late_chunking_equals_pooling_the_spans_of_the_concatenated_sequence_and_differs_from_alone(
    api: Api, refs: dict[str, Reference], model: str, task: str | None
) -> None:
    ref = refs[model]
    defaults = MODEL_DEFAULTS[model]
    run_task = (task or defaults.get("default_task")) if model != DEMO else None
    body: dict[str, Any] = {"model": model, "input": TEXTS, "late_chunking": True, "encoding_format": "float"}
    if task:
        body["task"] = task
    result = api.embeddings(body)
    got = [decode_item(v) for v in items_in_order(result, len(TEXTS))]

    # The in-test reference, spelled out: <s> + instruction (its trailing space would merge into
    # the next word, so it is tokenized without it) + contents + </s> through ONNX Runtime.
    head, tail = specials(ref)
    instruction = ref.instruction(run_task).rstrip() if defaults.get("instructions", True) else ""
    sequence = [*head, *(content_ids(ref, instruction) if instruction else [])]
    spans = []
    for text in TEXTS:
        content = content_ids(ref, text)
        spans.append((len(sequence), len(sequence) + len(content)))
        sequence += content
    sequence += tail
    hidden = ref.hidden(sequence, run_task)
    for i, (start, stop) in enumerate(spans):
        pooled = hidden[start:stop].mean(axis=0)
        assert_close(got[i], pooled / np.linalg.norm(pooled), f"late-chunked input {i}")
    assert result["usage"]["prompt_tokens"] == len(sequence)

    alone_body = {**body, "input": [TEXTS[0]]}
    for i, text in enumerate(TEXTS):
        alone = decode_item(items_in_order(api.embeddings({**alone_body, "input": [text]}), 1)[0])
        assert float(np.abs(alone - got[i]).max()) > 1e-3, f"input {i}: the other inputs' context changed nothing"
        plain_body = {k: v for k, v in body.items() if k != "late_chunking"}
        plain = decode_item(items_in_order(api.embeddings({**plain_body, "input": [text]}), 1)[0])
        assert float(np.abs(plain - got[i]).max()) > 1e-3, f"input {i}: late chunking equals the plain vector"


def test_late_chunking_with_token_id_inputs_pools_their_spans(api: Api, tiny_reference: Reference) -> None:
    lists = [content_ids(tiny_reference, t) for t in TEXTS]
    for task in ("separation", "retrieval.passage"):
        result = api.embeddings({"model": TINY, "input": lists, "late_chunking": True, "task": task,
                                 "encoding_format": "float"})
        want = expected_vectors(tiny_reference, lists, task=task, late_chunking=True)
        for i, item in enumerate(items_in_order(result, len(lists))):
            assert_close(decode_item(item), want.vectors[i], f"{task} input {i}")
        assert result["usage"]["prompt_tokens"] == want.tokens


def test_late_chunking_fits_exactly_max_tokens_content_tokens(tight: Api, tiny_reference: Reference) -> None:
    lists = [[7] * 10, [8] * (SHORT_MAX_TOKENS - 10)]
    result = tight.embeddings({"model": TINY16, "input": lists, "late_chunking": True, "encoding_format": "float"})
    want = expected_vectors(tiny_reference, lists, late_chunking=True)
    for i, item in enumerate(items_in_order(result, 2)):
        assert_close(decode_item(item), want.vectors[i], f"input {i}")
    over = tight.post("/v1/embeddings", {"model": TINY16, "input": [[7] * 10, [8] * (SHORT_MAX_TOKENS - 9)],
                                         "late_chunking": True})
    assert_openai_error(over, 400, "invalid_request_error", "input", "context_length_exceeded")


def test_concurrent_late_chunked_and_plain_requests_get_their_own_vectors(api: Api) -> None:
    """Late-chunked requests (SPANS) and plain ones meet in Triton's batcher; nothing may mix up."""
    bodies = []
    for k in range(1, 5):
        bodies.append({"model": TINY, "input": TEXTS[:k], "late_chunking": True, "encoding_format": "float"})
        bodies.append({"model": TINY, "input": TEXTS[:k], "encoding_format": "float", "task": "separation"})
        bodies.append({"model": DEMO, "input": TEXTS[:k], "late_chunking": True, "encoding_format": "float"})
    alone = [api.embeddings(b)["data"] for b in bodies]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=api.base_url, headers={"Authorization": f"Bearer {API_KEY}"},
                                     timeout=120) as client:
            return await asyncio.gather(*(client.post("/v1/embeddings", json=b) for b in bodies * 3))

    for i, response in enumerate(asyncio.run(burst())):
        assert response.status_code == 200, response.text
        got = np.array([d["embedding"] for d in response.json()["data"]])
        want = np.array([d["embedding"] for d in alone[i % len(bodies)]])
        assert got.shape == want.shape
        assert float(np.abs(got - want).max()) < 1e-5, f"request {i % len(bodies)} changed under concurrency"


# ================================================================================================
# 7. Token-array input: fed to the model exactly as sent (no specials, no instruction added)
# ================================================================================================


@pytest.mark.parametrize(("model", "task"), [*[(TINY, t) for t in JINA_TASKS], (TINY, None), (DEMO, None),
                                             (PLAIN, "retrieval.query")])
def test_the_ids_tokenize_returns_give_the_texts_own_vector(
    api: Api, refs: dict[str, Reference], model: str, task: str | None
) -> None:
    extra = {"task": task} if task else {}
    strings = items_in_order(api.embeddings({"model": model, "input": TEXTS, "encoding_format": "float",
                                             **extra}), len(TEXTS))
    tokenized = api.post("/tokenize", {"model": model, "input": TEXTS, **extra}).json()["tokens"]
    lists = [[t["id"] for t in seq] for seq in tokenized]
    as_lists = api.embeddings({"model": model, "input": lists, "encoding_format": "float", **extra})
    want = expected_vectors(refs[model], TEXTS, task=task, **MODEL_DEFAULTS[model])
    assert as_lists["usage"]["prompt_tokens"] == want.tokens
    for i in range(len(TEXTS)):
        one = items_in_order(api.embeddings({"model": model, "input": lists[i], "encoding_format": "float",
                                             **extra}), 1)[0]
        for label, got in (("int[][]", items_in_order(as_lists, len(TEXTS))[i]), ("int[]", one)):
            assert_close(decode_item(got), decode_item(strings[i]), f"{label} vs string, input {i}", atol=1e-5)
        assert_close(decode_item(strings[i]), want.vectors[i], f"string input {i} vs the Reference")


def test_token_ids_get_nothing_added(api: Api, tiny_reference: Reference) -> None:
    """Content ids alone (no `<s>`/`</s>`, no instruction) are embedded as exactly that sequence."""
    text = TEXTS[1]
    bare = content_ids(tiny_reference, text)
    for task in ("retrieval.query", "separation"):
        got = decode_item(items_in_order(api.embeddings(
            {"model": TINY, "input": bare, "task": task, "encoding_format": "float"}), 1)[0])
        want = expected_vectors(tiny_reference, [bare], task=task)
        assert want.tokens == len(bare)
        assert_close(got, want.vectors[0], f"{task}: the bare ids as given")
        string = decode_item(items_in_order(api.embeddings(
            {"model": TINY, "input": text, "task": task, "encoding_format": "float"}), 1)[0])
        assert float(np.abs(got - string).max()) > 1e-3, f"{task}: bare ids were wrapped like the text"


def test_tokenize_without_special_tokens_leaves_out_the_specials_only(api: Api, tiny_reference: Reference) -> None:
    body = {"model": TINY, "input": TEXTS[0], "task": "retrieval.query"}
    full = [t["id"] for t in api.post("/tokenize", body).json()["tokens"][0]]
    bare = api.post("/tokenize", {**body, "add_special_tokens": False}).json()["tokens"][0]
    head, tail = specials(tiny_reference)
    assert full == [*head, *[t["id"] for t in bare], *tail]
    assert not any(t["special"] for t in bare)


# ================================================================================================
# 8. /tokenize, /v1/models, /info
# ================================================================================================


@pytest.mark.parametrize(("model", "task"), [(TINY, None), *[(TINY, t) for t in JINA_TASKS], (DEMO, None),
                                             (PLAIN, None), (PLAIN, "retrieval.passage")])
def test_tokenize_returns_the_ids_the_embedding_path_uses_with_pieces_and_special_flags(
    api: Api, refs: dict[str, Reference], model: str, task: str | None
) -> None:
    ref = refs[model]
    defaults = MODEL_DEFAULTS[model]
    run_task = task or defaults.get("default_task")
    instructions = defaults.get("instructions", True)
    body: dict[str, Any] = {"model": model, "input": TEXTS[:3]}
    if task:
        body["task"] = task
    response = api.post("/tokenize", body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["model"] == model
    assert len(result["tokens"]) == 3
    embedded = api.embeddings({**body, "input": TEXTS[:3], "encoding_format": "float"})
    total = 0
    for text, tokens in zip(TEXTS[:3], result["tokens"]):
        prefix = ref.instruction(run_task) if instructions and run_task else ""
        encoding = ref.tokenizer.encode(prefix + text)
        assert [t["id"] for t in tokens] == ref.ids(text, run_task, instructions=instructions)
        assert [t["text"] for t in tokens] == list(encoding.tokens)
        assert [t["special"] for t in tokens] == [True] + [False] * (len(tokens) - 2) + [True]
        for t, (start, stop) in zip(tokens, encoding.offsets):
            if t["special"]:
                assert t["start"] is None and t["stop"] is None, t
            else:
                assert (t["start"], t["stop"]) == (start, stop), t
        total += len(tokens)
    assert embedded["usage"]["prompt_tokens"] == total


def test_tokenize_accepts_a_single_string(api: Api, tiny_reference: Reference) -> None:
    result = api.post("/tokenize", {"model": TINY, "input": "Hello world", "task": "separation"}).json()
    assert [t["id"] for t in result["tokens"][0]] == tiny_reference.ids("Hello world", "separation")


AUTO_PRESETS = {f"{TINY}-query": "retrieval.query", f"{TINY}-passage": "retrieval.passage",
                f"{TINY}-separation": "separation", f"{TINY}-classification": "classification",
                f"{TINY}-text-matching": "text-matching"}


def test_v1_models_lists_every_served_model_then_every_preset_each_with_its_own_card(api: Api) -> None:
    listed = api.get("/v1/models").json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == [TINY, DEMO, PLAIN, *AUTO_PRESETS, PASSAGE32, ALIAS]
    roots = {TINY: TINY, DEMO: DEMO, PLAIN: PLAIN, **dict.fromkeys(AUTO_PRESETS, TINY), PASSAGE32: TINY, ALIAS: DEMO}
    for name, root in roots.items():
        card = api.get(f"/v1/models/{name}")
        assert card.status_code == 200, card.text
        assert card.json() == {"id": name, "created": 0, "owned_by": "embed-appliance", "object": "model",
                               "root": root, "parent": None if name == root else root}
        assert card.json() in listed["data"]


@pytest.mark.parametrize(("model", "fields", "task", "dims"), [
    *[(name, {}, task, None) for name, task in AUTO_PRESETS.items()],
    (f"{TINY}-passage", {"task": "retrieval.passage", "input_type": "document", "dimensions": 32}, "retrieval.passage",
     32),
    (PASSAGE32, {}, "retrieval.passage", 32),
    (PASSAGE32, {"dimensions": 32, "normalized": True}, "retrieval.passage", 32),
    (TINY, {"input_type": "query"}, "retrieval.query", None),
    (TINY, {"input_type": "passage"}, "retrieval.passage", None),
    (TINY, {"input_type": "document", "task": "retrieval.passage"}, "retrieval.passage", None),
])
def test_presets_and_input_type_embed_as_the_model_with_that_task(
    api: Api, tiny_reference: Reference, model: str, fields: dict[str, Any], task: str, dims: int | None
) -> None:
    result = api.embeddings({"model": model, "input": TEXTS, "encoding_format": "float", **fields})
    assert result["model"] == model  # echoed as sent, as OpenAI does
    want = expected_vectors(tiny_reference, TEXTS, task=task, dimensions=dims)
    for i, item in enumerate(items_in_order(result, len(TEXTS))):
        assert_close(decode_item(item), want.vectors[i], f"{model} {fields} input {i}")
    assert result["usage"]["prompt_tokens"] == want.tokens


def test_a_presets_encoding_format_is_a_default_the_request_overrides(api: Api, demo_reference: Reference) -> None:
    want = expected_vectors(demo_reference, TEXTS[:2])
    plain = api.embeddings({"model": ALIAS, "input": TEXTS[:2]})
    assert all(isinstance(item["embedding"], list) for item in plain["data"]), "the preset's float default"
    b64 = api.embeddings({"model": ALIAS, "input": TEXTS[:2], "encoding_format": "base64"})
    assert all(isinstance(item["embedding"], str) for item in b64["data"]), "the request's own format"
    for result in (plain, b64):
        for i, item in enumerate(items_in_order(result, 2)):
            assert_close(decode_item(item), want.vectors[i], f"alias input {i}")


def test_tokenize_takes_presets_and_input_type(api: Api, tiny_reference: Reference) -> None:
    for body in ({"model": f"{TINY}-passage"}, {"model": TINY, "input_type": "passage"}, {"model": PASSAGE32}):
        tokens = api.post("/tokenize", {**body, "input": "Hello world"}).json()["tokens"][0]
        assert [t["id"] for t in tokens] == tiny_reference.ids("Hello world", "retrieval.passage"), body


def test_info_lists_the_presets(api: Api) -> None:
    presets = {p["name"]: p for p in api.get("/info").json()["presets"]}
    assert list(presets) == [*AUTO_PRESETS, PASSAGE32, ALIAS]
    assert presets[f"{TINY}-query"] == {"name": f"{TINY}-query", "model": TINY, "task": "retrieval.query",
                                        "dimensions": None, "normalized": None, "embedding_type": None,
                                        "encoding_format": None, "automatic": True}
    assert (presets[PASSAGE32]["dimensions"], presets[PASSAGE32]["automatic"]) == (32, False)
    assert presets[ALIAS]["encoding_format"] == "float"


def test_info_lists_tasks_dimensions_max_tokens_batching_and_instances_as_compiled(
    api: Api, tight: Api, refs: dict[str, Reference]
) -> None:
    info = api.get("/info").json()
    models = {m["name"]: m for m in info["models"]}
    assert list(models) == [TINY, DEMO, PLAIN]
    tiny_instructions = refs[TINY].config["task_instructions"]
    assert models[TINY] == {
        "name": TINY, "kind": "jina-v3", "tasks": list(JINA_TASKS), "default_task": "retrieval.query",
        "task_instructions": tiny_instructions, "dimensions": TINY_DIMS, "max_tokens": 8192, "hidden_size": 64,
        "engine": {"name": "onnxruntime", "precision": "fp32", "reason": "precision = fp32 on onnxruntime (engine "
                   "auto: ONNX Runtime fp32 measured as fast as OpenVINO f32)", "fidelity": None,
                   "max_batch_tokens": MAIN_BATCHING["max_batch_tokens"]},
    }
    assert models[DEMO]["kind"] == "sentence-transformer"
    assert (models[DEMO]["engine"]["name"], models[DEMO]["engine"]["precision"]) == ("onnxruntime", "int8")
    assert "already quantized" in models[DEMO]["engine"]["reason"]
    assert models[DEMO]["tasks"] == [] and models[DEMO]["default_task"] is None
    assert models[DEMO]["dimensions"] == [DEMO_HIDDEN] and models[DEMO]["hidden_size"] == DEMO_HIDDEN
    assert models[DEMO]["max_tokens"] == 256 - 2  # sentence_bert_config.json's max_seq_length, [CLS]/[SEP] in it
    assert models[PLAIN]["default_task"] == "separation"
    assert models[PLAIN]["dimensions"] == [32]
    assert not any(models[PLAIN]["task_instructions"].values()), "task_instructions = false still lists some"
    assert info["batching"] == {**MAIN_BATCHING, "preferred_batch_sizes": []}
    assert info["limits"]["max_inputs_per_request"] == 2048
    assert info["limits"]["max_tokens_per_request"] == 300_000
    assert info["limits"]["max_body_bytes"] == 16 * 1024 * 1024
    assert info["instance_count"] == 1
    assert info["threads_per_instance"] >= 1
    assert isinstance(info["version"], str) and info["version"]

    tight_info = tight.get("/info").json()
    assert {k: tight_info["limits"][k] for k in TIGHT_LIMITS} == TIGHT_LIMITS
    assert [(m["name"], m["max_tokens"]) for m in tight_info["models"]] == [(TINY16, SHORT_MAX_TOKENS),
                                                                          (DEMO16, SHORT_MAX_TOKENS)]


# ================================================================================================
# 9. Several models from one embed.toml, routed by `model`
# ================================================================================================


def test_each_model_in_one_embed_toml_answers_with_its_own_vectors(api: Api, refs: dict[str, Reference]) -> None:
    texts = TEXTS[:2]
    got = {m: [decode_item(v) for v in items_in_order(api.embeddings(
        {"model": m, "input": texts, "encoding_format": "float"}), 2)] for m in (TINY, DEMO, PLAIN)}
    for model in (TINY, DEMO, PLAIN):
        want = expected_vectors(refs[model], texts, **MODEL_DEFAULTS[model])
        for i in range(2):
            assert_close(got[model][i], want.vectors[i], f"{model} input {i}")
    assert len(got[TINY][0]) == 64 and len(got[DEMO][0]) == DEMO_HIDDEN and len(got[PLAIN][0]) == 64
    # Same weights, different embed.toml settings: tiny-plain must not answer as tiny-jina.
    assert float(np.abs(got[TINY][0] - got[PLAIN][0]).max()) > 1e-3
    query = {"input": texts[0], "task": "retrieval.query", "encoding_format": "float"}
    with_instruction = decode_item(api.embeddings({**query, "model": TINY})["data"][0]["embedding"])
    without = decode_item(api.embeddings({**query, "model": PLAIN})["data"][0]["embedding"])
    assert float(np.abs(with_instruction - without).max()) > 1e-3, "task_instructions = false was not applied"
    assert_close(without, expected_vectors(refs[PLAIN], texts[:1], task="retrieval.query", instructions=False)
                 .vectors[0], "tiny-plain, retrieval.query without its instruction")

    async def interleaved() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=api.base_url, headers={"Authorization": f"Bearer {API_KEY}"},
                                     timeout=120) as client:
            return await asyncio.gather(*(
                client.post("/v1/embeddings", json={"model": m, "input": texts, "encoding_format": "float"})
                for _ in range(4) for m in (TINY, DEMO, PLAIN)))

    for i, response in enumerate(asyncio.run(interleaved())):
        model = (TINY, DEMO, PLAIN)[i % 3]
        assert response.status_code == 200, response.text
        assert response.json()["model"] == model
        for j, item in enumerate(items_in_order(response.json(), 2)):
            assert_close(decode_item(item), got[model][j], f"concurrent {model} input {j}", atol=1e-5)


# ================================================================================================
# 10. Backpressure: beyond max_concurrent_requests -> 429 + Retry-After, in OpenAI's shape
# ================================================================================================


def test_a_request_beyond_max_concurrent_requests_is_429_with_retry_after(tight: Api) -> None:
    """Hold the only permit with a request whose body is still arriving, then ask again.

    The permit is taken before the body is read, so a request stuck mid-body holds it. If the held
    request itself got answered (it lost a race for the permit), open it again.
    """
    assert TIGHT_LIMITS["max_concurrent_requests"] == 1
    url = urlsplit(tight.base_url)
    assert url.hostname is not None and url.port is not None
    body = json.dumps({"model": TINY16, "input": "held", "encoding_format": "float"}).encode()
    head = (f"POST /v1/embeddings HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    refused, answer = None, b""
    for _attempt in range(20):
        held = socket.create_connection((url.hostname, url.port), timeout=30)
        try:
            held.sendall(head + body[:5])
            answered, _, _ = select.select([held], [], [], 0.3)  # an answer now = it did not get the permit
            if answered:
                continue
            response = tight.post("/v1/embeddings", {"model": TINY16, "input": "second"})
            if response.status_code != 429:
                assert response.status_code == 200, response.text
                continue  # the held request was not admitted yet; try again
            refused = response
            held.sendall(body[5:])
            while chunk := held.recv(65536):
                answer += chunk
            break
        finally:
            held.close()
    assert refused is not None, "no 429 while the only permit was held"
    error = assert_openai_error(refused, 429, "rate_limit_error", code="overloaded")
    assert "1 concurrent" in error["message"], error
    assert int(refused.headers["Retry-After"]) >= 1
    status_line = answer.split(b"\r\n", 1)[0]
    assert b" 200 " in status_line, answer[:300]  # the held request completes normally
    assert tight.post("/v1/embeddings", {"model": TINY16, "input": "after"}).status_code == 200


# ================================================================================================
# 11. OpenAPI 3.1: valid, every endpoint, and real requests/responses validate against it
# ================================================================================================


@pytest.fixture(scope="module")
def openapi_doc(api: Api) -> dict[str, Any]:
    response = api.get("/openapi.json")
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def component_validator(doc: dict[str, Any], name: str) -> jsonschema_rs.Draft202012Validator:
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema_rs.Draft202012Validator(root)


JSON_ENDPOINTS = {
    ("post", "/v1/embeddings"), ("post", "/tokenize"), ("get", "/v1/models"), ("get", "/v1/models/{model_id}"),
    ("get", "/info"), ("get", "/health"), ("get", "/ready"),
}


def test_openapi_json_is_valid_openapi_3_1_with_the_json_endpoints(openapi_doc: dict[str, Any]) -> None:
    assert openapi_doc["openapi"].startswith("3.1")
    schema = schemathesis.openapi.from_dict(openapi_doc)
    schema.validate()  # against the OpenAPI 3.1 meta-schema; raises on any violation
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    documented = {(op.method.lower(), op.path) for op in operations}
    assert JSON_ENDPOINTS <= documented, f"missing: {JSON_ENDPOINTS - documented}"
    for name in openapi_doc["components"]["schemas"]:
        component_validator(openapi_doc, name)  # every component is a valid 2020-12 schema


def test_real_requests_and_responses_validate_against_the_openapi_document(
    api: Api, tiny_reference: Reference, openapi_doc: dict[str, Any]
) -> None:
    request_schema = component_validator(openapi_doc, "EmbeddingRequest")
    response_schema = component_validator(openapi_doc, "EmbeddingResponse")
    error_schema = component_validator(openapi_doc, "ErrorResponse")
    documented = openapi_doc["paths"]["/v1/embeddings"]["post"]["responses"]
    good = [
        {"model": TINY, "input": "a"},
        {"model": TINY, "input": TEXTS, "task": "retrieval.query", "dimensions": 32, "encoding_format": "base64"},
        {"model": TINY, "input": [[5, 6], [7]], "embedding_type": "binary", "normalized": False},
        {"model": TINY, "input": [5, 6, 7], "embedding_type": "ubinary", "late_chunking": True},
        {"model": DEMO, "input": TEXTS, "truncate": True, "user": "someone", "unknown_field": 1},
    ]
    for body in good:
        request_schema.validate(body)
        response = api.post("/v1/embeddings", body)
        assert response.status_code == 200, response.text
        response_schema.validate(response.json())
    bad = [case for case in BAD if case.path == "/v1/embeddings" and case.method == "POST" and case.raw is None
           and case.stack == "api" and not case.headers]
    for case in bad:
        response = send(api, case)
        assert str(response.status_code) in documented, f"{case.id}: {response.status_code} not documented"
        error_schema.validate(response.json())
        if response.status_code == 400 and response.json()["error"]["message"].startswith("invalid request:"):
            assert not request_schema.is_valid(case.body), f"{case.id}: the schema accepts what the server refuses"
    others = [
        ("post", "/tokenize", {"model": TINY, "input": ["a", "b"], "task": "separation"}, "TokenizeResponse"),
        ("get", "/v1/models", None, "ModelList"),
        ("get", f"/v1/models/{TINY}", None, "ModelCard"),
        ("get", "/info", None, "Info"),
        ("get", "/health", None, "Status"),
        ("get", "/ready", None, "Status"),
    ]
    for method, path, body, component in others:
        response = api.post(path, body) if method == "post" else api.get(path)
        assert response.status_code == 200, response.text
        component_validator(openapi_doc, component).validate(response.json())
    component_validator(openapi_doc, "TokenizeRequest").validate(others[0][2])


# ================================================================================================
# 12. Property-test strategies: arbitrary JSON, field-aware bodies, mutated valid bodies
# ================================================================================================

_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_texts = st.text(max_size=24) | st.sampled_from(["", " ", "\u200b", "<s>", "</s>", "<mask>", "\x00", "Ünïcödé 🙂"])
_token_ids = st.integers(min_value=-3, max_value=TINY_VOCAB + 3) | st.sampled_from(
    [0, 1, 2, 3, 101, 102, 2999, 3000, 30521, 30522, 2**31, 2**63 - 1, 2**63, -(2**63), 2**64])
_input_values = st.one_of(
    _texts,
    st.lists(_texts, max_size=5),
    st.lists(_token_ids, max_size=8),
    st.lists(st.lists(_token_ids, max_size=6), max_size=4),
    st.lists(_texts | _token_ids | st.lists(_token_ids, max_size=3), max_size=4),
    json_values,
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "input": _input_values,
    "model": st.sampled_from([TINY, DEMO, PLAIN]) | st.text(max_size=10) | json_values,
    "encoding_format": st.sampled_from(["float", "base64"]) | json_values,
    "embedding_type": st.sampled_from(["float", "base64", "binary", "ubinary"]) | json_values,
    "dimensions": st.sampled_from([32, 64, DEMO_HIDDEN]) | st.integers(min_value=-5, max_value=2**65) | json_values,
    "task": st.sampled_from(JINA_TASKS) | st.text(max_size=10) | json_values,
    "normalized": st.booleans() | json_values,
    "truncate": st.booleans() | json_values,
    "late_chunking": st.booleans() | json_values,
    "user": st.text(max_size=8) | json_values,
}
VALID_BODIES = [
    {"model": TINY, "input": "hello"},
    {"model": TINY, "input": TEXTS, "task": "retrieval.query", "dimensions": 32, "embedding_type": "binary"},
    {"model": DEMO, "input": [[101, 2000], [7592]], "encoding_format": "base64"},
    {"model": TINY, "input": [5, 6, 7], "late_chunking": True, "normalized": False},
    {"model": PLAIN, "input": ["a", "b"], "truncate": True, "embedding_type": "ubinary"},
]


@st.composite
def mutated_valid_body(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = dict(draw(st.sampled_from(VALID_BODIES)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        action = draw(st.sampled_from(["replace", "replace-typed", "delete", "add"]))
        key = draw(st.sampled_from(sorted(FIELDS)))
        if action == "delete":
            body.pop(key, None)
        elif action == "replace":
            body[key] = draw(json_values)
        elif action == "replace-typed":
            body[key] = draw(FIELDS[key])
        else:
            body[draw(st.text(max_size=8))] = draw(json_values)
    return body


json_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional=FIELDS),
    st.fixed_dictionaries({"model": FIELDS["model"], "input": _input_values},
                          optional={k: v for k, v in FIELDS.items() if k not in ("model", "input")}),
    mutated_valid_body(),
)


def deep_nesting(depth: int, objects: bool) -> str:
    """`[[[...]]]` or `{"k": {"k": ... 1}}`, `depth` levels: valid JSON that recursive decoders choke on."""
    return '{"k": ' * depth + "1" + "}" * depth if objects else "[" * depth + "]" * depth


@st.composite
def request_bodies(draw: st.DrawFn) -> tuple[bytes, Any]:
    """(raw bytes, the JSON value, or UNCHECKED for bodies the schema checks cannot judge)."""
    kind = draw(st.integers(min_value=0, max_value=9))
    if kind == 0:  # a cut or corrupted JSON text
        text = json.dumps(draw(json_bodies)).encode()
        cut = draw(st.integers(min_value=0, max_value=len(text)))
        return text[:cut] + draw(st.binary(max_size=4)), UNCHECKED
    if kind == 1:  # a valid body plus a deeply nested value under some other key (ignored, as OpenAI ignores it)
        base = draw(st.sampled_from(VALID_BODIES))
        key = draw(st.sampled_from(["metadata", "x", "extra"]) | st.text(max_size=6).filter(lambda k: k not in FIELDS))
        nested = deep_nesting(draw(st.integers(min_value=10, max_value=3000)), draw(st.booleans()))
        body = json.dumps(base)[:-1] + f", {json.dumps(key)}: {nested}}}"
        return body.encode(), UNCHECKED
    value = draw(json_bodies)
    return json.dumps(value, ensure_ascii=draw(st.booleans())).encode(), value


UNCHECKED = object()
ALLOWED_ERROR_STATUS = {400, 404, 413, 415, 422}


def has_integral_float(value: Any) -> bool:
    """A float with no fraction anywhere in `value` (32.0): an "integer" to JSON Schema, not to msgspec."""
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, list):
        return any(has_integral_float(v) for v in value)
    if isinstance(value, dict):
        return any(has_integral_float(v) for v in value.values())
    return False


@pytest.fixture(scope="module")
def fuzz_checks(openapi_doc: dict[str, Any]) -> Callable[[httpx.Response, Any], None]:
    request_schema = component_validator(openapi_doc, "EmbeddingRequest")
    response_schema = component_validator(openapi_doc, "EmbeddingResponse")
    error_schema = component_validator(openapi_doc, "ErrorResponse")

    def check(response: httpx.Response, value: Any) -> None:
        assert response.status_code < 500, f"{response.status_code}: {response.text}"
        if response.status_code == 200:
            response_schema.validate(response.json())
            if value is not UNCHECKED:
                assert isinstance(value, dict) and request_schema.is_valid(value), "200 for a body the schema refuses"
                items = value["input"]
                count = 1 if isinstance(items, str) or isinstance(items[0], int) else len(items)
                items_in_order(response.json(), count)
            return
        assert response.status_code in ALLOWED_ERROR_STATUS, f"{response.status_code}: {response.text}"
        error = assert_openai_error(response, response.status_code)
        error_schema.validate(response.json())
        # Known divergence (reported): JSON Schema's "integer" includes 32.0, msgspec's decoder refuses it.
        if value is not UNCHECKED and not has_integral_float(value) and request_schema.is_valid(value):
            assert not error["message"].startswith("invalid request:"), (
                f"the OpenAPI schema accepts {value!r} but the decoder refuses it: {error['message']}")

    return check


def test_the_property_strategy_reaches_successes_and_each_kind_of_refusal(
    api: Api, fuzz_checks: Callable[[httpx.Response, Any], None]
) -> None:
    """The fuzz test is only worth something if its bodies reach past the decoder: check a sample."""
    statuses: set[int] = set()

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body=st.one_of(mutated_valid_body(), st.sampled_from(VALID_BODIES)))
    def sample(body: dict[str, Any]) -> None:
        response = api.post("/v1/embeddings", body)
        fuzz_checks(response, body)
        statuses.add(response.status_code)

    sample()
    assert 200 in statuses and 400 in statuses, statuses


# ================================================================================================
# 13. Hostile bodies: each test names the failure it guards against (once a 500, now a 400)
# ================================================================================================


@pytest.mark.parametrize("path", ["/v1/embeddings", "/tokenize"])
@pytest.mark.parametrize("objects", [False, True], ids=["arrays", "objects"])
def test_a_deeply_nested_value_in_an_ignored_field_is_a_400_not_a_500(api: Api, path: str, objects: bool) -> None:
    """msgspec raises RecursionError (not DecodeError) past ~1000 levels while skipping an unknown
    field; routes.decode() catches only ValidationError/DecodeError, so it became a 500."""
    raw = f'{{"model": "{TINY}", "input": "a", "metadata": {deep_nesting(1500, objects)}}}'.encode()
    assert len(raw) < 16 * 1024, "well under max_body_bytes: the size limit cannot be what refuses it"
    assert_openai_error(api.post(path, content=raw), 400, "invalid_request_error")
    shallow = f'{{"model": "{TINY}", "input": "a", "metadata": {deep_nesting(50, objects)}}}'.encode()
    assert api.post(path, content=shallow).status_code == 200  # ignored, as OpenAI ignores unknown fields


def test_openapi_json_also_documents_the_metrics_endpoint(openapi_doc: dict[str, Any]) -> None:
    """GET /metrics is served (Prometheus text) but is missing from the published document."""
    assert "get" in openapi_doc["paths"].get("/metrics", {}), sorted(openapi_doc["paths"])


# ================================================================================================
# 14. Property: arbitrary JSON bodies never get a 5xx; every refusal is in OpenAI's error shape
# ================================================================================================


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(body=request_bodies())
def test_arbitrary_json_bodies_never_get_a_5xx_and_every_refusal_is_an_openai_error(
    api: Api, fuzz_checks: Callable[[httpx.Response, Any], None], body: tuple[bytes, Any]
) -> None:
    raw, value = body
    note(f"body ({len(raw)} bytes): {raw[:200]!r}{' ...' if len(raw) > 200 else ''}")
    fuzz_checks(api.post("/v1/embeddings", content=raw), value)
