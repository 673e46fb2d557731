"""The gateway's hop to Triton: tritonclient's asyncio client against the appliance's own client.

    python -m bench.triton_hop [--model minilm] [--calls 1000] [--rounds 2]

Starts the real appliance on the model, then calls its Triton directly, from one uvloop event loop
like the gateway's, with one short tokenized query at a time: `tritonclient.http.aio` (what the
gateway used until it got `appliance.pipeline.triton_http`) and `TritonHTTP`, alternated for
`--rounds` rounds. Prints p50 latency and this process's CPU per call for each, and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tritonclient.http.aio as triton_aio
import uvloop

from appliance.pipeline.triton_http import TritonHTTP
from appliance.spec.tokenizer import load_tokenizer
from appliance.triton.interface import EMBEDDING, INPUT_IDS, LENGTHS, NORM
from bench.appliance_client import APPLIANCE_MODEL, start_appliance
from bench.run import resolve_model, short_requests
from bench.workload import build_workload
from harness.stack import toml_int

Ids = npt.NDArray[np.int64]
Call = Callable[[Ids], Awaitable[object]]


async def measure(call: Call, queries: Sequence[Ids]) -> dict[str, float]:
    for ids in queries[:50]:
        await call(ids)  # warm-up: connections, caches
    latencies = []
    cpu = time.process_time()
    for ids in queries:
        started = time.perf_counter()
        await call(ids)
        latencies.append(time.perf_counter() - started)
    return {"p50_ms": round(statistics.median(latencies) * 1000, 3),
            "cpu_ms_per_call": round((time.process_time() - cpu) / len(queries) * 1000, 3)}


async def compare(url: str, queries: Sequence[Ids], rounds: int) -> list[dict[str, dict[str, float]]]:
    old = triton_aio.InferenceServerClient(url)
    new = TritonHTTP(url)
    outputs = [triton_aio.InferRequestedOutput(n, binary_data=True) for n in (EMBEDDING, NORM)]

    async def via_tritonclient(ids: Ids) -> object:
        tensors = []
        for name, array in ((INPUT_IDS, ids), (LENGTHS, np.array([[ids.shape[1]]], np.int64))):
            tensor = triton_aio.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array, binary_data=True)
            tensors.append(tensor)
        result = await old.infer(APPLIANCE_MODEL, tensors, outputs=outputs, headers={"Accept-Encoding": "identity"})
        return result.as_numpy(EMBEDDING)

    async def via_triton_http(ids: Ids) -> object:
        lengths = np.array([[ids.shape[1]]], np.int64)
        return (await new.infer(APPLIANCE_MODEL, [(INPUT_IDS, ids), (LENGTHS, lengths)], (EMBEDDING, NORM)))[EMBEDDING]

    results = []
    try:
        for number in range(rounds):  # which client goes first alternates: no order bias
            pair = [("tritonclient.http.aio", via_tritonclient), ("appliance TritonHTTP", via_triton_http)]
            measured = {name: await measure(call, queries) for name, call in pair[:: 1 if number % 2 == 0 else -1]}
            results.append({name: measured[name] for name, _ in pair})
    finally:
        await old.close()
        await new.close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.triton_hop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", help="asset name or folder (default: minilm)")
    parser.add_argument("--calls", type=int, default=1000, help="calls per client per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    folder = resolve_model(args.model)
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    queries = [np.array([tokenizer.encode(r[0].text).ids], np.int64)
               for r in short_requests(build_workload(folder, 200), args.calls)]
    running = start_appliance(folder, Path(tempfile.mkdtemp(prefix="hop-")))
    try:
        port = toml_int(running.stack.toml, "triton_http_port")
        rounds = uvloop.run(compare(f"127.0.0.1:{port}", queries, args.rounds))
    finally:
        running.stop()
    print(f"{folder.name}: one short query per call to Triton, {args.calls} calls per client per round")
    for number, result in enumerate(rounds, 1):
        for client, numbers in result.items():
            print(f"  round {number}  {client:<24} p50 {numbers['p50_ms']:>7} ms   "
                  f"client CPU {numbers['cpu_ms_per_call']:>6} ms/call")
        old, new = result["tritonclient.http.aio"], result["appliance TritonHTTP"]
        print(f"  round {number}  TritonHTTP / tritonclient: p50 {new['p50_ms'] / old['p50_ms']:.2f}x, "
              f"CPU {new['cpu_ms_per_call'] / old['cpu_ms_per_call']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
