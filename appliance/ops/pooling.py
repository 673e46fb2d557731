"""Pooling and vector math shared by the Triton model and the gateway (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


def masked_mean(hidden: F32, mask: npt.NDArray[np.integer[Any]]) -> F32:
    """Mean of `hidden` [b, s, h] over positions where `mask` [b, s] is 1, in fp32."""
    weights = mask.astype(np.float32)[:, :, None]
    summed = np.einsum("bsh,bsx->bh", hidden.astype(np.float32, copy=False), weights)
    counts = np.maximum(weights.sum(axis=1), 1.0)
    mean: F32 = (summed / counts).astype(np.float32, copy=False)
    return mean


def l2_normalize(vectors: F32) -> tuple[F32, F32]:
    """Unit vectors and the norms they were divided by ([n, 1]); a zero vector stays zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True).astype(np.float32)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    return unit.astype(np.float32, copy=False), norms


def truncate_and_normalize(vectors: F32, dimensions: int) -> F32:
    """Matryoshka: keep the first `dimensions` values, THEN normalize (never the other way)."""
    unit, _ = l2_normalize(np.ascontiguousarray(vectors[:, :dimensions]))
    return unit


def span_means(hidden: F32, spans: npt.NDArray[np.integer[Any]]) -> F32:
    """Late chunking: the mean of `hidden` [s, h] over each [start, stop) span, in fp32."""
    return np.stack([hidden[start:stop].astype(np.float32).mean(axis=0) for start, stop in spans])
