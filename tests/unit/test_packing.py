"""Length-sorted, token-budget packing of sequences into ONNX Runtime runs."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from appliance.ops.packing import (
    MIN_ROW_FILL,
    ROW_SLACK,
    pack_by_length,
    pad_rows,
    padding_efficiency,
)

# No example database, and Hypothesis' other caches (it collects constants from the source
# at collection time) go to a temporary folder: the suite writes nothing into the working tree.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "embed-appliance-hypothesis")
invariants = settings(database=None, max_examples=200, deadline=None)

lengths_st = st.lists(st.integers(min_value=1, max_value=600), max_size=120)
budget_st = st.integers(min_value=16, max_value=4096)
rows_st = st.integers(min_value=1, max_value=64)


def padded_tokens(lengths: list[int], run: list[int]) -> int:
    return len(run) * max(lengths[i] for i in run)


@invariants
@given(lengths_st, budget_st, rows_st)
def test_every_index_appears_in_exactly_one_run(
    lengths: list[int], budget: int, max_rows: int
) -> None:
    runs = pack_by_length(lengths, budget, max_rows)
    flat = [i for run in runs for i in run]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(runs), "no run may be empty"


@invariants
@given(lengths_st, budget_st, rows_st)
def test_each_run_fits_the_token_budget_unless_it_is_one_over_long_row(
    lengths: list[int], budget: int, max_rows: int
) -> None:
    for run in pack_by_length(lengths, budget, max_rows):
        assert padded_tokens(lengths, run) <= budget or len(run) == 1, (
            run,
            [lengths[i] for i in run],
        )


@invariants
@given(lengths_st, budget_st, rows_st)
def test_no_run_has_more_rows_than_max_rows(lengths: list[int], budget: int, max_rows: int) -> None:
    assert all(len(run) <= max_rows for run in pack_by_length(lengths, budget, max_rows))


@invariants
@given(lengths_st, budget_st, rows_st)
def test_runs_are_longest_first_within_and_across_runs(
    lengths: list[int], budget: int, max_rows: int
) -> None:
    runs = pack_by_length(lengths, budget, max_rows)
    in_order = [lengths[i] for run in runs for i in run]
    assert in_order == sorted(lengths, reverse=True)
    for run in runs:
        assert lengths[run[0]] == max(lengths[i] for i in run)  # the first row sets the padding


@invariants
@given(lengths_st, budget_st, rows_st)
def test_a_run_is_closed_only_when_the_next_row_would_not_fit_or_is_much_shorter(
    lengths: list[int], budget: int, max_rows: int
) -> None:
    runs = pack_by_length(lengths, budget, max_rows)
    for run, following in itertools.pairwise(runs):
        longest, length = lengths[run[0]], lengths[following[0]]
        full = len(run) >= max_rows
        over_budget = (len(run) + 1) * longest > budget
        ragged = length < MIN_ROW_FILL * longest and longest - length > ROW_SLACK
        assert full or over_budget or ragged, (run, following)


@invariants
@given(lengths_st, budget_st, rows_st)
def test_every_row_of_a_run_is_close_to_the_runs_longest_row(
    lengths: list[int], budget: int, max_rows: int
) -> None:
    for run in pack_by_length(lengths, budget, max_rows):
        longest = lengths[run[0]]
        for i in run:
            assert lengths[i] >= MIN_ROW_FILL * longest or longest - lengths[i] <= ROW_SLACK


def test_a_long_document_is_not_padded_together_with_short_queries() -> None:
    runs = pack_by_length([1970, 20, 25, 30, 18], max_batch_tokens=16384, max_rows=64)
    assert runs[0] == [0]
    assert padding_efficiency([1970, 20, 25, 30, 18], runs) > 0.8


@invariants
@given(
    st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=60), budget_st, rows_st
)
def test_padding_efficiency_is_between_zero_and_one(
    lengths: list[int], budget: int, max_rows: int
) -> None:
    efficiency = padding_efficiency(lengths, pack_by_length(lengths, budget, max_rows))
    assert 0.0 < efficiency <= 1.0


def test_a_sequence_longer_than_the_budget_runs_alone() -> None:
    runs = pack_by_length([10, 500, 10, 10], max_batch_tokens=100, max_rows=8)
    assert runs[0] == [1]
    assert sorted(runs[1]) == [0, 2, 3]


def test_an_empty_list_packs_into_no_runs() -> None:
    assert pack_by_length([], max_batch_tokens=100, max_rows=8) == []


def test_equal_lengths_split_exactly_at_the_budget() -> None:
    runs = pack_by_length([10] * 7, max_batch_tokens=30, max_rows=64)
    assert [len(run) for run in runs] == [3, 3, 1]


def test_padding_efficiency_counts_real_over_computed_tokens() -> None:
    assert padding_efficiency([4, 2], [[0, 1]]) == 6 / 8
    assert padding_efficiency([4, 2], [[0], [1]]) == 1.0
    assert padding_efficiency([], []) == 1.0


def test_sorted_packing_wastes_far_less_than_arrival_order_batches_of_eight() -> None:
    lengths = np.random.default_rng(0).integers(4, 513, size=256).tolist()
    arrival = [list(range(i, min(i + 8, len(lengths)))) for i in range(0, len(lengths), 8)]
    packed = pack_by_length(lengths, max_batch_tokens=16384, max_rows=8)
    sorted_efficiency = padding_efficiency(lengths, packed)
    arrival_efficiency = padding_efficiency(lengths, arrival)
    assert sorted_efficiency >= 0.9
    assert arrival_efficiency < 0.7
    assert sorted_efficiency - arrival_efficiency > 0.25


def test_min_fill_zero_packs_by_budget_and_rows_only() -> None:
    """The benchmark's plain baseline: a document and short queries share a run while the budget allows."""
    assert pack_by_length([1970, 20, 25, 30, 18], max_batch_tokens=16384, max_rows=64, min_fill=0.0) == [
        [0, 3, 2, 1, 4]
    ]
    assert pack_by_length([1970, 20, 25], max_batch_tokens=16384, max_rows=2, min_fill=0.0) == [[0, 2], [1]]


def test_pad_rows_pads_right_and_masks_the_real_tokens() -> None:
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1]] and ids.dtype.name == "int64"
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]] and mask.dtype.name == "int64"
