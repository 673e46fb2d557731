"""Production hardening, end to end on the REAL stack (`appliance serve`: supervisord + tritonserver + gateway).

Backpressure, request timeout, crash recovery (tritonserver and gateway killed with SIGKILL), SIGTERM
drain, model load failure, metrics, request logs, auth with per-key limits, hostile input.
Every 200 is checked against the independent ONNX Runtime reference (`harness.reference`).

All traffic goes to 127.0.0.1; every load loop is bounded in count and in time; processes are
found by walking down from THIS test's own `appliance serve` pid (other stacks may be running).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import onnx
import pytest

from harness import procs
from harness.openai_errors import assert_openai_error
from harness.reference import Reference
from harness.stack import Stack, model_toml, ports_toml, toml_int

pytestmark = pytest.mark.e2e

TINY = "tiny"
TASK = "text-matching"
MiB = 1024 * 1024

WORDS = (  # noqa: SIM905 (a sentence reads better than a list of 60 quoted words)
    "the quick brown fox jumps over lazy dog a self hosted embedding server turns text into vectors so "
    "that similar documents end up close to each other search retrieval clustering and classification "
    "all work on these query asks for evidence passage provides answer machine learning models read "
    "tokens not words every token has an identifier what is capital of france paris largest city"
).split()

# Secrets: none of these may ever appear in a log line, a metric or the compiled settings.
ENV_VAR = "HARDENING_API_KEY"
ENV_KEY = "sk-hardening-env-1b9f3e77c2"
PLAIN_KEY = "sk-hardening-plain-5d0a11e4b8"
SHA_KEY = "sk-hardening-sha-93c7aa02f1"
RPM_KEY = "sk-hardening-rpm-40e8d6c1a9"
TPM_KEY = "sk-hardening-tpm-7f2b5e9d03"
METRICS_RPM_KEY = "sk-hardening-mrpm-c6a1f08b4e"
PLAIN_RPM_KEY = "sk-hardening-plainrpm-81b3d5"
BOTH_KEY = "sk-hardening-both-5d2c7e19"
WRONG_KEY = "sk-hardening-wrong-2e6d9b7a15"
SECRETS = (ENV_KEY, PLAIN_KEY, SHA_KEY, RPM_KEY, TPM_KEY, METRICS_RPM_KEY, PLAIN_RPM_KEY, BOTH_KEY, WRONG_KEY)


# --------------------------------------------------------------------------- helpers


def text_of(seed: int, words: int) -> str:
    """A deterministic text of `words` words (distinct per seed, so mixed-up answers are caught)."""
    rng = np.random.default_rng(seed)
    return f"document {seed}: " + " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), words))


def server_section(**extra: object) -> str:
    """`ports_toml()` (a [server] table with free ports) plus extra [server] keys."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return ports_toml() + "".join(line + "\n" for line in lines)


def limits_section(**values: object) -> str:
    return "[limits]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())


def say(capsys: pytest.CaptureFixture[str], message: str) -> None:
    """Print past pytest's capture: the numbers this file reports (timings, RSS, recovery)."""
    with capsys.disabled():
        print(f"\n[hardening] {message}", flush=True)


def assert_retry_after(response: httpx.Response) -> int:
    value = response.headers.get("retry-after")
    assert value is not None and value.isdigit() and int(value) >= 1, f"Retry-After: {value!r}"
    return int(value)


class Expected:
    """Reference vectors, computed once per (text, task)."""

    def __init__(self, ref: Reference) -> None:
        self.ref = ref
        self.cache: dict[tuple[str, str], npt.NDArray[np.float64]] = {}
        self.lock = threading.Lock()

    def __call__(self, text: str, task: str = TASK) -> npt.NDArray[np.float64]:
        with self.lock:
            if (text, task) not in self.cache:
                self.cache[(text, task)] = self.ref.embed(text, task)
            return self.cache[(text, task)]

    def check(self, body: dict[str, Any], texts: list[str], task: str = TASK, atol: float = 1e-4) -> None:
        """One vector per input, in `index` order, each within `atol` of the reference."""
        data = body["data"]
        assert sorted(d["index"] for d in data) == list(range(len(texts))), [d["index"] for d in data]
        for item in data:
            got = np.asarray(item["embedding"], dtype=np.float64)
            want = self(texts[item["index"]], task)
            assert got.shape == want.shape, (got.shape, want.shape)
            diff = float(np.abs(got - want).max())
            assert diff <= atol, f"input {item['index']}: max |diff| to the reference {diff:.2e}"


_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text format -> {(sample name as written, labels): value}."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        labels = frozenset(_LABEL.findall(match.group("labels") or ""))
        out[(match.group("name"), labels)] = float(match.group("value"))
    return out


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when there are none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def wait_for(condition: Callable[[], Any], deadline_s: float, what: str, interval_s: float = 0.1) -> Any:
    """Poll `condition` until truthy (returned), or fail after `deadline_s`."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)  # poll interval, not a wait for a condition
    raise AssertionError(f"{what}: not within {deadline_s}s")


def log_lines_with(stack: Stack, needle: str) -> list[str]:
    return [line for line in stack.log().splitlines() if needle in line]


def spawned_pids(log: str, program: str) -> set[int]:
    """The pids supervisord started `program` with (counted by pid, so a line printed twice, as
    supervisord did while its logfile was /dev/stdout besides its nodaemon echo, counts once)."""
    return {int(pid) for pid in re.findall(rf"spawned: '{program}' with pid (\d+)", log)}


SHM_PREFIX = "triton_python_backend_shm_region"


def shm_regions(stubs: list[procs.Proc]) -> list[Path]:
    """The /dev/shm files Triton made for these Python-backend stubs (named on their command lines)."""
    return [Path("/dev/shm", arg) for stub in stubs for arg in stub.cmdline if arg.startswith(SHM_PREFIX)]


def reap_session(stack: Stack) -> list[procs.Proc]:
    """SIGKILL whatever is still running in this stack's own session (the harness starts each stack
    with a new session) once `appliance serve` has exited; return what was found."""
    assert stack.process is not None
    left = procs.in_session(stack.process.pid) if stack.process.poll() is not None else []
    for proc in left:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def stop_checked(stack: Stack, *, leftovers_ok: bool = False) -> None:
    code = stack.stop()
    left = reap_session(stack)
    assert code == 0, f"appliance exited with {code} on SIGTERM:\n{stack.log()[-3000:]}"
    assert leftovers_ok or not left, f"still running after the appliance exited: {[p.command for p in left]}"


def running_stack(workdir: Path, toml: str, *, env: dict[str, str] | None = None,
                  leftovers_ok: bool = False) -> Iterator[Running]:
    """A module fixture's body: start the stack, hand it out, stop it and check what it left."""
    stack = Stack(workdir, toml, env=env or {}).start()
    try:
        yield Running(stack)
    finally:
        stop_checked(stack, leftovers_ok=leftovers_ok)


