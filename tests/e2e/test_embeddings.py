"""End to end through real HTTP: `appliance serve` -> supervisord -> tritonserver + gateway.

Every vector is checked against `harness.reference.Reference` (ONNX Runtime in-process,
one text at a time, no padding), which shares no code with the appliance.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import openai
import pytest
from supervisor.xmlrpc import SupervisorTransport

from harness.openai_errors import assert_openai_error
from harness.reference import Reference
from harness.served import (
    DEMO,
    ENV_KEY,
    F64,
    HASHED_KEY,
    JINA_TASKS,
    TINY,
    Served,
    assert_matches_reference,
    vectors_of,
)
from harness.stack import model_toml, ports_toml, toml_int

pytestmark = pytest.mark.e2e

TEXTS = [
    "Hello world",
    "What is the capital of France?",
    "Paris is the capital and the largest city of France.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "¿Dónde está la biblioteca? Mañana vamos a la playa con nuestros amigos.",
    "a",
    "Water boils at one hundred degrees Celsius at sea level. " * 12,
]
_WORD_TEXT = (
    "the quick brown fox jumps over lazy dog a self hosted embedding server turns text into vectors "
    "so that similar documents end up close to each other search retrieval clustering and "
    "classification all work on these query asks for evidence passage provides answer machine "
    "learning models read tokens not words every token has an identifier what is capital of france "
    "paris largest city how many people live in berlin water boils at one hundred degrees weather "
    "today sunny with light breeze tomorrow rain morning evening numbers 42 2024 3.14 der schnelle "
    "braune fuchs springt über den faulen hund ein einbettungsserver verwandelt texte suche nach "
    "informationen ist wichtig für menschen und maschinen el rápido zorro marrón salta sobre perro "
    "perezoso búsqueda de información es útil mañana vamos la playa con nuestros amigos niños"
)
WORDS = _WORD_TEXT.split()
PROBE = "Follow the white rabbit down into the hole."


def text_of_about(tokens: int, rng: random.Random, ref: Reference) -> str:
    """A random text of about `tokens` content tokens under `ref`'s tokenizer (words add up)."""
    words: list[str] = []
    count = 0
    while count < tokens:
        word = rng.choice(WORDS)
        words.append(word)
        count += len(ref.tokenizer.encode(word, add_special_tokens=False).ids)
    return " ".join(words)


# --- correctness against the reference -------------------------------------------------------


def test_openai_client_on_its_default_base64_path_returns_reference_embeddings(
    main_stack: Served, tiny_ref: Reference, demo_ref: Reference
) -> None:
    with openai.OpenAI(
        base_url=f"{main_stack.base_url}/v1", api_key=main_stack.key, max_retries=0
    ) as client:
        raw = [
            client.embeddings.with_raw_response.create(
                model=TINY, input=TEXTS, extra_body={"task": "retrieval.query"}
            ),
            client.embeddings.with_raw_response.create(model=DEMO, input=TEXTS[:4]),
            client.embeddings.with_raw_response.create(
                model=TINY, input="Hello world", dimensions=32
            ),
        ]
    # The client asked for base64 on its own, and the server answered with base64 strings.
    assert [json.loads(r.http_request.content).get("encoding_format") for r in raw] == [
        "base64"
    ] * 3
    assert all(isinstance(d["embedding"], str) for r in raw for d in r.http_response.json()["data"])
    jina, demo, single = (r.parse() for r in raw)

    assert jina.object == "list" and jina.model == TINY
    assert [d.index for d in jina.data] == list(range(len(TEXTS)))
    for text, item in zip(TEXTS, jina.data):
        want = tiny_ref.embed(text, "retrieval.query")
        assert_matches_reference(
            np.asarray(item.embedding), want, f"openai client, tiny-jina: {text[:30]!r}"
        )
    for text, item in zip(TEXTS[:4], demo.data):
        assert_matches_reference(
            np.asarray(item.embedding), demo_ref.embed(text), f"openai client, minilm: {text!r}"
        )
    assert len(single.data) == 1
    assert_matches_reference(
        np.asarray(single.data[0].embedding),
        tiny_ref.embed("Hello world", "retrieval.query", dimensions=32),
        "openai client, dimensions=32",
    )
    assert (
        jina.usage.prompt_tokens
        == jina.usage.total_tokens
        == sum(len(tiny_ref.ids(t, "retrieval.query")) for t in TEXTS)
    )


