"""The HTTP surface in-process, in seconds: `create_app` with a fake backend and Litestar's test client.

The settings are the real compiler's for the tiny jina model; only the inference backend is a
fake (it lives here, in the tests). The end-to-end suite checks the same surface against the real
tritonserver and an independent reference; this file keeps the feedback loop short.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from litestar.testing import AsyncTestClient, TestClient

from appliance.compile.compiler import compile_spec
from appliance.errors import BackendUnavailableError
from appliance.gateway.app import create_app
from appliance.settings import GatewaySettings
from appliance.spec.loader import parse_spec
from harness.stack import model_toml

KEY = "sk-inprocess-3f9a"
HIDDEN = 64  # the tiny jina model's hidden size


class FakeBackend:
    """Deterministic vectors from the ids (so equal inputs give equal vectors); `fail` raises instead."""

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.delay_s = 0.0
        self.calls: list[tuple[str, tuple[int, ...], int | None]] = []
        self.is_ready = True

    async def embed(
        self,
        model: str,
        ids: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
        task_id: int | None,
        *,
        spans: npt.NDArray[np.int64] | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        self.calls.append((model, ids.shape, task_id))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        rows = ids.shape[0] if spans is None else spans.size // 2
        out = np.zeros((rows, HIDDEN), np.float32)
        for r in range(rows):
            out[r, int(ids[0 if spans is not None else r].sum() + r) % HIDDEN] = 1.0
        return out, np.full((rows, 1), 2.0, np.float32)

    async def ready(self, models: list[str]) -> bool:
        return self.is_ready

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path) -> GatewaySettings:
    out = tmp_path_factory.mktemp("inprocess")
    toml = (
        f'[auth]\nkeys = [{{name = "k", key = "{KEY}", requests_per_minute = 1000}}]\n'
        "[limits]\nmax_body_bytes = 4096\nrequest_timeout_s = 0.5\nmax_concurrent_requests = 2\n"
        + model_toml("tiny-jina", tiny_jina_dir, precision="fp32")
    )
    return compile_spec(parse_spec(toml), out, out, capabilities=()).gateway


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def client(settings: GatewaySettings, backend: FakeBackend) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(settings, backend=backend)) as c:
        c.headers["Authorization"] = f"Bearer {KEY}"
        yield c


def assert_error(response: Any, status: int, error_type: str, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == error_type
    if param is not None:
        assert error["param"] == param
    return dict(error)


def test_a_float_request_returns_one_unit_vector_per_input_with_usage(client: TestClient[Any]) -> None:
    r = client.post("/v1/embeddings", json={"model": "tiny-jina", "input": ["a b", "c"], "encoding_format": "float"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "tiny-jina"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(len(d["embedding"]) == HIDDEN for d in body["data"])
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    assert r.headers["x-ratelimit-limit-requests"] == "1000"


def test_base64_is_little_endian_float32_of_the_same_vector(client: TestClient[Any]) -> None:
    floats = client.post("/v1/embeddings", json={"model": "tiny-jina", "input": "x", "encoding_format": "float"})
    b64 = client.post("/v1/embeddings", json={"model": "tiny-jina", "input": "x", "encoding_format": "base64"})
    decoded = np.frombuffer(base64.b64decode(b64.json()["data"][0]["embedding"]), "<f4")
    assert decoded.tolist() == floats.json()["data"][0]["embedding"]


def test_dimensions_cut_and_renormalize(client: TestClient[Any]) -> None:
    r = client.post("/v1/embeddings", json={"model": "tiny-jina", "input": "x", "dimensions": 32, "encoding_format": "float"})
    assert r.status_code == 200, r.text
    vector = np.asarray(r.json()["data"][0]["embedding"])
    assert vector.shape == (32,)


def test_the_default_task_and_a_preset_reach_the_backend_as_task_ids(
    client: TestClient[Any], backend: FakeBackend, settings: GatewaySettings
) -> None:
    model = settings.models[0]
    client.post("/v1/embeddings", json={"model": "tiny-jina", "input": "x"})
    client.post("/v1/embeddings", json={"model": "tiny-jina-passage", "input": "x"})
    assert [c[2] for c in backend.calls] == [model.task_ids["retrieval.query"], model.task_ids["retrieval.passage"]]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "tiny-jina"}, None),
        ({"model": "tiny-jina", "input": [1.5]}, "input[0]"),
        ({"model": "tiny-jina", "input": "x", "task": "nope"}, "task"),
        ({"model": "tiny-jina", "input": "x", "dimensions": 7}, "dimensions"),
        ({"model": "tiny-jina", "input": "x", "input_type": "poem"}, "input_type"),
        ({"model": "tiny-jina", "input": [[10**9]]}, None),
    ],
)
def test_a_bad_request_is_a_400_naming_the_field(client: TestClient[Any], body: dict[str, Any], param: str | None) -> None:
    assert_error(client.post("/v1/embeddings", json=body), 400, "invalid_request_error", param)


def test_not_json_is_400_and_another_content_type_415(client: TestClient[Any]) -> None:
    assert_error(client.post("/v1/embeddings", content=b"{", headers={"content-type": "application/json"}), 400,
                 "invalid_request_error")
    assert_error(client.post("/v1/embeddings", content=b"x", headers={"content-type": "text/plain"}), 415,
                 "invalid_request_error")


def test_keys_are_checked(client: TestClient[Any]) -> None:
    body = {"model": "tiny-jina", "input": "x"}
    assert_error(client.post("/v1/embeddings", json=body, headers={"Authorization": ""}), 401, "invalid_request_error")
    error = assert_error(client.post("/v1/embeddings", json=body, headers={"Authorization": "Bearer wrong"}), 401,
                         "invalid_request_error")
    assert error["code"] == "invalid_api_key"


def test_an_unknown_model_is_a_404(client: TestClient[Any]) -> None:
    error = assert_error(client.post("/v1/embeddings", json={"model": "gpt-4", "input": "x"}), 404, "invalid_request_error")
    assert error["code"] == "model_not_found"
    assert_error(client.get("/v1/models/gpt-4"), 404, "invalid_request_error")


def test_a_body_over_the_limit_is_a_413_naming_the_limit(client: TestClient[Any]) -> None:
    error = assert_error(client.post("/v1/embeddings", json={"model": "tiny-jina", "input": "x" * 5000}), 413,
                         "invalid_request_error")
    assert "4096" in error["message"] and "max_body_bytes" in error["message"]


def test_a_header_flood_is_a_431_in_the_same_error_shape(client: TestClient[Any]) -> None:
    headers = {f"x-h{i}": "v" for i in range(150)}
    assert_error(client.get("/health", headers=headers), 431, "invalid_request_error")


def test_backend_errors_become_503_and_unexpected_ones_a_bare_500(client: TestClient[Any], backend: FakeBackend) -> None:
    backend.fail = BackendUnavailableError("the model is not loaded yet")
    r = client.post("/v1/embeddings", json={"model": "tiny-jina", "input": "x"})
    assert_error(r, 503, "service_unavailable")
    assert r.headers["retry-after"] == "2"
    backend.fail = RuntimeError("secret detail")
    r = client.post("/v1/embeddings", json={"model": "tiny-jina", "input": "x"})
    error = assert_error(r, 500, "server_error")
    assert error["message"] == "Internal Server Error"


def test_a_request_over_its_timeout_is_a_504(client: TestClient[Any], backend: FakeBackend) -> None:
    backend.delay_s = 2.0
    r = client.post("/v1/embeddings", json={"model": "tiny-jina", "input": "x"})
    assert_error(r, 504, "timeout")


def test_ready_follows_the_backend_and_health_does_not(client: TestClient[Any], backend: FakeBackend) -> None:
    assert client.get("/ready").status_code == 200
    backend.is_ready = False
    r = client.get("/ready")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert client.get("/health").status_code == 200


def test_models_info_and_openapi_shapes(client: TestClient[Any], settings: GatewaySettings) -> None:
    models = client.get("/v1/models").json()
    ids = [m["id"] for m in models["data"]]
    assert ids[0] == "tiny-jina" and "tiny-jina-query" in ids
    info = client.get("/info").json()
    assert info["models"][0]["name"] == "tiny-jina"
    assert info["limits"]["max_body_bytes"] == 4096
    assert info["batching"]["max_batch_size"] == settings.batching.max_batch_size
    assert "/v1/embeddings" in client.get("/openapi.json").json()["paths"]


def test_tokenize_returns_the_ids_the_model_sees(client: TestClient[Any]) -> None:
    r = client.post("/tokenize", json={"model": "tiny-jina", "input": "hello"})
    assert r.status_code == 200, r.text
    tokens = r.json()["tokens"][0]
    assert tokens[0]["special"] and tokens[-1]["special"] and not tokens[1]["special"]  # <s> hello </s>


def test_with_a_queue_a_request_beyond_the_permits_waits_for_one_and_the_next_is_refused(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    toml = (
        "[limits]\nmax_concurrent_requests = 1\nmax_queued_requests = 1\nqueue_timeout_s = 5\nrequest_timeout_s = 5\n"
        + model_toml("tiny-jina", tiny_jina_dir, precision="fp32")
    )
    settings = compile_spec(parse_spec(toml), tmp_path, tmp_path, capabilities=()).gateway
    backend = FakeBackend()
    backend.delay_s = 0.3

    async def scenario() -> list[int]:
        app = create_app(settings, backend=backend)
        # Litestar's test client for the lifespan; httpx's ASGI transport to send concurrently on this loop
        async with AsyncTestClient(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:

            async def post(after_s: float) -> int:
                await asyncio.sleep(after_s)
                r = await client.post("http://gateway/v1/embeddings", json={"model": "tiny-jina", "input": "x"})
                return r.status_code

            # one runs, one waits in line for its permit, the third finds the line full
            return list(await asyncio.gather(post(0.0), post(0.05), post(0.1)))

    assert asyncio.run(scenario()) == [200, 200, 429]
    assert len(backend.calls) == 2
