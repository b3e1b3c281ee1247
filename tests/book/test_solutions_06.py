"""The worked solutions of chapter 6's exercises (chapters/solutions/06_transformer.py), checked against reference/."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from reference.gradcheck import rel_error
from reference.ops import positional

_PATH = Path(__file__).resolve().parents[2] / "chapters" / "solutions" / "06_transformer.py"
_spec = importlib.util.spec_from_file_location("solutions_06", _PATH)  # the file name starts with a digit
sol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sol)


@pytest.mark.parametrize("T", [1, 2, 7])
def test_softmax_jacobian_gives_the_backward_pass(T, rng):
    s, g = rng.standard_normal(T), rng.standard_normal(T)
    via_jacobian, backward = sol.softmax_backward_via_jacobian(s, g)
    # two float64 evaluations of the same T-term sums: round-off ~1e-16 per term, so 1e-12 is generous and a
    # wrong Jacobian (a missing p p^T, a transpose of a non-symmetric matrix) misses by O(1)
    assert rel_error(via_jacobian, backward) < 1e-12


def test_softmax_jacobian_is_symmetric_with_zero_row_sums(rng):
    p = np.exp(rng.standard_normal(6))
    p /= p.sum()
    J = sol.softmax_jacobian(p)
    assert np.array_equal(J, J.T)
    # a row sum is p_i - p_i * sum(p): cancellation of O(1) terms in float64, round-off ~1e-16
    assert np.abs(J.sum(axis=1)).max() < 1e-15
    assert np.linalg.matrix_rank(J) == 5          # singular: the all-ones direction is lost


@pytest.mark.parametrize("d_model, k", [(2, 1), (16, 3), (64, 50)])
def test_pe_shift_is_a_fixed_rotation(d_model, k):
    # sin/cos of arguments up to ~100 rad, combined by a 2x2 rotation: float64 error ~1e-14
    assert sol.pe_shift_error(200, d_model, k) < 1e-12
    R = sol.pe_shift_matrix(d_model, k)
    assert np.allclose(R @ R.T, np.eye(d_model), atol=1e-14)   # a rotation: orthogonal


def test_pe_shift_matrix_depends_on_the_offset():
    # the wrong offset must fail the check, or the test above could not fail
    pe = positional.sinusoidal(20, 8)                  # (20, 8)
    assert np.abs(pe[3:] - pe[:17] @ sol.pe_shift_matrix(8, 2)).max() > 0.1


def test_layernorm_cannot_see_shift_or_scale_and_its_gradient_is_orthogonal_to_them(rng):
    x = 1.5 + 2.0 * rng.standard_normal((3, 4, 16))     # rows with sigma ~ 2, so eps / sigma^2 ~ 2.5e-6
    gamma, beta = 1 + 0.1 * rng.standard_normal(16), 0.1 * rng.standard_normal(16)
    dy = rng.standard_normal(x.shape)
    out = sol.layernorm_invariances(x, gamma, beta, dy)
    # a shift changes xhat only by round-off (the mean is subtracted): ~1e-15
    assert out["shift_change"] < 1e-12
    # a rescale by a = 3 changes xhat by ~ xhat * eps / (2 sigma^2) ~ 1e-6 * |xhat|, |xhat| <= ~4
    assert out["scale_change"] < 1e-4
    # sum_j dx_j = 0 exactly in exact arithmetic: float64 round-off over 16 terms of size ~1
    assert np.abs(out["row_sums"]).max() < 1e-12
    # sum_j dx_j xhat_j = (C / s) mean(g xhat) eps / (sigma^2 + eps): with |g xhat| ~ 1, s ~ 2, eps / sigma^2 ~ 3e-6,
    # about 16 / 2 * 3e-6 ~ 2e-5 at most; a gradient with a component along xhat would give O(1)
    assert np.abs(out["row_dots"]).max() < 1e-3
