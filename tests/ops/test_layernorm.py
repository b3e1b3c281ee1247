"""reference/ops/layernorm.py against finite differences, torch autograd, random shapes, constant rows and bad inputs."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference.gradcheck import check_grads, rel_error
from reference.ops import layernorm

# float64 vs torch: the same mean, biased variance and rsqrt in double; summation orders differ, so ~C ulps at
# worst (C <= 64 here): ~1e-14. 1e-12 leaves a margin and still catches a wrong term (>= 1e-3).
TOL64 = 1e-12
# float32 vs torch float32: each output is a few float32 roundings (eps 1.2e-7) away, amplified by 1/std in the
# backward; dgamma/dbeta sum over up to a few hundred rows. 1e-4 relative is ~100 roundings: loose for float32 but
# a wrong formula (a missing mean term, eps outside the sqrt) errs by 1e-2 or more.
TOL32 = 1e-4


def torch_layernorm(x, gamma, beta, eps, dy):
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.tensor(beta, requires_grad=True)
    yt = torch.nn.functional.layer_norm(xt, (x.shape[-1],), gt, bt, eps)
    yt.backward(torch.tensor(dy))
    return yt.detach().numpy(), xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


def run(x, gamma, beta, dy, eps=1e-5):
    y, cache = layernorm.forward(x, gamma, beta, eps)
    return (y,) + layernorm.backward(dy, cache)


@pytest.mark.parametrize("shape", [(1, 1, 5), (2, 3, 6), (4, 1), (3, 2)])
def test_layernorm_matches_finite_differences(shape, rng):
    x = rng.standard_normal(shape)
    gamma = rng.standard_normal(shape[-1])
    beta = rng.standard_normal(shape[-1])
    dy = rng.standard_normal(shape)

    def loss():
        return float(np.sum(dy * layernorm.forward(x, gamma, beta)[0]))

    _, dx, dgamma, dbeta = run(x, gamma, beta, dy)
    check_grads(loss, {"x": x, "gamma": gamma, "beta": beta}, {"x": dx, "gamma": dgamma, "beta": dbeta})


@pytest.mark.parametrize("dtype, tol", [(np.float64, TOL64), (np.float32, TOL32)])
def test_layernorm_matches_torch(dtype, tol, rng):
    x = (rng.standard_normal((3, 50, 64)) * 2 + 1).astype(dtype)
    gamma = rng.standard_normal(64).astype(dtype)
    beta = rng.standard_normal(64).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    ours = run(x, gamma, beta, dy)
    theirs = torch_layernorm(x, gamma, beta, 1e-5, dy)
    for a, b in zip(ours, theirs):
        assert a.dtype == dtype
        assert rel_error(a, b) < tol


def test_layernorm_several_row_blocks_match_one(rng):
    # 5000 rows of 64 span three row blocks (module _BLOCK = 2^17 elements); the last block is partial.
    x = rng.standard_normal((5000, 64))
    assert len(layernorm._row_blocks(5000, 64)) == 3
    gamma, beta, dy = rng.standard_normal(64), rng.standard_normal(64), rng.standard_normal((5000, 64))
    ours = run(x, gamma, beta, dy)
    theirs = torch_layernorm(x, gamma, beta, 1e-5, dy)
    for a, b in zip(ours, theirs):
        assert rel_error(a, b) < TOL64


def test_layernorm_threads_give_the_same_bits(rng):
    # 2048 x 256 = 2^19 elements: the threaded path, 4 blocks (module _BLOCK = 2^17) on 3 threads vs serial
    x = rng.standard_normal((2048, 256)).astype(np.float32)
    assert len(layernorm._row_blocks(2048, 256)) == 4 and x.size >= layernorm._MIN_PARALLEL
    gamma, beta = rng.standard_normal(256).astype(np.float32), rng.standard_normal(256).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    runs = []
    for workers in (1, 3):
        y, cache = layernorm.forward(x, gamma, beta, workers=workers)
        runs.append((y,) + layernorm.backward(dy, cache))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@given(lead=st.lists(st.integers(0, 4), min_size=0, max_size=3), C=st.integers(1, 9), seed=st.integers(0, 2**16),
       eps=st.sampled_from([1e-5, 1e-2]))
def test_layernorm_random_shapes_match_torch(lead, C, seed, eps):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*lead, C)) * 3
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    dy = rng.standard_normal(x.shape)
    ours = run(x, gamma, beta, dy, eps)
    theirs = torch_layernorm(x, gamma, beta, eps, dy)
    assert ours[0].shape == x.shape and ours[1].shape == x.shape
    for a, b in zip(ours, theirs):
        # on the scale of the O(1) inputs: with C = 1, dx is exactly 0 here and ~1e-16 in torch
        assert np.abs(a - b).max(initial=0) <= TOL64 * max(1.0, np.abs(b).max(initial=0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layernorm_constant_rows_are_finite(dtype, rng):
    x = np.array([[3.0] * 8, [0.0] * 8, [-1e4] * 8], dtype=dtype)   # variance 0
    gamma = rng.standard_normal(8).astype(dtype)
    beta = rng.standard_normal(8).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, dx, dgamma, dbeta = run(x, gamma, beta, dy)
    for a in (y, dx, dgamma, dbeta):
        assert np.all(np.isfinite(a))
    # exact answers for variance 0: xhat = 0, so y = beta, dgamma = 0, dbeta = sum dy and, with r = 1/sqrt(eps),
    # dx = r (g - mean(g)) for g = dy gamma. (torch's float32 dx for the -1e4 row is off by O(1): its mean is not
    # exactly -1e4, and r = 316 amplifies the difference; ours computes the mean as a dot product with 1/8, exact.)
    r = 1 / np.sqrt(1e-5)
    g = dy.astype(np.float64) * gamma
    expected = (beta[None].repeat(3, 0), r * (g - g.mean(-1, keepdims=True)), np.zeros(8), dy.sum(0))
    tol = TOL32 if dtype == np.float32 else TOL64
    for a, b in zip((y, dx, dgamma, dbeta), expected):
        assert np.abs(a - b).max() <= tol * max(1.0, np.abs(b).max())
    if dtype == np.float64:
        # torch's float64 mean of the -1e4 row is off by ~1e4 * eps = 2e-12 and r = 316 turns that into
        # xhat ~ 1e-9 (ours is exactly 0), so the comparison can only be as tight as 1e-8.
        for a, b in zip((y, dx, dgamma, dbeta), torch_layernorm(x, gamma, beta, 1e-5, dy)):
            assert np.abs(a - b).max() <= 1e-8 * max(1.0, np.abs(b).max())


def test_layernorm_normalises_rows(rng):
    x = rng.standard_normal((6, 32)) * 5 + 3
    y, _ = layernorm.forward(x, np.ones(32), np.zeros(32), eps=1e-12)
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-14)
    np.testing.assert_allclose(y.std(-1), 1, rtol=1e-12)     # biased std, as in the forward


def test_layernorm_bad_inputs():
    x, g, b = np.zeros((2, 4)), np.ones(4), np.zeros(4)
    with pytest.raises(ValueError, match=r"gamma: expected shape \(4,\), got \(3,\)"):
        layernorm.forward(x, np.ones(3), b)
    with pytest.raises(ValueError, match=r"beta: expected shape \(4,\), got \(1, 4\)"):
        layernorm.forward(x, g, b[None])
    with pytest.raises(ValueError, match=r"x: expected at least 1 dimension\(s\), got shape \(\)"):
        layernorm.forward(np.array(1.0), g, b)
    with pytest.raises(ValueError, match=r"x: expected a last axis of size >= 1 to normalise, got shape \(2, 0\)"):
        layernorm.forward(np.zeros((2, 0)), np.ones(0), np.zeros(0))
    with pytest.raises(TypeError, match=r"expected one float dtype for all inputs, got x: float32, gamma: float64, beta: float64"):
        layernorm.forward(x.astype(np.float32), g, b)
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got int64"):
        layernorm.forward(x.astype(np.int64), g, b)
    with pytest.raises(TypeError, match=r"gamma: expected dtype float32 or float64, got complex128"):
        layernorm.forward(x, g.astype(complex), b)
    with pytest.raises(ValueError, match=r"eps: expected a positive finite number, got 0"):
        layernorm.forward(x, g, b, eps=0)
    with pytest.raises(TypeError, match=r"eps: expected a positive real number, got str"):
        layernorm.forward(x, g, b, eps="1e-5")
    with pytest.raises(ValueError, match=r"workers: expected an int >= 1, got 0"):
        layernorm.forward(x, g, b, workers=0)
    _, cache = layernorm.forward(x, g, b)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4\), got \(4, 2\)"):
        layernorm.backward(np.zeros((4, 2)), cache)
    with pytest.raises(TypeError, match=r"expected one float dtype for all inputs, got dy: float32, x: float64"):
        layernorm.backward(np.zeros((2, 4), np.float32), cache)
