"""Pooling and Matryoshka math: masked mean, L2 normalization, truncate-then-normalize."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from appliance.ops.pooling import l2_normalize, masked_mean, truncate_and_normalize

Array = npt.NDArray[Any]


def padded_batch(lengths: list[int], hidden: int = 16, seed: int = 0) -> tuple[Array, Array]:
    """Random hidden states [b, s, h] whose padded positions hold large garbage, and the mask."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    states = rng.normal(size=(len(lengths), width, hidden)).astype(np.float32)
    mask = np.zeros((len(lengths), width), dtype=np.int64)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
        states[row, length:] = 1000.0  # would dominate any mean that looked at padding
    return states, mask


def loop_mean(states: Array, mask: Array) -> Array:
    """The masked mean written out position by position, in float64."""
    out = np.zeros((states.shape[0], states.shape[2]), dtype=np.float64)
    for row in range(states.shape[0]):
        count = 0
        for pos in range(states.shape[1]):
            if mask[row, pos]:
                out[row] += states[row, pos].astype(np.float64)
                count += 1
        out[row] /= count
    return out


def test_masked_mean_equals_an_explicit_loop_over_real_positions() -> None:
    states, mask = padded_batch([7, 3, 1, 5])
    np.testing.assert_allclose(
        masked_mean(states, mask), loop_mean(states, mask), rtol=1e-5, atol=1e-6
    )


def test_masked_mean_ignores_whatever_is_in_padded_positions() -> None:
    states, mask = padded_batch([6, 2])
    other = states.copy()
    other[mask == 0] = -7.5
    np.testing.assert_array_equal(masked_mean(states, mask), masked_mean(other, mask))


def test_masked_mean_of_a_padded_row_equals_the_mean_of_the_row_alone() -> None:
    states, mask = padded_batch([9, 4])
    alone = states[1:2, :4]
    np.testing.assert_allclose(
        masked_mean(states, mask)[1], alone[0].mean(axis=0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_masked_mean_returns_float32_whatever_the_input_precision(dtype: Any) -> None:
    states, mask = padded_batch([4, 2])
    pooled = masked_mean(states.astype(dtype), mask)
    assert pooled.dtype == np.float32
    assert pooled.shape == (2, 16)


def test_masked_mean_of_float16_states_sums_in_float32_without_overflow() -> None:
    # 4096 x 20.0 = 81920 exceeds float16's largest value (65504): a float16 sum would be inf.
    states = np.full((1, 4096, 4), 20.0, dtype=np.float16)
    mask = np.ones((1, 4096), dtype=np.int64)
    np.testing.assert_allclose(masked_mean(states, mask), 20.0, rtol=1e-6)


def test_masked_mean_of_a_row_without_real_tokens_is_zero_not_nan() -> None:
    states = np.ones((1, 3, 4), dtype=np.float32)
    mask = np.zeros((1, 3), dtype=np.int64)
    pooled = masked_mean(states, mask)
    assert np.isfinite(pooled).all() and not pooled.any()


def test_l2_normalize_returns_unit_vectors_and_the_norms_divided_by() -> None:
    vectors = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 1.0]], dtype=np.float32)
    unit, norms = l2_normalize(vectors)
    np.testing.assert_allclose(norms, [[5.0], [2.0], [np.sqrt(2.0)]], rtol=1e-6)
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 1.0], [1 / np.sqrt(2.0)] * 2], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(unit * norms, vectors, rtol=1e-6)
    assert unit.dtype == np.float32 and norms.dtype == np.float32
    assert norms.shape == (3, 1)


def test_l2_normalize_leaves_a_zero_vector_zero() -> None:
    unit, norms = l2_normalize(np.zeros((1, 8), dtype=np.float32))
    assert np.isfinite(unit).all() and not unit.any()
    assert norms[0, 0] == 0.0


def test_truncate_and_normalize_gives_unit_vectors_of_the_requested_length() -> None:
    vectors = np.random.default_rng(1).normal(size=(5, 64)).astype(np.float32)
    out = truncate_and_normalize(vectors, 32)
    assert out.shape == (5, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


def test_truncate_and_normalize_equals_the_first_d_values_of_the_raw_vector_renormalized() -> None:
    raw = np.random.default_rng(2).normal(size=(4, 64)).astype(np.float32)
    first = raw[:, :16].astype(np.float64)
    expected = first / np.linalg.norm(first, axis=1, keepdims=True)
    np.testing.assert_allclose(truncate_and_normalize(raw, 16), expected, rtol=1e-5, atol=1e-6)


def test_truncate_and_normalize_of_an_already_normalized_vector_is_the_same() -> None:
    raw = np.random.default_rng(3).normal(size=(4, 64)).astype(np.float32)
    unit, _ = l2_normalize(raw)
    # The model returns unit vectors; truncating those must still renormalize.
    np.testing.assert_allclose(
        truncate_and_normalize(unit, 16), truncate_and_normalize(raw, 16), rtol=1e-5, atol=1e-6
    )


def test_truncating_then_normalizing_differs_from_normalizing_then_truncating() -> None:
    raw = np.random.default_rng(4).normal(size=(4, 64)).astype(np.float32)
    wrong = l2_normalize(raw)[0][:, :16]  # normalize first, truncate, never renormalize
    right = truncate_and_normalize(raw, 16)
    assert (np.linalg.norm(wrong, axis=1) < 0.9).all()  # 16 of 64 dims keep about half the norm
    assert not np.allclose(right, wrong, atol=1e-3)
    # ...but they point the same way: only the length is wrong.
    cosine = (right * wrong).sum(axis=1) / np.linalg.norm(wrong, axis=1)
    np.testing.assert_allclose(cosine, 1.0, rtol=1e-5)


def test_truncate_to_the_full_size_is_plain_normalization() -> None:
    raw = np.random.default_rng(5).normal(size=(3, 32)).astype(np.float32)
    np.testing.assert_allclose(truncate_and_normalize(raw, 32), l2_normalize(raw)[0], rtol=1e-6)


def test_truncate_and_normalize_does_not_modify_its_input() -> None:
    raw = np.random.default_rng(6).normal(size=(2, 32)).astype(np.float32)
    before = raw.copy()
    truncate_and_normalize(raw, 8)
    np.testing.assert_array_equal(raw, before)
