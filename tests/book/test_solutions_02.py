"""The worked solutions of chapter 2's exercises (chapters/solutions/02_training.py)."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from reference.training import optim

_PATH = Path(__file__).resolve().parents[2] / "chapters" / "solutions" / "02_training.py"
_spec = importlib.util.spec_from_file_location("solutions_02", _PATH)  # the file name starts with a digit
sol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sol)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_first_adam_step_is_sign_descent(scale, dtype, rng):
    g = (scale * rng.standard_normal(50)).astype(dtype)
    delta = sol.first_adam_update(g, lr=1e-3)
    assert delta.dtype == dtype
    # With eps = 0 the step is lr * g / |g| computed through a few roundings (square, sqrt, two bias-correction
    # divisions): a few ulps of the dtype, so 10 eps of the dtype relative to lr; a wrong formula is off by O(1).
    tol = 10 * np.finfo(dtype).eps
    np.testing.assert_allclose(delta, -1e-3 * np.sign(g), rtol=tol, atol=0)


def test_default_eps_shrinks_steps_of_tiny_gradients():
    g = np.array([1e-8, 1e-2])
    delta = sol.first_adam_update(g, lr=1.0, eps=1e-8)
    # g / (|g| + eps): 1e-8 / 2e-8 = 0.5 exactly (up to rounding), and 1e-2 / (1e-2 + 1e-8) = 1 - 1e-6.
    np.testing.assert_allclose(delta, [-0.5, -(1 - 1e-6)], rtol=1e-9)


@pytest.mark.parametrize("d_model, warmup", [(512, 4000), (64, 100), (1024, 1)])
def test_noam_peak_matches_the_schedule(d_model, warmup):
    step, lr = sol.noam_peak(d_model, warmup)
    steps = range(1, 3 * warmup + 2)
    rates = [optim.noam(s, d_model, warmup) for s in steps]
    assert step == 1 + int(np.argmax(rates))
    assert lr == pytest.approx(max(rates), rel=1e-12)  # the same closed form, evaluated two ways: round-off only
    if (d_model, warmup) == (512, 4000):
        assert round(lr, 6) == 6.99e-4


def test_bits_per_char():
    assert sol.bits_per_char(math.log(63), 1.0) == pytest.approx(math.log2(63), rel=1e-12)  # uniform over 63 chars
    char_model = sol.bits_per_char(1.60, 1.0)
    bpe_model = sol.bits_per_char(4.20, 3.0)
    assert round(char_model, 2) == 2.31 and round(bpe_model, 2) == 2.02
    assert bpe_model < char_model
