#!/usr/bin/env bash
# Install everything the tests need, check lint, format, types and import layers, then run the
# whole suite (unit, end-to-end against the real tritonserver, container). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRAS=test bash scripts/install.sh
bin=.venv/bin
echo "== ruff check, ruff format --check, mypy --strict, lint-imports"
"$bin/ruff" check appliance harness bench tests scripts
"$bin/ruff" format --check appliance scripts
"$bin/mypy" --strict appliance
"$bin/lint-imports" --no-cache
exec "$bin/python" -m pytest "$@"
