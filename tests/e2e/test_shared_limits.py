"""Per-key limits that hold across replicas: two real stacks on loopback sharing a real Redis.

Each stack is a whole replica (supervisord, tritonserver, gateway) with the same embed.toml, as two
pods of one Deployment would be; `[auth.rate_limit_store]` points both at one `redis-server`
(Debian's, started here on a free port). What is shown: a key limited to N requests per minute gets
exactly N 200s across both, then 429s with Retry-After on both; tokens per minute likewise; with
Redis stopped mid-run the documented fallback (each replica limits the key on its own, from zero),
a metric and a log line, never a 5xx; with Redis back, limits are shared again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.redis import RedisServer
from harness.stack import Stack, model_toml, ports_toml

pytestmark = pytest.mark.e2e

MODEL = "tiny-jina"
RPM = 6
TPM = 120
KEYS = {  # name -> (secret, requests_per_minute, tokens_per_minute)
    "shared-rpm": ("sk-shared-rpm", RPM, None),
    "shared-tpm": ("sk-shared-tpm", None, TPM),
    "outage-rpm": ("sk-outage-rpm", RPM, None),
    "probe": ("sk-probe", 100_000, None),  # limited (so it goes through the store), never at its limit
}


@dataclass
class Replicas:
    stacks: list[Stack]
    redis: RedisServer


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path) -> Iterator[Replicas]:
    if not RedisServer.available():
        pytest.skip("redis-server is not installed (Debian package redis-server; scripts/install.sh adds it)")
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    entries = []
    for name, (secret, rpm, tpm) in KEYS.items():
        limits = "".join(f", {k} = {v}" for k, v in (("requests_per_minute", rpm), ("tokens_per_minute", tpm)) if v)
        entries.append(f'  {{name = "{name}", sha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"{limits}}},')
    auth = (
        "[auth]\nkeys = [\n" + "\n".join(entries) + "\n]\n"
        f'[auth.rate_limit_store]\nurl = "{redis.url}"\ntimeout_ms = 250\nretry_s = 1\n'
    )
    stacks = []
    try:
        for i in range(2):
            toml = ports_toml() + model_toml(MODEL, tiny_jina_dir, precision="fp32") + auth
            stacks.append(Stack(tmp_path_factory.mktemp(f"replica-{i}"), toml).start())
        yield Replicas(stacks, redis)
    finally:
        for stack in stacks:
            stack.stop()
        redis.stop()


def embed(stack: Stack, key: str, text: str = "a short query") -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}/v1/embeddings",
        json={"model": MODEL, "input": text, "encoding_format": "float"},
        headers={"Authorization": f"Bearer {KEYS[key][0]}"},
        timeout=60,
    )


def store_metrics(stack: Stack) -> tuple[float, float]:
    """(embed_rate_limit_store_up, embed_rate_limit_store_errors_total) of one replica."""
    text = httpx.get(f"{stack.base_url}/metrics", timeout=10).text
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return values["embed_rate_limit_store_up"], values["embed_rate_limit_store_errors_total"]


def assert_refused(response: httpx.Response, key: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and key in error["message"], error
    assert 1 <= int(response.headers["retry-after"]) <= 60, response.headers


def test_both_replicas_say_their_key_limits_are_shared(replicas: Replicas) -> None:
    for stack in replicas.stacks:
        info = httpx.get(f"{stack.base_url}/info", headers={"Authorization": "Bearer sk-probe"}, timeout=10).json()
        assert info["limits"]["key_limit_store"] == "redis", info["limits"]
        assert store_metrics(stack) == (1.0, 0.0)


def test_a_key_gets_exactly_its_requests_per_minute_across_both_replicas(replicas: Replicas) -> None:
    """2N concurrent requests, N to each replica: exactly N are answered, the rest refused."""
    targets = [replicas.stacks[i % 2] for i in range(2 * RPM)]
    with ThreadPoolExecutor(len(targets)) as pool:
        responses = list(pool.map(lambda stack: embed(stack, "shared-rpm"), targets))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * RPM + [429] * RPM, statuses
    for response in responses:
        if response.status_code == 429:
            assert_refused(response, "shared-rpm")
        assert response.headers["x-ratelimit-limit-requests"] == str(RPM)
    for stack in replicas.stacks:  # the window is full everywhere
        refused = embed(stack, "shared-rpm")
        assert_refused(refused, "shared-rpm")
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_tokens_spent_on_one_replica_count_on_the_other(replicas: Replicas) -> None:
    first, second = replicas.stacks
    spent = 0
    while spent < TPM:  # spend the whole token budget on the first replica
        response = embed(first, "shared-tpm", "some words to count " * 4)
        assert response.status_code == 200, response.text
        spent += response.json()["usage"]["prompt_tokens"]
        assert response.headers["x-ratelimit-remaining-tokens"] == str(max(0, TPM - spent))
    assert_refused(embed(second, "shared-tpm"), "shared-tpm")
    assert_refused(embed(first, "shared-tpm"), "shared-tpm")


def test_with_redis_down_each_replica_limits_on_its_own_and_never_fails_then_shares_again(
    replicas: Replicas,
) -> None:
    first, second = replicas.stacks
    for i in range(RPM // 2):  # half the key's budget, spent cluster-wide
        assert embed(replicas.stacks[i % 2], "outage-rpm").status_code == 200
    replicas.redis.stop()

    # The documented fallback: this replica counts the key from zero, so it admits N more, then 429s.
    statuses = [embed(first, "outage-rpm").status_code for _ in range(RPM + 2)]
    assert statuses == [200] * RPM + [429] * 2, statuses
    assert_refused(embed(first, "outage-rpm"), "outage-rpm")
    up, errors = store_metrics(first)
    assert (up, errors >= 1) == (0.0, True), (up, errors)
    assert "rate-limit store redis://127.0.0.1" in first.log() and "is unreachable" in first.log()
    assert embed(second, "probe").status_code == 200  # the other replica too: a 200, never a 5xx
    assert store_metrics(second)[0] == 0.0

    replicas.redis.start()  # same port, empty (no persistence)
    for stack in replicas.stacks:  # each replica tries the store again `retry_s` (1 s) after its last failure
        deadline = time.monotonic() + 15
        while store_metrics(stack)[0] != 1.0 and time.monotonic() < deadline:
            assert embed(stack, "probe").status_code == 200
            time.sleep(0.05)  # poll interval
        assert store_metrics(stack)[0] == 1.0, stack.log()[-2000:]
        assert "answers again" in stack.log()
    # Shared again: a fresh window in the new Redis, N across both replicas.
    statuses = sorted(embed(replicas.stacks[i % 2], "outage-rpm").status_code for i in range(RPM + 2))
    assert statuses == [200] * RPM + [429] * 2, statuses
