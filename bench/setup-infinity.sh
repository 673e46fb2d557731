#!/usr/bin/env bash
# Create the benchmark's OWN venv (never the product's): Infinity (infinity-emb, ONNX via optimum)
# and matplotlib for the plot. torch is installed first from the CPU wheel only; a constraints
# file pins it so pip can never pull a CUDA build (or the nvidia-* wheels) as a dependency.
#
#   bash bench/setup-infinity.sh [VENV]      (default: bench/.venv, or $BENCH_VENV)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${BENCH_VENV:-bench/.venv}}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

"$PY" -m venv --clear "$VENV"   # fresh every time: no leftovers from another pin set
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --quiet)
CONSTRAINTS="$VENV/bench-constraints.txt"
cat > "$CONSTRAINTS" <<'PINS'
torch==2.13.0+cpu
PINS

"${PIP[@]}" --upgrade pip wheel setuptools
# The CPU torch wheel: from a local wheel directory when the machine has one, else PyTorch's
# CPU build by its local version label (never the default CUDA build).
"${PIP[@]}" -c "$CONSTRAINTS" "torch==2.13.0+cpu"
"$VENV/bin/python" - <<'PYCHECK'
import torch
assert "+cpu" in torch.__version__ and not torch.cuda.is_available(), torch.__version__
print("bench venv: torch", torch.__version__)
PYCHECK
"${PIP[@]}" -c "$CONSTRAINTS" "infinity-emb[server,optimum]==0.0.78" "matplotlib" "httpx"
# Infinity must load the local folder only: no hub, no telemetry.
"$VENV/bin/python" - <<'PYCHECK'
import importlib.metadata as md
for name in ("infinity-emb", "optimum", "onnxruntime", "transformers", "torch", "matplotlib"):
    try:
        print(f"bench venv: {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"bench venv: {name} (not installed)")
bad = [d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith("nvidia-")]
assert not bad, f"CUDA wheels were pulled in: {bad}"
PYCHECK
echo "bench venv ready: $VENV (python -m bench.run picks it up)"