@pytest.fixture(scope="module")
def expected(tiny_jina_dir: Path) -> Expected:
    return Expected(Reference(tiny_jina_dir))


# --------------------------------------------------------------------------- the guarded stack
# Concurrency bound 2, Triton queue policy, several named keys (env, plaintext, sha256, per-key
# limits), JSON request logs. Shared by the overload, queue policy, metrics, logs, auth and hostile
# input tests below (which use distinct keys so their per-key windows never interfere).

GUARDED_LIMITS = {
    "max_concurrent_requests": 2, "request_timeout_s": 30, "triton_max_queue_size": 16,
    "triton_queue_timeout_ms": 20000,
}


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def guarded_auth_toml() -> str:
    return (
        "[auth]\n"
        "keys = [\n"
        f'  {{name = "ops-env", env = "{ENV_VAR}"}},\n'
        f'  {{name = "ops-plain", key = "{PLAIN_KEY}"}},\n'
        f'  {{name = "ops-sha", sha256 = "{sha(SHA_KEY)}"}},\n'
        f'  {{name = "capped-rpm", sha256 = "{sha(RPM_KEY)}", requests_per_minute = 3}},\n'
        f'  {{name = "capped-tpm", sha256 = "{sha(TPM_KEY)}", tokens_per_minute = 200}},\n'
        f'  {{name = "metrics-rpm", sha256 = "{sha(METRICS_RPM_KEY)}", requests_per_minute = 1}},\n'
        f'  {{name = "capped-plain", key = "{PLAIN_RPM_KEY}", requests_per_minute = 1}},\n'
        f'  {{name = "capped-both", sha256 = "{sha(BOTH_KEY)}", requests_per_minute = 4, tokens_per_minute = 500}},\n'
        "]\n"
    )


@dataclass
class Running:
    stack: Stack

    @property
    def url(self) -> str:
        return self.stack.base_url

    @property
    def pid(self) -> int:
        assert self.stack.process is not None
        return self.stack.process.pid

    @property
    def runtime_dir(self) -> Path:
        return self.stack.workdir / "runtime"

    def embed(self, texts: list[str] | str, *, key: str | None = None, timeout: float = 60.0,
              headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:
        all_headers = {"Authorization": f"Bearer {key}"} if key else {}
        all_headers.update(headers or {})
        body = {"model": TINY, "input": texts, "task": TASK, "encoding_format": "float", **extra}
        return httpx.post(f"{self.url}/v1/embeddings", json=body, headers=all_headers, timeout=timeout)

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        response = httpx.get(f"{self.url}/metrics", timeout=10)
        assert response.status_code == 200, response.text
        return metric_samples(response.text)

    def gateway_rss(self) -> int:
        gateway = procs.gateway(self.pid)
        assert gateway is not None, "no gateway process under this stack"
        return procs.rss_bytes(gateway.pid) or 0

    def healthy(self, key: str | None = None) -> None:
        assert httpx.get(f"{self.url}/health", timeout=10).status_code == 200
        assert httpx.get(f"{self.url}/ready", timeout=10).status_code == 200
        response = self.embed(["still healthy?"], key=key, timeout=30)
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path) -> Iterator[Running]:
    toml = (
        server_section(log_format="json")
        + limits_section(**GUARDED_LIMITS)
        + guarded_auth_toml()
        + model_toml(TINY, tiny_jina_dir, precision="fp32")
    )
    yield from running_stack(tmp_path_factory.mktemp("guarded"), toml, env={ENV_VAR: ENV_KEY})


def test_overload_beyond_the_concurrency_bound_is_refused_with_429_and_every_accepted_answer_is_correct(
    guarded: Running, expected: Expected, capsys: pytest.CaptureFixture[str]
) -> None:
    clients, rounds = 8, 3
    # ~1000 tokens per input, 2 inputs: slow enough that 8 simultaneous requests overlap.
    texts = {c: [text_of(100 + c, 800), text_of(200 + c, 800)] for c in range(clients)}
    for batch in texts.values():
        for t in batch:
            expected(t)
    before = guarded.metrics()
    barrier = threading.Barrier(clients, timeout=60)

    def client(c: int) -> list[tuple[int, float, httpx.Response]]:
        out = []
        with httpx.Client(timeout=60) as http:
            for r in range(rounds):
                barrier.wait()  # a burst: every client sends at the same moment
                start = time.monotonic()
                response = http.post(
                    f"{guarded.url}/v1/embeddings",
                    json={"model": TINY, "input": texts[c], "task": TASK, "encoding_format": "float"},
                    headers={"Authorization": f"Bearer {PLAIN_KEY}"},
                )
                out.append((r, time.monotonic() - start, response))
        return out

    with ThreadPoolExecutor(clients) as pool:
        results = {c: f for c, f in zip(range(clients), pool.map(client, range(clients)))}

    statuses = Counter(resp.status_code for rs in results.values() for _, _, resp in rs)
    refused = [(d, resp) for rs in results.values() for _, d, resp in rs if resp.status_code == 429]
    say(capsys, f"overload: {clients} clients x {rounds} bursts against max_concurrent_requests=2 -> "
                f"{dict(statuses)}; slowest 429 answered in {max((d for d, _ in refused), default=0):.3f}s")
    assert not [s for s in statuses if s >= 500], f"5xx under overload: {statuses}"
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[429] > 0, f"no request was refused with {clients} concurrent clients and a bound of 2"
    assert statuses[200] >= rounds, statuses
    for _, response in refused:
        error = assert_openai_error(response, 429, "rate_limit_error")
        assert error["code"] == "overloaded", error
        assert_retry_after(response)
    for c, rs in results.items():
        for _, _, response in rs:
            if response.status_code == 200:
                expected.check(response.json(), texts[c])
    after = guarded.metrics()
    assert metric(after, "embed_rejected_requests_total", reason="overloaded") - metric(
        before, "embed_rejected_requests_total", reason="overloaded"
    ) == statuses[429]
    assert metric(after, "embed_in_flight_requests") == 0


