"""reference/ops/rmsnorm.py against finite differences, torch, Hugging Face's LlamaRMSNorm, huge and tiny rows, bad inputs."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from reference.gradcheck import check_grads, rel_error
from reference.ops import rmsnorm

# float64 vs torch's rms_norm: the same mean of squares and rsqrt in double, summed in other orders: ~C ulps at worst
# (C <= 64 here), ~1e-14. 1e-12 leaves a margin and still catches a wrong term (>= 1e-3).
TOL64 = 1e-12
# float32 vs torch float32: a few float32 roundings (6e-8 each) per output, amplified by r in the backward and summed
# over up to 150 rows for dgamma: 1e-5 relative is ~100 roundings; a wrong formula errs by 1e-2 or more.
TOL32 = 1e-5


def torch_rmsnorm(x, gamma, eps, dy):
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    yt = torch.nn.functional.rms_norm(xt, (x.shape[-1],), gt, eps)
    yt.backward(torch.tensor(dy))
    return yt.detach().numpy(), xt.grad.numpy(), gt.grad.numpy()


def run(x, gamma, dy, eps=1e-6):
    y, cache = rmsnorm.forward(x, gamma, eps)
    return (y,) + rmsnorm.backward(dy, cache)


@pytest.mark.parametrize("shape", [(1, 1, 5), (2, 3, 6), (4, 1), (3, 2)])
def test_rmsnorm_matches_finite_differences(shape, rng):
    x = rng.standard_normal(shape)
    gamma = rng.standard_normal(shape[-1])
    dy = rng.standard_normal(shape)

    def loss():
        return float(np.sum(dy * rmsnorm.forward(x, gamma)[0]))

    _, dx, dgamma = run(x, gamma, dy)
    check_grads(loss, {"x": x, "gamma": gamma}, {"x": dx, "gamma": dgamma})


@pytest.mark.parametrize("dtype, tol", [(np.float64, TOL64), (np.float32, TOL32)])
def test_rmsnorm_matches_torch(dtype, tol, rng):
    x = (rng.standard_normal((3, 50, 64)) * 2 + 1).astype(dtype)
    gamma = rng.standard_normal(64).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    for a, b in zip(run(x, gamma, dy), torch_rmsnorm(x, gamma, 1e-6, dy)):
        assert a.dtype == dtype
        assert rel_error(a, b) < tol


def test_rmsnorm_matches_llama_rmsnorm(rng):
    # Hugging Face's module, float32 (it computes in float32 whatever the input): the same formula with rsqrt
    # instead of 1/sqrt, so a few float32 roundings apart; TOL32 as above.
    x = rng.standard_normal((2, 9, 48)).astype(np.float32)
    gamma = rng.standard_normal(48).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    hf = LlamaRMSNorm(48, eps=1e-5)
    with torch.no_grad():
        hf.weight.copy_(torch.from_numpy(gamma))
    xt = torch.tensor(x, requires_grad=True)
    yt = hf(xt)
    yt.backward(torch.from_numpy(dy))
    ours = run(x, gamma, dy, eps=1e-5)
    for a, b in zip(ours, (yt.detach().numpy(), xt.grad.numpy(), hf.weight.grad.numpy())):
        assert rel_error(a, b) < TOL32


def test_rmsnorm_equals_the_plain_formula_bit_for_bit(rng):
    # The power-of-two scaling is exact, so where x^2 does not overflow the result is the plain formula's, bit for bit.
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((7, 33)) * 3).astype(dtype)
        gamma = rng.standard_normal(33).astype(dtype)
        eps = dtype(1e-6)
        plain = x * (1 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)) * gamma
        np.testing.assert_array_equal(rmsnorm.forward(x, gamma, eps)[0], plain)


@pytest.mark.parametrize("scale", [1e20, 1e30, 3e38])
def test_rmsnorm_float32_huge_rows_do_not_overflow(scale, rng):
    # From |x| ~ 2e19, sum(x^2) overflows float32: the plain formula (and LlamaRMSNorm) gives r = 0, y = 0.
    x = (rng.uniform(-1, 1, (4, 64)) * scale).astype(np.float32)
    x[:, 0] = scale                                          # the row maximum is scale itself (3e38 < float32 max)
    gamma = rng.standard_normal(64).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, dx, dgamma = run(x, gamma, dy)
    y64, dx64, dgamma64 = run(x.astype(np.float64), gamma.astype(np.float64), dy.astype(np.float64))
    # y and dgamma are O(1): float32 rounding, TOL32. dx ~ 1/scale (3e-39 at 3e38) may lie among the float32
    # subnormals, whose absolute spacing is 1.4e-45, i.e. ~1e-6 relative at 3e-39: 1e-5 still holds.
    for a, b in ((y, y64), (dx, dx64), (dgamma, dgamma64)):
        assert a.dtype == np.float32 and np.all(np.isfinite(a))
        assert rel_error(a, b) < TOL32
    with torch.no_grad():
        hf = LlamaRMSNorm(64, eps=1e-6)
        assert not hf(torch.from_numpy(x)).any()             # what the plain formula returns: all zeros


def test_rmsnorm_float64_huge_and_tiny_rows(rng):
    x = rng.standard_normal((3, 16))
    gamma = rng.standard_normal(16)
    exact = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True)) * gamma      # eps negligible at these scales
    for scale in (2.0 ** 600, 2.0 ** -400):                  # x^2 overflows / underflows float64
        y, _ = rmsnorm.forward(x * scale, gamma, eps=1e-300)
        assert rel_error(y, exact) < TOL64


def test_rmsnorm_float32_tiny_rows_keep_eps(rng):
    # |x| ~ 1e-30: x^2 underflows to 0 and y = x / sqrt(eps) ~ 1e-27; nothing must come out 0 or NaN.
    x = (rng.standard_normal((2, 32)) * 1e-30).astype(np.float32)
    gamma = rng.standard_normal(32).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    ours = run(x, gamma, dy)
    ref = run(x.astype(np.float64), gamma.astype(np.float64), dy.astype(np.float64))
    for a, b in zip(ours, ref):
        assert rel_error(a, b) < TOL32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rmsnorm_zero_rows_are_finite(dtype, rng):
    # mean(x^2) = 0: r = 1/sqrt(eps), y = 0, dx = r g exactly (the mean term is 0 since xhat = 0), dgamma = 0.
    x = np.zeros((3, 8), dtype=dtype)
    gamma = rng.standard_normal(8).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, dx, dgamma = run(x, gamma, dy, eps=1e-6)
    assert not y.any() and not dgamma.any()
    tol = TOL32 if dtype == np.float32 else TOL64
    assert rel_error(dx, dy.astype(np.float64) * gamma / np.sqrt(1e-6)) < tol


def test_rmsnorm_nan_and_inf_propagate_as_in_torch(rng):
    x = rng.standard_normal((3, 5))
    x[0, 2] = np.nan
    x[1, 1] = np.inf                                         # torch: mean(x^2) = inf, r = 0, y = [0, nan, 0, 0, 0]
    gamma, dy = rng.standard_normal(5), rng.standard_normal((3, 5))
    with np.errstate(invalid="ignore"):                     # inf * 0 = NaN is the point here
        y, _ = rmsnorm.forward(x, gamma)
    y_torch = torch_rmsnorm(x, gamma, 1e-6, dy)[0]
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_torch))
    np.testing.assert_allclose(y[np.isfinite(y)], y_torch[np.isfinite(y_torch)], rtol=TOL64)


@given(lead=st.lists(st.integers(0, 4), min_size=0, max_size=3), C=st.integers(1, 9), seed=st.integers(0, 2**16),
       eps=st.sampled_from([1e-6, 1e-2]))
def test_rmsnorm_random_shapes_match_torch(lead, C, seed, eps):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*lead, C)) * 3
    gamma = rng.standard_normal(C)
    dy = rng.standard_normal(x.shape)
    ours = run(x, gamma, dy, eps)
    theirs = torch_rmsnorm(x, gamma, eps, dy)
    assert ours[0].shape == x.shape and ours[1].shape == x.shape
    for a, b in zip(ours, theirs):
        # on the scale of the O(1) inputs: with C = 1 and a small eps, dx is ~1e-16 on both sides
        assert np.abs(a - b).max(initial=0) <= TOL64 * max(1.0, np.abs(b).max(initial=0))


def test_rmsnorm_bad_inputs():
    x, g = np.zeros((2, 4)), np.ones(4)
    with pytest.raises(ValueError, match=r"gamma: expected shape \(4,\), got \(3,\)"):
        rmsnorm.forward(x, np.ones(3))
    with pytest.raises(ValueError, match=r"x: expected at least 1 dimension\(s\), got shape \(\)"):
        rmsnorm.forward(np.array(1.0), g)
    with pytest.raises(ValueError, match=r"x: expected a last axis of size >= 1 to normalise, got shape \(2, 0\)"):
        rmsnorm.forward(np.zeros((2, 0)), np.ones(0))
    with pytest.raises(TypeError, match=r"expected one float dtype for all inputs, got x: float32, gamma: float64"):
        rmsnorm.forward(x.astype(np.float32), g)
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got int64"):
        rmsnorm.forward(x.astype(np.int64), g)
    with pytest.raises(TypeError, match=r"gamma: expected a numpy.ndarray of float32 or float64, got list"):
        rmsnorm.forward(x, [1.0] * 4)
    with pytest.raises(ValueError, match=r"eps: expected a positive finite number, got -1e-06"):
        rmsnorm.forward(x, g, eps=-1e-6)
    with pytest.raises(TypeError, match=r"eps: expected a positive real number, got str"):
        rmsnorm.forward(x, g, eps="1e-6")
    with pytest.raises(ValueError, match=r"eps: expected a value that does not round to 0 in float32, got 1e-50"):
        rmsnorm.forward(x.astype(np.float32), g.astype(np.float32), eps=1e-50)
    _, cache = rmsnorm.forward(x, g)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4\), got \(4, 2\)"):
        rmsnorm.backward(np.zeros((4, 2)), cache)
    with pytest.raises(TypeError, match=r"expected one float dtype for all inputs, got dy: float32, x: float64"):
        rmsnorm.backward(np.zeros((2, 4), np.float32), cache)


def test_rmsnorm_keeps_float32_with_a_numpy_float64_eps(rng):
    x = rng.standard_normal((2, 4)).astype(np.float32)
    y, cache = rmsnorm.forward(x, np.ones(4, np.float32), eps=np.float64(1e-5))
    assert y.dtype == np.float32 and cache.rstd.dtype == np.float32
