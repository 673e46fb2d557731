"""Stacks, clients and an independent expected-vector model for the API tests (test_api, test_clients).

Two real stacks (`appliance serve`: supervisord + tritonserver + gateway), module-scoped:

- `api`: the MAIN stack. Three models from one embed.toml, side by side:
    * `tiny-jina`   the tiny jina-v3-shaped model (5 tasks, hidden 64, dimensions [32, 64], vocab 3000),
    * `minilm`      all-MiniLM-L6-v2 int8, a `sentence-transformer` (no tasks, hidden 384),
    * `tiny-plain`  the SAME tiny folder with `task_instructions = false`, `default_task =
                    "separation"`, `dimensions = [32]` and no presets (routing must pick its settings),
    * presets: `tiny-jina`'s automatic ones (`tiny-jina-query`, `tiny-jina-passage`, ...), and two
      declared: `tiny-passage-32` (tiny-jina, retrieval.passage, 32 dimensions) and
      `text-embedding-3-small` (minilm, encoding_format float),
  behind one API key (plaintext `key`, so clients authenticate as users do).
- `tight`: a small stack with tight `[limits]` (4 inputs, 50 tokens per request, 2048-byte bodies,
  ONE concurrent request) serving `tiny16` (tiny folder, `max_tokens = 16`) and `minilm16`
  (demo folder, `max_tokens = 16`), open API.

`expected_vectors` computes what a request must return from `harness.reference.Reference`
(ONNX Runtime in-process, one sequence at a time, no padding) — it shares no code with the appliance.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from harness.reference import Reference
from harness.stack import Stack, model_toml, ports_toml

F64 = npt.NDArray[np.float64]

TINY = "tiny-jina"
DEMO = "minilm"
PLAIN = "tiny-plain"  # tiny folder, task_instructions = false, default_task = separation, dimensions [32]
PASSAGE32 = "tiny-passage-32"  # preset: tiny-jina, task retrieval.passage, dimensions 32
ALIAS = "text-embedding-3-small"  # preset: minilm, encoding_format float
TINY16 = "tiny16"  # tight stack: tiny folder, max_tokens = 16
DEMO16 = "minilm16"  # tight stack: demo folder, max_tokens = 16
API_KEY = "sk-api-tests-7c1e0b"

JINA_TASKS = ("retrieval.query", "retrieval.passage", "separation", "classification", "text-matching")
TINY_VOCAB = 3000
TINY_DIMS = [32, 64]
DEMO_HIDDEN = 384

MAIN_BATCHING = {"max_batch_size": 32, "max_queue_delay_us": 2000, "max_batch_tokens": 4096}
TIGHT_LIMITS = {
    "max_inputs_per_request": 4,
    "max_tokens_per_request": 50,
    "max_body_bytes": 2048,
    "max_concurrent_requests": 1,
}
SHORT_MAX_TOKENS = 16

TEXTS = [
    "Hello world",
    "What is the capital of France?",
    "Paris is the capital and the largest city of France.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
]


def _table(name: str, values: dict[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())


@dataclass
class Api:
    """One running stack plus an HTTP client that sends its key."""

    stack: Stack
    key: str | None
    client: httpx.Client

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    def post(self, path: str, body: Any = None, *, content: bytes | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        if content is not None:
            merged = {"Content-Type": "application/json", **(headers or {})}
            return self.client.post(path, content=content, headers=merged)
        return self.client.post(path, json=body, headers=headers)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/embeddings, assert 200, return the JSON body."""
        response = self.post("/v1/embeddings", body)
        assert response.status_code == 200, f"{body} -> {response.status_code} {response.text}"
        result: dict[str, Any] = response.json()
        return result


def _start(tmp: Path, toml: str, key: str | None) -> Iterator[Api]:
    stack = Stack(tmp, toml).start()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=120.0) as client:
            yield Api(stack, key, client)
    finally:
        code = stack.stop()
        assert code == 0, f"appliance exited with {code} on SIGTERM:\n{stack.log()[-3000:]}"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path, demo_model_dir: Path) -> Iterator[Api]:
    toml = (
        ports_toml()
        + _table("batching", MAIN_BATCHING)
        + "[auth]\n"
        + f'keys = [{{name = "api-tests", key = "{API_KEY}"}}]\n'
        + model_toml(TINY, tiny_jina_dir, precision="fp32")
        + model_toml(DEMO, demo_model_dir)
        + model_toml(PLAIN, tiny_jina_dir, precision="fp32", task_instructions=False, default_task="separation",
                     dimensions=[32], task_presets=False)
        + f'[[presets]]\nname = "{PASSAGE32}"\nmodel = "{TINY}"\ntask = "retrieval.passage"\ndimensions = 32\n'
        + f'[[presets]]\nname = "{ALIAS}"\nmodel = "{DEMO}"\nencoding_format = "float"\n'
    )
    yield from _start(tmp_path_factory.mktemp("api-main"), toml, API_KEY)


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path, demo_model_dir: Path) -> Iterator[Api]:
    toml = (
        ports_toml()
        + _table("limits", TIGHT_LIMITS)
        + model_toml(TINY16, tiny_jina_dir, precision="fp32", max_tokens=SHORT_MAX_TOKENS)
        + model_toml(DEMO16, demo_model_dir, max_tokens=SHORT_MAX_TOKENS)
    )
    yield from _start(tmp_path_factory.mktemp("api-tight"), toml, None)