def test_plain_json_float_request_returns_reference_embeddings_in_openai_shape(
    main_stack: Served, tiny_ref: Reference
) -> None:
    response = main_stack.post(
        {"model": TINY, "input": TEXTS, "encoding_format": "float", "task": "retrieval.passage"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["object"] == "list" and body["model"] == TINY
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}
    for index, item in enumerate(body["data"]):
        assert set(item) == {"object", "embedding", "index"}
        assert item["index"] == index
        assert isinstance(item["embedding"], list) and all(
            isinstance(x, float) for x in item["embedding"]
        )
    for text, got in zip(TEXTS, vectors_of(body, len(TEXTS))):
        assert_matches_reference(
            got, tiny_ref.embed(text, "retrieval.passage"), f"float JSON: {text[:30]!r}"
        )


def test_base64_encoding_is_the_same_vectors_as_little_endian_float32(main_stack: Served) -> None:
    common = {"model": TINY, "input": TEXTS[:3], "task": "separation"}
    as_float = main_stack.post({**common, "encoding_format": "float"})
    as_base64 = main_stack.post({**common, "encoding_format": "base64"})
    assert as_float.status_code == as_base64.status_code == 200
    floats = [np.asarray(d["embedding"], dtype=np.float32) for d in as_float.json()["data"]]
    raw = [d["embedding"] for d in as_base64.json()["data"]]
    assert all(isinstance(r, str) for r in raw)
    decoded = [v.astype(np.float32) for v in vectors_of(as_base64.json(), 3)]
    for f, d in zip(floats, decoded):
        assert d.shape == f.shape == (64,)
        np.testing.assert_array_equal(d, f)


@pytest.mark.parametrize("task", JINA_TASKS)
def test_every_tiny_jina_task_matches_the_reference(
    main_stack: Served, tiny_ref: Reference, task: str
) -> None:
    vectors, _ = main_stack.embed(TINY, TEXTS, task=task)
    for text, got in zip(TEXTS, vectors):
        assert_matches_reference(got, tiny_ref.embed(text, task), f"task {task}: {text[:30]!r}")


def test_omitting_task_embeds_with_the_default_task_retrieval_query(
    main_stack: Served, tiny_ref: Reference
) -> None:
    vectors, _ = main_stack.embed(TINY, TEXTS[:3])
    for text, got in zip(TEXTS[:3], vectors):
        assert_matches_reference(got, tiny_ref.embed(text, "retrieval.query"), f"no task: {text!r}")


def test_demo_model_matches_the_reference(main_stack: Served, demo_ref: Reference) -> None:
    texts = [t.lower() if i % 2 else t for i, t in enumerate(TEXTS)]
    vectors, _ = main_stack.embed(DEMO, texts)
    for text, got in zip(texts, vectors):
        assert got.shape == (384,)
        assert_matches_reference(got, demo_ref.embed(text), f"minilm: {text[:30]!r}")


def test_different_tasks_give_different_vectors(main_stack: Served, tiny_ref: Reference) -> None:
    text = "Machine learning models read tokens, not words."  # no prefix for 3 tasks: only task_id differs
    vectors = {task: main_stack.embed(TINY, [text], task=task)[0][0] for task in JINA_TASKS}
    for a, b in combinations(JINA_TASKS, 2):
        cosine = float(vectors[a] @ vectors[b])
        assert cosine < 0.999, f"{a} and {b} give the same vector (cos {cosine:.5f})"
        assert np.abs(vectors[a] - vectors[b]).max() > 1e-2, (a, b)


# --- Matryoshka dimensions ---------------------------------------------------------------------


@pytest.mark.parametrize("dimensions", [32, 64])
def test_dimensions_give_unit_vectors_of_that_length_equal_to_truncate_then_normalize(
    main_stack: Served, tiny_ref: Reference, dimensions: int
) -> None:
    for task in ("retrieval.query", "classification"):
        vectors, _ = main_stack.embed(TINY, TEXTS, task=task, dimensions=dimensions)
        for text, got in zip(TEXTS, vectors):
            assert got.shape == (dimensions,)
            want = tiny_ref.embed(text, task, dimensions=dimensions)
            assert_matches_reference(got, want, f"dimensions={dimensions}, {task}: {text[:30]!r}")


@pytest.mark.parametrize(("model", "dimensions"), [(TINY, 48), (TINY, 128), (TINY, 0), (DEMO, 128)])
def test_an_unsupported_dimension_is_a_400_in_openai_error_shape(
    main_stack: Served, model: str, dimensions: int
) -> None:
    response = main_stack.post({"model": model, "input": "Hello world", "dimensions": dimensions})
    error = assert_openai_error(response, 400, param="dimensions")
    assert error["type"] == "invalid_request_error"


def test_the_openai_client_raises_bad_request_for_an_unsupported_dimension(
    main_stack: Served,
) -> None:
    with (
        openai.OpenAI(
            base_url=f"{main_stack.base_url}/v1", api_key=main_stack.key, max_retries=0
        ) as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        client.embeddings.create(model=TINY, input="Hello world", dimensions=48)
    assert caught.value.status_code == 400
    assert caught.value.param == "dimensions"


# --- usage -------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["retrieval.query", "retrieval.passage", "text-matching"])
def test_usage_counts_the_tokenizers_tokens_with_the_task_instruction(
    main_stack: Served, tiny_ref: Reference, task: str
) -> None:
    _, body = main_stack.embed(TINY, TEXTS, task=task)
    want = sum(len(tiny_ref.ids(text, task)) for text in TEXTS)
    assert body["usage"] == {"prompt_tokens": want, "total_tokens": want}


def test_usage_counts_the_demo_models_tokens(main_stack: Served, demo_ref: Reference) -> None:
    _, body = main_stack.embed(DEMO, TEXTS)
    want = sum(len(demo_ref.ids(text)) for text in TEXTS)
    assert body["usage"] == {"prompt_tokens": want, "total_tokens": want}


# --- concurrency: batching must never mix up requests -----------------------------------------


@dataclass(frozen=True)
class Job:
    model: str
    task: str | None
    texts: list[str]
    encoding: str

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "input": self.texts,
            "encoding_format": self.encoding,
        }
        if self.task is not None:
            body["task"] = self.task
        return body


@pytest.fixture(scope="module")
def mixed_jobs(tiny_ref: Reference, demo_ref: Reference) -> list[Job]:
    """32 tiny-jina requests (random task, 1-16 inputs of 1..~600 tokens) and 8 minilm requests."""
    rng = random.Random(20240611)

    def length(longest: int) -> int:
        band = rng.random()
        return (
            rng.randint(1, 8)
            if band < 0.3
            else rng.randint(9, 128)
            if band < 0.7
            else rng.randint(129, longest)
        )

    jobs = []
    for n in range(40):
        model, ref, longest = (TINY, tiny_ref, 600) if n < 32 else (DEMO, demo_ref, 240)  # minilm: 254
        texts = [text_of_about(length(longest), rng, ref) for _ in range(rng.randint(1, 16))]
        if n % 2 == 0:  # the probe rides along in half of the requests, at a random place
            texts.insert(rng.randint(0, len(texts)), PROBE)
        task = rng.choice(JINA_TASKS) if model == TINY else None
        jobs.append(Job(model, task, texts, rng.choice(["float", "base64"])))
    return jobs


@pytest.fixture(scope="module")
def mixed_expected(
    mixed_jobs: list[Job], tiny_ref: Reference, demo_ref: Reference
) -> dict[tuple[str, str | None, str], F64]:
    """The reference vector of every (model, task, text) in `mixed_jobs`, computed once."""
    refs = {TINY: tiny_ref, DEMO: demo_ref}
    return {
        (job.model, job.task, text): refs[job.model].embed(text, job.task)
        for job in mixed_jobs
        for text in job.texts
    }


async def _send_all(served: Served, jobs: list[Job]) -> list[httpx.Response]:
    async with httpx.AsyncClient(
        base_url=served.base_url,
        headers=served.headers(),
        timeout=180.0,
        limits=httpx.Limits(max_connections=len(jobs)),
    ) as client:
        return list(
            await asyncio.gather(*(client.post("/v1/embeddings", json=job.body()) for job in jobs))
        )


def test_a_text_gives_the_same_vector_alone_and_inside_a_concurrent_mixed_load(
    main_stack: Served,
    tiny_ref: Reference,
    demo_ref: Reference,
    mixed_jobs: list[Job],
    mixed_expected: dict[tuple[str, str | None, str], F64],
) -> None:
    alone: dict[str | None, F64] = {
        task: main_stack.embed(TINY, [PROBE], task=task)[0][0] for task in JINA_TASKS
    }
    alone[None] = main_stack.embed(DEMO, [PROBE])[0][0]
    # The load really is mixed: long and short inputs, every task, both models.
    assert max(len(tiny_ref.ids(t)) for job in mixed_jobs for t in job.texts) > 500
    assert {job.task for job in mixed_jobs} == {*JINA_TASKS, None}

    responses = asyncio.run(_send_all(main_stack, mixed_jobs))

    refs = {TINY: tiny_ref, DEMO: demo_ref}
    probes = 0
    for n, (job, response) in enumerate(zip(mixed_jobs, responses)):
        assert response.status_code == 200, f"request {n}: {response.text}"
        body = response.json()
        assert body["model"] == job.model
        vectors = vectors_of(body, len(job.texts))
        for text, got in zip(job.texts, vectors):
            want = mixed_expected[(job.model, job.task, text)]
            assert_matches_reference(
                got, want, f"request {n} ({job.model}, {job.task}): {text[:40]!r}"
            )
            if text == PROBE:
                probes += 1
                diff = float(np.abs(got - alone[job.task]).max())
                assert diff <= 1e-4, (
                    f"request {n}: the probe differs from its lone embedding by {diff:.2e}"
                )
        tokens = sum(len(refs[job.model].ids(text, job.task)) for text in job.texts)
        assert body["usage"]["prompt_tokens"] == tokens, (
            f"request {n}: usage {body['usage']} != {tokens}"
        )
    assert probes == 20


def test_distinct_texts_have_distinct_reference_vectors_so_a_swap_would_be_caught(
    mixed_expected: dict[tuple[str, str | None, str], F64],
) -> None:
    """Guards the test above: if two inputs shared a vector, returning the wrong one could pass."""
    for model in (TINY, DEMO):
        vectors = np.stack([v for (m, _, _), v in mixed_expected.items() if m == model])
        gaps = np.abs(vectors[:, None, :] - vectors[None, :, :]).max(axis=2)
        np.fill_diagonal(gaps, np.inf)
        assert gaps.min() > 1e-3, f"{model}: two different inputs are within {gaps.min():.2e}"


# --- semantics ---------------------------------------------------------------------------------


def test_the_demo_models_paraphrases_score_above_unrelated_sentences(main_stack: Served) -> None:
    pairs = [
        ("A man is playing a guitar.", "Someone is strumming a guitar."),
        ("How do I reset my password?", "What are the steps to change my password?"),
        ("The cat is sleeping on the sofa.", "A cat naps on the couch."),
        ("The train to Berlin leaves at noon.", "The Berlin train departs at 12 o'clock."),
    ]
    unrelated = [
        "The stock market fell sharply today.",
        "Photosynthesis converts light into chemical energy.",
    ]
    texts = [t for pair in pairs for t in pair] + unrelated
    vectors, _ = main_stack.embed(DEMO, texts)
    by_text = dict(zip(texts, vectors))
    for anchor, paraphrase in pairs:
        similar = float(by_text[anchor] @ by_text[paraphrase])
        others = [float(by_text[anchor] @ by_text[u]) for u in unrelated]
        others += [float(by_text[anchor] @ by_text[p]) for p, _ in pairs if p != anchor]
        assert similar > max(others) + 0.1, (
            f"{anchor!r}: paraphrase {similar:.3f}, unrelated up to {max(others):.3f}"
        )


# --- auth --------------------------------------------------------------------------------------


def test_a_missing_key_is_401_in_openai_error_shape(main_stack: Served) -> None:
    response = main_stack.post({"model": TINY, "input": "Hello world"}, headers={})
    assert_openai_error(response, 401)
    models = httpx.get(f"{main_stack.base_url}/v1/models", timeout=10)
    assert_openai_error(models, 401)


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {ENV_KEY}x",
        "Bearer sk-wrong",
        f"Basic {ENV_KEY}",
        f"Bearer {HASHED_KEY[:-1]}",
        "Bearer",
    ],
)
def test_a_wrong_key_is_401_in_openai_error_shape(main_stack: Served, authorization: str) -> None:
    response = httpx.post(
        f"{main_stack.base_url}/v1/embeddings",
        json={"model": TINY, "input": "Hello world"},
        headers={"Authorization": authorization},
        timeout=30,
    )
    error = assert_openai_error(response, 401)
    assert error["type"] == "invalid_request_error"


