"""Length-sorted, token-budget packing of sequences into ONNX Runtime runs."""

from __future__ import annotations

from collections.abc import Sequence


def pack_by_length(lengths: Sequence[int], max_batch_tokens: int, max_rows: int) -> list[list[int]]:
    """Group sequence indices into runs whose padded size (rows x longest) fits the budget.

    Sorting longest-first means every run is padded only to its own first row,
    so little is computed on padding. A sequence longer than the budget runs alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    runs: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        if current and ((len(current) + 1) * longest > max_batch_tokens or len(current) >= max_rows):
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
