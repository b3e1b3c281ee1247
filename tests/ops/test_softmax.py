"""reference/ops/softmax.py against finite differences, torch autograd, random shapes, extremes and bad inputs."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference.gradcheck import check_grads, rel_error
from reference.ops import softmax

# float64 vs torch: both compute exp/sum/divide in double; they differ only by summation order, a few ulps.
TOL64 = 1e-12
# float32 vs torch float32: each output carries a few float32 ulps (eps 1.2e-7) from exp, sum and divide, and the
# backward adds one reduction more; 1e-5 relative is ten times that, while a wrong formula errs by 1e-1 or more.
TOL32 = 1e-5


def torch_softmax(x, axis, dy):
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.softmax(xt, dim=axis)
    yt.backward(torch.tensor(dy))
    return yt.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("shape, axis", [((5,), 0), ((3, 4), -1), ((3, 4), 0), ((2, 3, 5), 1), ((1, 1), -1)])
def test_softmax_matches_finite_differences(shape, axis, rng):
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)            # random upstream gradient: L = sum(dy * y)

    def loss():
        return float(np.sum(dy * softmax.forward(x, axis)[0]))

    _, cache = softmax.forward(x, axis)
    check_grads(loss, {"x": x}, {"x": softmax.backward(dy, cache)})


@pytest.mark.parametrize("dtype, tol", [(np.float64, TOL64), (np.float32, TOL32)])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_matches_torch(dtype, tol, axis, rng):
    x = (3 * rng.standard_normal((4, 6, 7))).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, cache = softmax.forward(x, axis)
    dx = softmax.backward(dy, cache)
    y_t, dx_t = torch_softmax(x, axis, dy)
    assert y.dtype == dtype and dx.dtype == dtype
    assert rel_error(y, y_t) < tol
    assert rel_error(dx, dx_t) < tol


@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    axis_seed=st.integers(0, 100),
    seed=st.integers(0, 2**16),
)
def test_softmax_random_shapes_match_torch(shape, axis_seed, seed):
    rng = np.random.default_rng(seed)
    axis = axis_seed % len(shape) - len(shape) * (axis_seed % 2)   # both positive and negative axes
    x = 4 * rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    y, cache = softmax.forward(x, axis)
    dx = softmax.backward(dy, cache)
    y_t, dx_t = torch_softmax(x, axis, dy)
    assert y.shape == x.shape and dx.shape == x.shape
    assert rel_error(y, y_t) < TOL64
    assert rel_error(dx, dx_t) < TOL64
    if x.size:
        np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_extreme_logits_are_finite_and_exact(dtype):
    x = np.array([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4], [-1e4, -1e4, -1e4]], dtype=dtype)
    y, cache = softmax.forward(x)
    assert np.all(np.isfinite(y))
    # exact answers: one winner, two tied winners, three tied
    np.testing.assert_array_equal(y, np.array([[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]], dtype=dtype))
    dx = softmax.backward(np.ones_like(x), cache)
    assert np.all(np.isfinite(dx))
    y_t, dx_t = torch_softmax(x, -1, np.ones_like(x))
    assert rel_error(y, y_t) < TOL32 and np.abs(dx - dx_t).max() < TOL32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_zero_d_and_empty(dtype):
    x = np.array(3.5, dtype=dtype)
    y, cache = softmax.forward(x)
    assert y.shape == () and y.dtype == dtype and y == 1
    dx = softmax.backward(np.array(2.0, dtype=dtype), cache)
    assert dx.shape == () and dx.dtype == dtype and dx == 0   # y = 1 for every x: zero gradient
    for shape, axis in [((0,), 0), ((0, 3), -1), ((3, 0), -1), ((3, 0), 0)]:
        e = np.zeros(shape, dtype=dtype)
        y, cache = softmax.forward(e, axis)
        assert y.shape == shape and y.dtype == dtype
        assert softmax.backward(e, cache).shape == shape


def test_softmax_bad_inputs():
    x = np.zeros((2, 3))
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got int64"):
        softmax.forward(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got complex128"):
        softmax.forward(np.zeros((2, 3), dtype=complex))
    with pytest.raises(TypeError, match=r"x: expected a numpy.ndarray of float32 or float64, got list"):
        softmax.forward([1.0, 2.0])
    with pytest.raises(ValueError, match=r"axis: expected an int in \[-2, 1\] for a 2-d input, got 2"):
        softmax.forward(x, axis=2)
    with pytest.raises(TypeError, match=r"axis: expected an int, got float"):
        softmax.forward(x, axis=1.0)
    _, cache = softmax.forward(x)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 3\), got \(3,\)"):
        softmax.backward(np.zeros(3), cache)
    with pytest.raises(TypeError, match=r"dy: expected dtype float64 \(that of the forward pass\), got float32"):
        softmax.backward(np.zeros((2, 3), dtype=np.float32), cache)
