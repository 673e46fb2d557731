"""supervisord, run in this process, with an exit status that tells what happened.

supervisord itself always exits 0 after a shutdown. When the watchdog stops the appliance because
the models cannot load, it leaves a marker in the runtime folder; then this exits 78 (EX_CONFIG),
so systemd, Kubernetes and `podman run` see a failure, not a clean stop.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from supervisor import supervisord

FATAL_MARKER = "fatal"
EXIT_FATAL = 78


def main() -> None:
    marker = Path(os.environ["EMBED_RUNTIME_DIR"]) / FATAL_MARKER
    marker.unlink(missing_ok=True)
    supervisord.main(sys.argv[1:])
    if marker.exists():
        print(f"appliance: stopped: {marker.read_text().strip()}", file=sys.stderr, flush=True)
        sys.exit(EXIT_FATAL)


if __name__ == "__main__":
    main()
