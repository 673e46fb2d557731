"""The realistic test assets of ../shared/tools/test-assets, for tests and benchmarks; absent -> a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_ASSETS_TOOL = REPO.parent / "shared" / "tools" / "test-assets" / "test-assets"


def shared_asset(name: str) -> Path:
    """Build (or reuse, it is idempotent) one ../shared test asset; skip when ../shared is absent."""
    if not TEST_ASSETS_TOOL.exists():
        pytest.skip(f"../shared/tools/test-assets not found at {TEST_ASSETS_TOOL}: realistic-asset tests skipped")
    cache = Path(os.environ.get("TEST_ASSETS_OUT", Path.home() / ".cache" / "embed-appliance-assets"))
    out = cache / name
    result = subprocess.run([sys.executable, str(TEST_ASSETS_TOOL), name, str(out)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"test-assets {name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return out
