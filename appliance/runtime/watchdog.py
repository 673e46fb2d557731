"""supervisord event listener: stop the appliance when a program cannot run at all.

tritonserver exiting with the launcher's "models failed to load" code, or a
program going FATAL (restarted too often), would otherwise leave a half-alive
server whose /ready never turns green.
"""

from __future__ import annotations

import os
import signal
import sys

from appliance.env import EmbedEnv
from appliance.runtime.exitcodes import MODELS_FAILED
from appliance.runtime.supervise import FATAL_MARKER


def _parse(line: str) -> dict[str, str]:
    return dict(token.split(":", 1) for token in line.split())


def should_stop(event: str, payload: dict[str, str]) -> bool:
    if event == "PROCESS_STATE_FATAL":
        return True
    return event == "PROCESS_STATE_EXITED" and payload.get("processname") == "triton" and payload.get("expected") == "1"


def main() -> None:
    runtime = EmbedEnv().runtime_dir
    while True:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        header = _parse(sys.stdin.readline())
        payload = _parse(sys.stdin.read(int(header["len"])).split("\n", 1)[0])
        if should_stop(header["eventname"], payload):
            reason = (
                f"{payload.get('processname')} cannot run ({header['eventname']}; exit code "
                f"{MODELS_FAILED} means the models failed to load). The reason is in the log above."
            )
            sys.stderr.write(f"appliance: {reason} Stopping.\n")
            sys.stderr.flush()
            if runtime:
                (runtime / FATAL_MARKER).write_text(reason + "\n")
            os.kill(os.getppid(), signal.SIGTERM)
        sys.stdout.write("RESULT 2\nOK")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