def test_the_triton_queue_policy_is_compiled_from_embed_toml_and_loaded_by_triton(guarded: Running) -> None:
    configs = list(guarded.runtime_dir.rglob("config.pbtxt"))
    assert configs, f"no config.pbtxt under {guarded.runtime_dir}"
    pbtxt = next(p for p in configs if p.parent.name == TINY).read_text()
    policy = re.search(r"default_queue_policy\s*\{(?P<body>[^}]*)\}", pbtxt)
    assert policy, pbtxt
    body = policy.group("body")
    assert re.search(r"\bmax_queue_size:\s*16\b", body), body
    assert re.search(r"\bdefault_timeout_microseconds:\s*20000000\b", body), body
    # timeout_action REJECT is the enum's default (0), which the text format leaves out; Triton shows it.
    assert "DELAY" not in body, body
    # ... and Triton itself runs with it (its model config endpoint, on Triton's loopback port).
    port = toml_int(guarded.stack.toml, "triton_http_port")
    live = httpx.get(f"http://127.0.0.1:{port}/v2/models/{TINY}/config", timeout=10).json()
    queue = live["dynamic_batching"]["default_queue_policy"]
    assert int(queue["max_queue_size"]) == 16, queue
    assert int(queue["default_timeout_microseconds"]) == 20_000_000, queue
    assert queue["timeout_action"] == "REJECT", queue


def test_metrics_count_requests_tokens_chunks_latency_rejections_and_include_triton(
    guarded: Running, expected: Expected, tiny_jina_dir: Path
) -> None:
    texts = [text_of(300, 40), text_of(301, 5), text_of(302, 120)]
    task = "retrieval.query"
    want_tokens = sum(len(expected.ref.ids(t, task)) for t in texts)
    want_real = want_tokens + len(expected.ref.ids("first", TASK))  # everything Triton will run
    before = guarded.metrics()
    response = guarded.embed(texts, key=SHA_KEY, task=task)
    assert response.status_code == 200, response.text
    expected.check(response.json(), texts, task)
    assert response.json()["usage"]["prompt_tokens"] == want_tokens
    # A per-key refusal: metrics-rpm may send one request a minute.
    assert guarded.embed(["first"], key=METRICS_RPM_KEY).status_code == 200
    assert guarded.embed(["second"], key=METRICS_RPM_KEY).status_code == 429

    def moved() -> tuple[Any, ...] | None:
        after = guarded.metrics()
        real = metric(after, "embed_triton_tokens_real_total", model=TINY) - metric(
            before, "embed_triton_tokens_real_total", model=TINY)
        # Triton's own counters are exported asynchronously: wait until the known requests show.
        return (after,) if real >= want_real else None

    (after,) = wait_for(moved, 10, "Triton's token counters did not move")

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    ok = {"endpoint": "/v1/embeddings", "model": TINY, "task": task, "status": "200", "key": "ops-sha"}
    assert delta("embed_requests_total", **ok) == 1
    assert delta("embed_requests_total", endpoint="/v1/embeddings", status="429", key="metrics-rpm") == 1
    assert delta("embed_rejected_requests_total", reason="key_limit") == 1
    assert delta("embed_input_tokens_total", model=TINY, key="ops-sha") == want_tokens
    for phase in ("tokenize", "inference", "total"):
        assert delta("embed_request_duration_seconds_count", phase=phase, model=TINY) == 2, phase
        assert delta("embed_request_duration_seconds_sum", phase=phase, model=TINY) > 0, phase
    chunks = delta("embed_chunk_rows_count", model=TINY)
    assert chunks >= 2  # at least one chunk per successful request
    assert delta("embed_chunk_rows_sum", model=TINY) == len(texts) + 1  # one row per input
    assert delta("embed_chunk_padding_efficiency_count", model=TINY) == chunks
    assert ("embed_in_flight_requests", frozenset()) in after and metric(after, "embed_in_flight_requests") == 0
    # Triton's own metrics through the same scrape target.
    assert delta("nv_inference_request_success", model=TINY) >= chunks
    assert any(name.startswith("nv_inference_queue_duration_us") for name, _ in after)
    real = delta("embed_triton_tokens_real_total", model=TINY)
    computed = delta("embed_triton_tokens_computed_total", model=TINY)
    assert real == want_real, (real, want_real)
    assert computed >= real


def wait_for_log(stack: Stack, needle: str, deadline_s: float = 10) -> list[str]:
    return wait_for(lambda: log_lines_with(stack, needle), deadline_s, f"no log line with {needle!r}")  # type: ignore[no-any-return]


def test_json_request_logs_carry_the_request_id_and_fields_but_never_input_text(guarded: Running) -> None:
    marker = "zebra-marker-quokka-5521"
    given = "hardening-req-0001"
    response = guarded.embed([f"{marker} one", "two"], key=PLAIN_KEY, headers={"X-Request-ID": given})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == given
    (line,) = wait_for_log(guarded.stack, given)
    record = json.loads(line)
    assert record["request_id"] == given
    assert record["status"] == 200 and record["model"] == TINY and record["task"] == TASK
    assert record["inputs"] == 2 and record["tokens"] == response.json()["usage"]["prompt_tokens"]
    assert record["key"] == "ops-plain"
    assert isinstance(record["latency_ms"], (int, float)) and record["latency_ms"] >= 0
    # No X-Request-ID (or an unusable one): the gateway makes one up and echoes it.
    for headers in ({}, {"X-Request-ID": "not a safe id"}):
        response = guarded.embed(["three"], key=PLAIN_KEY, headers=headers)
        assert response.status_code == 200
        generated = response.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated), generated
        (line,) = wait_for_log(guarded.stack, generated)
        assert json.loads(line)["status"] == 200
    # An error is logged too, with its status.
    response = guarded.embed(["x"], key=PLAIN_KEY, headers={"X-Request-ID": "hardening-req-0002"}, task="nope")
    assert response.status_code == 400
    (line,) = wait_for_log(guarded.stack, "hardening-req-0002")
    assert json.loads(line)["status"] == 400
    assert marker not in guarded.stack.log(), "input text in the log while log_inputs is off"


def test_auth_refuses_missing_wrong_and_malformed_keys_and_accepts_every_named_key(guarded: Running) -> None:
    url = f"{guarded.url}/v1/embeddings"
    body = {"model": TINY, "input": "hi"}
    for headers in ({}, {"Authorization": f"Bearer {WRONG_KEY}"}, {"Authorization": f"Basic {PLAIN_KEY}"},
                    {"Authorization": "Bearer"}, {"Authorization": PLAIN_KEY}):
        response = httpx.post(url, json=body, headers=headers, timeout=10)
        error = assert_openai_error(response, 401, "invalid_request_error")
        assert error["code"] == "invalid_api_key"
    assert assert_openai_error(httpx.get(f"{guarded.url}/v1/models", timeout=10), 401)
    for key in (ENV_KEY, PLAIN_KEY, SHA_KEY):
        assert guarded.embed("hi", key=key).status_code == 200, key
    # Liveness and readiness stay open.
    assert httpx.get(f"{guarded.url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{guarded.url}/ready", timeout=10).status_code == 200


