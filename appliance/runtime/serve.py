"""`appliance serve`: compile embed.toml, then hand the process over to supervisord."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from appliance.compile.compiler import compile_file
from appliance.runtime.triton import prepare_backends

SUPERVISORD_CONF = Path(__file__).resolve().parent / "supervisord.conf"


class ServeEnv(BaseSettings):
    """Environment overrides for `serve` (read when asked, never at import)."""

    model_config = SettingsConfigDict(env_prefix="EMBED_")
    runtime_dir: Path | None = None


def default_runtime_dir() -> Path:
    env = ServeEnv()
    if env.runtime_dir is not None:
        return env.runtime_dir
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / f"embed-appliance-{os.getuid()}"


def serve(config: Path, runtime_dir: Path) -> None:
    """Compile (any error raises before anything starts), then exec supervisord in the foreground.

    supervisord runs in the exec'd process itself (`appliance.runtime.supervise`): it stays the
    process that receives SIGTERM, and it exits 78 when the models could not load.
    """
    runtime_dir = runtime_dir.resolve()
    compile_file(config, runtime_dir)
    prepare_backends(runtime_dir)
    env = dict(os.environ, EMBED_RUNTIME_DIR=str(runtime_dir), EMBED_PYTHON=sys.executable)
    argv = [sys.executable, "-m", "appliance.runtime.supervise", "--nodaemon", "--configuration", str(SUPERVISORD_CONF)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
