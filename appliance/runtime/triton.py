"""supervisord program: run `tritonserver` from the nvidia-pytriton wheel.

It prepares the Python backend directory (the stub matching this Python),
sets the environment the stub needs to find numpy/onnxruntime/appliance, then
runs tritonserver as a child so it can tell "crashed later" (exit != 78:
supervisord restarts it) from "never loaded its models" (exit 78: no restart).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import appliance
from appliance.runtime.exitcodes import MODELS_FAILED
from appliance.settings import TritonSettings, client_host, read_compiled


def pytriton_root() -> Path:
    """Where the nvidia-pytriton wheel keeps tritonserver (found without importing pytriton)."""
    return Path(sysconfig.get_paths()["purelib"]) / "pytriton" / "tritonserver"


def prepare_backends(runtime_dir: Path) -> Path:
    """A copy of the wheel's backends/ with the stub for this Python version inside."""
    root = pytriton_root()
    backends = runtime_dir / "backends"
    python_backend = backends / "python"
    if not python_backend.exists():
        shutil.copytree(root / "backends" / "python", python_backend, ignore=shutil.ignore_patterns("__pycache__"))
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        shutil.copy2(stub, python_backend / "triton_python_backend_stub")
    return backends


def triton_environment() -> dict[str, str]:
    """The stub embeds the system libpython: it sees our packages only through this environment."""
    env = dict(os.environ)
    libs = Path(sysconfig.get_paths()["purelib"]) / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    source_root = str(Path(appliance.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([source_root, sysconfig.get_paths()["purelib"]])
    env.setdefault("OMP_NUM_THREADS", "1")  # ORT sets its own pools; keep OpenMP libraries from oversubscribing
    return env


def triton_command(settings: TritonSettings, backends: Path, shm_prefix: str) -> list[str]:
    host = settings.host
    cache = []
    if settings.cache_size_bytes:
        cache = [
            f"--cache-directory={pytriton_root() / 'caches'}",
            f"--cache-config=local,size={settings.cache_size_bytes}",
        ]
    return [
        str(pytriton_root() / "bin" / "tritonserver"),
        f"--model-repository={settings.model_repository}",
        f"--backend-directory={backends}",
        f"--http-address={host}",
        f"--http-port={settings.http_port}",
        f"--grpc-address={host}",
        f"--grpc-port={settings.grpc_port}",
        f"--metrics-address={host}",
        f"--metrics-port={settings.metrics_port}",
        "--allow-gpu-metrics=false",
        "--exit-on-error=true",
        "--strict-readiness=true",
        "--log-verbose=0",
        # Our own prefix for the Python backend's /dev/shm regions, so they can be removed after a crash.
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        *cache,
    ]


def _is_ready(settings: TritonSettings) -> bool:
    host = client_host(settings.host)
    try:
        with urllib.request.urlopen(f"http://{host}:{settings.http_port}/v2/health/ready", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _clean_up(group: int, shm_prefix: str) -> None:
    """End what tritonserver left behind: stub processes in its group, its shared-memory regions."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for region in Path("/dev/shm").glob(f"{shm_prefix}*"):
        region.unlink(missing_ok=True)


def run(runtime_dir: Path) -> int:
    settings = read_compiled(runtime_dir).triton
    backends = prepare_backends(runtime_dir)
    shm_prefix = f"embed{os.getpid()}_"
    # Its own process group: after tritonserver dies (kill -9), its Python-backend stubs would be
    # orphaned, holding the model's memory; the group lets us end them too.
    child = subprocess.Popen(triton_command(settings, backends, shm_prefix), env=triton_environment(), process_group=0)

    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    loaded = False
    while child.poll() is None and not loaded:
        loaded = _is_ready(settings)
        if not loaded:
            time.sleep(0.25)
    code = child.wait()
    _clean_up(child.pid, shm_prefix)
    if stopping:
        return 0
    if not loaded:
        print(
            f"appliance: tritonserver exited (code {code}) before its models were ready; "
            "the model load error is in the log above. Check the model folder with `appliance compile`.",
            file=sys.stderr,
            flush=True,
        )
        return MODELS_FAILED
    return code if code > 0 else (1 if code < 0 else 0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="appliance.runtime.triton")
    parser.add_argument("--runtime-dir", type=Path, required=True)
    sys.exit(run(parser.parse_args().runtime_dir))


if __name__ == "__main__":
    main()
