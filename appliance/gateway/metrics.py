"""Prometheus metrics of the gateway; `/metrics` also carries Triton's own metrics.

Phases: `tokenize` (worker thread), `inference` (the round trip to Triton, which includes
Triton's queue; Triton's `nv_inference_queue_duration_us` splits that part out) and `total`.
"""

from __future__ import annotations

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    """One registry per app (so several apps can live in one process, as in tests)."""

    def __init__(self, triton_metrics_url: str | None) -> None:
        self.triton_metrics_url = triton_metrics_url
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "embed_requests",
            "Requests by endpoint, model, task, status and key name",
            ["endpoint", "model", "task", "status", "key"],
            registry=r,
        )
        self.latency = Histogram(
            "embed_request_duration_seconds",
            "Request latency by phase",
            ["phase", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # The whole life of each /v1/embeddings and /tokenize request, as the gateway process sees
        # it: head (first byte to head parsed), wait (for the event loop), app, total (first byte
        # to last). The kernel's accept queue and socket buffers are outside (bench/soak.py).
        self.http_latency = Histogram(
            "embed_http_request_duration_seconds",
            "A request's life in the gateway by phase, first byte to last byte",
            ["endpoint", "status", "phase"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.open_connections = Gauge("embed_open_connections", "HTTP connections open to the gateway", registry=r)
        self.refused_connections = Counter(
            "embed_refused_connections",
            "Connections closed unserved: max_connections reached, or no complete request head in time",
            ["reason"],
            registry=r,
        )
        self.input_tokens = Counter("embed_input_tokens", "Tokens fed to the model", ["model", "key"], registry=r)
        self.inputs = Counter("embed_inputs", "Inputs embedded", ["model"], registry=r)
        self.chunk_rows = Histogram(
            "embed_chunk_rows",
            "Sequences per request sent to Triton",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.padding = Histogram(
            "embed_chunk_padding_efficiency",
            "Real / padded tokens per chunk sent",
            ["model"],
            buckets=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
            registry=r,
        )
        self.in_flight = Gauge("embed_in_flight_requests", "Requests being processed", registry=r)
        self.queued = Gauge(
            "embed_queued_requests", "Requests waiting for a permit ([limits] max_queued_requests)", registry=r
        )
        self.abandoned = Gauge(
            "embed_abandoned_requests",
            "Requests answered 504 whose work is still running (it keeps its permit)",
            registry=r,
        )
        self.rejected = Counter("embed_rejected_requests", "Requests refused before any work", ["reason"], registry=r)
        self.limit_store_up = Gauge(
            "embed_rate_limit_store_up",
            "1 while the shared rate-limit store answers; 0 while this replica limits keys on its own",
            registry=r,
        )
        self.limit_store_errors = Counter(
            "embed_rate_limit_store_errors", "Calls to the shared rate-limit store that failed or timed out", registry=r
        )

    async def render(self) -> bytes:
        """The gateway's metrics followed by Triton's (omitted, with a comment, if Triton is down)."""
        own = generate_latest(self.registry)
        if not self.triton_metrics_url:
            return own
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.triton_metrics_url) as r:
                triton = await r.read()
        except (aiohttp.ClientError, OSError):
            triton = b"# triton metrics unavailable (tritonserver is not answering)\n"
        return own + triton
