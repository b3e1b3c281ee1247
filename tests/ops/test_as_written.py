"""reference/ops/as_written.py: the material's §3.2.3-3.2.5 formulas as printed, and how each fails, with numbers."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.ops import as_written

# ---- the formulas are implemented as printed -------------------------------------------------------------------

def test_positional_encoding_is_the_printed_formula():
    d_p = 16
    P = as_written.positional_encoding(40, d_p)
    assert P.shape == (40, d_p)
    for pos in range(40):
        expected = math.sin(pos / 10000 ** (2 / d_p)) ** 2048
        # same scalar operations; pow(., 2048) amplifies the sine's ulp by 2048: ~5e-13 relative
        assert np.allclose(P[pos], expected, rtol=1e-12, atol=1e-300)


def test_ffn_is_the_printed_formula(rng):
    x = rng.standard_normal((3, 4))
    W1, b1 = rng.standard_normal((4, 5)), rng.standard_normal(5)
    W2, b2 = rng.standard_normal((5, 4)), rng.standard_normal(4)
    sigma = 1 / (1 + np.exp(-(x @ W1 + b1)))                 # logistic sigmoid, written independently
    expected = np.maximum(sigma @ W2 + b2, 0)                # ReLU(W2 sigma(W1 x + b1) + b2), rows as vectors
    np.testing.assert_allclose(as_written.ffn(x, W1, b1, W2, b2), expected, rtol=1e-14, atol=1e-15)


def test_layer_norm_is_the_printed_formula():
    x = np.array([[1.0, 2.0, 3.0, 6.0]])
    gamma, beta = np.array([1.0, 2.0, 1.0, 0.5]), np.array([0.0, 1.0, -3.0, 2.0])
    # gamma (x + beta) / sqrt(d) with d = 4: [1, 6, 0, 4] / 2
    np.testing.assert_array_equal(as_written.layer_norm(x, gamma, beta), [[0.5, 3.0, 0.0, 2.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_as_written_keeps_dtype(dtype, rng):
    x = rng.standard_normal((2, 4)).astype(dtype)
    W1, W2 = rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal((3, 4)).astype(dtype)
    assert as_written.ffn(x, W1, np.zeros(3, dtype), W2, np.zeros(4, dtype)).dtype == dtype
    assert as_written.layer_norm(x, np.ones(4, dtype), np.zeros(4, dtype)).dtype == dtype
    assert as_written.positional_encoding(5, 4, dtype=dtype).dtype == dtype


# ---- and how each one fails, with numbers ------------------------------------------------------------------------

def test_layer_norm_as_written_neither_centres_nor_scales(rng):
    x = rng.standard_normal((200, 64)) * 5 + 3               # rows of mean ~3 and std ~5
    stats = as_written.layer_norm_diagnostics(x)
    # correct LayerNorm: every row has mean 0 and (biased) std 1, up to eps = 1e-5 against variance ~25
    assert abs(stats["correct_row_mean"]) < 1e-12
    assert abs(stats["correct_row_std"] - 1) < 1e-5
    # as written: the row is only divided by sqrt(64) = 8, so its mean stays ~3/8 and its std ~5/8
    assert stats["as_written_row_mean"] == pytest.approx(stats["input_row_mean"] / 8, rel=1e-12)
    assert stats["as_written_row_std"] == pytest.approx(stats["input_row_std"] / 8, rel=1e-12)
    assert abs(stats["as_written_row_mean"]) > 0.3 and abs(stats["as_written_row_std"] - 1) > 0.3


@given(seed=st.integers(0, 2**16), d_model=st.integers(1, 8), d_ff=st.integers(1, 16))
def test_ffn_as_written_never_outputs_negative_values(seed, d_model, d_ff):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((50, d_model)) * 3
    W1, b1 = rng.standard_normal((d_model, d_ff)), rng.standard_normal(d_ff)
    W2, b2 = rng.standard_normal((d_ff, d_model)), rng.standard_normal(d_model)
    assert as_written.ffn(x, W1, b1, W2, b2).min() >= 0


def test_ffn_as_written_vs_correct_sign(rng):
    x = rng.standard_normal((200, 64))
    W1, b1 = rng.standard_normal((64, 256)) / 8, rng.standard_normal(256) * 0.1
    W2, b2 = rng.standard_normal((256, 64)) / 16, rng.standard_normal(64) * 0.1
    stats = as_written.ffn_diagnostics(x, W1, b1, W2, b2)
    assert stats["as_written_min"] >= 0 and stats["as_written_fraction_negative"] == 0
    # the correct FFN is symmetric in sign here (zero-mean W2): about half its outputs are negative
    assert stats["correct_min"] < -1 and 0.3 < stats["correct_fraction_negative"] < 0.7


@pytest.mark.parametrize("n_positions, d_p", [(512, 64), (128, 512)])
def test_positional_encoding_as_written_gives_no_usable_codes(n_positions, d_p):
    stats = as_written.positional_diagnostics(n_positions, d_p)
    # as written: one number per position copied to every dimension, in [0, 1], ~0 almost everywhere
    assert stats["as_written_all_dimensions_identical"]
    assert stats["as_written_min"] >= 0 and stats["as_written_max"] <= 1
    assert stats["as_written_fraction_near_zero"] > 0.9
    assert stats["as_written_positions_sharing_a_code"] > 0.9 * n_positions
    # the paper's encoding: values fill [-1, 1], dimensions differ, every position has its own code
    assert not stats["correct_all_dimensions_identical"]
    assert stats["correct_min"] < -0.99 and stats["correct_max"] <= 1
    assert stats["correct_positions_sharing_a_code"] == 0


def test_as_written_bad_inputs():
    x = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"gamma: expected shape \(4,\), got \(3,\)"):
        as_written.layer_norm(x, np.ones(3), np.zeros(4))
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got int64"):
        as_written.layer_norm(x.astype(np.int64), np.ones(4), np.zeros(4))
    with pytest.raises(ValueError, match=r"W2: expected shape \(3, 4\), got \(4, 3\)"):
        as_written.ffn(x, np.zeros((4, 3)), np.zeros(3), np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(TypeError, match=r"expected one float dtype for all inputs, got x: float32, W1: float64"):
        as_written.ffn(x.astype(np.float32), np.zeros((4, 3)), np.zeros(3), np.zeros((3, 4)), np.zeros(4))
    with pytest.raises(ValueError, match=r"d_p: expected an int >= 1, got 0"):
        as_written.positional_encoding(4, 0)
    with pytest.raises(TypeError, match=r"n_positions: expected an int >= 0, got float"):
        as_written.positional_encoding(4.0, 8)
