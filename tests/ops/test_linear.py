"""reference/ops/linear.py against finite differences, torch autograd, random shapes and bad inputs."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference.gradcheck import check_grads, rel_error
from reference import _threads
from reference.ops import linear

# float64 vs torch: the same products summed in a different order (BLAS blocking): ~d_in ulps at worst, ~1e-15.
TOL64 = 1e-12
# float32 vs torch float32: each output is a sum of d_in (<= 64 here) float32 products; the rounding error grows
# like sqrt(d_in) * eps ~ 1e-6 relative to the largest entry. 1e-5 keeps a margin; a wrong term errs by O(1).
TOL32 = 1e-5


def torch_linear(x, W, b, dy):
    xt, Wt = torch.tensor(x, requires_grad=True), torch.tensor(W, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    yt = xt @ Wt + (0 if bt is None else bt)
    yt.backward(torch.tensor(dy))
    return yt.detach().numpy(), xt.grad.numpy(), Wt.grad.numpy(), None if bt is None else bt.grad.numpy()


@pytest.mark.parametrize("shape", [(1, 1, 4), (3, 7, 6), (5, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_finite_differences(shape, bias, rng):
    d_out = 5
    x = rng.standard_normal(shape)
    W = rng.standard_normal((shape[-1], d_out))
    b = rng.standard_normal(d_out) if bias else None
    dy = rng.standard_normal(shape[:-1] + (d_out,))

    def loss():
        return float(np.sum(dy * linear.forward(x, W, b)[0]))

    dx, dW, db = linear.backward(dy, linear.forward(x, W, b)[1])
    inputs, grads = {"x": x, "W": W}, {"x": dx, "W": dW}
    if bias:
        inputs["b"], grads["b"] = b, db
    else:
        assert db is None
    check_grads(loss, inputs, grads)


@pytest.mark.parametrize("dtype, tol", [(np.float64, TOL64), (np.float32, TOL32)])
def test_linear_matches_torch(dtype, tol, rng):
    x = rng.standard_normal((4, 9, 64)).astype(dtype)
    W = (rng.standard_normal((64, 33)) / 8).astype(dtype)
    b = rng.standard_normal(33).astype(dtype)
    dy = rng.standard_normal((4, 9, 33)).astype(dtype)
    y, cache = linear.forward(x, W, b)
    grads = linear.backward(dy, cache)
    ref = torch_linear(x, W, b, dy)
    for ours, theirs in zip((y,) + grads, ref):
        assert ours.dtype == dtype
        assert rel_error(ours, theirs) < tol


@given(lead=st.lists(st.integers(0, 4), min_size=0, max_size=3), d_in=st.integers(1, 6), d_out=st.integers(1, 6),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_random_shapes_match_torch(lead, d_in, d_out, bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*lead, d_in))
    W = rng.standard_normal((d_in, d_out))
    b = rng.standard_normal(d_out) if bias else None
    dy = rng.standard_normal((*lead, d_out))
    y, cache = linear.forward(x, W, b)
    dx, dW, db = linear.backward(dy, cache)
    y_t, dx_t, dW_t, db_t = torch_linear(x, W, b, dy)
    assert y.shape == (*lead, d_out) and dx.shape == x.shape and dW.shape == W.shape
    assert rel_error(y, y_t) < TOL64 and rel_error(dx, dx_t) < TOL64 and rel_error(dW, dW_t) < TOL64
    assert (db is None) == (not bias)
    if bias:
        assert rel_error(db, db_t) < TOL64


def test_linear_empty_batch_gives_zero_weight_gradients():
    x, W, b = np.zeros((0, 3), np.float32), np.ones((3, 2), np.float32), np.ones(2, np.float32)
    y, cache = linear.forward(x, W, b)
    dx, dW, db = linear.backward(np.zeros((0, 2), np.float32), cache)
    assert y.shape == (0, 2) and dx.shape == (0, 3)
    assert dW.dtype == np.float32 and np.all(dW == 0) and np.all(db == 0)


def test_linear_bad_inputs():
    x, W, b = np.zeros((2, 3)), np.zeros((3, 4)), np.zeros(4)
    with pytest.raises(ValueError, match=r"W: expected shape \(3, \*\), got \(4, 3\)"):
        linear.forward(x, W.T)
    with pytest.raises(ValueError, match=r"W: expected shape \(3, \*\), got \(3,\)"):
        linear.forward(x, np.zeros(3))
    with pytest.raises(ValueError, match=r"b: expected shape \(4,\), got \(1, 4\)"):
        linear.forward(x, W, b[None])
    with pytest.raises(ValueError, match=r"x: expected at least 1 dimension\(s\), got shape \(\)"):
        linear.forward(np.array(1.0), W)
    with pytest.raises(TypeError, match=r"expected one float dtype for all inputs, got x: float32, W: float64, b: float64"):
        linear.forward(x.astype(np.float32), W, b)
    with pytest.raises(TypeError, match=r"W: expected dtype float32 or float64, got int64"):
        linear.forward(x, W.astype(np.int64))
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got complex128"):
        linear.forward(x.astype(complex), W)
    _, cache = linear.forward(x, W, b)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4\), got \(2, 3\)"):
        linear.backward(np.zeros((2, 3)), cache)
    with pytest.raises(TypeError, match=r"dy: expected dtype float64 \(that of the forward pass\), got float32"):
        linear.backward(np.zeros((2, 4), np.float32), cache)


# forward_fast/backward_fast split the rows of y and dx and the columns of dW and db over threads: every entry is
# the same BLAS dot product (or column sum) of the same numbers, whose rounding can only depend on how BLAS blocks a
# call of a different size. Measured: equal, or a few ulps apart; 1e-13 relative to the largest entry allows that
# and nothing more.
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("shape, d_out", [((64, 128, 48), 40), ((7, 5), 3), ((0, 4), 5), ((3, 0), 2), ((2, 3), 0)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_fast_equals_readable(workers, shape, d_out, bias, rng, monkeypatch):
    monkeypatch.setattr(linear, "_MIN_PARALLEL", 0)            # thread even the small cases
    x = rng.standard_normal(shape)
    W = rng.standard_normal((shape[-1], d_out))
    b = rng.standard_normal(d_out) if bias else None
    dy = rng.standard_normal(shape[:-1] + (d_out,))
    y, cache = linear.forward(x, W, b)
    with _threads.using(workers):
        y_f, cache_f = linear.forward_fast(x, W, b)
        fast = (y_f,) + linear.backward_fast(dy, cache_f)
    for a, b_ in zip(fast, (y,) + linear.backward(dy, cache)):
        if b_ is None:
            assert a is None
            continue
        assert a.shape == b_.shape and a.dtype == b_.dtype
        assert np.abs(a - b_).max(initial=0) <= 1e-13 * max(1.0, np.abs(b_).max(initial=0))