def test_the_openai_client_with_a_wrong_key_gets_authentication_error(main_stack: Served) -> None:
    with (
        openai.OpenAI(
            base_url=f"{main_stack.base_url}/v1", api_key="sk-wrong", max_retries=0
        ) as client,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        client.embeddings.create(model=TINY, input="Hello world")
    assert caught.value.status_code == 401


@pytest.mark.parametrize(
    "key", [ENV_KEY, HASHED_KEY], ids=["key-from-env-var", "key-given-as-sha256"]
)
def test_the_right_key_is_200(main_stack: Served, tiny_ref: Reference, key: str) -> None:
    response = main_stack.post(
        {"model": TINY, "input": ["Hello world"]}, headers=main_stack.headers(key)
    )
    assert response.status_code == 200, response.text
    assert_matches_reference(
        vectors_of(response.json(), 1)[0], tiny_ref.embed("Hello world", "retrieval.query"), key
    )
    models = httpx.get(
        f"{main_stack.base_url}/v1/models", headers=main_stack.headers(key), timeout=10
    )
    assert models.status_code == 200, models.text
    body = models.json()
    assert body["object"] == "list"
    assert sorted(m["id"] for m in body["data"] if m["parent"] is None) == sorted([TINY, DEMO])
    assert all(m["object"] == "model" for m in body["data"])


def test_health_and_ready_stay_open_without_a_key(main_stack: Served) -> None:
    for path in ("/health", "/ready"):
        response = httpx.get(f"{main_stack.base_url}{path}", timeout=10)
        assert response.status_code == 200, (path, response.text)


# --- readiness ---------------------------------------------------------------------------------


def test_ready_is_503_until_the_model_is_loaded_then_200(main_stack: Served) -> None:
    """`main_stack` was started without waiting, tritonserver held still until the gateway had answered
    /ready three times ("frozen"), then let go ("loading"); every /ready answer until the first 200 is here.
    """
    history = main_stack.ready_history
    frozen = [
        status for _, phase, status in history if phase == "frozen" and isinstance(status, int)
    ]
    loading = [
        status for _, phase, status in history if phase == "loading" and isinstance(status, int)
    ]
    assert len(frozen) >= 3 and set(frozen) == {503}, (
        f"/ready while Triton had loaded nothing: {history}"
    )
    assert loading and loading[-1] == 200, history
    # Triton was caught at exec, seconds before it can load anything: after it is let go there is
    # still a loading window, and /ready must say 503 through all of it.
    assert loading[:-1] and set(loading[:-1]) == {503}, (
        f"before the first 200, /ready answered {history}"
    )
    first_answer = next(i for i, (_, _, status) in enumerate(history) if isinstance(status, int))
    assert all(isinstance(status, int) for _, _, status in history[first_answer:]), (
        "the gateway went away"
    )
    # 200 means what it says: Triton has loaded every served model, and embeddings work.
    for model in (TINY, DEMO):
        assert (
            httpx.get(f"{main_stack.triton_url}/v2/models/{model}/ready", timeout=10).status_code
            == 200
        )
    assert main_stack.post({"model": TINY, "input": "Hello world"}).status_code == 200


# --- a folder without its weights --------------------------------------------------------------


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(
    "missing",
    [("model.onnx_data",), ("model.onnx_data", "special_tokens_map.json")],
    ids=["weights", "two-files"],
)
def test_serve_with_a_folder_missing_model_onnx_data_exits_at_once_listing_the_missing_files(
    tmp_path: Path, tiny_jina_dir: Path, missing: tuple[str, ...]
) -> None:
    folder = tmp_path / "jina-embeddings-v3"
    folder.mkdir()
    for source in tiny_jina_dir.iterdir():
        if source.name not in missing:
            (folder / source.name).symlink_to(source)
    toml = ports_toml() + model_toml(TINY, folder, precision="fp32")
    config = tmp_path / "embed.toml"
    config.write_text(toml)
    ports = [
        toml_int(toml, k)
        for k in ("port", "triton_http_port", "triton_grpc_port", "triton_metrics_port")
    ]
    runtime = tmp_path / "runtime"
    # `appliance serve`, run as Stack runs it (the console script is `appliance.cli:main`).
    argv = [
        sys.executable,
        "-m",
        "appliance.cli",
        "serve",
        "--config",
        str(config),
        "--runtime-dir",
        str(runtime),
    ]

    started = time.monotonic()
    with (tmp_path / "out.log").open("wb") as out, (tmp_path / "err.log").open("wb") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True)
    listening: set[int] = set()
    try:
        while process.poll() is None and time.monotonic() - started < 30:
            listening |= {p for p in ports if _listening(p)}
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        code = process.wait()
    elapsed = time.monotonic() - started
    stderr = (tmp_path / "err.log").read_text() + (tmp_path / "out.log").read_text()

    assert code != 0, f"serve exited {code}:\n{stderr}"
    assert elapsed < 15, f"serve took {elapsed:.1f}s to give up"
    for name in missing:
        assert str(folder.resolve() / name) in stderr, f"{name} is not listed:\n{stderr}"
    assert "models[0].path" in stderr and "fix" in stderr, stderr
    assert not listening and not any(_listening(p) for p in ports), (
        f"something listened on {listening}"
    )
    assert not (runtime / "supervisord.pid").exists() and not (runtime / "supervisor.sock").exists()


