"""What one refusal (429) costs the gateway, against one answer (200), in CPU seconds.

    python -m bench.refusal_cost                                      # tiny jina-shaped model
    python -m bench.refusal_cost --model-dir /work/assets/e5-small-jina

1. Starts `appliance serve` on loopback with `max_concurrent_requests = 1`.
2. 200s: `--requests` sequential requests (one short query each, keep-alive), the gateway's CPU
   time (utime + stime from /proc) before and after; also Triton's, for scale.
3. 429s: one connection sends a request head with a Content-Length and half its body, so its
   request holds the only permit while it waits for the rest; then the same `--requests` requests,
   each refused 429 for overload; the gateway's CPU again.
4. Prints CPU per 200, per 429 and their ratio (the share of an answer a refusal costs). Under 2x
   overload with 429s as cheap as 200s, refusing burns as much CPU as serving: goodput halves.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from pathlib import Path

import httpx

from bench.soak import output_and_model
from harness import procs
from harness.stack import Stack, model_toml, ports_toml, toml_int

MODEL = "refusal"
BODY = {"model": MODEL, "input": "what is the capital of france?", "encoding_format": "base64"}


def gateway_cpu(stack: Stack) -> float:
    assert stack.process is not None
    gateway = procs.gateway(stack.process.pid)
    assert gateway is not None, "no gateway process"
    return procs.cpu_seconds(gateway.pid)


def triton_cpu(stack: Stack) -> float:
    """tritonserver and its Python-backend stubs (where the model runs)."""
    assert stack.process is not None
    triton = procs.tritonserver(stack.process.pid)
    return sum(procs.cpu_seconds(p.pid) for p in [*([triton] if triton else []), *procs.backend_stubs(stack.process.pid)])


def run(client: httpx.Client, url: str, n: int, expect: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        response = client.post(url, json=BODY)
        assert response.status_code == expect, (response.status_code, response.text[:300])
    return time.perf_counter() - start


def hold_the_permit(port: int) -> socket.socket:
    """A request whose body never finishes: it holds the one permit until request_timeout_s."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"model\": ")
    return conn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, help="model folder (default: build the tiny jina-shaped model)")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    out, model_dir = output_and_model(args.out, args.model_dir, prefix="refusal-cost-")
    toml = (ports_toml() + "[limits]\nmax_concurrent_requests = 1\nrequest_timeout_s = 600\n"
            + model_toml(MODEL, model_dir, precision="fp32"))
    (out / "stack").mkdir(exist_ok=True)
    stack = Stack(out / "stack", toml).start()
    url = f"{stack.base_url}/v1/embeddings"
    try:
        with httpx.Client(timeout=60) as client:
            run(client, url, 50, 200)  # warm-up
            g0, t0 = gateway_cpu(stack), triton_cpu(stack)
            wall_ok = run(client, url, args.requests, 200)
            g1, t1 = gateway_cpu(stack), triton_cpu(stack)
            blocker = hold_the_permit(toml_int(stack.toml, "port"))
            try:
                deadline = time.monotonic() + 10
                while client.post(url, json=BODY).status_code != 429:  # the blocker holds the permit
                    assert time.monotonic() < deadline, "the held request never took the permit"
                run(client, url, 50, 429)  # warm-up of the refusal path
                g2 = gateway_cpu(stack)
                wall_429 = run(client, url, args.requests, 429)
                g3 = gateway_cpu(stack)
            finally:
                blocker.close()
    finally:
        stack.stop()
    n = args.requests
    result = {
        "model": model_dir.name,
        "requests": n,
        "gateway_cpu_us_per_200": round((g1 - g0) / n * 1e6, 1),
        "triton_cpu_us_per_200": round((t1 - t0) / n * 1e6, 1),
        "gateway_cpu_us_per_429": round((g3 - g2) / n * 1e6, 1),
        "wall_ms_per_200": round(wall_ok / n * 1000, 3),
        "wall_ms_per_429": round(wall_429 / n * 1000, 3),
    }
    result["gateway_429_vs_200"] = round(result["gateway_cpu_us_per_429"] / result["gateway_cpu_us_per_200"], 3)
    result["429_vs_whole_200"] = round(
        result["gateway_cpu_us_per_429"] / (result["gateway_cpu_us_per_200"] + result["triton_cpu_us_per_200"]), 3)
    print(json.dumps(result))
    (out / "refusal-cost.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
