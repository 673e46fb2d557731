"""Fuzz the running stack with schemathesis against its own published OpenAPI document.

GET /openapi.json from a real `appliance serve`; every operation gets generated (valid and invalid)
requests, with a valid API key. Every response must: not be a 5xx, use a documented status code,
content type, headers and body schema (schemathesis's response checks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from appliance.gateway.openapi import openapi_document
from harness.stack import Stack, model_toml, ports_toml

pytestmark = pytest.mark.e2e

KEY_ENV_VAR = "FUZZ_API_KEY"
KEY = "sk-fuzz-0c4f9e2a71"
MODEL = "tiny"
MAX_EXAMPLES = 60  # per operation and mode (7 operations, 10 runs): bounded in count and in time

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path) -> Iterator[Stack]:
    toml = (
        ports_toml()
        + f'[auth]\nkeys = [{{name = "fuzzer", env = "{KEY_ENV_VAR}"}}]\n'
        + model_toml(MODEL, tiny_jina_dir, precision="fp32")
    )
    stack = Stack(tmp_path_factory.mktemp("fuzz"), toml, env={KEY_ENV_VAR: KEY}).start()
    try:
        yield stack
    finally:
        code = stack.stop()
        assert code == 0, stack.log()[-3000:]


@pytest.fixture(scope="module")
def published(fuzz_stack: Stack) -> Any:
    """The schema exactly as the running stack publishes it."""
    return schemathesis.openapi.from_url(f"{fuzz_stack.base_url}/openapi.json")


# The operations to fuzz, known at collection time (the running stack's document is checked to
# have exactly these). `schemathesis.pytest.from_fixture(...)` + `@schema.parametrize()` would be
# the natural spelling, but schemathesis 4.32's lazy loader sets `request.node._nodeid`, which
# pytest 9 no longer has (AttributeError); so each operation's strategy is driven by Hypothesis here.
OPERATIONS = sorted(
    (method.upper(), path) for path, item in openapi_document()["paths"].items() for method in item
)
MODES = {
    (method, path): [GenerationMode.POSITIVE]
    + ([GenerationMode.NEGATIVE] if method == "POST" else [])  # GETs have nothing to negate
    for method, path in OPERATIONS
}
CASES = [(method, path, mode) for (method, path), modes in MODES.items() for mode in modes]


def steer(case: Any, data: st.DataObject, model: dict[str, Any]) -> None:
    """Most positive cases name the served model (and often a valid task / dimensions), so they
    reach tokenization and inference instead of stopping at a 404; the rest of the case stays generated."""
    # (Hypothesis favours small draws: 0 / False mean "steer", so most cases are steered.)
    if case.path_parameters and "model_id" in case.path_parameters and not data.draw(st.booleans()):
        case.path_parameters["model_id"] = model["name"]
    if not isinstance(case.body, dict) or "model" not in case.body:
        return
    if data.draw(st.integers(0, 9)) < 9:
        case.body["model"] = model["name"]
    if "task" in case.body and data.draw(st.booleans()):
        case.body["task"] = data.draw(st.sampled_from([None, *model["tasks"]]))
    if "dimensions" in case.body and data.draw(st.booleans()):
        case.body["dimensions"] = data.draw(st.sampled_from([None, *model["dimensions"]]))


def test_the_running_stack_publishes_the_operations_fuzzed_here(published: Any) -> None:
    live = sorted(
        (r.ok().method.upper(), r.ok().path) for r in published.get_all_operations()
    )
    assert live == OPERATIONS


@pytest.mark.parametrize(("method", "path", "mode"), CASES,
                         ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES])
def test_every_generated_request_gets_a_documented_non_5xx_answer(
    published: Any, fuzz_stack: Stack, method: str, path: str, mode: GenerationMode
) -> None:
    operation = published[path][method]
    info = httpx.get(f"{fuzz_stack.base_url}/info", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
    (model,) = info["models"]
    seen: Counter[int] = Counter()

    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case: Any, data: st.DataObject) -> None:
        if mode is GenerationMode.POSITIVE:
            steer(case, data, model)
        response = case.call_and_validate(
            base_url=fuzz_stack.base_url, headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS, timeout=60
        )
        seen[response.status_code] += 1

    fuzz()
    print(f"{method} {path} {mode.value}: {dict(seen)}")
    assert sum(seen.values()) > 0


def test_the_stack_is_healthy_after_the_fuzzing(fuzz_stack: Stack) -> None:
    assert httpx.get(f"{fuzz_stack.base_url}/ready", timeout=10).status_code == 200
    response = httpx.post(f"{fuzz_stack.base_url}/v1/embeddings", json={"model": MODEL, "input": "still fine"},
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert "Traceback" not in fuzz_stack.log(), fuzz_stack.log()[-3000:]
