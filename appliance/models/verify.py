"""`appliance verify DIR`: can this folder be served as jina-embeddings-v3? One line per problem.

Checks, in order, stopping only where a later check would be meaningless:
all six files present (each missing one with its exact remedy), no file empty, a Git LFS
pointer or a saved web page, the JSON files parse, the ONNX graph's external data is complete and
its interface is jina-v3's (both via `inspect_model_folder`, the compiler's own check), then
ONNX Runtime loads the graph WITH its weights, the tokenizer loads, and one short text runs
through the model to a `text_embeds` of the expected width.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.spec.modelinfo import (
    JINA_FILES,
    JINA_OUTPUT,
    ModelFolderError,
    ModelInfo,
    inspect_model_folder,
)

REPO_URL = "https://huggingface.co/jinaai/jina-embeddings-v3"
_IN_ONNX_FOLDER = ("model.onnx", "model.onnx_data")  # on the model page they sit in onnx/
_LFS_POINTER = b"version https://git-lfs"
_WEB_PAGE = (b"<!doctype", b"<html")
_PROBE_TEXT = "Hello world"


@dataclass(frozen=True)
class Problem:
    """One reason the folder cannot be served, and what to do about it."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what} -- fix: {self.fix}"


def fetch_fix(folder: Path, name: str) -> str:
    """The remedy for a missing or broken file: the download command, or where to copy it from."""
    where = f"{REPO_URL}/resolve/main/onnx/{name}" if name in _IN_ONNX_FOLDER else f"{REPO_URL}/resolve/main/{name}"
    return (
        f"run `appliance download jinaai/jina-embeddings-v3 --to {folder}` (fetches only what is missing "
        f"or wrong), or download {where} and save it as {folder / name}"
    )


def verify_folder(folder: Path) -> tuple[list[Problem], str]:
    """Every problem found in `folder`, and a one-line summary of what was checked."""
    if not folder.is_dir():
        return [Problem(f"{folder} is not a directory", "pass the model folder holding the six files")], ""
    problems = _missing(folder)
    problems += [p for name in JINA_FILES if (folder / name).is_file() for p in _content(folder, name)]
    if problems:
        return problems, ""
    try:
        info = inspect_model_folder(folder, "jina-v3")
    except ModelFolderError as exc:
        return [Problem(line, _structure_fix(folder, line)) for line in exc.problems], ""
    return _load_and_run(folder, info)


def _missing(folder: Path) -> list[Problem]:
    problems = []
    for name in JINA_FILES:
        if (folder / name).is_file():
            continue
        misplaced = next((p for p in (folder / "onnx" / name, folder / "1" / name) if p.is_file()), None)
        if misplaced is not None:
            problems.append(
                Problem(
                    f"{name} is at {misplaced}, not in {folder}",
                    f"move it: mv {misplaced} {folder / name} (the folder is flat)",
                )
            )
        elif name == "model.onnx_data":
            problems.append(
                Problem(
                    f"missing {folder / name}: the 2.3 GB weights model.onnx refers to (the graph alone is useless)",
                    fetch_fix(folder, name),
                )
            )
        else:
            problems.append(Problem(f"missing {folder / name}", fetch_fix(folder, name)))
    return problems


def _content(folder: Path, name: str) -> list[Problem]:
    path = folder / name
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(64)
    if size == 0:
        return [Problem(f"{path} is empty", fetch_fix(folder, name))]
    if head.startswith(_LFS_POINTER):
        return [
            Problem(
                f"{path} is a Git LFS pointer ({size} bytes), not the file itself",
                f"`git lfs pull` in the clone, or {fetch_fix(folder, name)}",
            )
        ]
    if head.lstrip().lower().startswith(_WEB_PAGE):
        return [
            Problem(
                f"{path} is a web page ({size} bytes), not the file (the page was saved, not the file)",
                fetch_fix(folder, name),
            )
        ]
    if name.endswith(".json"):
        return _json(folder, name)
    return []


