"""Length-sorted, token-budget packing of sequences into ONNX Runtime runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

MIN_ROW_FILL = 0.9  # a row shorter than this share of its run's longest row starts a new run...
ROW_SLACK = 8  # ...unless it is within this many tokens of it (short queries stay together)


def pack_by_length(
    lengths: Sequence[int],
    max_batch_tokens: int,
    max_rows: int,
    *,
    min_fill: float = MIN_ROW_FILL,
    slack: int = ROW_SLACK,
) -> list[list[int]]:
    """Group sequence indices into runs that are cheap to compute together.

    Sorted longest-first, so every run is padded only to its own first row. A run is closed when
    the next row would break the token budget (rows x longest) or the row limit, or is much
    shorter than the run's longest row: a 2,000-token document is never padded together with
    short queries (attention makes that padding quadratic). Per-row, not per-run, so runs of
    short queries are not split into many tiny ONNX Runtime calls (docs/performance.md). A sequence longer than the budget
    runs alone. `min_fill = 0` packs by budget and row limit only (the benchmark's plain baseline).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    runs: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current:
            longest, length = lengths[current[0]], lengths[index]
            ragged = length < min_fill * longest and longest - length > slack
            if (len(current) + 1) * longest > max_batch_tokens or len(current) >= max_rows or ragged:
                runs.append(current)
                current = []
        current.append(index)
    if current:
        runs.append(current)
    return runs


def padding_efficiency(lengths: Sequence[int], runs: Sequence[Sequence[int]]) -> float:
    """Real tokens / tokens computed (rows x longest, summed over runs)."""
    computed = sum(len(run) * max(lengths[i] for i in run) for run in runs)
    return sum(lengths) / computed if computed else 1.0


def pad_rows(
    sequences: Sequence[Sequence[int] | npt.NDArray[np.int64]], pad_id: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """One run's token ids padded on the right to its longest row, and the attention mask."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
