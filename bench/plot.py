"""Latency vs throughput, one PNG per run: `python -m bench.plot RESULT.json OUT.png`.

Needs only matplotlib (the bench venv has it; the product's venv does not, and need not).
Each panel is one model/variant; each line one system and request size, its points the
concurrency levels (closed loop: more clients -> more throughput, more latency). The baseline is
drawn as its saturated throughput (a vertical line) and its idle single-call latency (a star).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"appliance": "tab:blue", "infinity": "tab:orange", "baseline": "tab:green"}
MARKERS = {1: "o", 8: "s", 32: "D", 64: "^"}


def plot(result: dict[str, Any], out: Path) -> Path:
    entries = result["models"]
    fig, axes = plt.subplots(1, len(entries), figsize=(6.5 * len(entries), 5), squeeze=False)
    for ax, entry in zip(axes[0], entries):
        for system in ("appliance", "infinity"):
            data = entry.get(system, {})
            for size in sorted({g["request_size"] for g in data.get("grid", [])}):
                points = sorted((g for g in data["grid"] if g["request_size"] == size), key=lambda g: g["concurrency"])
                xs = [g["tokens_per_s"] for g in points]
                ys = [g["p50_ms"] for g in points]
                ax.plot(xs, ys, marker=MARKERS.get(size, "o"), color=COLORS[system],
                        label=f"{system}, {size} input{'s' if size > 1 else ''}/request")
                for g in points:
                    ax.annotate(f"c{g['concurrency']}", (g["tokens_per_s"], g["p50_ms"]), fontsize=7,
                                textcoords="offset points", xytext=(3, 3))
        base = entry.get("baseline", {})
        if "saturated" in base:
            ax.axvline(base["saturated"]["tokens_per_s"], color=COLORS["baseline"], linestyle="--",
                       label=f"baseline saturated ({base['saturated']['tokens_per_s']:.0f} tok/s)")
            ax.scatter([base["idle_single"]["tokens_per_s"]], [base["idle_single"]["p50_ms"]], marker="*", s=120,
                       color=COLORS["baseline"], label="baseline, 1 short query")
        ax.set_yscale("log")
        ax.set_xlabel("throughput (tokens/s, real tokens)")
        ax.set_ylabel("p50 latency per request (ms, log)")
        ax.set_title(f"{entry['model']} [{entry['variant']}] - {entry['workload']['items']} texts")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    cpu = result.get("machine", {}).get("cpu_model", "")
    fig.suptitle(f"embed-appliance benchmark - {cpu}, {result.get('machine', {}).get('cpus_available')} cores",
                 fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m bench.plot RESULT.json OUT.png")
    print(plot(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])))


if __name__ == "__main__":
    main()
