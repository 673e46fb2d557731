"""supervisord, run in this process, with an exit status that tells what happened.

supervisord itself always exits 0 after a shutdown. When the watchdog stops the appliance because
the models cannot load, it leaves a marker in the runtime folder; then this exits `MODELS_FAILED` (78, EX_CONFIG),
so systemd, Kubernetes and `podman run` see a failure, not a clean stop.
"""

from __future__ import annotations

import sys

from supervisor import supervisord

from appliance.env import EmbedEnv
from appliance.runtime.exitcodes import MODELS_FAILED

FATAL_MARKER = "fatal"


def main() -> None:
    marker = EmbedEnv().required_runtime_dir() / FATAL_MARKER
    marker.unlink(missing_ok=True)
    supervisord.main(sys.argv[1:])
    if marker.exists():
        print(f"appliance: stopped: {marker.read_text().strip()}", file=sys.stderr, flush=True)
        sys.exit(MODELS_FAILED)


if __name__ == "__main__":
    main()
