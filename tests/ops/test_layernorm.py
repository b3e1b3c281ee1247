"""reference/ops/layernorm.py against finite differences, torch autograd, random shapes, constant rows and bad inputs."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference.gradcheck import check_grads, rel_error
from reference import _threads
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


def run_fast(x, gamma, beta, dy, eps=1e-5):
    y, cache = layernorm.forward_fast(x, gamma, beta, eps)
    return (y,) + layernorm.backward_fast(dy, cache)


def test_layernorm_several_row_blocks_match_one(rng):
    # 5000 rows of 64 span three row blocks (module _BLOCK = 2^17 elements); the last block is partial.
    x = rng.standard_normal((5000, 64))
    assert len(layernorm._row_blocks(5000, 64)) == 3
    gamma, beta, dy = rng.standard_normal(64), rng.standard_normal(64), rng.standard_normal((5000, 64))
    theirs = torch_layernorm(x, gamma, beta, 1e-5, dy)
    for ours in (run(x, gamma, beta, dy), run_fast(x, gamma, beta, dy)):
        for a, b in zip(ours, theirs):
            assert rel_error(a, b) < TOL64


def test_layernorm_threads_give_the_same_bits(rng):
    # 2048 x 256 = 2^19 elements: the threaded path, 4 blocks (module _BLOCK = 2^17) on 1, 2 and 3 threads
    x = rng.standard_normal((2048, 256)).astype(np.float32)
    assert len(layernorm._row_blocks(2048, 256)) == 4 and x.size >= layernorm._MIN_PARALLEL
    gamma, beta = rng.standard_normal(256).astype(np.float32), rng.standard_normal(256).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    runs = []
    for workers in (1, 2, 3):
        with _threads.using(workers):
            runs.append(run_fast(x, gamma, beta, dy))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


# forward_fast/backward_fast against forward/backward. The two compute the same formulas; they differ in how they
# sum (BLAS dot products against NumPy's pairwise sums) and in the order of a few products, so in float64 they agree
# to a few ulps of the O(1) outputs: measured below 1e-14 relative to each array's largest entry (dgamma and dbeta
# are sums over up to 60 rows). 1e-12 leaves room; a wrong term would err by 1e-3 or more.
@given(lead=st.lists(st.integers(0, 5), min_size=0, max_size=3), C=st.integers(1, 70), seed=st.integers(0, 2**16),
       offset=st.sampled_from([0.0, 1e3]), scale=st.sampled_from([1e-3, 1.0, 1e160]))
def test_layernorm_fast_equals_readable(lead, C, seed, offset, scale):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((*lead, C)) + offset) * scale     # rows near 0, offset rows, rows whose squares overflow
    if x.size and seed % 3 == 0:
        x.reshape(-1, C)[0] = 7e4                              # a constant row
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    dy = rng.standard_normal(x.shape)
    for a, b in zip(run_fast(x, gamma, beta, dy), run(x, gamma, beta, dy)):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.abs(a - b).max(initial=0) <= 1e-12 * max(1.0, np.abs(b).max(initial=0))


def test_layernorm_fast_float32_equals_readable(rng):
    # float32: the same sums in another order cost a few float32 ulps (1.2e-7) of the outputs and, for dgamma and
    # dbeta, of sums over 3000 rows: measured 4e-7 relative to the largest entry; 1e-5 is still far below an error.
    x = (rng.standard_normal((3000, 96)) * 3 + 1).astype(np.float32)
    gamma, beta = rng.standard_normal(96).astype(np.float32), rng.standard_normal(96).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    for a, b in zip(run_fast(x, gamma, beta, dy), run(x, gamma, beta, dy)):
        assert a.dtype == np.float32 and rel_error(a, b) < 1e-5


@pytest.mark.parametrize("forward", [layernorm.forward, layernorm.forward_fast])
def test_layernorm_rows_whose_squares_overflow_float32(forward, rng):
    # Rows of magnitude 1e20: (x - mu)^2 ~ 1e40 overflows float32 (max 3.4e38). The old code returned beta for them
    # (xhat = (x - mu) / inf = 0); the output is representable, so it must be the float64 answer to float32 rounding.
    x = (rng.standard_normal((4, 64)) * 1e20).astype(np.float32)
    x[1] *= 1e15                                                # 1e35: near the top of float32's range
    x[2] = x[2] / 1e20 + 3e37                                   # a large offset: every difference is rounded away...
    x[3] = 7e4                                                  # ... and a constant row
    gamma, beta = rng.standard_normal(64).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, cache = forward(x, gamma, beta)
    x64 = x.astype(np.float64)
    xhat = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    # float32 rounding of xhat (|xhat| < 8) and of y = gamma xhat + beta: 1e-5 relative to the largest entry
    assert rel_error(y, gamma * xhat + beta) < 1e-5
    backward = layernorm.backward if forward is layernorm.forward else layernorm.backward_fast
    dx, dgamma, dbeta = backward(dy, cache)
    r = 1 / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    g = dy * gamma.astype(np.float64)
    dx64 = r * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    for row in range(4):                                        # each row on its own scale (r differs by 1e35)
        assert rel_error(dx[row], dx64[row]) < 1e-5
    assert rel_error(dgamma, (dy * xhat).sum(0)) < 1e-5


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
    _, cache = layernorm.forward(x, g, b)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4\), got \(4, 2\)"):
        layernorm.backward(np.zeros((4, 2)), cache)
    with pytest.raises(TypeError, match=r"dy: expected dtype float64 \(that of the forward pass\), got float32"):
        layernorm.backward(np.zeros((2, 4), np.float32), cache)
    with pytest.raises(TypeError, match=r"dy: expected dtype float64 \(that of the forward pass\), got float32"):
        layernorm.backward_fast(np.zeros((2, 4), np.float32), layernorm.forward_fast(x, g, b)[1])
