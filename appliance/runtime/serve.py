"""`appliance serve`: compile embed.toml, then hand the process over to supervisord."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from appliance.compile.compiler import compile_file
from appliance.env import EmbedEnv
from appliance.runtime.triton import prepare_backends

SUPERVISORD_CONF = Path(__file__).resolve().parent / "supervisord.conf"


def serve(config: Path, runtime_dir: Path, env: EmbedEnv) -> None:
    """Compile (any error raises before anything starts), then exec supervisord in the foreground.

    supervisord runs in the exec'd process itself (`appliance.runtime.supervise`): it stays the
    process that receives SIGTERM, and it exits 78 when the models could not load.
    """
    runtime_dir = runtime_dir.resolve()
    compile_file(config, runtime_dir, env)
    prepare_backends(runtime_dir)
    # supervisord passes its environment on: the children find the runtime folder and this Python.
    child_env = dict(os.environ, EMBED_RUNTIME_DIR=str(runtime_dir), EMBED_PYTHON=sys.executable)
    argv = [sys.executable, "-m", "appliance.runtime.supervise", "--nodaemon", "--configuration", str(SUPERVISORD_CONF)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, child_env)