def _json(folder: Path, name: str) -> list[Problem]:
    path = folder / name
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        return [Problem(f"{path} is not valid JSON ({exc})", fetch_fix(folder, name))]
    if not isinstance(data, dict):
        return [Problem(f"{path} is not a JSON object", fetch_fix(folder, name))]
    if name == "config.json" and not data.get("lora_adaptations"):
        return [
            Problem(f"{path} has no `lora_adaptations`: not jina-embeddings-v3's config.json", fetch_fix(folder, name))
        ]
    return []


def _structure_fix(folder: Path, problem: str) -> str:
    if "truncated" in problem or "missing file" in problem:
        return fetch_fix(folder, "model.onnx_data") + " (an interrupted download leaves it short)"
    return (
        f"model.onnx is not jina-embeddings-v3's fp32 ONNX export: take onnx/model.onnx and "
        f"onnx/model.onnx_data from {REPO_URL}/tree/main/onnx"
    )


def _load_and_run(folder: Path, info: ModelInfo) -> tuple[list[Problem], str]:
    """Load graph + weights in ONNX Runtime and the tokenizer, then embed one short text."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    problems: list[Problem] = []
    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        ids = tokenizer.encode(_PROBE_TEXT).ids
    except Exception as exc:  # noqa: BLE001 -- tokenizers raises a bare Exception for a malformed file
        problems.append(
            Problem(
                f"{folder / 'tokenizer.json'} does not load: {first_line(exc)}", fetch_fix(folder, "tokenizer.json")
            )
        )
        ids = []
    if ids and info.vocab_size and max(ids) >= info.vocab_size:
        problems.append(
            Problem(
                f"tokenizer.json yields id {max(ids)}, but config.json's vocab_size is "
                f"{info.vocab_size}: tokenizer and model come from different models",
                "take tokenizer.json and config.json from the same model page",
            )
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3  # a load error is reported below; ORT's own log would repeat it
    try:
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 -- onnxruntime raises its own types, no common base
        problems.append(
            Problem(
                f"ONNX Runtime cannot load {folder / 'model.onnx'} with its weights: {first_line(exc)}",
                _structure_fix(folder, ""),
            )
        )
        return problems, ""
    if problems:
        return problems, ""
    feeds = {
        "input_ids": np.array([ids], dtype=np.int64),
        "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
        "task_id": np.array(
            info.lora_adaptations.index("text-matching") if "text-matching" in info.lora_adaptations else 0,
            dtype=np.int64,
        ),
    }
    try:
        (out,) = session.run([JINA_OUTPUT], feeds)
    except Exception as exc:  # noqa: BLE001 -- as above: any ORT failure is a problem with the files
        return [Problem(f"model.onnx fails on a short text: {first_line(exc)}", _structure_fix(folder, ""))], ""
    expected = (1, len(ids), info.hidden_size)
    if tuple(out.shape) != expected or not np.isfinite(out).all():
        return [
            Problem(
                f"{JINA_OUTPUT} for a short text has shape {list(out.shape)} (finite: "
                f"{bool(np.isfinite(out).all())}), expected {list(expected)}, finite",
                _structure_fix(folder, ""),
            )
        ], ""
    size = sum((folder / name).stat().st_size for name in JINA_FILES)
    summary = (
        f"{folder}: six files, {human_size(size)}; ONNX Runtime loads the graph with its weights; "
        f"`{_PROBE_TEXT}` -> {len(ids)} tokens -> {JINA_OUTPUT} {list(out.shape)}; "
        f"tasks {', '.join(info.lora_adaptations)}"
    )
    return [], summary


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_verify(folder: Path) -> int:
    """`appliance verify`: print one line per problem (stderr) or the summary; the exit status."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # its warnings (e.g. telemetry) are not the folder's problems
    problems, summary = verify_folder(folder)
    for problem in problems:
        print(f"verify: problem: {' '.join(str(problem).split())}", file=sys.stderr)
    if problems:
        print(f"verify: {len(problems)} problem(s): {folder} cannot be served yet", file=sys.stderr)
        return 1
    print(f"verify: ok: {summary}")
    return 0