@pytest.fixture(scope="module")
def tiny_reference(tiny_jina_dir: Path) -> Reference:
    return Reference(tiny_jina_dir)


@pytest.fixture(scope="module")
def demo_reference(demo_model_dir: Path) -> Reference:
    return Reference(demo_model_dir)


# --- the expected vectors, from the Reference only ------------------------------------------------


def specials(ref: Reference) -> tuple[list[int], list[int]]:
    """The template's special tokens around the content: ([<s>], [</s>]) or ([CLS], [SEP])."""
    ids = list(ref.tokenizer.encode("").ids)
    return ids[:1], ids[1:]


def content_ids(ref: Reference, text: str) -> list[int]:
    return list(ref.tokenizer.encode(text, add_special_tokens=False).ids)


def is_jina(ref: Reference) -> bool:
    return "lora_adaptations" in ref.config


@dataclass(frozen=True)
class Expected:
    vectors: list[F64]
    tokens: int  # what `usage.prompt_tokens` must say


def expected_vectors(
    ref: Reference,
    inputs: Sequence[str] | Sequence[Sequence[int]],
    *,
    task: str | None = None,
    default_task: str = "retrieval.query",
    instructions: bool = True,
    dimensions: int | None = None,
    normalized: bool = True,
    late_chunking: bool = False,
    truncate_to: int | None = None,
) -> Expected:
    """What the appliance must return, computed one sequence at a time by ONNX Runtime.

    Strings get the task instruction (when `instructions`) and the specials; token-id inputs are
    fed exactly as given. Late chunking: `<s>` + the instruction's tokens
    (strings only; its trailing space dropped, as it would merge into the next word) + every
    input's content + `</s>`, each input's span mean-pooled. `truncate_to` keeps that many content
    tokens plus the specials (token ids: that many plus the specials' count, the first ones).
    """
    run_task = (task or default_task) if is_jina(ref) else None
    head, tail = specials(ref)
    instruction = ref.instruction(run_task) if instructions else ""
    raws: list[F64] = []
    tokens = 0
    if late_chunking:
        strings = isinstance(inputs[0], str)
        ids = [*head, *(content_ids(ref, instruction.rstrip()) if instruction.strip() and strings else [])]
        spans = []
        for item in inputs:
            content = content_ids(ref, item) if isinstance(item, str) else list(item)
            spans.append((len(ids), len(ids) + len(content)))
            ids.extend(content)
        ids.extend(tail)
        tokens = len(ids)
        hidden = ref.hidden(ids, run_task)
        raws = [hidden[a:b].mean(axis=0) for a, b in spans]
    else:
        for item in inputs:
            if isinstance(item, str):
                ids = list(ref.tokenizer.encode(instruction + item).ids)
                if truncate_to is not None and len(ids) - len(head) - len(tail) > truncate_to:
                    ids = [*ids[: len(head) + truncate_to], *ids[len(ids) - len(tail):]]
            else:
                ids = list(item)[: None if truncate_to is None else truncate_to + len(head) + len(tail)]
            tokens += len(ids)
            raws.append(ref.hidden(ids, run_task).mean(axis=0))
    out = []
    for raw in raws:
        vector = raw[:dimensions] if dimensions is not None else raw
        out.append(vector / np.linalg.norm(vector) if normalized else vector)
    return Expected(out, tokens)


# --- reading responses ------------------------------------------------------------------------------


def decode_item(embedding: Any) -> F64:
    """A float list, or a base64 string of little-endian float32, as float64."""
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float64)
    return np.asarray(embedding, dtype=np.float64)


def items_in_order(body: dict[str, Any], count: int) -> list[Any]:
    """The `embedding` values in `index` order, checked to be one per input, OpenAI's shape."""
    assert body["object"] == "list"
    data = body["data"]
    assert sorted(d["index"] for d in data) == list(range(count)), [d["index"] for d in data]
    assert all(d["object"] == "embedding" for d in data)
    return [d["embedding"] for d in sorted(data, key=lambda d: d["index"])]


def assert_close(got: F64, want: F64, what: str, *, atol: float = 1e-4, relative: bool = False) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    scale = float(np.abs(want).max()) if relative else 1.0
    diff = float(np.abs(got - want).max())
    assert diff <= atol * scale, f"{what}: max difference {diff:.3e} > {atol * scale:.3e}"


