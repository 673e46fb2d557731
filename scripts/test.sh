#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite (unit, end-to-end against the real
# tritonserver, container). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRAS=test bash scripts/install.sh
exec .venv/bin/python -m pytest "$@"
