"""Checks of reference/training/init.py: each scheme's empirical variance matches its formula, and the variance of the
activations through a deep stack behaves as the theory says (stable under the right scheme, exploding or
vanishing under a badly scaled one). Budget: under 5 s on one core."""
import functools
import math

import numpy as np
import pytest

from reference.training import init

# A non-square weight: fan_in = 256 and fan_out = 1024 differ by 4x, so a formula that mixes up the fans
# (1/fan_out for He, 1/fan_in for Xavier) lands 2.5x to 4x off, far outside the tolerance below.
SHAPE = (256, 1024)
N = SHAPE[0] * SHAPE[1]

# Sample variance s^2 of n iid draws: its relative standard deviation is sqrt((kurtosis - 1) / n), i.e.
# sqrt(2 / n) for a normal (kurtosis 3) and sqrt(0.8 / n) for a uniform (kurtosis 9/5). A 6-sigma band
# (1.7% for a normal at n = 262144) fails by chance with probability ~2e-9, whatever the seed.
SIGMAS = 6.0

SCHEMES = {
    # name: (sampler, expected variance, kurtosis)
    "normal": (functools.partial(init.normal, std=0.02), 0.02**2, 3.0),
    "normal_emb": (functools.partial(init.normal, std=64**-0.5), 1.0 / 64, 3.0),
    "xavier_uniform": (init.xavier_uniform, 2.0 / (SHAPE[0] + SHAPE[1]), 1.8),
    "xavier_uniform_gain": (functools.partial(init.xavier_uniform, gain=5 / 3), (5 / 3) ** 2 * 2.0 / sum(SHAPE), 1.8),
    "xavier_normal": (init.xavier_normal, 2.0 / (SHAPE[0] + SHAPE[1]), 3.0),
    "he_normal": (init.he_normal, 2.0 / SHAPE[0], 3.0),
    "scaled_residual": (functools.partial(init.scaled_residual, n_layer=6), 0.02**2 / 12, 3.0),
}


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_empirical_variance_matches_formula(name, rng):
    sampler, var, kurtosis = SCHEMES[name]
    W = sampler(SHAPE, rng)
    assert W.shape == SHAPE and W.dtype == np.float64
    rel_sd = math.sqrt((kurtosis - 1.0) / N)
    assert abs(W.var() / var - 1.0) < SIGMAS * rel_sd, f"{name}: variance {W.var():.4e}, formula {var:.4e}"
    # The mean of N draws has standard deviation sqrt(var / N).
    assert abs(W.mean()) < SIGMAS * math.sqrt(var / N)


@pytest.mark.parametrize("gain", [1.0, 5 / 3])
def test_xavier_uniform_bound_is_reached_and_never_exceeded(gain, rng):
    a = gain * math.sqrt(6.0 / sum(SHAPE))
    W = init.xavier_uniform(SHAPE, rng, gain=gain)
    assert np.abs(W).max() <= a
    # P(all N draws inside (1 - 1e-3) a) = (1 - 1e-3)^N ~ e^-262: the bound is a, not something smaller.
    assert np.abs(W).max() > a * (1 - 1e-3)


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_float32_holds_the_float64_draws_rounded(name):
    sampler = SCHEMES[name][0]
    W64 = sampler((8, 12), np.random.default_rng(1), dtype=np.float64)
    W32 = sampler((8, 12), np.random.default_rng(1), dtype=np.float32)
    assert W32.dtype == np.float32
    np.testing.assert_array_equal(W32, W64.astype(np.float32))


def test_explicit_generator_is_deterministic_and_advances():
    a = init.normal((4, 4), np.random.default_rng(7))
    b = init.normal((4, 4), np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    g = np.random.default_rng(7)
    first, second = init.normal((4, 4), g), init.normal((4, 4), g)
    assert not np.array_equal(first, second)


def test_fans_follow_the_d_in_d_out_layout():
    assert init.fans((3, 5)) == (3, 5)


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: init.normal((2, 2), 0), TypeError, "numpy.random.Generator"),
        (lambda: init.normal((2, 2), np.random.RandomState(0)), TypeError, "numpy.random.Generator"),
        (lambda: init.normal((2, 2), np.random.default_rng(0), dtype=np.int64), TypeError,
         "float32 or float64, got int64"),
        (lambda: init.normal((2, -1), np.random.default_rng(0)), ValueError, "non-negative integers"),
        (lambda: init.normal((2, 2), np.random.default_rng(0), std=0.0), ValueError, "std: expected a positive"),
        (lambda: init.xavier_normal((2, 3, 4), np.random.default_rng(0)), ValueError, r"\(d_in, d_out\)"),
        (lambda: init.xavier_uniform((2,), np.random.default_rng(0)), ValueError, r"\(d_in, d_out\)"),
        (lambda: init.xavier_uniform((2, 2), np.random.default_rng(0), gain=-1.0), ValueError, "gain"),
        (lambda: init.he_normal((0, 4), np.random.default_rng(0)), ValueError, "both sizes >= 1"),
        (lambda: init.scaled_residual((2, 2), np.random.default_rng(0), n_layer=0), ValueError, "n_layer"),
        (lambda: init.activation_variances(init.he_normal, 4, 8, "sigmoid", np.random.default_rng(0)), ValueError,
         "activation"),
        (lambda: init.activation_variances(init.he_normal, 0, 8, "relu", np.random.default_rng(0)), ValueError,
         "depth"),
    ],
)
def test_bad_arguments_raise(call, err, match):
    with pytest.raises(err, match=match):
        call()