def test_per_key_request_and_token_limits_refuse_only_that_key_with_429_and_retry_after(guarded: Running) -> None:
    before = guarded.metrics()
    for i in range(3):
        assert guarded.embed(f"r{i}", key=RPM_KEY).status_code == 200
    refused = guarded.embed("r3", key=RPM_KEY)
    error = assert_openai_error(refused, 429, "rate_limit_error")
    assert error["code"] == "rate_limit_exceeded" and "capped-rpm" in error["message"]
    assert 1 <= assert_retry_after(refused) <= 60
    assert guarded.embed("other key", key=PLAIN_KEY).status_code == 200  # others are not affected

    # 200 tokens a minute: a ~300-token request passes (the budget was not spent yet) ...
    first = guarded.embed(text_of(400, 250), key=TPM_KEY)
    assert first.status_code == 200 and first.json()["usage"]["prompt_tokens"] > 200
    # ... and leaves nothing for the next one.
    refused = guarded.embed("tiny", key=TPM_KEY)
    error = assert_openai_error(refused, 429, "rate_limit_error")
    assert "tokens per minute" in error["message"]
    assert 1 <= assert_retry_after(refused) <= 60
    assert guarded.embed("other key", key=ENV_KEY).status_code == 200

    after = guarded.metrics()
    by_key = {k: metric(after, "embed_requests_total", key=k, status="429") -
              metric(before, "embed_requests_total", key=k, status="429")
              for k in ("capped-rpm", "capped-tpm", "ops-plain", "ops-env")}
    assert by_key == {"capped-rpm": 1, "capped-tpm": 1, "ops-plain": 0, "ops-env": 0}


def openai_seconds(duration: str) -> float:
    """`17ms`, `8.64s`, `1m0s` -> seconds."""
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?", duration)
    assert match and duration, f"not an OpenAI duration: {duration!r}"
    minutes, seconds, ms = match.groups()
    return int(minutes or 0) * 60 + float(seconds or 0) + int(ms or 0) / 1000


def test_every_answer_to_a_limited_key_carries_openais_rate_limit_headers(guarded: Running) -> None:
    spent = 0
    for i in range(3):
        response = guarded.embed(f"hello number {i}", key=BOTH_KEY)
        assert response.status_code == 200, response.text
        spent += response.json()["usage"]["prompt_tokens"]
        h = response.headers
        assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("4", str(3 - i))
        assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]) == ("500", str(500 - spent))
        for what in ("requests", "tokens"):  # the first request leaves the window first
            assert 55 < openai_seconds(h[f"x-ratelimit-reset-{what}"]) <= 60, h
    bad = guarded.embed("fourth", key=BOTH_KEY, dimensions=7)  # a refused request still counts as a request
    assert_openai_error(bad, 400)
    assert bad.headers["x-ratelimit-remaining-requests"] == "0"
    assert bad.headers["x-ratelimit-remaining-tokens"] == str(500 - spent)
    refused = guarded.embed("fifth", key=BOTH_KEY)
    assert_openai_error(refused, 429, "rate_limit_error")
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    reset = openai_seconds(refused.headers["x-ratelimit-reset-requests"])
    retry = assert_retry_after(refused)
    assert retry - 1 <= reset <= retry, (retry, reset)  # Retry-After is the reset, rounded up to seconds
    assert abs(int(refused.headers["retry-after-ms"]) - reset * 1000) <= 1
    plain = guarded.embed("a key without limits", key=PLAIN_KEY)
    assert plain.status_code == 200 and not any(k.startswith("x-ratelimit") for k in plain.headers)


def test_a_per_key_limit_on_a_key_written_in_plaintext_is_enforced_too(guarded: Running) -> None:
    assert guarded.embed("once", key=PLAIN_RPM_KEY).status_code == 200
    refused = guarded.embed("twice", key=PLAIN_RPM_KEY)
    assert_openai_error(refused, 429, "rate_limit_error")
    assert_retry_after(refused)
    compiled = json.loads((guarded.runtime_dir / "appliance.json").read_text())
    (entry,) = [k for k in compiled["gateway"]["auth_keys"] if k["name"] == "capped-plain"]
    assert entry["requests_per_minute"] == 1, entry


def test_no_api_key_ever_appears_in_logs_metrics_or_compiled_settings(guarded: Running) -> None:
    # Valid keys of every kind and invalid ones, as Bearer tokens and in other headers.
    for key in SECRETS:
        guarded.embed("k", key=key)
        httpx.get(f"{guarded.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    httpx.post(f"{guarded.url}/v1/embeddings", content=b"{not json", timeout=10,
               headers={"Authorization": f"Bearer {WRONG_KEY}", "Content-Type": "application/json",
                        "X-Request-ID": "keys-last"})
    wait_for_log(guarded.stack, "keys-last")  # every line before it has reached the log file
    log = guarded.stack.log()
    assert "ops-plain" in log  # the names are logged ...
    leaked = [s for s in SECRETS if s in log]
    assert not leaked, f"API keys in the log: {leaked}"  # ... the keys never
    scrape = httpx.get(f"{guarded.url}/metrics", timeout=10).text
    assert 'key="capped-rpm"' in scrape
    assert not [s for s in SECRETS if s in scrape]
    for path in guarded.runtime_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".pbtxt", ".conf", ".toml"):
            content = path.read_text(errors="replace")
            assert not [s for s in SECRETS if s in content], f"a plaintext key in {path}"


# --- hostile input: each -> 4xx, fast (timing printed), gateway memory bounded, still healthy after


@dataclass(frozen=True)
class Hostile:
    name: str
    allowed: tuple[int, ...]
    request: Callable[[str], dict[str, Any]]  # base url -> httpx.request kwargs
    # uvicorn may refuse a header block this large by closing the connection while the client is
    # still sending (a reset), instead of a 400: also a refusal at the HTTP layer.
    reset_is_a_refusal: bool = False


def _json_post(url: str, content: bytes, content_type: str = "application/json", **headers: str) -> dict[str, Any]:
    return {"method": "POST", "url": f"{url}/v1/embeddings", "content": content,
            "headers": {"Content-Type": content_type, "Authorization": f"Bearer {PLAIN_KEY}", **headers}}


