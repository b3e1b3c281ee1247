"""The worked solutions of chapter 13's exercises (chapters/solutions/13_training_at_scale.py). Under 1 s."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from reference.ops import ffn
from reference.studies import pipeline

_PATH = Path(__file__).resolve().parents[2] / "chapters" / "solutions" / "13_training_at_scale.py"
_spec = importlib.util.spec_from_file_location("solutions_13", _PATH)  # the file name starts with a digit
sol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sol)


@pytest.mark.parametrize("n_ranks", [2, 8, 64])
def test_zero3_sends_one_and_a_half_times_data_parallelism(n_ranks):
    zero3, dp = sol.zero3_bytes_per_step(175e9, n_ranks)
    assert zero3 == pytest.approx(1.5 * dp, rel=1e-12)


def test_micro_batches_for_a_five_percent_bubble():
    m, gpipe, one_f_one_b = sol.micro_batches_for_bubble(8, 0.05)
    assert m == 134                                                   # 7 / (133 + 7) = 0.05 exactly: not below
    assert gpipe.bubble < 0.05 <= pipeline.bubble_formula(8, m - 1)
    assert gpipe.bubble == pytest.approx(one_f_one_b.bubble, abs=1e-12)
    assert gpipe.peak_activations[0] == 134 and one_f_one_b.peak_activations[0] == 8


@pytest.mark.parametrize("t", [1, 2, 4])
def test_split_ffn_equals_the_whole_one(t, rng):
    C, F = 8, 32
    x, dy = rng.standard_normal((2, 5, C)), rng.standard_normal((2, 5, C))
    W1, b1 = rng.standard_normal((C, F)), rng.standard_normal(F)
    W2, b2 = rng.standard_normal((F, C)), rng.standard_normal(C)
    y0, cache = ffn.forward(x, W1, b1, W2, b2, "gelu_tanh")
    want = (y0, *ffn.backward(dy, cache))
    got = sol.tensor_parallel_ffn(x, W1, b1, W2, b2, dy, t)
    # float64: the split only regroups sums of a few dozen products, so round-off ~1e-15 of values of size ~10
    for name, a, b in zip(("y", "dx", "dW1", "db1", "dW2", "db2"), got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)
