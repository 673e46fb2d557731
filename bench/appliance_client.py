"""Closed-loop HTTP clients (httpx), and starting the real appliance for a benchmark.

A closed loop: `concurrency` workers, each sending its next request as soon as the previous
answer is in, until the request list is used up or the deadline passes (both bounded). Every
request goes to 127.0.0.1 only. The same client drives the appliance and Infinity (both speak
OpenAI's embeddings API), so the two are measured the same way.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from appliance.ops.packing import pack_by_length, padding_efficiency
from bench.stats import NoiseMeter, latency_stats
from bench.workload import Item
from harness.stack import Stack, model_toml, ports_toml

APPLIANCE_MODEL = "bench"
LOOPBACK = "127.0.0.1"


@dataclass
class Target:
    """An OpenAI-compatible embeddings endpoint on loopback."""

    name: str
    base_url: str
    path: str
    model: str
    encoding_format: str = "base64"

    def __post_init__(self) -> None:
        host = httpx.URL(self.base_url).host
        if host not in (LOOPBACK, "localhost", "::1"):
            raise ValueError(f"benchmark traffic goes to loopback only, not {host}")


async def closed_loop(target: Target, requests: Sequence[Sequence[Item]], concurrency: int, *,
                      deadline_s: float, min_seconds: float = 0.0, timeout_s: float = 600.0) -> dict[str, object]:
    """Send `requests` (each a list of inputs) with `concurrency` closed-loop workers.

    The list is sent once, then again, in whole passes, while the loop has run less than
    `min_seconds` (the workers never pause between passes, so only the very end has fewer than
    `concurrency` requests in flight); `deadline_s` bounds it all.
    """
    latencies: list[float] = []
    tokens = 0
    inputs = 0
    errors: list[str] = []
    next_index = 0
    now = time.monotonic()
    stop_at = now + deadline_s
    wrap_until = now + min_seconds
    planned = len(requests)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    def more() -> bool:
        nonlocal planned
        now = time.monotonic()
        if next_index >= planned and now < wrap_until:
            planned += len(requests)  # one more whole pass
        return next_index < planned and now < stop_at and len(errors) < 5

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index, tokens, inputs
        while more():
            request = requests[next_index % len(requests)]
            next_index += 1
            body = {"model": target.model, "input": [i.text for i in request],
                    "encoding_format": target.encoding_format}
            t0 = time.perf_counter()
            try:
                response = await client.post(target.path, json=body)
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - t0
            if response.status_code != 200:
                errors.append(f"HTTP {response.status_code}: {response.text[:300]}")
                continue
            count = len(response.json()["data"])
            if count != len(request):
                errors.append(f"{count} embeddings for {len(request)} inputs")
                continue
            latencies.append(elapsed)
            tokens += sum(i.tokens for i in request)
            inputs += len(request)

    meter = NoiseMeter().start()
    async with httpx.AsyncClient(base_url=target.base_url, timeout=timeout_s, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    done = len(latencies)
    return {
        "concurrency": concurrency,
        "requests": done,
        "requests_planned": len(requests),
        "complete": done >= len(requests),
        "passes": round(done / len(requests), 2) if requests else 0.0,
        "wall_s": round(wall, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1) if wall else 0.0,
        "embeddings_per_s": round(inputs / wall, 2) if wall else 0.0,
        **latency_stats(latencies),
        "errors": errors,
        **meter.stop(),
    }


def one_at_a_time(target: Target, requests: Sequence[Sequence[Item]], *, deadline_s: float) -> dict[str, object]:
    """One request at a time over one keep-alive connection of the standard library's http.client.

    The latency a server adds, with next to no client cost: httpx (what the OpenAI SDK uses) spends
    0.5-1 ms of client CPU per request on a 2-core box, which `closed_loop` counts in.
    """
    url = httpx.URL(target.base_url)
    connection = http.client.HTTPConnection(url.host, url.port, timeout=600)
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.monotonic() + deadline_s
    try:
        for request in requests:
            if time.monotonic() > stop_at or len(errors) >= 5:
                break
            body = json.dumps({"model": target.model, "input": [i.text for i in request],
                               "encoding_format": target.encoding_format}).encode()
            t0 = time.perf_counter()
            connection.request("POST", target.path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            elapsed = time.perf_counter() - t0
            if response.status != 200:
                errors.append(f"HTTP {response.status}: {payload[:300]!r}")
                continue
            if len(json.loads(payload)["data"]) != len(request):
                errors.append("wrong number of embeddings")
                continue
            latencies.append(elapsed)
    finally:
        connection.close()
    return {"client": "http.client, one keep-alive connection", "requests": len(latencies),
            **latency_stats(latencies), "errors": errors}


async def warm_up(target: Target, items: Sequence[Item], *, rounds: int = 3) -> None:
    async with httpx.AsyncClient(base_url=target.base_url, timeout=600.0) as client:
        for r in range(rounds):
            body = {"model": target.model, "input": [i.text for i in items[r::rounds] or items[:1]],
                    "encoding_format": target.encoding_format}
            response = await client.post(target.path, json=body)
            response.raise_for_status()


def derived_padding_efficiency(requests: Sequence[Sequence[Item]], max_batch_tokens: int,
                               max_batch_size: int) -> float:
    """Real / computed tokens of the appliance's own packer for these requests.

    The gateway cuts each request into length-sorted chunks (`pack_by_length`), and model.py packs
    each chunk again with the same budget (a chunk already fits: one run). This assumes no two
    requests share one Triton execute(); when they do, model.py repacks their rows together.
    """
    real = 0
    computed = 0.0
    for request in requests:
        lengths = [i.tokens for i in request]
        runs = pack_by_length(lengths, max_batch_tokens, max_batch_size)
        efficiency = padding_efficiency(lengths, runs)
        real += sum(lengths)
        computed += sum(lengths) / efficiency
    return round(real / computed, 4) if computed else 1.0


@dataclass
class RunningAppliance:
    stack: Stack
    target: Target
    startup: dict[str, object]

    def stop(self) -> None:
        """SIGTERM, then (after 120 s: a 2.3 GB model unloads slowly) SIGKILL to the process group."""
        import subprocess

        try:
            self.stack.stop(timeout_s=120.0)
        except subprocess.TimeoutExpired:  # Stack.stop has killed the group by then
            print("bench: the appliance did not stop within 120 s of SIGTERM; killed", flush=True)


_TRITON_TIME = re.compile(r"^[IWE](\d{4}) (\d\d:\d\d:\d\d\.\d+) .*?(loading: (\S+?):\d+|successfully loaded '([^']+)')")


def triton_model_load_s(log: str) -> float | None:
    """From Triton's own log: 'loading: m:1' -> "successfully loaded 'm'" (stub start + initialize)."""
    begin: datetime | None = None
    end: datetime | None = None
    for line in log.splitlines():
        match = _TRITON_TIME.search(line.strip())
        if not match:
            continue
        stamp = datetime.strptime(f"{match.group(1)} {match.group(2)}", "%m%d %H:%M:%S.%f")
        if match.group(4) and begin is None:
            begin = stamp
        if match.group(5):
            end = stamp
    if begin is None or end is None:
        return None
    return (end - begin).total_seconds()


