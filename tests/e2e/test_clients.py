"""Clients as users run them, pointed at the real appliance: the `openai` SDK (sync and async) and
langchain-openai's `OpenAIEmbeddings`. Every vector is compared with the in-process Reference (1e-4).
"""

# ruff: noqa: F811  (pytest fixtures imported from api_fixtures are redefined as test parameters)
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import openai
import pytest
from langchain_openai import OpenAIEmbeddings

from harness.reference import Reference
from tests.e2e.api_fixtures import (  # noqa: F401  (fixtures are used by name)
    API_KEY,
    DEMO,
    DEMO_HIDDEN,
    F64,
    PLAIN,
    TEXTS,
    TINY,
    Api,
    api,
    assert_close,
    decode_item,
    demo_reference,
    expected_vectors,
    tiny_reference,
)

pytestmark = pytest.mark.e2e


def sdk(api: Api, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.base_url}/v1", api_key=key, max_retries=0, timeout=120)


def async_sdk(api: Api, key: str = API_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{api.base_url}/v1", api_key=key, max_retries=0, timeout=120)


def check(got: Any, want: list[F64], what: str) -> None:
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want)):
        vector = np.asarray(g, dtype=np.float64)
        assert abs(np.linalg.norm(vector) - 1.0) < 1e-4, f"{what} input {i}: norm {np.linalg.norm(vector)}"
        assert_close(vector, w, f"{what} input {i}")


def sent_body(raw: Any) -> dict[str, Any]:
    """The JSON body the SDK really sent (from a `with_raw_response` call)."""
    body: dict[str, Any] = json.loads(raw.http_request.content)
    return body


# --- the openai SDK, synchronous ------------------------------------------------------------------


def test_openai_sdk_default_request_is_base64_and_decodes_to_the_reference(
    api: Api, tiny_reference: Reference
) -> None:
    with sdk(api) as client:
        raw = client.embeddings.with_raw_response.create(model=TINY, input=TEXTS)
        assert sent_body(raw)["encoding_format"] == "base64"  # the SDK's own default
        assert all(isinstance(d["embedding"], str) for d in raw.http_response.json()["data"])
        result = raw.parse()
    assert result.model == TINY
    assert [d.index for d in result.data] == list(range(len(TEXTS)))
    check([d.embedding for d in result.data], expected_vectors(tiny_reference, TEXTS).vectors, "default base64")
    assert result.usage.prompt_tokens == expected_vectors(tiny_reference, TEXTS).tokens


def test_openai_sdk_explicit_float_matches_the_reference(api: Api, tiny_reference: Reference,
                                                         demo_reference: Reference) -> None:
    with sdk(api) as client:
        tiny = client.embeddings.create(model=TINY, input=TEXTS, encoding_format="float")
        demo = client.embeddings.create(model=DEMO, input=TEXTS[0], encoding_format="float")
    check([d.embedding for d in tiny.data], expected_vectors(tiny_reference, TEXTS).vectors, "tiny float")
    check([d.embedding for d in demo.data], expected_vectors(demo_reference, TEXTS[:1]).vectors, "minilm float")
    assert len(demo.data[0].embedding) == DEMO_HIDDEN


@pytest.mark.parametrize("encoding_format", [None, "float", "base64"])
def test_openai_sdk_dimensions_truncate_then_normalize(api: Api, tiny_reference: Reference,
                                                       encoding_format: str | None) -> None:
    extra = {"encoding_format": encoding_format} if encoding_format else {}
    with sdk(api) as client:
        result = client.embeddings.create(model=TINY, input=TEXTS, dimensions=32, **extra)  # type: ignore[arg-type]
    # An EXPLICIT encoding_format="base64" makes the SDK hand back the base64 text undecoded.
    vectors = [decode_item(d.embedding) for d in result.data]
    if encoding_format == "base64":
        assert all(isinstance(d.embedding, str) for d in result.data)
    assert all(len(v) == 32 for v in vectors)
    check(vectors, expected_vectors(tiny_reference, TEXTS, dimensions=32).vectors, "dimensions=32")


