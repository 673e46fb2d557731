"""Infinity (`infinity-emb`, ONNX via optimum) serving the same ONNX file, in its own venv.

Infinity serves a plain sentence-transformer folder (all-MiniLM-L6-v2, multilingual-e5-small):
`--engine optimum --device cpu --pooling-method mean`, with `model.onnx` at the folder's root.
It cannot serve jina's interface (`task_id`), so the bench compares it on such a model only.
Infinity runs with its own defaults otherwise (dynamic batching, batch size 32, its ONNX graph
optimization, ONNX Runtime's default threads = all cores): the same 2-core box as the others.
The venv comes from `bench/setup-infinity.sh` (never the product's venv); its Hugging Face
cache goes into the run's work dir and the hub is switched off, so nothing is fetched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.appliance_client import Target
from harness.stack import free_port, poll_until_ok

SERVED_NAME = "bench"


def find_bench_venv(explicit: str | None = None) -> Path | None:
    """The venv made by bench/setup-infinity.sh: --bench-venv, $BENCH_VENV, bench/.venv, ../bench-venv."""
    here = Path(__file__).resolve().parent
    candidates = [explicit, os.environ.get("BENCH_VENV"), str(here / ".venv"), str(here.parent.parent / "bench-venv")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "bin" / "infinity_emb").exists():
            return Path(candidate)
    return None


def can_serve(model_dir: Path) -> str | None:
    """None if Infinity can serve this folder, else why not."""
    if not (model_dir / "model.onnx").is_file():
        return "no model.onnx at the folder's root"
    config = (model_dir / "config.json").read_text() if (model_dir / "config.json").is_file() else ""
    if "lora_adaptations" in config:
        return "a jina-v3 model (0-d task_id input): Infinity serves plain sentence-transformer ONNX only"
    return None


@dataclass
class RunningInfinity:
    process: subprocess.Popen[bytes]
    target: Target
    startup: dict[str, object]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_infinity(venv: Path, model_dir: Path, workdir: Path, *, ready_deadline_s: float = 300.0) -> RunningInfinity:
    workdir.mkdir(parents=True, exist_ok=True)
    # Infinity writes its optimized graph into the HF cache: a fresh one per run, in the work dir.
    port = free_port()
    env = dict(
        os.environ,
        HF_HOME=str(workdir / "hf-home"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        INFINITY_ANONYMOUS_USAGE_STATS="0",
        DO_NOT_TRACK="1",
        PATH=f"{venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    )
    env.pop("PYTHONPATH", None)
    shutil.rmtree(workdir / "hf-home", ignore_errors=True)
    command = [
        str(venv / "bin" / "infinity_emb"), "v2",
        # Run from inside the folder with `--model-id .`: infinity-emb 0.0.78 globs the folder and
        # hands optimum >= 2 the file name with the folder prefixed, which optimum rejects
        # ("Could not find any ONNX files with target file name /x/model.onnx, only found:
        # model.onnx"); from "." the glob yields the bare "model.onnx".
        "--model-id", ".",
        "--served-model-name", SERVED_NAME,
        "--engine", "optimum",
        "--device", "cpu",
        "--pooling-method", "mean",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--log-level", "warning",
        "--no-model-warmup",
    ]
    log_path = workdir / "infinity.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True, cwd=model_dir)
    base_url = f"http://127.0.0.1:{port}"
    running = RunningInfinity(process, Target("infinity", base_url, "/embeddings", SERVED_NAME), {}, log_path)
    try:
        poll_until_ok(process, f"{base_url}/health", ready_deadline_s, running.log, "infinity", interval_s=0.1)
    except TimeoutError:
        running.stop()
        raise
    ready_s = time.monotonic() - started
    running.startup = {"start_to_health_s": round(ready_s, 3)}
    return running