# --- disruptive: keep last in this module --------------------------------------------------------


def _tritonserver_pid(served: Served) -> int:
    """The tritonserver process: the child of the launcher that supervisord runs as `triton`."""
    transport = SupervisorTransport(None, None, f"unix://{served.runtime_dir / 'supervisor.sock'}")
    supervisor = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
    try:
        info = cast(dict[str, Any], supervisor.supervisor.getProcessInfo("triton"))
        launcher = int(info["pid"])
    finally:
        supervisor("close")()
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    servers = [int(c) for c in children if "tritonserver" in Path(f"/proc/{c}/cmdline").read_text()]
    assert len(servers) == 1, f"launcher {launcher} has children {children}"
    return servers[0]


def _wait_gone(pid: int, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} is still alive")


def test_ready_is_503_after_triton_crashes_until_it_has_reloaded_the_models(
    main_stack: Served, tiny_ref: Reference
) -> None:
    """Deterministic twin of the start-up check: kill tritonserver under a running gateway.

    supervisord restarts it; until the models are loaded again /ready must say 503, and an
    embedding request must get a 503 in OpenAI's error shape (never a hang or a 500).
    """
    pid = _tritonserver_pid(main_stack)
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    assert httpx.get(f"{main_stack.base_url}/ready", timeout=10).status_code == 503
    down = main_stack.post({"model": TINY, "input": "Hello world"}, timeout=30)
    error = assert_openai_error(down, 503)
    assert down.headers.get("retry-after"), "a 503 should say when to retry"
    assert "Traceback" not in error["message"]

    history: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not history or history[-1] != 200):
        history.append(httpx.get(f"{main_stack.base_url}/ready", timeout=10).status_code)
        time.sleep(0.05)
    assert history and history[-1] == 200, (
        f"Triton did not come back: {history[-5:]}\n{main_stack.stack.log()[-3000:]}"
    )
    assert set(history[:-1]) <= {503}, history
    assert _tritonserver_pid(main_stack) != pid
    vectors, _ = main_stack.embed(TINY, TEXTS[:2], task="retrieval.query")
    for text, got in zip(TEXTS[:2], vectors):
        assert_matches_reference(
            got, tiny_ref.embed(text, "retrieval.query"), f"after the restart: {text!r}"
        )
