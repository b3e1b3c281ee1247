"""reference/ops/positional.py: the paper's formula entry by entry, its properties, odd d_model and bad inputs."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.ops import positional


@pytest.mark.parametrize("n, d", [(7, 8), (5, 7), (3, 1), (1, 2), (0, 4)])
def test_sinusoidal_matches_the_formula_entry_by_entry(n, d):
    pe = positional.sinusoidal(n, d)
    assert pe.shape == (n, d) and pe.dtype == np.float64
    for pos in range(n):
        for j in range(d):
            i = j // 2
            angle = pos / 10000 ** (2 * i / d)
            expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            # the same operations in scalar float64: agreement to a few ulps of the angle (pos <= 6 here)
            assert abs(pe[pos, j] - expected) < 1e-14


def test_sinusoidal_against_an_independent_torch_construction():
    torch = pytest.importorskip("torch")
    n, d = 50, 16
    # the construction used by many PyTorch tutorials: exp(-log(10000) * 2i / d) for the frequencies
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float64) * (-math.log(10000.0) / d))
    ref = torch.zeros(n, d, dtype=torch.float64)
    ref[:, 0::2] = torch.sin(pos * freq)
    ref[:, 1::2] = torch.cos(pos * freq)
    # pow vs exp(log) differ by ~1 ulp in the frequency, times pos <= 49: ~1e-14 in the angle
    np.testing.assert_allclose(positional.sinusoidal(n, d), ref.numpy(), atol=1e-12)


@given(n=st.integers(1, 60), d=st.integers(1, 33), k=st.integers(0, 20))
def test_sinusoidal_properties(n, d, k):
    pe = positional.sinusoidal(n + k, d)
    assert np.all(np.abs(pe) <= 1.0)
    # each (sin, cos) pair lies on the unit circle
    pairs = d // 2
    np.testing.assert_allclose(pe[:, 0:2 * pairs:2] ** 2 + pe[:, 1:2 * pairs:2] ** 2, 1.0, rtol=1e-14)
    # PE(pos + k) is PE(pos) rotated pair by pair by k * omega_i: a fixed linear map for each offset k
    omega = 10000.0 ** (-np.arange(0, d, 2)[:pairs] / d)
    c, s = np.cos(k * omega), np.sin(k * omega)
    sin_p, cos_p = pe[:n, 0:2 * pairs:2], pe[:n, 1:2 * pairs:2]
    np.testing.assert_allclose(pe[k:k + n, 0:2 * pairs:2], sin_p * c + cos_p * s, atol=1e-12)
    np.testing.assert_allclose(pe[k:k + n, 1:2 * pairs:2], cos_p * c - sin_p * s, atol=1e-12)


def test_sinusoidal_rows_are_distinct_and_first_row_is_fixed():
    pe = positional.sinusoidal(1024, 64)
    sq = (pe ** 2).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * pe @ pe.T              # (1024, 1024) squared distances between codes
    np.fill_diagonal(d2, np.inf)
    assert d2.min() > 1e-3                                      # no two positions share a code
    np.testing.assert_array_equal(pe[0, 0::2], 0.0)            # sin 0
    np.testing.assert_array_equal(pe[0, 1::2], 1.0)            # cos 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sinusoidal_dtype(dtype):
    pe = positional.sinusoidal(9, 6, dtype=dtype)
    assert pe.dtype == dtype
    np.testing.assert_array_equal(pe, positional.sinusoidal(9, 6).astype(dtype))   # one rounding from float64


def test_sinusoidal_bad_inputs():
    with pytest.raises(ValueError, match=r"d_model: expected an int >= 1, got 0"):
        positional.sinusoidal(4, 0)
    with pytest.raises(ValueError, match=r"n_positions: expected an int >= 0, got -1"):
        positional.sinusoidal(-1, 4)
    with pytest.raises(TypeError, match=r"d_model: expected an int >= 1, got float"):
        positional.sinusoidal(4, 8.0)
    with pytest.raises(TypeError, match=r"n_positions: expected an int >= 0, got bool"):
        positional.sinusoidal(True, 8)
    with pytest.raises(TypeError, match=r"dtype: expected float32 or float64, got int64"):
        positional.sinusoidal(4, 8, dtype=np.int64)
    with pytest.raises(TypeError, match=r"dtype: expected float32 or float64, got complex128"):
        positional.sinusoidal(4, 8, dtype=np.complex128)
