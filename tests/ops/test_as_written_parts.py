"""reference/ops/as_written_parts.py: each error of the printed PE and LayerNorm alone, built as described, with what
it breaks in numbers."""
import math

import numpy as np
import pytest

from reference.ops import as_written, as_written_parts, layernorm, positional


def test_positional_variants_are_the_formulas_they_name():
    n, d = 40, 16
    t = as_written_parts.positional_variants(n, d)
    assert set(t) == set(as_written_parts.PE_VARIANTS) and all(v.shape == (n, d) for v in t.values())
    np.testing.assert_array_equal(t["paper"], positional.sinusoidal(n, d))
    np.testing.assert_array_equal(t["as_printed"], as_written.positional_encoding(n, d))
    for pos in (0, 7, 39):                              # scalar maths, written independently of the module
        w1 = 10000 ** (-2 / d)                          # the printed 2/d_p: the frequency of pair i = 1
        for i in range(d // 2):
            wi = 10000 ** (-2 * i / d)
            # np.sin/np.cos against math.sin/math.cos of the same angle: equal to a few ulps
            assert t["no_index_i"][pos, 2 * i] == pytest.approx(math.sin(pos * w1), abs=1e-15)
            assert t["no_index_i"][pos, 2 * i + 1] == pytest.approx(math.cos(pos * w1), abs=1e-15)
            assert t["no_cos"][pos, 2 * i] == t["no_cos"][pos, 2 * i + 1]
            assert t["no_cos"][pos, 2 * i] == pytest.approx(math.sin(pos / 10000 ** (2 * i / d)), abs=1e-14)
    np.testing.assert_array_equal(t["power_2048"], t["paper"] ** 2048)


def test_each_positional_error_alone_breaks_something_the_paper_keeps():
    n, d = 256, 64
    s = {k: as_written_parts.positional_stats(v) for k, v in as_written_parts.positional_variants(n, d).items()}
    paper = s["paper"]
    # the paper: d numbers per code, every position its own code, no aliasing with the start, and pos + 1 a linear
    # map of pos (float64 least squares: residual ~1e-14)
    assert paper["distinct_columns"] == d and paper["positions_sharing_a_code"] == 0
    assert paper["closer_to_0_than_1"] == 0 and paper["relative_residual"] < 1e-12
    # no index i: two numbers per code, the circle repeats every 2 pi 10000^(2/d) = 8.4 positions, so dozens of
    # positions sit closer to position 0 than position 1 does; the rotation property survives (one frequency)
    assert s["no_index_i"]["distinct_columns"] == 2 and s["no_index_i"]["closer_to_0_than_1"] > 20
    assert s["no_index_i"]["relative_residual"] < 1e-12
    # no cos: half the columns are copies, and pos + 1 is no longer a linear map of pos
    assert s["no_cos"]["distinct_columns"] == d // 2 and s["no_cos"]["relative_residual"] > 0.1
    # the power 2048: entries in [0, 1], most of them ~0, and no linear map from pos to pos + 1
    assert s["power_2048"]["min"] >= 0 and s["power_2048"]["fraction_near_zero"] > 0.8
    assert s["power_2048"]["relative_residual"] > 0.1
    # all three together: one number per position, and most positions share the all-~0 code
    assert s["as_printed"]["distinct_columns"] == 1 and s["as_printed"]["positions_sharing_a_code"] > 0.9 * n


def test_positional_bad_inputs():
    with pytest.raises(ValueError, match="d: expected an even int >= 2, got 5"):
        as_written_parts.positional_variants(8, 5)
    with pytest.raises(ValueError, match="offset"):
        as_written_parts.positional_stats(np.zeros((3, 4)), offset=2)


def test_beta_inside_is_the_correct_norm_of_the_shifted_input(rng):
    x = rng.standard_normal((5, 8))
    gamma, beta = 1 + 0.1 * rng.standard_normal(8), rng.standard_normal(8)
    u = x + beta
    expected = gamma * (u - u.mean(-1, keepdims=True)) / np.sqrt(u.var(-1, keepdims=True) + 1e-5)
    # the same operations in another order: a few ulps of values ~1
    np.testing.assert_allclose(as_written_parts.layer_norm_beta_inside(x, gamma, beta), expected, rtol=0, atol=1e-14)


def test_a_constant_beta_does_nothing_inside_and_everything_outside(rng):
    x = 3 + 2 * rng.standard_normal((4, 16))
    ones = np.ones(16)
    shift = np.full(16, 0.5)
    inside = as_written_parts.layer_norm_beta_inside(x, ones, shift)
    # inside, the shift is removed with the row mean: identical to beta = 0 up to round-off of values ~1
    np.testing.assert_allclose(inside, layernorm.forward(x, ones, np.zeros(16))[0], rtol=0, atol=1e-13)
    outside, _ = layernorm.forward(x, ones, shift)
    np.testing.assert_allclose(outside.mean(-1), 0.5, rtol=0, atol=1e-13)


def test_beta_diagnostics_show_where_the_offset_goes(rng):
    d = 64
    x = 3 + 2 * rng.standard_normal((128, d))
    beta = 0.5 + 0.1 * rng.standard_normal(d)
    s = as_written_parts.layer_norm_beta_diagnostics(x, beta)
    # correct: the output's mean is beta's mean (rows of x-hat have mean 0), and moves 1 for 1 with beta
    assert s["correct_output_mean"] == pytest.approx(s["beta_mean"], abs=1e-12)
    assert s["correct_shift_response"] == pytest.approx(1, abs=1e-12)
    # as printed: (mean x + mean beta) / sqrt(d): the input's offset leaks through, beta counts 1/8 at d = 64
    assert s["as_printed_output_mean"] == pytest.approx((x.mean() + beta.mean()) / 8, abs=1e-12)
    assert s["as_printed_shift_response"] == pytest.approx(1 / 8, abs=1e-12)
    # beta inside: the output's mean is 0 whatever beta is, and no shift of beta moves it
    assert abs(s["beta_inside_output_mean"]) < 1e-12 and abs(s["beta_inside_shift_response"]) < 1e-12
