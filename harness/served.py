"""What the end-to-end tests share: model names, the keys of the main stack, a running stack's client."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from harness.stack import Stack, toml_int

F64 = npt.NDArray[np.float64]

TINY = "tiny-jina"
DEMO = "minilm"
E5 = "e5-small-jina"
JINA_TASKS = (
    "retrieval.query",
    "retrieval.passage",
    "separation",
    "classification",
    "text-matching",
)

KEY_ENV_VAR = "EMBED_E2E_API_KEY"
ENV_KEY = "sk-e2e-from-env-5f2c9a"
HASHED_KEY = "sk-e2e-from-sha256-81d0e4"

# Small token budget and a queue delay: a 16-input request is split into several chunks by the
# gateway, and chunks of concurrent requests (different tasks, lengths and models) meet in one
# Triton execute(), where model.py regroups them by task and repacks them by length.
BATCHING_TOML = (
    "[batching]\nmax_batch_size = 32\nmax_queue_delay_us = 20000\nmax_batch_tokens = 2048\n"
)


def auth_toml() -> str:
    digest = hashlib.sha256(HASHED_KEY.encode()).hexdigest()
    return (
        "[auth]\n"
        "keys = [\n"
        f'  {{name = "from-env", env = "{KEY_ENV_VAR}"}},\n'
        f'  {{name = "from-sha256", sha256 = "{digest}"}},\n'
        "]\n"
    )


@dataclass
class Served:
    """A running stack plus what the tests need to talk to it."""

    stack: Stack
    key: str | None
    ready_history: list[tuple[float, str, int | str]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    @property
    def triton_url(self) -> str:
        return f"http://127.0.0.1:{toml_int(self.stack.toml, 'triton_http_port')}"

    @property
    def runtime_dir(self) -> Path:
        return self.stack.workdir / "runtime"

    def headers(self, key: str | None = None) -> dict[str, str]:
        """`Authorization` for `key` (default: the stack's own key; none when the stack is open)."""
        key = key or self.key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def post(
        self, body: dict[str, Any], *, headers: dict[str, str] | None = None, timeout: float = 120.0
    ) -> httpx.Response:
        """POST /v1/embeddings, with the stack's key unless `headers` says otherwise."""
        headers = self.headers() if headers is None else headers
        return httpx.post(
            f"{self.base_url}/v1/embeddings", json=body, headers=headers, timeout=timeout
        )

    def embed(self, model: str, texts: list[str], **extra: Any) -> tuple[list[F64], dict[str, Any]]:
        """POST a float request; return the vectors (in `index` order) and the whole body."""
        response = self.post({"model": model, "input": texts, "encoding_format": "float", **extra})
        assert response.status_code == 200, response.text
        body = response.json()
        return vectors_of(body, len(texts)), body


def vectors_of(body: dict[str, Any], count: int) -> list[F64]:
    """The vectors of an embeddings response, checked to be one per input, ordered by `index`."""
    data = body["data"]
    assert sorted(item["index"] for item in data) == list(range(count)), [
        item["index"] for item in data
    ]
    out: list[F64] = [np.empty(0)] * count
    for item in data:
        assert item["object"] == "embedding"
        embedding = item["embedding"]
        if isinstance(embedding, str):
            out[item["index"]] = np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(
                np.float64
            )
        else:
            out[item["index"]] = np.asarray(embedding, dtype=np.float64)
    return out


def assert_matches_reference(got: F64, want: F64, what: str, atol: float = 1e-4) -> None:
    """Same length, unit norm, and within `atol` of the reference everywhere."""
    assert got.shape == want.shape, f"{what}: shape {got.shape}, reference {want.shape}"
    assert abs(np.linalg.norm(got) - 1.0) < 1e-4, f"{what}: norm {np.linalg.norm(got)}"
    diff = float(np.abs(got - want).max())
    assert diff <= atol, f"{what}: max abs difference to the reference {diff:.2e} > {atol:.0e}"


def stop_cleanly(stack: Stack) -> None:
    code = stack.stop()
    assert code == 0, f"appliance exited with {code} on SIGTERM:\n{stack.log()[-4000:]}"