@pytest.mark.parametrize("task", ["retrieval.query", "retrieval.passage", "separation"])
def test_openai_sdk_extra_body_task_selects_the_task_and_its_instruction(
    api: Api, tiny_reference: Reference, task: str
) -> None:
    with sdk(api) as client:
        raw = client.embeddings.with_raw_response.create(model=TINY, input=TEXTS, extra_body={"task": task})
        assert sent_body(raw)["task"] == task
        result = raw.parse()
    check([d.embedding for d in result.data], expected_vectors(tiny_reference, TEXTS, task=task).vectors, task)


def test_openai_sdk_token_array_inputs(api: Api, tiny_reference: Reference) -> None:
    """The ids /tokenize returns, fed back through the SDK: the texts' own vectors."""
    tokenized = api.post("/tokenize", {"model": TINY, "input": TEXTS, "task": "separation"}).json()["tokens"]
    lists = [[t["id"] for t in seq] for seq in tokenized]
    with sdk(api) as client:
        many = client.embeddings.create(model=TINY, input=lists, extra_body={"task": "separation"})
        one = client.embeddings.create(model=TINY, input=lists[0], extra_body={"task": "separation"})
    want = expected_vectors(tiny_reference, TEXTS, task="separation").vectors
    check([d.embedding for d in many.data], want, "int[][]")
    check([one.data[0].embedding], want[:1], "int[]")


def test_openai_sdk_errors_are_the_sdks_typed_exceptions_with_the_openai_body(api: Api) -> None:
    with sdk(api) as client:
        with pytest.raises(openai.BadRequestError) as bad:
            client.embeddings.create(model=TINY, input="a", dimensions=48)
        assert bad.value.status_code == 400
        assert bad.value.body["param"] == "dimensions"  # type: ignore[index]
        assert bad.value.body["type"] == "invalid_request_error"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError) as missing:
            client.embeddings.create(model="no-such-model", input="a")
        assert missing.value.code == "model_not_found"
        assert TINY in missing.value.message and DEMO in missing.value.message
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model=TINY, input=[[5, 10**6]])
    with sdk(api, key="sk-wrong") as wrong, pytest.raises(openai.AuthenticationError):
        wrong.embeddings.create(model=TINY, input="a")


def test_openai_sdk_lists_and_retrieves_models(api: Api) -> None:
    with sdk(api) as client:
        assert [m.id for m in client.models.list()][:4] == [TINY, DEMO, PLAIN, f"{TINY}-query"]
        assert client.models.retrieve(DEMO).id == DEMO
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("no-such-model")


# --- the openai SDK, asynchronous -----------------------------------------------------------------


def test_async_openai_sdk_default_float_dimensions_and_task_concurrently(
    api: Api, tiny_reference: Reference, demo_reference: Reference
) -> None:
    async def run() -> tuple[Any, ...]:
        async with async_sdk(api) as client:
            return await asyncio.gather(
                client.embeddings.create(model=TINY, input=TEXTS),
                client.embeddings.create(model=TINY, input=TEXTS, encoding_format="float"),
                client.embeddings.create(model=TINY, input=TEXTS, dimensions=32),
                client.embeddings.create(model=TINY, input=TEXTS, extra_body={"task": "retrieval.query"}),
                client.embeddings.create(model=DEMO, input=TEXTS),
                client.embeddings.create(model=PLAIN, input=TEXTS),
            )

    default, floats, dims, query, demo, plain = asyncio.run(run())
    tiny_want = expected_vectors(tiny_reference, TEXTS).vectors
    check([d.embedding for d in default.data], tiny_want, "async default base64")
    check([d.embedding for d in floats.data], tiny_want, "async float")
    check([d.embedding for d in dims.data], expected_vectors(tiny_reference, TEXTS, dimensions=32).vectors,
          "async dimensions")
    check([d.embedding for d in query.data], expected_vectors(tiny_reference, TEXTS, task="retrieval.query").vectors,
          "async task")
    check([d.embedding for d in demo.data], expected_vectors(demo_reference, TEXTS).vectors, "async minilm")
    check([d.embedding for d in plain.data],
          expected_vectors(tiny_reference, TEXTS, default_task="separation", instructions=False).vectors,
          "async tiny-plain")


