"""Percentiles, and how much of the machine someone else used while we measured."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean/min in milliseconds (0 for an empty list)."""
    if not seconds:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0, "min_ms": 0.0}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "min_ms": round(float(ms.min()), 3),
    }


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _tree_jiffies(root: int) -> int:
    """utime+stime (+ reaped children's) of `root` and every live descendant."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2:].split()
        pid = int(entry)
        parents[pid] = int(rest[1])
        times[pid] = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    total = 0
    for pid, jiffies in times.items():
        p, hops = pid, 0
        while p not in (0, 1) and p != root and hops < 64:
            p, hops = parents.get(p, 0), hops + 1
        if p == root:
            total += jiffies
    return total


@dataclass
class NoiseMeter:
    """CPU used on this machine by processes outside the benchmark's own process tree.

    Another job on a 2-core box changes every number; this says how much of that happened
    (0.0 = a quiet machine, 0.5 = someone else used half of all cores' time).
    """

    root: int = field(default_factory=os.getpid)
    _start: tuple[int, int, int, float] = (0, 0, 0, 0.0)

    def start(self) -> NoiseMeter:
        busy, total = _busy_jiffies()
        self._start = (busy, total, _tree_jiffies(self.root), time.monotonic())
        return self

    def stop(self) -> dict[str, float]:
        busy, total = _busy_jiffies()
        ours = _tree_jiffies(self.root)
        b0, t0, o0, _ = self._start
        span = max(total - t0, 1)
        foreign = max(0, (busy - b0) - (ours - o0))
        return {
            "machine_busy_share": round((busy - b0) / span, 3),
            "foreign_cpu_share": round(foreign / span, 3),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
