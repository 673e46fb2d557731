"""bench/soak.py reads the gateway's histograms with prometheus_client's parser, as its old line splitter did."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from appliance.gateway.metrics import LATENCY_BUCKETS
from bench.soak import parse_histograms, server_latency

# What Triton appends to the gateway's /metrics (a counter without `_total`, as Triton writes it).
TRITON = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="tiny",version="1"} 12
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="tiny",version="1"} 3456
"""


def _metrics_text() -> str:
    """A /metrics text with the gateway's own histograms (same names, labels, buckets), then Triton's."""
    r = CollectorRegistry()
    latency = Histogram("embed_request_duration_seconds", "", ["phase", "model"], buckets=LATENCY_BUCKETS, registry=r)
    http = Histogram(
        "embed_http_request_duration_seconds", "", ["endpoint", "status", "phase"], buckets=LATENCY_BUCKETS, registry=r
    )
    Counter("embed_requests", "", ["endpoint", "status"], registry=r).labels("/v1/embeddings", "200").inc(5)
    for i, seconds in enumerate((0.0004, 0.003, 0.03, 0.04, 0.2, 1.5, 45.0)):
        for phase in ("head", "wait", "app", "total"):
            http.labels("/v1/embeddings", "200", phase).observe(seconds * (1 + i % 3))
        http.labels("/v1/embeddings", "429", "total").observe(0.0001)  # not a 200: left out
        http.labels("/tokenize", "200", "total").observe(0.002)  # not the embeddings route: left out
        for phase in ("tokenize", "inference", "total"):
            latency.labels(phase, "tiny-jina").observe(seconds / 2)
    return generate_latest(r).decode() + TRITON


def _old_parse_histograms(text: str) -> dict[str, dict[str, float]]:
    """The line splitter parse_histograms replaced, kept as the oracle."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if (
            line.startswith("embed_http_request_duration_seconds_")
            and 'status="200"' in line
            and 'endpoint="/v1/embeddings"' in line
        ):
            name = line.split('phase="', 1)[1].split('"', 1)[0]
        elif line.startswith("embed_request_duration_seconds_") and 'phase="total"' in line:
            name = "model"
        else:
            continue
        value = float(line.rsplit(" ", 1)[1])
        if "_bucket{" in line:
            out.setdefault(name, {})[line.split('le="', 1)[1].split('"', 1)[0]] = value
        elif "_sum{" in line:
            out.setdefault(name, {})["sum"] = value
    return out


def test_parse_histograms_gives_what_the_old_line_splitter_gave() -> None:
    text = _metrics_text()
    assert parse_histograms(text) == _old_parse_histograms(text)


def test_parse_histograms_keys_buckets_by_the_le_label_as_written() -> None:
    parsed = parse_histograms(_metrics_text())
    assert set(parsed) == {"head", "wait", "app", "total", "model"}
    assert parsed["total"]["0.05"] == 3.0  # 0.0004, 0.006 and 0.04 s
    assert parsed["total"]["+Inf"] == 7.0
    assert parsed["model"]["1.0"] == 6.0  # 0.75 s is the last under a second
    assert set(parsed["model"]) == {
        "0.001",
        "0.0025",
        "0.005",
        "0.01",
        "0.025",
        "0.05",
        "0.1",
        "0.25",
        "0.5",
        "1.0",
        "2.5",
        "5.0",
        "10.0",
        "30.0",
        "60.0",
        "+Inf",
        "sum",
    }


def test_server_latency_reads_the_parsed_histograms() -> None:
    after = parse_histograms(_metrics_text())
    quantiles = server_latency({}, after)
    assert quantiles["model"]["p50_le"] == 0.025
    assert quantiles["model"]["p99_le"] == 30.0
