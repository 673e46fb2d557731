"""How close to the CPU's limit: achieved GFLOP/s against this CPU's peak for each precision.

FLOPs counted per sequence of n real tokens (padding excluded: the useful work), for an encoder
of L layers, hidden d, FFN width f, one multiply-add = 2 FLOPs:

    2 * n * L * (4 d^2 + 2 d f)      the Q, K, V and output projections and the two FFN matmuls
  + 4 * n^2 * L * d                  attention's QK^T and its product with V

Not counted: embeddings, LayerNorm, softmax, GELU, the rank-4 LoRA adapters (< 1 % of the
matmuls at d = 1024), pooling. So the share of peak is a lower bound on how busy the units are.

Peak = cores x clock x FLOPs per cycle per core, from /proc/cpuinfo's flags and clock (a KVM guest
reports the host's nominal clock; boost is not known, so the share may read a little high):
- fp32: AVX-512 FMA. Zen 4 runs 512-bit ops on two 256-bit FMA pipes: 32 FLOPs/cycle; an Intel
  Xeon with two 512-bit FMA ports: 64. AVX2 only: 32.
- bf16: AMX (`amx_bf16`): 1,024 FLOPs/cycle (one 16x32x16 tile product per 16 cycles, 512 MACs a
  cycle); AVX512-BF16 (`avx512_bf16`, VDPBF16PS: two bf16 products per fp32 lane): 2x fp32.
- int8: AMX (`amx_int8`): 2,048 ops/cycle; AVX512-VNNI (VPDPBUSD: four u8 x s8 products per
  32-bit lane): 4x fp32.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def cpu_facts() -> dict[str, Any]:
    vendor, mhz, flags = "", 0.0, set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "vendor_id" and not vendor:
                vendor = value.strip()
            elif key == "cpu MHz" and not mhz:
                mhz = float(value)
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"vendor": vendor, "mhz": mhz, "flags": flags}


def peak_flops_per_cycle(vendor: str, flags: set[str]) -> dict[str, tuple[float, str]]:
    """FLOPs per cycle per core for fp32 / bf16 / int8, each with how it was derived."""
    if "avx512f" in flags:
        fp32 = (32.0, "AVX-512 on two 256-bit FMA pipes (Zen 4)") if vendor == "AuthenticAMD" else (
            64.0, "AVX-512, two 512-bit FMA ports")
    else:
        fp32 = (32.0, "AVX2, two 256-bit FMA ports")
    if "amx_bf16" in flags:
        bf16 = (1024.0, "AMX-BF16 tiles")
    elif "avx512_bf16" in flags:
        bf16 = (2 * fp32[0], "AVX512-BF16 (VDPBF16PS), 2x fp32")
    else:
        bf16 = (fp32[0], "no native bf16: as fp32")
    if "amx_int8" in flags:
        int8 = (2048.0, "AMX-INT8 tiles")
    elif "avx512_vnni" in flags or "avx_vnni" in flags:
        int8 = (4 * fp32[0], "VNNI (VPDPBUSD), 4x fp32")
    else:
        int8 = (2 * fp32[0], "no VNNI: about 2x fp32")
    return {"fp32": fp32, "bf16": bf16, "int8": int8}


def model_shape(folder: Path) -> dict[str, int]:
    config = json.loads((folder / "config.json").read_text())
    return {"layers": int(config["num_hidden_layers"]), "hidden": int(config["hidden_size"]),
            "ffn": int(config["intermediate_size"])}


def sequence_flops(n: int, shape: dict[str, int]) -> float:
    layers, d, f = shape["layers"], shape["hidden"], shape["ffn"]
    return 2.0 * n * layers * (4 * d * d + 2 * d * f) + 4.0 * n * n * layers * d


def compute_report(folder: Path, lengths: Sequence[int], cores: int,
                   throughputs: dict[str, tuple[str, float | None]]) -> dict[str, Any]:
    """`throughputs`: system -> (precision, tokens/s). Achieved GFLOP/s and share of that precision's peak."""
    shape = model_shape(folder)
    tokens = sum(lengths)
    per_token = sum(sequence_flops(n, shape) for n in lengths) / tokens if tokens else 0.0
    cpu = cpu_facts()
    peaks = peak_flops_per_cycle(cpu["vendor"], cpu["flags"])
    peak_gflops = {p: cores * cpu["mhz"] / 1000 * per_cycle for p, (per_cycle, _) in peaks.items()}
    achieved = {}
    for system, (precision, tok_s) in throughputs.items():
        if tok_s is None:
            continue
        gflops = tok_s * per_token / 1e9
        achieved[system] = {"precision": precision, "gflops": round(gflops, 1),
                            "share_of_peak": round(gflops / peak_gflops[precision], 3) if peak_gflops[precision] else None}
    return {
        "model_shape": shape,
        "flops_per_token": round(per_token),
        "counting": "2n L (4d^2 + 2df) + 4n^2 L d per sequence of n real tokens (matmuls only; bench/compute.py)",
        "peak_gflops": {p: round(v, 1) for p, v in peak_gflops.items()},
        "peak_derivation": {p: f"{cores} cores x {cpu['mhz']:.0f} MHz x {per_cycle:.0f} FLOPs/cycle ({why})"
                            for p, (per_cycle, why) in peaks.items()},
        "achieved": achieved,
    }
