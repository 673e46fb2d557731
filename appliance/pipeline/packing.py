"""Length-sorted, token-budget packing of sequences into ONNX Runtime runs."""

from __future__ import annotations

from collections.abc import Sequence

MIN_RUN_EFFICIENCY = 0.9


def pack_by_length(
    lengths: Sequence[int], max_batch_tokens: int, max_rows: int, *, min_efficiency: float = MIN_RUN_EFFICIENCY
) -> list[list[int]]:
    """Group sequence indices into runs that are cheap to compute together.

    Sorted longest-first, so every run is padded only to its own first row. A run is closed when
    the next row would break the token budget (rows x longest), the row limit, or would make the
    run's padding efficiency (real / padded tokens) fall below `min_efficiency`: a 2,000-token
    document is not padded together with short queries (attention makes that padding quadratic).
    A sequence longer than the budget runs alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    runs: list[list[int]] = []
    current: list[int] = []
    real = 0
    for index in order:
        if current:
            longest, rows = lengths[current[0]], len(current) + 1
            if (
                rows * longest > max_batch_tokens
                or rows > max_rows
                or (real + lengths[index]) < min_efficiency * rows * longest
            ):
                runs.append(current)
                current, real = [], 0
        current.append(index)
        real += lengths[index]
    if current:
        runs.append(current)
    return runs


def padding_efficiency(lengths: Sequence[int], runs: Sequence[Sequence[int]]) -> float:
    """Real tokens / tokens computed (rows x longest, summed over runs)."""
    computed = sum(len(run) * max(lengths[i] for i in run) for run in runs)
    return sum(lengths) / computed if computed else 1.0