def start_appliance(model_dir: Path, workdir: Path, *, toml_extra: str = "", ready_deadline_s: float = 300.0,
                    ort_load_s: float | None = None, model_extra: dict[str, object] | None = None) -> RunningAppliance:
    """`appliance serve` on free loopback ports; times `serve` -> first 200 from /ready.

    `model_extra`: more keys of the `[[models]]` table (`engine`, `precision`); `ort_load_s`: the
    in-process load time of the same engine and file, taken as the model load."""
    toml = ports_toml() + toml_extra + model_toml(APPLIANCE_MODEL, model_dir, task_instructions=False,
                                                  **(model_extra or {}))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir, toml)
    started = time.monotonic()
    stack.start(wait=False)
    try:
        stack.wait_ready(ready_deadline_s)
    except TimeoutError:
        stack.stop()
        raise
    ready_s = time.monotonic() - started
    triton_load = triton_model_load_s(stack.log())
    startup: dict[str, object] = {
        "serve_to_ready_s": round(ready_s, 3),
        "triton_model_load_s": None if triton_load is None else round(triton_load, 3),
        "ort_session_load_s": None if ort_load_s is None else round(ort_load_s, 3),
    }
    # "Model load excluded": the ONNX Runtime session creation for this model file (measured
    # in-process by the baseline with the same options) is the model load; everything else
    # (compile, supervisord, tritonserver, the Python stub, the gateway) is the appliance's own.
    load = ort_load_s if ort_load_s is not None else triton_load
    startup["excluding_model_load_s"] = None if load is None else round(max(0.0, ready_s - load), 3)
    target = Target("appliance", stack.base_url, "/v1/embeddings", APPLIANCE_MODEL)
    return RunningAppliance(stack, target, startup)