# ---------------------------------------------------------------------------------------------------------------
# Variance through depth: 32 layers of width 256, 256 samples.
DEPTH, WIDTH, SAMPLES = 32, 256, 256


def _variances(sampler, activation, seed=0):
    return init.activation_variances(sampler, DEPTH, WIDTH, activation, np.random.default_rng(seed), n_samples=SAMPLES)


def test_he_keeps_relu_variance_in_band_and_bad_scales_explode_or_vanish():
    # Mean-field theory: Var[z_1] = n * (2/n) * Var[h_0] = 2, then Var[z_{l+1}] = n * (2/n) * Var[z_l] / 2 = Var[z_l].
    # At finite width log v_l drifts as a random walk (per-layer sd ~ 0.1 at width 256; measured over 30 seeds:
    # sd of log(v_32 / 2) = 0.59, largest |log(v_l / 2)| = 1.64). A factor 10 either side of 2 is 4 sd wide,
    # and the badly scaled inits below leave it by more than 40 orders of magnitude.
    v = _variances(init.he_normal, "relu")
    assert abs(v[0] / 2.0 - 1.0) < 0.05                      # first layer: one random matrix, sd ~ 1%
    assert np.all((v > 2.0 / 10) & (v < 2.0 * 10)), v
    # std = 1: each layer multiplies the variance by n * 1 / 2 = 128 -> 128^31 ~ 1e65 by layer 32.
    v_big = _variances(functools.partial(init.normal, std=1.0), "relu")
    assert v_big[-1] > 1e50 and np.all(np.diff(np.log(v_big)) > 0)
    # std = 0.01: each layer multiplies it by n * 1e-4 / 2 = 0.0128 -> ~1e-60 by layer 32.
    v_small = _variances(functools.partial(init.normal, std=0.01), "relu")
    assert v_small[-1] < 1e-50 and np.all(np.diff(np.log(v_small)) < 0)
    # Xavier (Var = 1/n for a square weight) is half of He: ReLU halves the variance at every layer.
    v_xavier = _variances(init.xavier_normal, "relu")
    assert v_xavier[-1] < 1e-6


def _tanh_mean_field(gain, depth):
    """q_1 = g^2, q_{l+1} = g^2 E[tanh(sqrt(q_l) xi)^2], xi ~ N(0, 1), by 101-point Gauss-Hermite quadrature."""
    xi, w = np.polynomial.hermite_e.hermegauss(101)
    w = w / math.sqrt(2 * math.pi)
    q = [gain**2]
    for _ in range(depth - 1):
        q.append(gain**2 * float(np.sum(w * np.tanh(math.sqrt(q[-1]) * xi) ** 2)))
    return np.array(q)


@pytest.mark.parametrize("gain", [1.0, 5 / 3])
def test_xavier_tanh_follows_mean_field_theory(gain):
    # For a square weight Xavier gives Var[W] = g^2 / n, so Var[z_{l+1}] = g^2 E[tanh(z_l)^2] (mean field).
    # gain 1: tanh contracts, q_l ~ 1/(2l) -> 0.017 at layer 32 (slow, polynomial decay, not geometric);
    # gain 5/3: q_l converges to the fixed point q* = 1.178 and stays there: stable through depth.
    # Finite width (256) bends this by at most 13% (gain 1) and 5% (gain 5/3) over 10 seeds measured; 25% is
    # the band, while any mis-scaled weight (e.g. He's 2/n here gives q_32 = 0.61) is off by far more.
    q = _tanh_mean_field(gain, DEPTH)
    v = _variances(functools.partial(init.xavier_normal, gain=gain), "tanh")
    assert np.all(np.abs(v / q - 1.0) < 0.25), np.abs(v / q - 1.0).max()
    if gain != 1.0:
        assert np.all((v[4:] > 1.0) & (v[4:] < 1.5))


def test_badly_scaled_tanh_saturates_or_vanishes():
    # std = 1: Var[z] = n * E[tanh^2] ~ n = 256 at every layer: every unit is saturated at +-1.
    v_big = _variances(functools.partial(init.normal, std=1.0), "tanh")
    assert np.all(v_big > 0.8 * WIDTH)
    # std = 0.01: tanh is linear near 0, so Var shrinks by n * 1e-4 = 0.0256 per layer -> below 1e-45.
    v_small = _variances(functools.partial(init.normal, std=0.01), "tanh")
    assert v_small[-1] < 1e-45


def test_activation_variances_returns_one_float64_per_layer_for_both_dtypes():
    for dtype in (np.float32, np.float64):
        v = init.activation_variances(init.he_normal, 3, 16, "linear", np.random.default_rng(0), n_samples=8,
                                      dtype=dtype)
        assert v.shape == (3,) and v.dtype == np.float64 and np.all(v > 0)
