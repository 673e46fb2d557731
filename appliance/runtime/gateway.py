"""supervisord program: the gateway under uvicorn."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from appliance.compile.settings import read_compiled


def main() -> None:
    parser = argparse.ArgumentParser(prog="appliance.runtime.gateway")
    parser.add_argument("--runtime-dir", type=Path, required=True)
    args = parser.parse_args()
    settings = read_compiled(args.runtime_dir).gateway
    os.environ["EMBED_RUNTIME_DIR"] = str(args.runtime_dir)
    uvicorn.run(
        "appliance.gateway.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
