"""Which /metrics series should drive a HorizontalPodAutoscaler? Offer rising load, watch them all.

    python -m bench.scaling_signal --model-dir /work/assets/e5-small-jina    # ~4 min
    python -m bench.scaling_signal                                          # tiny jina-shaped model

1. Starts `appliance serve` on loopback (fp32, so every vector is checked against the ONNX Runtime
   reference at 1e-4, as bench/soak.py does) with the default `max_concurrent_requests` (64).
2. Capacity: `--clients` closed-loop clients for `--calibrate-s`; 200s per second.
3. Steps of open-loop (Poisson) arrivals at each fraction of capacity in `--steps`, `--step-s`
   each. Every 0.5 s it scrapes the replica's /metrics and records, per step: the offered and
   delivered load, client p50/p99 of the 200s, 429s, and the candidate signals:
   - `embed_in_flight_requests` (gauge; mean of the samples): concurrency per replica;
   - Triton's queue time per request, rate(nv_inference_queue_duration_us) / rate(nv_inference_request_success);
   - the gateway's mean latency, rate(embed_request_duration_seconds_sum{phase="total"}) / rate(_count);
   - the gateway's busy-ness, rate(embed_request_duration_seconds_sum{phase="total"}) alone: by Little's
     law the mean number of admitted requests in tokenization or inference over the window, counted
     exactly (no sampling), so Prometheus' 15-60 s scrapes lose nothing.
4. Prints a table and writes scaling-signal.json. The verdict in docs/performance.md ("Decisions").

An HPA scales by desiredReplicas = ceil(replicas x metric / target): it wants a signal that grows in
proportion to load below saturation, not one that stays flat and then jumps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.soak import (
    MODEL,
    Encoded,
    LeanClient,
    Tally,
    build_workload,
    calibrate,
    one_request,
    output_and_model,
    percentile,
    warm_up,
)
from harness.reference import Reference
from harness.stack import Stack, model_toml, ports_toml


def scrape(base_url: str) -> dict[str, float]:
    return signals(httpx.get(f"{base_url}/metrics", timeout=10).text)


def signals(text: str) -> dict[str, float]:
    """The few series we compare, summed over their labels, from a /metrics text."""
    wanted = {
        "embed_in_flight_requests": "in_flight",
        "nv_inference_queue_duration_us": "queue_us",
        "nv_inference_queue_duration_us_total": "queue_us",  # the parser names counters ..._total
        "nv_inference_request_success_total": "success",
        "nv_inference_request_success": "success",
    }
    out = {"in_flight": 0.0, "queue_us": 0.0, "success": 0.0, "latency_sum": 0.0, "latency_count": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in wanted:
                out[wanted[s.name]] += s.value
            elif s.name.startswith("embed_request_duration_seconds") and s.labels.get("phase") == "total":
                if s.name.endswith("_sum"):
                    out["latency_sum"] += s.value
                elif s.name.endswith("_count"):
                    out["latency_count"] += s.value
    return out


@dataclass
class Step:
    fraction: float
    offered_rps: float
    seconds: float = 0.0
    tally: Tally = field(default_factory=Tally)
    in_flight: list[float] = field(default_factory=list)
    start: dict[str, float] = field(default_factory=dict)
    end: dict[str, float] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        o = self.tally.outcomes
        d_success = self.end["success"] - self.start["success"]
        d_count = self.end["latency_count"] - self.start["latency_count"]
        return {
            "fraction": self.fraction,
            "offered_rps": round(self.offered_rps, 2),
            "ok_rps": round(o["ok"] / self.seconds, 2),
            "shed_429": o["shed_429"],
            "bad": {k: v for k, v in o.items() if k not in ("ok", "shed_429")},
            "client_p50_ms": _ms(percentile(self.tally.latencies, 50)),
            "client_p99_ms": _ms(percentile(self.tally.latencies, 99)),
            "in_flight_mean": round(sum(self.in_flight) / max(1, len(self.in_flight)), 2),
            "in_flight_max": max(self.in_flight, default=0.0),
            "triton_queue_ms_per_request": round(
                (self.end["queue_us"] - self.start["queue_us"]) / 1000 / d_success, 2) if d_success else None,
            "busy": round((self.end["latency_sum"] - self.start["latency_sum"]) / self.seconds, 2),
            "gateway_mean_ms": round(
                (self.end["latency_sum"] - self.start["latency_sum"]) * 1000 / d_count, 1) if d_count else None,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


async def run_step(client: LeanClient, encoded: Encoded, base_url: str, work: Any, step: Step, atol: float,
                   seed: int) -> None:
    rng = random.Random(seed)
    tasks: set[asyncio.Task[None]] = set()
    step.start = scrape(base_url)
    start = time.monotonic()
    deadline = start + step.seconds
    async with httpx.AsyncClient(timeout=10) as probe:
        async def sampler() -> None:
            while time.monotonic() < deadline:
                step.in_flight.append(signals((await probe.get(f"{base_url}/metrics")).text)["in_flight"])
                await asyncio.sleep(0.5)  # sampling interval

        sampling = asyncio.create_task(sampler())
        next_at = start
        while (now := time.monotonic()) < deadline:
            if next_at > now:
                await asyncio.sleep(min(next_at - now, deadline - now))
                continue
            next_at += rng.expovariate(step.offered_rps)
            task = asyncio.create_task(one_request(client, encoded, work, rng.choice(work.templates), step.tally, atol))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await sampling
        if tasks:
            await asyncio.wait(tasks, timeout=client.timeout + 5)
    step.seconds = time.monotonic() - start
    step.end = scrape(base_url)


async def drive(base_url: str, work: Any, args: argparse.Namespace, timeout: float) -> tuple[float, list[Step]]:
    client = LeanClient("127.0.0.1", int(base_url.rsplit(":", 1)[1]), timeout)
    encoded = Encoded.of(client, work)
    steps = []
    try:
        await warm_up(client, encoded, work, args.clients, args.atol)
        capacity, _ = await calibrate(client, encoded, work, args.clients, args.calibrate_s, args.atol)
        print(f"scaling-signal: capacity {capacity:.1f} req/s with {args.clients} closed-loop clients", flush=True)
        for i, fraction in enumerate(float(f) for f in args.steps.split(",")):
            step = Step(fraction, fraction * capacity, seconds=args.step_s)
            await run_step(client, encoded, base_url, work, step, args.atol, seed=i)
            steps.append(step)
            print(f"scaling-signal: {json.dumps(step.report())}", flush=True)
    finally:
        await client.close()
    return capacity, steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, help="model folder (default: build the tiny jina-shaped model)")
    p.add_argument("--steps", default="0.25,0.5,0.75,0.9,1.0,1.1,1.25,1.5", help="fractions of capacity")
    p.add_argument("--step-s", type=float, default=20.0)
    p.add_argument("--calibrate-s", type=float, default=15.0)
    p.add_argument("--clients", type=int, default=8, help="closed-loop clients for the capacity")
    p.add_argument("--max-concurrent", type=int, default=64, help="[limits] max_concurrent_requests")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    out, model_dir = output_and_model(args.out, args.model_dir, prefix="scaling-signal-")
    work = build_workload(Reference(model_dir), seed=0, texts=96, templates=400)
    toml = (ports_toml() + f"[limits]\nmax_concurrent_requests = {args.max_concurrent}\n"
            + model_toml(MODEL, model_dir, precision="fp32"))
    (out / "stack").mkdir(exist_ok=True)
    stack = Stack(out / "stack", toml).start()
    try:
        capacity, ran = asyncio.run(drive(stack.base_url, work, args, timeout=60.0))
    finally:
        stack.stop()
    steps = [s.report() for s in ran]
    header = ("load", "offered/s", "200s/s", "429s", "p50 ms", "p99 ms", "in-flight mean", "busy",
              "Triton queue ms/req", "gateway mean ms")
    print(" | ".join(header))
    for s in steps:
        print(" | ".join(str(v) for v in (f"{s['fraction']:.2f}x", s["offered_rps"], s["ok_rps"], s["shed_429"],
                                           s["client_p50_ms"], s["client_p99_ms"], s["in_flight_mean"], s["busy"],
                                           s["triton_queue_ms_per_request"], s["gateway_mean_ms"])))
    (out / "scaling-signal.json").write_text(json.dumps({"capacity_rps": capacity, "steps": steps}, indent=2))
    print(f"scaling-signal: wrote {out / 'scaling-signal.json'}")
    return 1 if any(s["bad"] for s in steps) else 0


if __name__ == "__main__":
    raise SystemExit(main())
