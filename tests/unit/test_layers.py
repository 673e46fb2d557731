"""The import layers of pyproject.toml hold, and the README's picture of them is the code's."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_every_import_linter_contract_is_kept() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports is not installed: `pip install -e .[test]` (scripts/install.sh) brings it")
    result = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_the_readme_shows_the_import_graph_as_it_is() -> None:
    generated = subprocess.run(
        [sys.executable, "scripts/import_graph.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    shown = re.search(r"```mermaid\n(.*?)```", readme, re.DOTALL)
    assert shown is not None, "README.md has no ```mermaid block"
    assert shown.group(1) == generated, "README's import graph is stale: python scripts/import_graph.py"


def test_every_module_of_the_appliance_sits_in_a_layer() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from import_graph import layers
    finally:
        sys.path.pop(0)
    placed = {m for layer in layers() for m in layer}
    package = REPO / "appliance"
    top = {
        f"appliance.{p.stem}"
        for p in package.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())
    }
    top = (top - {"appliance.triton"}) | {
        f"appliance.triton.{p.stem}" for p in (package / "triton").glob("*.py") if p.stem != "__init__"
    }
    assert top <= placed, f"not in any layer of pyproject.toml's import-linter contract: {sorted(top - placed)}"