def _chunked(total: int) -> Iterator[bytes]:
    yield b'{"model": "tiny", "input": "'
    block = b"a" * MiB
    for _ in range(total // MiB):
        yield block
    yield b'"}'


HOSTILE = [
    Hostile("body over max_body_bytes (17 MiB, Content-Length)", (413,),
            lambda u: _json_post(u, b'{"model": "tiny", "input": "' + b"a" * (17 * MiB) + b'"}')),
    Hostile("chunked body over max_body_bytes (17 MiB, no Content-Length)", (413,),
            lambda u: _json_post(u, _chunked(17 * MiB))),  # type: ignore[arg-type]
    Hostile("100k nested '[' as the body", (400,), lambda u: _json_post(u, b"[" * 100_000)),
    Hostile("100k nested '[' inside input", (400,),
            lambda u: _json_post(u, b'{"model": "tiny", "input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")),
    Hostile("100k nested '[' inside an ignored field", (400,),
            lambda u: _json_post(u, b'{"model": "tiny", "input": "x", "extra": ' + b"[" * 100_000
                                 + b"]" * 100_000 + b"}")),
    Hostile("100k inputs (over max_inputs_per_request)", (400,),
            lambda u: _json_post(u, json.dumps({"model": TINY, "input": ["a"] * 100_000}).encode())),
    Hostile("10 MB string (under the 16 MiB body limit, far over max tokens)", (400,),
            lambda u: _json_post(u, json.dumps({"model": TINY, "input": "lorem ipsum " * (10 * MiB // 12)}).encode())),
    Hostile("invalid UTF-8 inside a JSON string", (400,),
            lambda u: _json_post(u, b'{"model": "tiny", "input": "caf\xc3\x28 \xff\xfe"}')),
    Hostile("Content-Type text/plain", (415,), lambda u: _json_post(u, b'{"model": "tiny", "input": "x"}', "text/plain")),
    Hostile("Content-Type form-urlencoded", (415,),
            lambda u: _json_post(u, b"model=tiny&input=x", "application/x-www-form-urlencoded")),
    Hostile("one 64 KiB header", (400, 431),
            lambda u: _json_post(u, b'{"model": "tiny", "input": "x"}', **{"X-Big": "a" * (64 * 1024)})),
    Hostile("a flood of 5000 headers", (400, 431),
            lambda u: _json_post(u, b'{"model": "tiny", "input": "x"}', **{f"X-H{i}": "v" for i in range(5000)})),
    Hostile("one 1 MiB header", (400, 431),
            lambda u: _json_post(u, b'{"model": "tiny", "input": "x"}', **{"X-Big": "a" * MiB}),
            reset_is_a_refusal=True),
]
RSS_GROWTH_BOUND = 128 * MiB


@pytest.mark.parametrize("case", HOSTILE, ids=[h.name for h in HOSTILE])
def test_hostile_input_gets_a_4xx_fast_with_bounded_gateway_memory_and_the_server_stays_healthy(
    guarded: Running, case: Hostile, capsys: pytest.CaptureFixture[str]
) -> None:
    rss_before = guarded.gateway_rss()
    start = time.monotonic()
    with httpx.Client(timeout=120) as http:
        try:
            response = http.request(**case.request(guarded.url))
            status: int | str = response.status_code
        except httpx.RemoteProtocolError as exc:  # the server closed the connection without a response
            response, status = None, f"connection closed ({exc})"
        except (httpx.ReadError, httpx.WriteError) as exc:
            if not case.reset_is_a_refusal:
                raise
            response, status = None, f"connection reset ({exc})"
    elapsed = time.monotonic() - start
    rss_after = guarded.gateway_rss()
    say(capsys, f"hostile | {case.name}: {status} in {elapsed:.2f}s; gateway RSS "
                f"{rss_before / MiB:.0f} -> {rss_after / MiB:.0f} MiB ({(rss_after - rss_before) / MiB:+.0f})")
    guarded.healthy(PLAIN_KEY)
    if response is None and case.reset_is_a_refusal:
        return
    assert response is not None, f"{case.name}: {status}"
    assert response.status_code in case.allowed, f"{case.name}: {response.status_code} {response.text[:300]}"
    if response.headers.get("content-type", "").startswith("application/json"):
        assert_openai_error(response, response.status_code)
    else:  # only uvicorn's own refusals (malformed HTTP) are not in OpenAI's shape
        assert response.status_code in (400, 431), response.text[:300]
    assert rss_after - rss_before <= RSS_GROWTH_BOUND, (
        f"{case.name}: the gateway grew by {(rss_after - rss_before) / MiB:.0f} MiB"
    )


def test_triton_refusals_from_its_queue_policy_become_429_when_full_and_503_on_queue_timeout(
    tmp_path: Path, tiny_jina_dir: Path, expected: Expected, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gateway admits everything (64); Triton's queue (2 deep, 200 ms) is the bound that bites."""
    toml = (server_section()
            + limits_section(max_concurrent_requests=64, triton_max_queue_size=2, triton_queue_timeout_ms=200)
            + "[batching]\nmax_batch_tokens = 16384\n[instances]\ncount = 1\n" + model_toml(TINY, tiny_jina_dir, precision="fp32"))
    stack = Stack(tmp_path, toml).start()
    running = Running(stack)
    try:
        # Two ~8000-token inputs, one chunk (a 16384-token budget), one ONNX Runtime run: the one model
        # instance is busy for well over the queue timeout (1.4 s here), so queued requests time out.
        blocker = [text_of(900, 6000), text_of(901, 6000)]
        for text in blocker:
            expected(text)
        (stub,) = procs.backend_stubs(running.pid)  # the one model instance
        idle_cpu = procs.cpu_seconds(stub.pid)
        with ThreadPoolExecutor(8) as pool:
            started = time.monotonic()
            busy = pool.submit(running.embed, blocker, timeout=60)
            # Triton exports no "executing" gauge: the instance is busy once its stub burns CPU.
            wait_for(lambda: procs.cpu_seconds(stub.pid) - idle_cpu >= 0.1, 20,
                     "the blocker never started running in the model instance", interval_s=0.01)
            burst_sent = time.monotonic() - started
            burst = [pool.submit(running.embed, [f"queued {i}"], timeout=30) for i in range(6)]
            answers = [f.result(timeout=60) for f in burst]
            burst_done, blocker_running = time.monotonic() - started, not busy.done()
            blocked = busy.result(timeout=60)
            blocker_done = time.monotonic() - started
    finally:
        stop_checked(stack)
    statuses = Counter(r.status_code for r in answers)
    say(capsys, f"Triton queue policy (2 deep, 200 ms) behind a ~16000-token request: burst of 6 -> {dict(statuses)}"
                f"; sent at {burst_sent:.2f}s, answered at {burst_done:.2f}s; the blocker at {blocker_done:.2f}s")
    assert blocked.status_code == 200, blocked.text
    assert blocker_running, "the blocker ended before the burst was answered: the test did not test the queue"
    expected.check(blocked.json(), blocker)
    # Triton's batcher may already have taken the first queued request into the next batch (then
    # it waits for the instance, out of the queue's timeout): at most one such request is answered.
    assert set(statuses) <= {200, 429, 503} and statuses[200] <= 1, statuses
    assert statuses[429] >= 1 and statuses[503] >= 1, statuses
    for text, response in zip([f"queued {i}" for i in range(6)], answers):
        if response.status_code == 200:
            expected.check(response.json(), [text])
            continue
        error = assert_openai_error(response, response.status_code)
        assert error["type"] == ("rate_limit_error" if response.status_code == 429 else "service_unavailable")
        assert_retry_after(response)


# --------------------------------------------------------------------------- request timeout


@pytest.fixture(scope="module")
def hasty(tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path) -> Iterator[Running]:
    """A stack whose requests must be answered within 50 ms, one at a time."""
    toml = (server_section() + limits_section(request_timeout_s=0.05, max_concurrent_requests=1)
            + model_toml(TINY, tiny_jina_dir, precision="fp32"))
    yield from running_stack(tmp_path_factory.mktemp("hasty"), toml)


def test_a_request_over_request_timeout_s_ends_in_a_fast_504_never_a_hang(
    hasty: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    long_text = text_of(500, 6000)  # ~8000 tokens: seconds of inference on this machine
    timings = []
    for _ in range(3):
        start = time.monotonic()
        response = hasty.embed(long_text, timeout=30)
        timings.append(time.monotonic() - start)
        error = assert_openai_error(response, 504, "timeout")
        assert "0.05" in error["message"], error
        assert_retry_after(response)
        # The abandoned work runs on in Triton and keeps the one permit: the next request is
        # refused at once, so timed-out work can never pile up in Triton's queue.
        assert metric(hasty.metrics(), "embed_abandoned_requests") == 1
        assert_openai_error(hasty.embed("short", timeout=30), 429, "rate_limit_error", code="overloaded")
        wait_for(lambda: metric(hasty.metrics(), "embed_abandoned_requests") == 0, 120,
                 "the abandoned work never finished")
    say(capsys, f"request timeout 0.05 s: 504 after {', '.join(f'{t:.3f}s' for t in timings)}")
    assert max(timings) < 2.0, timings
    samples = hasty.metrics()
    assert metric(samples, "embed_in_flight_requests") == 0  # the permits came back
    assert metric(samples, "embed_requests_total", status="504") == 3
    assert httpx.get(f"{hasty.url}/ready", timeout=10).status_code == 200


# --------------------------------------------------------------------------- crashes


@pytest.fixture(scope="module")
def crashable(tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path) -> Iterator[Running]:
    """Open API, text logs, 10 s request timeout; its tritonserver and gateway get killed."""
    toml = server_section() + limits_section(request_timeout_s=10) + model_toml(TINY, tiny_jina_dir, precision="fp32")
    # Orphans of the killed tritonserver are asserted on by the crash test; here they are only reaped.
    yield from running_stack(tmp_path_factory.mktemp("crashable"), toml, leftovers_ok=True)


def test_text_request_logs_have_one_line_per_request_with_id_model_task_inputs_tokens_status_latency(
    crashable: Running,
) -> None:
    marker = "marmot-marker-text-8812"
    response = crashable.embed([f"{marker} alpha", "beta", "gamma"], headers={"X-Request-ID": "crash-log-1"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "crash-log-1"
    (line,) = wait_for_log(crashable.stack, "request_id=crash-log-1")
    tokens = response.json()["usage"]["prompt_tokens"]
    for part in (f"model={TINY}", f"task={TASK}", "inputs=3", f"tokens={tokens}", "status=200", "key=-"):
        assert re.search(rf"(^|\s){re.escape(part)}(\s|$)", line), (part, line)
    assert re.search(r"latency_ms=\d+(\.\d+)?", line), line
    assert marker not in crashable.stack.log()


@dataclass
class Outcome:
    client: int
    started: float
    seconds: float
    status: int | str
    response: httpx.Response | None = None


@dataclass
class LoadRun:
    """Bounded closed-loop load: `clients` threads until `stop` is set (or `max_per_client` / `max_s`)."""

    url: str
    bodies: dict[int, dict[str, Any]]
    timeout_s: float
    max_s: float = 40.0
    max_per_client: int = 4000
    stop: threading.Event = field(default_factory=threading.Event)
    outcomes: list[Outcome] = field(default_factory=list)
    ready: list[tuple[float, int | str]] = field(default_factory=list)

    def _client(self, c: int) -> None:
        deadline = time.monotonic() + self.max_s
        with httpx.Client(timeout=self.timeout_s) as http:
            for _ in range(self.max_per_client):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                start = time.monotonic()
                try:
                    response = http.post(f"{self.url}/v1/embeddings", json=self.bodies[c])
                    outcome = Outcome(c, start, time.monotonic() - start, response.status_code, response)
                except httpx.HTTPError as exc:
                    outcome = Outcome(c, start, time.monotonic() - start, f"{type(exc).__name__}: {exc}")
                self.outcomes.append(outcome)
                if outcome.status != 200:
                    time.sleep(0.1)  # back off a little (Retry-After says 2 s; a test cannot wait that long)

    def _watch_ready(self) -> None:
        deadline = time.monotonic() + self.max_s
        with httpx.Client(timeout=2) as http:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    status: int | str = http.get(f"{self.url}/ready").status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                self.ready.append((time.monotonic(), status))
                time.sleep(0.05)  # poll interval

    def __enter__(self) -> LoadRun:  # noqa: PYI034
        self.threads = [threading.Thread(target=self._client, args=(c,), daemon=True) for c in self.bodies]
        self.threads.append(threading.Thread(target=self._watch_ready, daemon=True))
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(self.timeout_s + 5)


def test_kill_9_of_tritonserver_under_load_every_request_ends_correct_or_503_and_it_recovers_within_15s(
    crashable: Running, expected: Expected, capsys: pytest.CaptureFixture[str]
) -> None:
    request_timeout_s = 10.0
    texts = {c: [text_of(600 + 10 * c + i, 60 + 40 * i) for i in range(4)] for c in range(4)}
    for batch in texts.values():
        for t in batch:
            expected(t)
    bodies = {c: {"model": TINY, "input": texts[c], "task": TASK, "encoding_format": "float"} for c in texts}
    old = procs.tritonserver(crashable.pid)
    assert old is not None, [p.command for p in procs.descendants(crashable.pid)]
    old_stubs = procs.backend_stubs(crashable.pid)
    old_launcher = procs.find(crashable.pid, cmd_contains="appliance.runtime.triton")
    assert len(old_launcher) == 1 and old_stubs, [p.command for p in procs.descendants(crashable.pid)]
    old_group = old_launcher[0].pid  # tritonserver and its stubs live in the launcher's process group
    with LoadRun(crashable.url, bodies, timeout_s=request_timeout_s + 5) as run:
        time.sleep(3)  # load running; then the crash
        killed_at = time.monotonic()
        os.kill(old.pid, signal.SIGKILL)

        def recovered() -> float | None:
            after = [(t, s) for t, s in list(run.ready) if t > killed_at]
            down = next((t for t, s in after if s != 200), None)
            if down is None:
                return None
            return next((t - killed_at for t, s in after if t > down and s == 200), None)

        recovery_s = wait_for(recovered, 20, "/ready did not go false and back to true after the kill")
        time.sleep(3)  # some load on the recovered server
    outcomes = run.outcomes
    statuses = Counter(o.status for o in outcomes)
    after_recovery = [o for o in outcomes if o.started > killed_at + recovery_s and o.status == 200]
    say(capsys, f"tritonserver kill -9 under load (4 clients): /ready back after {recovery_s:.2f}s; "
                f"outcomes {dict(statuses)}; slowest request {max(o.seconds for o in outcomes):.2f}s")
    assert recovery_s <= 15, recovery_s
    lost = [o for o in outcomes if not isinstance(o.status, int)]
    assert not lost, f"requests without an HTTP answer: {lost[:5]}"
    assert set(statuses) <= {200, 503}, statuses
    assert max(o.seconds for o in outcomes) <= request_timeout_s + 1
    for o in outcomes:
        assert o.response is not None
        if o.status == 200:
            expected.check(o.response.json(), texts[o.client])
        else:
            assert_openai_error(o.response, 503, "service_unavailable")
            assert_retry_after(o.response)
    assert after_recovery, "no successful request after the recovery"
    new = procs.tritonserver(crashable.pid)
    assert new is not None and new.pid != old.pid
    log = crashable.stack.log()
    assert "exited: triton" in log, log[-3000:]
    assert len(spawned_pids(log, "triton")) == 2, log[-3000:]
    # Nothing of the killed server outlives it: no orphaned Python-backend stub (reparented to init,
    # outside supervisord's tree, holding the model's memory) and no leaked /dev/shm region.
    try:
        deadline = time.monotonic() + 10
        while procs.in_group(old_group) and time.monotonic() < deadline:
            time.sleep(0.2)  # poll interval
        orphans = [(p.pid, p.ppid, p.command[:120]) for p in procs.in_group(old_group)]
        regions = [str(r) for r in shm_regions(old_stubs) if r.exists()]
        assert not orphans and not regions, (
            f"10 s after kill -9 of tritonserver: orphaned processes {orphans}; leaked shared memory {regions}"
        )
    finally:  # never leave them behind on this machine
        for proc in procs.in_group(old_group):
            if proc.sid == crashable.pid:
                os.kill(proc.pid, signal.SIGKILL)
        for region in shm_regions(old_stubs):
            region.unlink(missing_ok=True)


def test_kill_9_of_the_gateway_is_restarted_by_supervisord_and_ready_again(
    crashable: Running, expected: Expected, capsys: pytest.CaptureFixture[str]
) -> None:
    old = procs.gateway(crashable.pid)
    assert old is not None
    killed_at = time.monotonic()
    os.kill(old.pid, signal.SIGKILL)

    def ready() -> bool:
        try:
            return httpx.get(f"{crashable.url}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(lambda: not procs.alive(old.pid), 5, "the killed gateway is still there")
    wait_for(ready, 30, "the gateway did not come back")
    say(capsys, f"gateway kill -9: /ready 200 again after {time.monotonic() - killed_at:.2f}s")
    new = procs.gateway(crashable.pid)
    assert new is not None and new.pid != old.pid
    log = crashable.stack.log()
    assert "exited: gateway" in log and len(spawned_pids(log, "gateway")) == 2, log[-3000:]
    texts = ["after the gateway crash", text_of(700, 30)]
    response = crashable.embed(texts)
    assert response.status_code == 200
    expected.check(response.json(), texts)


def test_sigterm_drains_in_flight_requests_then_the_whole_tree_exits(
    tmp_path: Path, tiny_jina_dir: Path, expected: Expected, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = server_section() + model_toml(TINY, tiny_jina_dir, precision="fp32")
    stack = Stack(tmp_path, toml).start()
    running = Running(stack)
    try:
        tree = procs.descendants(running.pid)
        long_texts = [[text_of(800, 2500)], [text_of(801 + i, 700) for i in range(4)]]
        for texts in long_texts:
            for t in texts:
                expected(t)
        with ThreadPoolExecutor(len(long_texts)) as pool:
            futures = [pool.submit(running.embed, texts, timeout=60) for texts in long_texts]
            wait_for(lambda: metric(running.metrics(), "embed_in_flight_requests") == len(long_texts), 10,
                     "the long requests never got in flight", interval_s=0.02)
            sent_at = time.monotonic()
            os.kill(running.pid, signal.SIGTERM)
            responses = [f.result(timeout=60) for f in futures]
        answered = time.monotonic() - sent_at
        assert stack.process is not None
        code = stack.process.wait(timeout=35)
        exited = time.monotonic() - sent_at
    finally:
        stack.stop()
    say(capsys, f"SIGTERM drain: in-flight requests answered {answered:.2f}s after SIGTERM "
                f"({[r.status_code for r in responses]}); appliance exited {exited:.2f}s after, code {code}")
    for texts, response in zip(long_texts, responses):
        assert response.status_code == 200, response.text
        expected.check(response.json(), texts)
    assert code == 0, stack.log()[-3000:]
    assert exited <= 30
    left = [p for p in tree if procs.alive(p.pid)] + reap_session(stack)
    assert not left, f"still running after the appliance exited: {[(p.pid, p.command) for p in left]}"


def _break_graph(folder: Path) -> None:
    """Keep model.onnx readable by `onnx.load` (and its interface intact) but make ORT refuse it."""
    path = folder / "model.onnx"
    proto = onnx.load(str(path), load_external_data=False)
    node = next(n for n in proto.graph.node if n.op_type in ("MatMul", "Add", "Gather"))
    node.op_type = "HardeningNoSuchOp"
    onnx.save(proto, str(path))


def test_a_model_that_fails_to_load_in_onnx_runtime_stops_the_appliance_without_a_restart_loop(
    tmp_path: Path, tiny_jina_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_jina_dir, broken)
    _break_graph(broken)
    workdir = tmp_path / "stack"
    workdir.mkdir()
    stack = Stack(workdir, server_section() + model_toml(TINY, broken, precision="fp32")).start(wait=False)
    assert stack.process is not None
    started = time.monotonic()
    try:
        code = stack.process.wait(timeout=90)
    finally:
        stack.stop()
        left = reap_session(stack)
    took = time.monotonic() - started
    log = stack.log()
    spawned = len(spawned_pids(log, "triton"))
    say(capsys, f"model load failure: appliance exited by itself after {took:.1f}s with code {code}; "
                f"tritonserver spawned {spawned}x")
    assert "HardeningNoSuchOp" in log, log[-3000:]  # ORT's reason is in the log
    assert "before its models were ready" in log, log[-3000:]  # the launcher says what happened
    assert "cannot run" in log, log[-3000:]  # and the watchdog says why it stops
    assert spawned == 1, log[-3000:]
    assert took < 60
    assert not left, f"still running after the appliance exited: {[p.command for p in left]}"
    # A service that could not start must not report success to systemd / Kubernetes / `podman run`.
    assert code != 0, f"`appliance serve` exited {code} after its models failed to load"


# --------------------------------------------------------------------------- revoked keys, log_inputs


def test_a_key_removed_from_embed_toml_is_refused_after_a_restart_and_log_inputs_shows_text_but_no_key(
    tmp_path: Path, tiny_jina_dir: Path
) -> None:
    ports = server_section(log_inputs=True)
    keys = [("keep", PLAIN_KEY), ("gone", RPM_KEY)]

    def toml(entries: list[tuple[str, str]]) -> str:
        table = "[auth]\nkeys = [\n" + "".join(f'  {{name = "{n}", key = "{k}"}},\n' for n, k in entries) + "]\n"
        return ports + table + model_toml(TINY, tiny_jina_dir, precision="fp32")

    stack = Stack(tmp_path, toml(keys)).start()
    running = Running(stack)
    try:
        marker = "wombat-visible-marker-3301"
        response = running.embed([marker], key=RPM_KEY, headers={"X-Request-ID": "log-inputs-1"})
        assert response.status_code == 200
        assert running.embed("x", key=PLAIN_KEY).status_code == 200
        (line,) = wait_for_log(stack, "request_id=log-inputs-1")
        assert marker in line, line  # the debug switch puts input text in the log line ...
        assert "key=gone" in line
        stop_checked(stack)
        assert not [s for s in SECRETS if s in stack.log()]  # ... but never a key

        stack = Stack(tmp_path, toml(keys[:1])).start()  # `gone` revoked; same runtime dir, same ports
        running = Running(stack)
        error = assert_openai_error(running.embed("x", key=RPM_KEY), 401)
        assert error["code"] == "invalid_api_key"
        assert running.embed("x", key=PLAIN_KEY).status_code == 200
        assert not [s for s in SECRETS if s in stack.log()]
    finally:
        stack.stop()
        reap_session(stack)


# --------------------------------------------------------------------------- slow and idle connections

SLOW_FLOOD = 1000  # connections that send half a request head and then nothing
MAX_CONNECTIONS = SLOW_FLOOD + 50
HEAD_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def guarded_connections(tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path) -> Iterator[Running]:
    toml = (server_section() + limits_section(max_connections=MAX_CONNECTIONS, header_timeout_s=HEAD_TIMEOUT_S)
            + model_toml(TINY, tiny_jina_dir, precision="fp32"))
    yield from running_stack(tmp_path_factory.mktemp("connections"), toml)


def _open_slow(port: int, count: int, head: bytes) -> list[socket.socket]:
    conns = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(head)
        conns.append(s)
    return conns


def _closed_by_server(conn: socket.socket) -> bytes | None:
    """What the server sent before closing, or None while the connection is still open."""
    conn.setblocking(False)
    try:
        data = conn.recv(65536)
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return b""
    return data  # b"" = EOF


def test_a_flood_of_slow_connections_is_cut_at_the_head_deadline_and_bounded_and_normal_clients_are_served(
    guarded_connections: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    running = guarded_connections
    port = toml_int(running.stack.toml, "port")
    body = {"model": TINY, "input": "a normal request during a slow-connection flood"}

    def normal() -> float:
        start = time.monotonic()
        response = httpx.post(f"{running.url}/v1/embeddings", json=body, timeout=30)
        assert response.status_code == 200, response.text
        return time.monotonic() - start

    usual = sorted(normal() for _ in range(5))[2]
    half_head = b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl"
    flood_start = time.monotonic()
    slow = _open_slow(port, SLOW_FLOOD, half_head)
    try:
        during = sorted(normal() for _ in range(5))
        # Beyond max_connections a new connection is refused at once with a 503, never parked.
        extra = _open_slow(port, 100, b"")
        beyond = 100 - (MAX_CONNECTIONS - SLOW_FLOOD)  # at least: the flood and these are open
        answers: dict[int, bytes] = {}

        def refused() -> bool:
            answers.update({i: d for i, c in enumerate(extra) if i not in answers and (d := _closed_by_server(c))})
            return len(answers) >= beyond

        wait_for(refused, 2, f"{beyond} connections beyond max_connections to be refused")
        refusals = list(answers.values())
        assert all(d.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in d for d in refusals), refusals[:3]
        # The half-sent heads are closed once the deadline passes; not one answers a request.
        closed = wait_for(
            lambda: (n if (n := sum(_closed_by_server(c) is not None for c in slow)) == SLOW_FLOOD else None),
            HEAD_TIMEOUT_S + 10, "the slow connections to be closed")
        cut_after = time.monotonic() - flood_start
        samples = metric_samples(httpx.get(f"{running.url}/metrics", timeout=10).text)
        assert metric(samples, "embed_refused_connections_total", reason="head_timeout") >= SLOW_FLOOD
        assert metric(samples, "embed_refused_connections_total", reason="max_connections") >= len(refusals)
        assert normal() < 30
    finally:
        for c in slow + locals().get("extra", []):
            c.close()
    say(capsys, f"slow connections: {SLOW_FLOOD} half-sent heads all closed {cut_after:.1f} s after the flood began "
        f"(header_timeout_s {HEAD_TIMEOUT_S}); a normal request took {usual * 1000:.0f} ms before, "
        f"{during[2] * 1000:.0f} ms (median) / {during[-1] * 1000:.0f} ms (max) during; "
        f"{len(refusals)} connections beyond max_connections refused with 503")
    assert closed == SLOW_FLOOD
    # Served during the flood, and without waiting for the slow connections to be cut.
    assert during[-1] < HEAD_TIMEOUT_S
