"""HEALTHCHECK: exit 0 when the gateway's /ready says 200.

The port comes from the compiled settings (appliance.json in $EMBED_RUNTIME_DIR), so a changed
`server.port` in embed.toml needs no change here. Standard library only: no curl in the image.
"""

import json
import os
import sys
import urllib.request
from pathlib import Path


def main() -> int:
    compiled = Path(os.environ.get("EMBED_RUNTIME_DIR", "/var/lib/embed/runtime")) / "appliance.json"
    try:
        port = json.loads(compiled.read_text())["gateway"]["port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (OSError, ValueError, KeyError):  # not compiled yet, not listening, 503 (HTTPError), bad JSON
        return 1


if __name__ == "__main__":
    sys.exit(main())
