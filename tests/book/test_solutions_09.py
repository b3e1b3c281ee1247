"""The worked solutions of chapter 9's exercises (chapters/solutions/09_trends.py). Budget: under 2 s on one core."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "chapters" / "solutions" / "09_trends.py"
_spec = importlib.util.spec_from_file_location("solutions_09", _PATH)  # the file name starts with a digit
sol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sol)


def test_adam_first_step_ignores_the_gradient_scale(rng):
    g = rng.standard_normal(50)
    small, large = sol.adam_update(g, 1e-3, eps=0.0), sol.adam_update(g, 1e3, eps=0.0)
    # with eps = 0 both are -lr * sign(g) up to round-off (1e-16 relative)
    np.testing.assert_allclose(small, -1e-3 * np.sign(g), rtol=1e-12)
    np.testing.assert_allclose(large, small, rtol=1e-12)
    # with the default eps = 1e-8, a gradient of size ~1 (the smallest of 50 draws is ~0.02, so eps / |g| < 1e-6)
    # still takes the full step; one of size ~1e-9 does not
    np.testing.assert_allclose(sol.adam_update(g, 1.0, eps=1e-8), small, rtol=1e-5)
    assert np.abs(sol.adam_update(g, 1e-9, eps=1e-8)).max() < 0.5e-3


def test_a_constant_clip_factor_cancels_a_varying_one_does_not(rng):
    grads = [rng.standard_normal(20), rng.standard_normal(20)]
    base = sol.adam_two_steps(grads, [1.0, 1.0])
    np.testing.assert_allclose(sol.adam_two_steps(grads, [0.1, 0.1]), base, rtol=1e-12)
    # clip only the second step by 10x: m and v now weigh the first gradient more, and the update changes by O(1)
    varied = sol.adam_two_steps(grads, [1.0, 0.1])
    assert np.abs(varied - base).max() > 0.1 * np.abs(base).max()


def test_power_law_with_floor_recovers_the_floor():
    n = np.array([1e4, 3e4, 1e5, 3e5, 1e6, 3e6])
    E, A, b = 1.3, 40.0, -0.3
    loss = E + A * n ** b
    E_fit, A_fit, b_fit = sol.fit_power_law_with_floor(n, loss)
    # the grid step is min(L) / 2000 ~ 8e-4, so E is found to within a step; A and b follow it
    assert E_fit == pytest.approx(E, abs=2e-3)
    assert b_fit == pytest.approx(b, abs=0.02)
    assert A_fit == pytest.approx(A, rel=0.2)


def test_floor_fit_on_the_sweep_is_the_pure_power_law():
    E, A, b = sol.fit_power_law_with_floor(sol.SWEEP_N, sol.SWEEP_LOSS)
    assert E == 0.0
    a_line, b_line, _ = sol.scaling_law.fit_power_law(sol.SWEEP_N, sol.SWEEP_LOSS)
    assert (np.log(A), b) == pytest.approx((a_line, b_line), abs=1e-12)   # the same least-squares line


def test_compute_arithmetic():
    # one epoch of the KJV's 3.7 M characters for a 0.5 M-parameter model at 10 GFLOP/s: 6 * 5e5 * 3.7e6 / 1e10
    assert sol.training_seconds(5e5, 3.7e6, 1e10) == pytest.approx(1110.0, rel=1e-12)
    # 3.14e23 FLOPs at 10 GFLOP/s: 3.14e13 s, just under a million years
    assert sol.gpt3_years(1e10) == pytest.approx(3.14e13 / 31_557_600, rel=1e-12)
    assert 9.9e5 < sol.gpt3_years(1e10) < 1e6
