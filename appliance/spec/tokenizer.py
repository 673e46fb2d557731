"""A model folder's tokenizer.json, loaded as the appliance uses it (its own module: the gateway loads no ONNX)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer


def load_tokenizer(path: Path) -> Tokenizer:
    """The model's tokenizer with its own padding/truncation switched off (we pad and cut ourselves)."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer
