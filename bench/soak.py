"""Soak: the real appliance at 2x its measured capacity for N minutes; nothing lost, nothing wrong.

    python bench/soak.py                     # 10 minutes, tiny jina-shaped model built offline
    python bench/soak.py --minutes 1         # smoke run
    python bench/soak.py --model-dir DIR     # any jina-v3 / sentence-transformer folder

1. Starts `appliance serve` (supervisord + tritonserver + gateway) on free loopback ports with
   `[limits] max_concurrent_requests` (default 4), `max_queued_requests` (default: as many) and
   `request_timeout_s` (default 30).
2. Calibrates: `max_concurrent_requests` closed-loop clients for `--calibrate-s` seconds; the 200s
   per second they get is the capacity for this request mix.
3. Soaks: open-loop arrivals at `--overload` (2.0) x capacity for `--minutes`. Every response is
   classified: 200 (every vector checked against the independent ONNX Runtime reference, and the
   token count), 429 (shed, must carry Retry-After and OpenAI's error shape), anything else.
4. Samples the RSS of the gateway, tritonserver and the Python-backend stubs (where ONNX Runtime
   runs) every `--sample-s` seconds from /proc, and writes the curve: soak.csv, soak.svg (always)
   and soak.png (when matplotlib is importable), plus soak-summary.json.

Passes (exit 0) with zero 5xx, zero wrong answers, zero lost requests (timeouts, connection
errors), no unexpected statuses, no process restarts and flat memory (see bench/SOAK.md).
All traffic goes to 127.0.0.1. Every loop is bounded by a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # runnable as `python bench/soak.py` (bench/ is not a package)
    sys.path.insert(0, str(REPO))

import httpx
import msgspec
import numpy as np
import numpy.typing as npt
from prometheus_client.parser import text_string_to_metric_families

from harness import procs
from harness.reference import Reference
from harness.stack import Stack, model_toml, ports_toml

MiB = 1024 * 1024
MODEL = "soak"
WORDS = (  # noqa: SIM905 (a sentence reads better than a list of 80 quoted words)
    "the quick brown fox jumps over lazy dog a self hosted embedding server turns text into vectors so "
    "that similar documents end up close to each other search retrieval clustering and classification "
    "all work on these query asks for evidence passage provides answer machine learning models read "
    "tokens not words every token has an identifier what is capital of france paris largest city "
    "der schnelle braune fuchs springt über den faulen hund dónde está la biblioteca mañana playa"
).split()


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Template:
    texts: tuple[str, ...]
    task: str | None
    wire: str  # "float" or "base64"


@dataclass
class Workload:
    templates: list[Template]
    expected: dict[tuple[str, str | None], npt.NDArray[np.float64]]
    tokens: dict[tuple[str, str | None], int]
    largest: Template  # the 8 longest texts, one task: the biggest shape this workload can make

    def body(self, t: Template) -> dict[str, Any]:
        body: dict[str, Any] = {"model": MODEL, "input": list(t.texts), "encoding_format": t.wire}
        if t.task is not None:
            body["task"] = t.task
        return body


def build_workload(ref: Reference, *, seed: int, texts: int, templates: int) -> Workload:
    rng = random.Random(seed)
    pool = []
    for i in range(texts):
        words = rng.choice([3, 8, 20, 50, 120, 300])
        pool.append(f"{i}: " + " ".join(rng.choice(WORDS) for _ in range(words)))
    tasks: list[str | None] = list(ref.config.get("lora_adaptations") or [None])
    out = []
    for _ in range(templates):
        chosen = tuple(rng.sample(pool, rng.choice([1, 1, 2, 4, 8])))
        out.append(Template(chosen, rng.choice(tasks), "base64" if rng.random() < 0.75 else "float"))
    longest = tuple(sorted(pool, key=len)[-8:])
    largest = Template(longest, tasks[0], "base64")
    expected, tokens = {}, {}
    for t in [*out, largest]:
        for text in t.texts:
            if (text, t.task) not in expected:
                expected[(text, t.task)] = ref.embed(text, t.task)
                tokens[(text, t.task)] = len(ref.ids(text, t.task))
    return Workload(out, expected, tokens, largest)


def verify(work: Workload, t: Template, body: dict[str, Any], atol: float) -> str | None:
    """None when the answer is right, else what is wrong with it."""
    data = body.get("data")
    if not isinstance(data, list) or sorted(d.get("index") for d in data) != list(range(len(t.texts))):
        return f"indices {[d.get('index') for d in data or []]} for {len(t.texts)} inputs"
    for item in data:
        raw = item["embedding"]
        if t.wire == "base64":
            got = np.frombuffer(base64.b64decode(raw), dtype="<f4").astype(np.float64)
        else:
            got = np.asarray(raw, dtype=np.float64)
        want = work.expected[(t.texts[item["index"]], t.task)]
        if got.shape != want.shape:
            return f"input {item['index']}: shape {got.shape} != {want.shape}"
        diff = float(np.abs(got - want).max())
        if diff > atol:
            return f"input {item['index']}: max |diff| {diff:.2e} > {atol:.0e}"
    want_tokens = sum(work.tokens[(text, t.task)] for text in t.texts)
    if body.get("usage", {}).get("prompt_tokens") != want_tokens:
        return f"usage {body.get('usage')} != {want_tokens} tokens"
    return None


# --------------------------------------------------------------------------- load


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # 200s
    shed_latencies: list[float] = field(default_factory=list)  # 429s
    problems: list[str] = field(default_factory=list)  # first few, for the report
    max_outstanding: int = 0  # open loop: the most requests in flight at once (client side)
    ok_tokens: int = 0  # tokens of the correct 200s: goodput by work, not by request count
    seconds: float = 0.0  # closed loop: how long it ran

    def problem(self, what: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(what)


class LeanClient:
    """A minimal HTTP/1.1 keep-alive client for one server: requests pre-encoded per template, the
    response head parsed by hand. httpx costs ~1 ms of CPU per request, which on a small box is the
    load generator's own bottleneck at a few hundred requests per second (issue 17)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.heads: dict[int, bytes] = {}

    def request(self, path: str, body: bytes) -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def post(self, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        """(status, headers, body); raises OSError / asyncio.TimeoutError / IncompleteReadError when lost."""
        return await asyncio.wait_for(self._post(raw), self.timeout)

    async def _post(self, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        for attempt in (0, 1):
            reused = attempt == 0 and bool(self.idle)  # a retry always opens a new connection
            reader, writer = self.idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
            try:
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
                if reused:  # the server closed this idle keep-alive connection (after 5 s): once more
                    continue
                raise
            lines = head[:-4].split(b"\r\n")
            status = int(lines[0][9:12])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            if headers.get(b"connection", b"").lower() == b"close":
                writer.close()
            else:
                self.idle.append((reader, writer))
            return status, headers, body
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


@dataclass
class Encoded:
    """The workload's requests as bytes, once (the load generator encodes nothing per request)."""

    raw: dict[int, bytes]

    @classmethod
    def of(cls, client: LeanClient, work: Workload, path: str = "/v1/embeddings") -> Encoded:
        templates = [*work.templates, work.largest]
        return cls({id(t): client.request(path, msgspec.json.encode(work.body(t))) for t in templates})


async def one_request(client: LeanClient, encoded: Encoded, work: Workload, t: Template, tally: Tally,
                      atol: float) -> None:
    start = time.monotonic()
    try:
        status, headers, raw = await client.post(encoded.raw[id(t)])
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        tally.outcomes["lost"] += 1
        tally.problem(f"lost after {time.monotonic() - start:.1f}s: {type(exc).__name__}: {exc}")
        return
    seconds = time.monotonic() - start
    if status == 200:
        wrong = verify(work, t, msgspec.json.decode(raw), atol)
        if wrong is None:
            tally.outcomes["ok"] += 1
            tally.latencies.append(seconds)
            tally.ok_tokens += sum(work.tokens[(text, t.task)] for text in t.texts)
        else:
            tally.outcomes["wrong"] += 1
            tally.problem(f"wrong answer: {wrong}")
    elif status == 429:
        is_json = headers.get(b"content-type", b"").startswith(b"application/json")
        error = msgspec.json.decode(raw).get("error", {}) if is_json else {}
        if headers.get(b"retry-after", b"").isdigit() and {"message", "type", "param", "code"} <= set(error):
            tally.outcomes["shed_429"] += 1
            tally.shed_latencies.append(seconds)
        else:
            tally.outcomes["bad_429"] += 1
            tally.problem(f"429 without Retry-After / OpenAI shape: {headers} {raw[:200]!r}")
    elif status >= 500:
        tally.outcomes["5xx"] += 1
        tally.problem(f"{status}: {raw[:300]!r}")
    else:
        tally.outcomes[f"unexpected_{status}"] += 1
        tally.problem(f"{status}: {raw[:300]!r}")


async def warm_up(client: LeanClient, encoded: Encoded, work: Workload, clients: int, atol: float,
                  bursts: int = 3) -> Tally:
    """Every template once (closed loop), then `bursts` bursts of `clients` simultaneous largest
    requests: Triton batches them into the biggest ONNX Runtime runs this workload can produce, so
    allocator arenas reach their high-water mark BEFORE memory is measured."""
    tally = Tally()
    queue = list(work.templates)

    async def closed_loop() -> None:
        while queue:
            await one_request(client, encoded, work, queue.pop(), tally, atol)

    await asyncio.gather(*(closed_loop() for _ in range(clients)))
    for _ in range(bursts):
        await asyncio.gather(*(one_request(client, encoded, work, work.largest, tally, atol) for _ in range(clients)))
    return tally


async def calibrate(client: LeanClient, encoded: Encoded, work: Workload, clients: int, seconds: float,
                    atol: float) -> tuple[float, Tally]:
    """Closed loop with as many clients as the server admits: 200s per second = capacity."""
    tally = Tally()
    deadline = time.monotonic() + seconds
    rng = random.Random(1)

    async def closed_loop() -> None:
        while time.monotonic() < deadline:
            await one_request(client, encoded, work, rng.choice(work.templates), tally, atol)

    started = time.monotonic()
    await asyncio.gather(*(closed_loop() for _ in range(clients)))
    tally.seconds = time.monotonic() - started
    return tally.outcomes["ok"] / tally.seconds, tally


@dataclass
class Sample:
    t: float
    gateway_pid: int | None
    triton_pid: int | None
    gateway_rss: int
    tritonserver_rss: int
    stubs_rss: int
    outcomes: dict[str, int]


def sample(root: int, start: float, tally: Tally) -> Sample:
    gateway = procs.gateway(root)
    triton = procs.tritonserver(root)
    stubs = procs.backend_stubs(root)
    return Sample(
        t=time.monotonic() - start,
        gateway_pid=gateway.pid if gateway else None,
        triton_pid=triton.pid if triton else None,
        gateway_rss=(procs.rss_bytes(gateway.pid) or 0) if gateway else 0,
        tritonserver_rss=(procs.rss_bytes(triton.pid) or 0) if triton else 0,
        stubs_rss=sum(procs.rss_bytes(s.pid) or 0 for s in stubs),
        outcomes=dict(tally.outcomes),
    )


async def soak(client: LeanClient, encoded: Encoded, root: int, work: Workload, rate: float, seconds: float,
               drain_s: float, sample_s: float, max_outstanding: int, atol: float,
               before: Callable[[], dict[str, dict[str, float]]] = dict) -> Offered:
    """Open loop: arrivals at `rate`/s (Poisson) for `seconds`, regardless of how the server keeps up.
    Records how late each request left against its scheduled arrival: the load actually delivered."""
    offered = Offered(histograms_before=before())
    tally = offered.tally
    rng = random.Random(2)
    start = time.monotonic()
    deadline = start + seconds
    tasks: set[asyncio.Task[None]] = set()

    async def sampler() -> None:
        while time.monotonic() < deadline:
            offered.samples.append(sample(root, start, tally))
            await asyncio.sleep(sample_s)

    sampling = asyncio.create_task(sampler())
    next_at = start
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if next_at > now:
            await asyncio.sleep(min(next_at - now, deadline - now))
            continue
        offered.lateness.append(now - next_at)
        next_at += rng.expovariate(rate)
        if len(tasks) >= max_outstanding:  # the client, not the server, is the bottleneck
            tally.outcomes["client_skipped"] += 1
            continue
        task = asyncio.create_task(one_request(client, encoded, work, rng.choice(work.templates), tally, atol))
        tasks.add(task)
        tally.max_outstanding = max(tally.max_outstanding, len(tasks))
        task.add_done_callback(tasks.discard)
        offered.sent += 1
    offered.send_seconds = time.monotonic() - start
    if tasks:
        await asyncio.wait(tasks, timeout=drain_s)
    for task in list(tasks):  # not answered even within the client timeout: lost
        task.cancel()
        tally.outcomes["lost"] += 1
    await sampling
    offered.samples.append(sample(root, start, tally))
    offered.seconds = time.monotonic() - start
    return offered


@dataclass
class Offered:
    """What the open loop did: its outcomes, memory samples, and the load it really delivered."""

    tally: Tally = field(default_factory=Tally)
    samples: list[Sample] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)  # seconds each arrival left after its schedule
    sent: int = 0
    send_seconds: float = 0.0  # the arrival window
    seconds: float = 0.0  # arrival window + drain
    histograms_before: dict[str, dict[str, float]] = field(default_factory=dict)  # the gateway's, at the start


def histograms(base_url: str) -> dict[str, dict[str, float]]:
    """The gateway's histograms of /v1/embeddings 200s, cumulative, scraped from its /metrics."""
    return parse_histograms(httpx.get(f"{base_url}/metrics", timeout=10).text)


def parse_histograms(text: str) -> dict[str, dict[str, float]]:
    """Per phase of `embed_http_request_duration_seconds` (first byte to last; README "Metrics") and the
    model part (`embed_request_duration_seconds{phase="total"}`: tokenize + Triton), as {bucket bound
    (the `le` label as written, e.g. "0.05", "+Inf") or "sum": value}, from a /metrics text."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            metric, _, kind = s.name.rpartition("_")
            if kind not in ("bucket", "sum"):
                continue
            if metric == "embed_http_request_duration_seconds" and s.labels.get("status") == "200" \
                    and s.labels.get("endpoint") == "/v1/embeddings":
                name = s.labels["phase"]
            elif metric == "embed_request_duration_seconds" and s.labels.get("phase") == "total":
                name = "model"
            else:
                continue
            out.setdefault(name, {})[s.labels["le"] if kind == "bucket" else "sum"] = s.value
    return out


def server_latency(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """Quantiles (bucket upper bounds) and the exact mean of the 200s between two scrapes: the soak's
    own requests, not the warm-up's or the calibration's."""
    out: dict[str, dict[str, float | None]] = {}
    for name, cumulative in after.items():
        diff = {k: v - before.get(name, {}).get(k, 0.0) for k, v in cumulative.items()}
        series = sorted((math.inf if k == "+Inf" else float(k), v) for k, v in diff.items() if k != "sum")
        total = series[-1][1] if series else 0
        out[name] = {f"p{q}_le": next((le for le, n in series if n >= q / 100 * total), None) if total else None
                     for q in (50, 99)}
        out[name]["mean"] = round(diff.get("sum", 0.0) / total, 4) if total else None
    return out


# --------------------------------------------------------------------------- report


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def memory_verdict(samples: list[Sample], name: str, values: list[int]) -> dict[str, Any]:
    """Flat = the median of the last 20 % of samples is within max(10 %, 32 MiB) of the median of
    the first 20 % after warm-up (the first 10 % of the run is warm-up: allocators and caches fill)."""
    n = len(values)
    if n < 5:
        return {"process": name, "flat": None, "reason": f"only {n} samples"}
    body = values[max(1, n // 10):]
    k = max(1, len(body) // 5)
    first, last = statistics.median(body[:k]), statistics.median(body[-k:])
    growth = last - first
    bound = max(0.10 * first, 32 * MiB)
    return {
        "process": name, "first_mib": round(first / MiB, 1), "last_mib": round(last / MiB, 1),
        "max_mib": round(max(values) / MiB, 1), "growth_mib": round(growth / MiB, 1),
        "bound_mib": round(bound / MiB, 1), "flat": growth <= bound,
    }


def write_csv(path: Path, samples: list[Sample]) -> None:
    keys = sorted({k for s in samples for k in s.outcomes})
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["t_s", "gateway_pid", "tritonserver_pid", "gateway_rss_mib", "tritonserver_rss_mib",
                      "backend_stubs_rss_mib", "triton_total_rss_mib", *keys])
        for s in samples:
            out.writerow([f"{s.t:.1f}", s.gateway_pid, s.triton_pid, f"{s.gateway_rss / MiB:.1f}",
                          f"{s.tritonserver_rss / MiB:.1f}", f"{s.stubs_rss / MiB:.1f}",
                          f"{(s.tritonserver_rss + s.stubs_rss) / MiB:.1f}", *[s.outcomes.get(k, 0) for k in keys]])


def curves(samples: list[Sample]) -> dict[str, list[float]]:
    return {
        "gateway": [s.gateway_rss / MiB for s in samples],
        "tritonserver": [s.tritonserver_rss / MiB for s in samples],
        "backend stubs (ONNX Runtime)": [s.stubs_rss / MiB for s in samples],
        "triton total": [(s.tritonserver_rss + s.stubs_rss) / MiB for s in samples],
    }


def write_svg(path: Path, samples: list[Sample], title: str) -> None:
    """A dependency-free line chart of the RSS curves."""
    width, height, left, right, top, bottom = 900, 420, 70, 230, 40, 50
    xs = [s.t for s in samples] or [0.0]
    series = curves(samples)
    y_max = max([v for vs in series.values() for v in vs] + [1.0]) * 1.1
    x_max = max(xs[-1], 1.0)

    def px(t: float, v: float) -> tuple[float, float]:
        return (left + t / x_max * (width - left - right), top + (1 - v / y_max) * (height - top - bottom))

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
              f'font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>'),
             f'<text x="{left}" y="22" font-size="14">{title}</text>']
    for i in range(6):
        v = y_max * i / 5
        _, y = px(0, v)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    for i in range(6):
        t = x_max * i / 5
        x, _ = px(t, 0)
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 18}" text-anchor="middle">{t:.0f}</text>')
    parts.append(f'<text x="{(width - right + left) / 2}" y="{height - 12}" text-anchor="middle">seconds</text>'
                 f'<text x="16" y="{(height) / 2}" transform="rotate(-90 16 {height / 2})" '
                 f'text-anchor="middle">RSS (MiB)</text>')
    for (name, values), color, row in zip(series.items(), colors, range(len(series))):
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (px(t, v) for t, v in zip(xs, values)))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        y = top + 20 * row
        parts.append(f'<line x1="{width - right + 15}" y1="{y}" x2="{width - right + 35}" y2="{y}" '
                     f'stroke="{color}" stroke-width="3"/><text x="{width - right + 40}" y="{y + 4}">{name}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def write_png(path: Path, samples: list[Sample], title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for name, values in curves(samples).items():
        ax.plot([s.t for s in samples], values, label=name)
    ax.set(title=title, xlabel="seconds", ylabel="RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- main


def output_and_model(out: Path | None, model_dir: Path | None, *, prefix: str) -> tuple[Path, Path]:
    """The output folder (default: a new temporary one) and the model folder (default: the tiny
    jina-shaped model, built into the output folder once)."""
    out = (out or Path(tempfile.mkdtemp(prefix=prefix))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if model_dir is None:
        from appliance.testmodels.tiny_jina import build_tiny_jina

        model_dir = out / "tiny-jina"
        if not (model_dir / "model.onnx").exists():
            model_dir.mkdir(parents=True, exist_ok=True)
            build_tiny_jina(model_dir)
    return out, model_dir.resolve()


DELIVERED_SHARE = 0.95  # the soak fails when the load generator delivers less of the offered rate


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def cpu_split(server: str | None, client: str | None) -> tuple[set[int] | None, set[int] | None]:
    """Disjoint CPU sets for the server and the load generator: given, or the machine's CPUs split
    in two (first half server, second half client); None on a one-CPU machine (nothing to split)."""
    cpus = sorted(os.sched_getaffinity(0))
    if server is None and client is None:
        if len(cpus) < 2:
            return None, None
        half = len(cpus) // 2
        return set(cpus[:half]), set(cpus[half:])
    parse = lambda spec: {int(c) for c in spec.split(",")} if spec else None
    s, c = parse(server), parse(client)
    if s and c and s & c:
        raise SystemExit(f"soak: --server-cpus and --client-cpus overlap: {sorted(s & c)}")
    return s, c


def start_pinned(stack: Stack, cpus: set[int] | None) -> Stack:
    """Start the stack with this process's affinity set to `cpus`: every server process inherits it
    (and the compiler gives the model that many threads)."""
    before = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        return stack.start()
    finally:
        os.sched_setaffinity(0, before)


async def drive(stack: Stack, root: int, work: Workload, args: argparse.Namespace,
                client_timeout: float) -> tuple[Tally, float, Tally, Offered]:
    """Warm-up, calibration and the soak, on one event loop and one lean client."""
    port = int(stack.base_url.rsplit(":", 1)[1])
    client = LeanClient("127.0.0.1", port, client_timeout)
    encoded = Encoded.of(client, work)
    try:
        warm = await warm_up(client, encoded, work, args.max_concurrent, args.atol)
        print(f"soak: warm-up {dict(warm.outcomes)}", flush=True)
        capacity, cal = await calibrate(client, encoded, work, args.max_concurrent, args.calibrate_s, args.atol)
        rate = args.overload * capacity
        print(f"soak: capacity {capacity:.1f} req/s (calibration {dict(cal.outcomes)}); "
              f"offering {rate:.1f} req/s for {args.minutes:g} min", flush=True)
        run = await soak(client, encoded, root, work, rate, args.minutes * 60, client_timeout + 5, args.sample_s,
                         max_outstanding=args.max_outstanding, atol=args.atol,
                         before=lambda: histograms(stack.base_url))
    finally:
        await client.close()
    return warm, capacity, cal, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="soak duration (default 10)")
    parser.add_argument("--overload", type=float, default=2.0, help="offered load / measured capacity (default 2)")
    parser.add_argument("--model-dir", type=Path, help="model folder (default: build the tiny jina-shaped model)")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temporary folder)")
    parser.add_argument("--max-concurrent", type=int, default=4, help="[limits] max_concurrent_requests")
    parser.add_argument("--max-queued", type=int, default=None,
                        help="[limits] max_queued_requests (default: --max-concurrent; 0 = no queue)")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="[limits] request_timeout_s")
    parser.add_argument("--calibrate-s", type=float, default=20.0, help="capacity measurement (default 20 s)")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling interval (default 5 s)")
    parser.add_argument("--atol", type=float, default=1e-4, help="max |diff| to the reference per component")
    parser.add_argument("--max-outstanding", type=int, default=512,
                        help="safety bound on client-side requests in flight (an arrival beyond it is skipped "
                             "and fails the run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-cpus", help="CPUs for the appliance, e.g. 0 (default: the first half)")
    parser.add_argument("--client-cpus", help="CPUs for the load generator, e.g. 1 (default: the second half)")
    args = parser.parse_args(argv)
    if args.max_queued is None:
        args.max_queued = args.max_concurrent

    out, model_dir = output_and_model(args.out, args.model_dir, prefix="soak-")
    print(f"soak: model {model_dir}; output {out}", flush=True)

    ref = Reference(model_dir)
    work = build_workload(ref, seed=args.seed, texts=96, templates=400)
    print(f"soak: {len(work.templates)} request templates, {len(work.expected)} reference vectors", flush=True)

    toml = (
        ports_toml()
        + f"[limits]\nmax_concurrent_requests = {args.max_concurrent}\nmax_queued_requests = {args.max_queued}\n"
        + f"request_timeout_s = {args.request_timeout}\n"
        + model_toml(MODEL, model_dir, precision="fp32")
    )
    (out / "stack").mkdir(exist_ok=True)
    server_cpus, client_cpus = cpu_split(args.server_cpus, args.client_cpus)
    stack = start_pinned(Stack(out / "stack", toml), server_cpus)
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)  # the load generator from here on; the server keeps its own
    print(f"soak: server on CPUs {sorted(server_cpus) if server_cpus else 'all'}, load generator on "
          f"{sorted(client_cpus) if client_cpus else 'the same (not pinned)'}", flush=True)
    assert stack.process is not None
    root = stack.process.pid
    client_timeout = args.request_timeout + 10
    summary: dict[str, Any] = {"model_dir": str(model_dir), "minutes": args.minutes, "overload": args.overload,
                               "max_concurrent_requests": args.max_concurrent, "max_queued_requests": args.max_queued,
                               "server_cpus": sorted(server_cpus or []), "client_cpus": sorted(client_cpus or [])}
    try:
        pids_before = (procs.gateway(root), procs.tritonserver(root))
        warm, capacity, cal, run = asyncio.run(drive(stack, root, work, args, client_timeout), debug=False)
        pids_after = (procs.gateway(root), procs.tritonserver(root))
        histograms_after = histograms(stack.base_url)
    finally:
        code = stack.stop()
    rate = args.overload * capacity
    tally, samples, sent, elapsed = run.tally, run.samples, run.sent, run.seconds
    server_side = server_latency(run.histograms_before, histograms_after)
    log = stack.log()

    gateway_pids = {s.gateway_pid for s in samples} | {p.pid if p else None for p in (pids_before[0], pids_after[0])}
    triton_pids = {s.triton_pid for s in samples} | {p.pid if p else None for p in (pids_before[1], pids_after[1])}
    restarts = len(gateway_pids) != 1 or len(triton_pids) != 1 or None in gateway_pids | triton_pids
    memory = [
        memory_verdict(samples, "gateway", [s.gateway_rss for s in samples]),
        memory_verdict(samples, "triton (tritonserver + backend stubs)",
                       [s.tritonserver_rss + s.stubs_rss for s in samples]),
    ]
    o = tally.outcomes
    answered = sum(v for k, v in o.items() if k not in ("client_skipped",))
    delivered = sent / run.send_seconds if run.send_seconds else 0.0
    capacity_p99 = percentile(cal.latencies, 99)
    ok_p99 = percentile(tally.latencies, 99)
    summary.update({
        "delivered_rps": round(delivered, 2), "delivered_vs_offered": round(delivered / rate, 3) if rate else None,
        "arrival_lateness_s": {"p50": percentile(run.lateness, 50), "p99": percentile(run.lateness, 99),
                               "max": max(run.lateness, default=None)},
        "goodput_vs_capacity": round(o["ok"] / run.send_seconds / capacity, 3) if capacity else None,
        # The same by tokens: request sizes vary 100x in this mix, so a short calibration's request
        # rate is a noisy capacity; its token rate is not.
        "capacity_tokens_per_s": round(cal.ok_tokens / cal.seconds, 1) if cal.seconds else None,
        "goodput_tokens_per_s": round(tally.ok_tokens / run.send_seconds, 1) if run.send_seconds else None,
        "goodput_tokens_vs_capacity": round(tally.ok_tokens / run.send_seconds / (cal.ok_tokens / cal.seconds), 3)
        if cal.ok_tokens and run.send_seconds else None,
        "latency_ok_at_capacity_s": {"p50": percentile(cal.latencies, 50), "p99": capacity_p99},
        "p99_vs_capacity_p99": round(ok_p99 / capacity_p99, 2) if ok_p99 and capacity_p99 else None,
        "capacity_rps": round(capacity, 2), "offered_rps": round(rate, 2), "seconds": round(elapsed, 1),
        "sent": sent, "answered": answered, "outcomes": dict(o),
        "ok_rps": round(o["ok"] / elapsed, 2), "max_outstanding": tally.max_outstanding,
        "shed_fraction": round(o["shed_429"] / max(1, sent), 3),
        "latency_ok_s": {f"p{q}": percentile(tally.latencies, q) for q in (50, 95, 99)} | {
            "max": max(tally.latencies, default=None),
            "mean": round(statistics.fmean(tally.latencies), 4) if tally.latencies else None},
        "latency_429_s": {f"p{q}": percentile(tally.shed_latencies, q) for q in (50, 99)},
        "server_latency_ok_s": server_side,
        "memory": memory, "process_restarts": restarts, "appliance_exit_code": code,
        "traceback_in_log": "Traceback" in log, "problems": tally.problems,
        "calibration_outcomes": dict(cal.outcomes), "warm_up_outcomes": dict(warm.outcomes),
    })
    failures = []
    for bad in ("5xx", "wrong", "lost", "bad_429"):
        if o[bad] or cal.outcomes[bad] or warm.outcomes[bad]:
            failures.append(f"{bad}: {o[bad] + cal.outcomes[bad] + warm.outcomes[bad]}")
    failures += [f"warm-up/calibration status {k}: {v}" for k, v in (warm.outcomes + cal.outcomes).items()
                 if k.startswith("unexpected")]
    failures += [f"unexpected status {k}: {v}" for k, v in o.items() if k.startswith("unexpected")]
    if sent != answered:  # every request sent has exactly one outcome
        failures.append(f"sent {sent} but {answered} outcomes recorded")
    if restarts:
        failures.append("a process was restarted during the soak")
    failures += [f"memory not flat: {m['process']} grew {m['growth_mib']} MiB (bound {m['bound_mib']})"
                 for m in memory if m["flat"] is False]
    if code != 0:
        failures.append(f"appliance exited {code} on SIGTERM")
    if "Traceback" in log:
        failures.append("a Traceback in the appliance log")
    if o["client_skipped"]:
        failures.append(f"the load generator could not keep up: {o['client_skipped']} arrivals skipped")
    if rate and delivered < DELIVERED_SHARE * rate:
        failures.append(f"the load generator delivered {delivered:.1f} req/s, short of the {rate:.1f} offered "
                        f"(below {DELIVERED_SHARE:.0%})")
    summary["failures"] = failures
    summary["pass"] = not failures

    write_csv(out / "soak.csv", samples)
    title = f"soak: {args.overload:g}x capacity ({rate:.0f} req/s) for {args.minutes:g} min - RSS"
    write_svg(out / "soak.svg", samples, title)
    png = write_png(out / "soak.png", samples, title)
    (out / "soak-summary.json").write_text(json.dumps(summary, indent=2, default=str))

    print(f"soak: {sent} requests in {elapsed:.0f}s -> {dict(o)}")
    lat = summary["latency_ok_s"]
    if tally.latencies:
        print(f"soak: 200 latency (client side) p50 {lat['p50']:.3f}s p95 {lat['p95']:.3f}s p99 {lat['p99']:.3f}s "
              f"max {lat['max']:.3f}s; {summary['ok_rps']} ok/s; {summary['shed_fraction']:.0%} shed with 429; "
              f"at most {tally.max_outstanding} requests outstanding")
    print(f"soak: delivered {delivered:.1f} req/s of {rate:.1f} offered ({summary['delivered_vs_offered']:.1%}); "
          f"arrivals left p99 {_ms(summary['arrival_lateness_s']['p99'])} ms after their schedule; "
          f"goodput {summary['goodput_vs_capacity']}x capacity by requests, "
          f"{summary['goodput_tokens_vs_capacity']}x by tokens ({summary['goodput_tokens_per_s']} of "
          f"{summary['capacity_tokens_per_s']} tok/s); admitted p99 {summary['p99_vs_capacity_p99']}x "
          f"its p99 at capacity ({_ms(capacity_p99)} ms)")
    print("soak: the gateway's own histograms of the soak's 200s (bucket bounds and mean; first byte to last byte "
          "by phase, and tokenize + Triton as `model`): "
          + "; ".join(f"{phase} " + ", ".join(f"{k.replace('_le', ' <=')} {v}s" for k, v in qs.items())
                      for phase, qs in server_side.items())
          + f"; client side: mean {lat['mean']}s")
    for m in memory:
        print(f"soak: RSS {m['process']}: {m}")
    print(f"soak: curve {out / 'soak.csv'}, {out / 'soak.svg'}" + (f", {out / 'soak.png'}" if png else ""))
    print(f"soak: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}")
    if tally.problems:
        print("soak: first problems:\n  " + "\n  ".join(tally.problems))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
