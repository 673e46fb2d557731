"""Vectors -> the wire formats of OpenAI's and Jina's APIs (numpy only).

- `float`: JSON numbers.
- `base64`: little-endian float32 bytes, base64-encoded (OpenAI's `encoding_format=base64`).
- `ubinary`: one bit per dimension, 1 where the value is > 0, packed 8 per byte with the first
  dimension in the most significant bit (numpy.packbits); each byte as an integer 0..255.
  A d-dimensional vector gives ceil(d / 8) integers.
- `binary`: the same bytes as signed integers offset by -128 (ubinary - 128, -128..127), as
  sentence-transformers' quantize_embeddings and Jina's API do.
"""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np

from appliance.pipeline.backend import F32

EmbeddingType = Literal["float", "base64", "binary", "ubinary"]


def encode_vectors(vectors: F32, embedding_type: EmbeddingType) -> list[list[float]] | list[list[int]] | list[str]:
    if embedding_type == "float":
        result: list[list[float]] = vectors.tolist()
        return result
    if embedding_type == "base64":
        little = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    packed = np.packbits(vectors > 0, axis=1)
    if embedding_type == "binary":
        signed: list[list[int]] = (packed.astype(np.int16) - 128).tolist()
        return signed
    unsigned: list[list[int]] = packed.tolist()
    return unsigned