def test_async_openai_sdk_raises_typed_errors(api: Api) -> None:
    async def run() -> None:
        async with async_sdk(api) as client:
            with pytest.raises(openai.BadRequestError) as bad:
                await client.embeddings.create(model=TINY, input=["a", ""])
            assert bad.value.body["param"] == "input[1]"  # type: ignore[index]
            with pytest.raises(openai.BadRequestError) as task:
                await client.embeddings.create(model=DEMO, input="a", extra_body={"task": "separation"})
            assert task.value.body["param"] == "task"  # type: ignore[index]

    asyncio.run(run())


# --- langchain-openai -----------------------------------------------------------------------------


@contextmanager
def langchain(api: Api, model: str, **extra: Any) -> Iterator[OpenAIEmbeddings]:
    """`OpenAIEmbeddings` as its docs say to point it at an OpenAI-compatible server.

    The SDK clients it creates are closed afterwards (an unclosed async transport would surface as
    a ResourceWarning in some later test).
    """
    embeddings = OpenAIEmbeddings(model=model, base_url=f"{api.base_url}/v1", api_key=API_KEY,  # type: ignore[arg-type]
                                  check_embedding_ctx_length=False, max_retries=0, **extra)
    try:
        yield embeddings
    finally:
        embeddings.client._client.close()


async def close_async(embeddings: OpenAIEmbeddings) -> None:
    await embeddings.async_client._client.close()


def test_langchain_openai_embed_documents_and_query(api: Api, tiny_reference: Reference,
                                                    demo_reference: Reference) -> None:
    with langchain(api, TINY) as tiny:
        check(tiny.embed_documents(TEXTS), expected_vectors(tiny_reference, TEXTS).vectors, "langchain documents")
        check([tiny.embed_query(TEXTS[1])], expected_vectors(tiny_reference, TEXTS[1:2]).vectors,
              "langchain query")
    with langchain(api, DEMO) as demo:
        check(demo.embed_documents(TEXTS), expected_vectors(demo_reference, TEXTS).vectors, "langchain minilm")


def test_langchain_openai_dimensions_task_and_small_chunks(api: Api, tiny_reference: Reference) -> None:
    with langchain(api, TINY, dimensions=32, chunk_size=2) as dims:  # 4 texts -> 2 requests
        check(dims.embed_documents(TEXTS), expected_vectors(tiny_reference, TEXTS, dimensions=32).vectors,
              "langchain dimensions")
    with langchain(api, TINY, model_kwargs={"extra_body": {"task": "retrieval.query"}}) as query:
        check([query.embed_query(TEXTS[1])],
              expected_vectors(tiny_reference, TEXTS[1:2], task="retrieval.query").vectors,
              "langchain task via extra_body")


def test_langchain_openai_async_embed_documents_and_query(api: Api, tiny_reference: Reference) -> None:
    with langchain(api, TINY, model_kwargs={"extra_body": {"task": "retrieval.passage"}}) as tiny:

        async def run() -> tuple[list[list[float]], list[float]]:
            try:
                return await tiny.aembed_documents(TEXTS), await tiny.aembed_query(TEXTS[0])
            finally:
                await close_async(tiny)

        documents, query = asyncio.run(run())
    want = expected_vectors(tiny_reference, TEXTS, task="retrieval.passage").vectors
    check(documents, want, "langchain async documents")
    check([query], want[:1], "langchain async query")
