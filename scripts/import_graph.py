"""Print the appliance's package import graph as a Mermaid flowchart (README, "How it fits together").

`python scripts/import_graph.py` prints it; tests/unit/test_layers.py checks the README's copy is current.
The nodes are the layers of pyproject.toml's import-linter contract, top to bottom.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parent.parent


def layers() -> list[list[str]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    return [[m.strip() for m in layer.split("|")] for layer in contract["layers"]]


def mermaid() -> str:
    graph = grimp.build_graph("appliance")
    modules = [m for layer in layers() for m in layer]
    lines = ["flowchart TD"] + [f"    {_id(m)}[{_name(m)}]" for m in modules]
    for importer in modules:
        for imported in modules:
            if importer != imported and graph.direct_import_exists(
                importer=importer, imported=imported, as_packages=True
            ):
                lines.append(f"    {_id(importer)} --> {_id(imported)}")
    return "\n".join(lines) + "\n"


def _name(module: str) -> str:
    return module.removeprefix("appliance.")


def _id(module: str) -> str:
    return _name(module).replace(".", "_")


if __name__ == "__main__":
    print(mermaid(), end="")
