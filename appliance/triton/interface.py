"""The tensor names of the served Triton models: the one contract of config.pbtxt, model.py and the client."""

from __future__ import annotations

INPUT_IDS = "INPUT_IDS"  # [n, longest] int64 token ids, padded
LENGTHS = "LENGTHS"  # [n, 1] int64 real length of each row
TASK_ID = "TASK_ID"  # [n, 1] int64 LoRA adapter per row (jina-v3 only; ONNX takes one 0-d scalar)
SPANS = "SPANS"  # [1, 2k] int64 optional [start, stop) pairs pooled separately (late chunking)
EMBEDDING = "EMBEDDING"  # [n, hidden] fp32 unit vectors
NORM = "NORM"  # [n, 1] fp32 length of each vector before normalization
