"""Every client example in README.md (curl, openai, LangChain), run as written against the real stack.

The stack serves the README's model names: `all-minilm-l6-v2` (the demo model) and
`jina-embeddings-v3` (the tiny jina-shaped model standing in for the real one). Only the address
changes (`127.0.0.1:8080` / `localhost:8080` -> this stack's port).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.reference import Reference
from harness.stack import Stack, model_toml, ports_toml

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):8080")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)


def curl_commands() -> list[str]:
    """Each `curl ...` command of the README's bash blocks, continuation lines joined."""
    commands = []
    for block in code_blocks("bash"):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.split("  #")[0].strip() for line in joined.splitlines() if line.startswith("curl ")]
    return commands


def python_examples() -> list[str]:
    return [b for b in code_blocks("python") if "OpenAI" in b or "langchain" in b]


def test_the_readme_has_the_examples_this_test_runs() -> None:
    curls = curl_commands()
    assert len(curls) >= 3 and any("all-minilm-l6-v2" in c for c in curls) and any("/ready" in c for c in curls)
    examples = python_examples()
    assert any("langchain_openai" in e for e in examples) and sum("from openai import" in e for e in examples) >= 2


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path, demo_model_dir: Path) -> Iterator[str]:
    toml = (ports_toml() + model_toml("all-minilm-l6-v2", demo_model_dir)
            + model_toml("jina-embeddings-v3", tiny_jina_dir, precision="fp32"))
    stack = Stack(tmp_path_factory.mktemp("readme"), toml).start()
    try:
        yield stack.base_url.removeprefix("http://")
    finally:
        assert stack.stop() == 0, stack.log()[-3000:]


@pytest.mark.parametrize("command", curl_commands())
def test_each_curl_example_answers_200_with_json(served: str, command: str) -> None:
    run = subprocess.run(["bash", "-c", ADDRESS.sub(served, command.replace("curl ", "curl --fail-with-body ", 1))],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, f"{command}\n-> {run.returncode}: {run.stdout[:500]} {run.stderr[:500]}"
    answer = json.loads(run.stdout)
    if "/v1/embeddings" in command:
        assert answer["data"] and all(isinstance(d["embedding"], list) and d["embedding"] for d in answer["data"])
    else:
        assert answer["status"] == "ready"


@pytest.mark.parametrize("example", python_examples(), ids=lambda e: e.split("\n")[0])
def test_each_python_example_runs_against_the_stack(served: str, example: str, tiny_jina_dir: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(ADDRESS.sub(served, example), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    if "doc_vectors" in namespace:  # LangChain: the passage preset indexes, the query preset searches
        ref = Reference(tiny_jina_dir)
        docs = ["Paris is the capital of France.", "Berlin is in Germany."]
        for got, text in zip(namespace["doc_vectors"], docs, strict=True):
            np.testing.assert_allclose(got, ref.embed(text, "retrieval.passage"), atol=1e-4)
        np.testing.assert_allclose(namespace["query_vector"], ref.embed("What is the capital of France?",
                                                                         "retrieval.query"), atol=1e-4)
    if "docs" in namespace and "query" in namespace:  # the OpenAI SDK with task / input_type
        assert len(namespace["docs"].data[0].embedding) == 64
        assert len(namespace["query"].data[0].embedding) == 32
    if "vectors" in namespace:
        assert [len(v.embedding) for v in namespace["vectors"]] == [384, 384]
