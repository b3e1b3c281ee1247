"""The worked solutions of chapter 11's exercises (chapters/solutions/11_errata.py)."""
import importlib.util
from pathlib import Path

import numpy as np

from reference.gradcheck import rel_error
from reference.ops import as_written, layernorm

_PATH = Path(__file__).resolve().parents[2] / "chapters" / "solutions" / "11_errata.py"
_spec = importlib.util.spec_from_file_location("solutions_11", _PATH)  # the file name starts with a digit
sol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sol)


def test_spike_fraction_matches_sampling():
    f = sol.spike_fraction()
    assert 0.0164 < f < 0.0166
    theta = np.linspace(0, np.pi, 2_000_001)
    sampled = float((np.abs(np.sin(theta)) ** 2048 > 0.5).mean())
    # a grid of 2e6 points over one period: the sampled fraction is exact to ~1e-6
    assert abs(sampled - f) < 1e-5


def test_printed_layernorm_is_the_affine_map(rng):
    x, beta = rng.standard_normal((5, 8)), rng.standard_normal(8)
    A, c = sol.printed_layernorm_affine(beta)
    # one matmul and one add in float64: round-off ~1e-16 relative
    assert rel_error(as_written.layer_norm(x, np.ones(8), beta), x @ A.T + c) < 1e-14
    assert np.linalg.matrix_rank(A) == 8


def test_layernorm_jacobian_gives_the_backward_pass(rng):
    x, g = rng.standard_normal(7), rng.standard_normal(7)
    J = sol.layernorm_jacobian(x)
    _, cache = layernorm.forward(x[None, :], np.ones(7), np.zeros(7))
    dx, _, _ = layernorm.backward(g[None, :], cache)
    # the same O(d) sums evaluated two ways in float64: 1e-12 leaves room for round-off, not for a wrong term
    assert rel_error(J.T @ g, dx[0]) < 1e-12
    assert np.abs(J @ np.ones(7)).max() < 1e-12


def test_layernorm_forgets_shift_and_scale(rng):
    # eps = 1e-12 on a row of variance ~1: the outputs differ by ~eps relative
    assert sol.shifted_and_scaled_rows_collide(rng.standard_normal(16)) < 1e-9
