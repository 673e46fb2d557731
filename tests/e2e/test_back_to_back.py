"""One client sending requests back to back never waits out Triton's batcher timeout.

Triton 2.51's dynamic batcher, once a queue policy is configured (no payload prefetching), is
not woken for a request that arrives while the model instance is busy; with nothing else queued
that request waited out the batcher's 500 ms idle wait. Two ways it bit: a gateway request split
into chunks (the first chunk runs, the others arrive while it does), and model.py answering
before its `execute` returned (the client's next request arrived while the instance was still
busy). So the appliance writes no queue policy unless `[limits]` asks for one
(appliance/compile/pbtxt.py `queue_policy`) and model.py returns its responses. Measured with
Triton's own per-model queue time, ~0.1 ms per call here when nothing stalls.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from appliance.pipeline.triton_http import TritonHTTP
from harness.served import TINY
from harness.stack import Stack, model_toml, ports_toml, toml_int

BATCHER_IDLE_WAIT_S = 0.5  # Triton's DynamicBatchScheduler default_wait_microseconds
# The product's batching defaults except a small token budget, so that one request of 6 inputs
# of ~10 tokens becomes several chunks (Triton requests sent at once); one model instance.
TOML = "[batching]\nmax_batch_tokens = 64\n[instances]\ncount = 1\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_jina_dir: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("back-to-back"), ports_toml() + TOML + model_toml(TINY, tiny_jina_dir, precision="fp32"))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def triton_url(stack: Stack) -> str:
    return f"127.0.0.1:{toml_int(stack.toml, 'triton_http_port')}"


def queue_stats(host_port: str) -> tuple[int, float, float]:
    """(requests, seconds queued, seconds computing) Triton has counted for the model so far."""
    with urllib.request.urlopen(f"http://{host_port}/v2/models/{TINY}/stats", timeout=10) as response:
        stats = json.load(response)["model_stats"][0]["inference_stats"]
    busy = sum(int(stats[phase]["ns"]) for phase in ("compute_input", "compute_infer", "compute_output"))
    return int(stats["queue"]["count"]), int(stats["queue"]["ns"]) / 1e9, busy / 1e9


def queued_while(host_port: str, calls: int, run: object) -> tuple[float, float]:
    """(seconds queued, seconds computing) of the `calls` requests that `run()` makes."""
    count_before, queued_before, busy_before = queue_stats(host_port)
    run()  # type: ignore[operator]
    deadline = time.monotonic() + 10
    while (after := queue_stats(host_port))[0] < count_before + calls and time.monotonic() < deadline:
        pass  # a call's statistics may land just after its answer
    assert after[0] - count_before == calls
    return after[1] - queued_before, after[2] - busy_before


async def direct_calls(host_port: str, calls: int) -> None:
    client = TritonHTTP(host_port)
    rng = np.random.default_rng(7)
    try:
        for _ in range(calls):
            rows, length = int(rng.integers(1, 6)), int(rng.integers(4, 40))
            inputs = [
                ("INPUT_IDS", rng.integers(5, 200, (rows, length)).astype(np.int64)),
                ("LENGTHS", np.full((rows, 1), length, np.int64)),
                ("TASK_ID", np.zeros((rows, 1), np.int64)),
            ]
            out = await client.infer(TINY, inputs, ["EMBEDDING", "NORM"])
            assert out["EMBEDDING"].shape[0] == rows
    finally:
        await client.close()


def test_back_to_back_calls_to_triton_are_never_parked_in_its_queue(stack: Stack) -> None:
    host_port = triton_url(stack)
    asyncio.run(direct_calls(host_port, 5))  # first-call costs out of the way
    queued, _ = queued_while(host_port, 200, lambda: asyncio.run(direct_calls(host_port, 200)))
    # One stall alone is 0.5 s; all 200 calls together queue for a few ms when none happens.
    assert queued < BATCHER_IDLE_WAIT_S / 2, f"200 back-to-back calls spent {queued:.3f} s in Triton's queue"


def test_the_chunks_of_one_request_are_never_parked_in_tritons_queue(stack: Stack) -> None:
    host_port = triton_url(stack)
    texts = [" ".join(f"word{i}x{j}" for j in range(7)) for i in range(6)]

    def requests() -> None:
        with httpx.Client(base_url=stack.base_url, timeout=60) as client:
            for _ in range(20):
                response = client.post("/v1/embeddings", json={"model": TINY, "input": texts})
                assert response.status_code == 200, response.text
                assert len(response.json()["data"]) == len(texts)

    before = queue_stats(host_port)[0]
    requests()  # first-call costs out of the way; also tells how many chunks a request makes
    chunks = (queue_stats(host_port)[0] - before) // 20
    assert chunks >= 3, f"the request was cut into {chunks} chunks; the test needs several"
    queued, busy = queued_while(host_port, 20 * chunks, requests)
    # A request's chunks arrive together at one instance, so chunk k rightly waits for the k-1
    # before it: at most (chunks - 1) / 2 of the compute time in all. A stall adds 0.5 s on top.
    waiting_its_turn = busy * (chunks - 1) / 2
    assert queued < waiting_its_turn + BATCHER_IDLE_WAIT_S / 2, (
        f"20 requests of {chunks} chunks spent {queued:.3f} s in Triton's queue, "
        f"{waiting_its_turn:.3f} s of it waiting their turn behind {busy:.3f} s of compute"
    )
