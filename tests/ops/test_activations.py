"""reference/ops/activations.py: ReLU and GELU against finite differences, torch autograd, math.erfc and bad inputs."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference.gradcheck import check_grads
from reference import _threads
from reference.ops import activations

# float64 vs torch: torch's gelu uses std::erf (correctly rounded to ~1 ulp); ours is ~2e-15 absolute in Phi,
# so forward and gradient agree to a few 1e-15 relative to their largest entry. 1e-12 keeps a 100x margin.
TOL64 = 1e-12
# float32 vs torch float32: both round each step to float32 (eps 1.2e-7) and torch's float32 erf is itself an
# approximation of ~1e-7; a few steps give a few 1e-7. 1e-5 is well below any real error (a wrong constant errs 1e-2).
TOL32 = 1e-5

KINDS = ["relu", "gelu", "gelu_tanh"]


def err_vs_torch(ours_, torch_, scale_from):
    """max |ours - torch| on the scale of the inputs: torch forms 1 + erf(x / sqrt 2), which cancels for negative x
    and leaves an absolute error of about |x| * eps, so a tiny output (a single x = -4 gives y = -1e-4) must not be
    judged relative to itself. Our Phi(-|x|) has no such cancellation (see test_normal_cdf_matches_math_erfc)."""
    if ours_.size == 0:
        return 0.0
    scale = max(np.abs(torch_).max(), np.abs(scale_from).max(), 1e-300)
    return float(np.abs(ours_.astype(np.float64) - torch_).max() / scale)


def ours(kind, x, dy):
    if kind == "relu":
        y, cache = activations.relu_forward(x)
        return y, activations.relu_backward(dy, cache)
    y, cache = activations.gelu_forward(x, "none" if kind == "gelu" else "tanh")
    return y, activations.gelu_backward(dy, cache)


def theirs(kind, x, dy):
    xt = torch.tensor(x, requires_grad=True)
    if kind == "relu":
        yt = torch.relu(xt)
    else:
        yt = torch.nn.functional.gelu(xt, approximate="none" if kind == "gelu" else "tanh")
    yt.backward(torch.tensor(dy))
    return yt.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("kind", KINDS)
def test_activation_matches_finite_differences(kind, rng):
    x = rng.standard_normal((3, 7)) * 2
    x[np.abs(x) < 1e-3] = 0.5                 # ReLU has a kink at 0: keep central differences off it
    dy = rng.standard_normal(x.shape)

    def loss():
        return float(np.sum(dy * ours(kind, x, dy)[0]))

    check_grads(loss, {"x": x}, {"x": ours(kind, x, dy)[1]})


@pytest.mark.parametrize("dtype, tol", [(np.float64, TOL64), (np.float32, TOL32)])
@pytest.mark.parametrize("kind", KINDS)
def test_activation_matches_torch(kind, dtype, tol, rng):
    x = np.concatenate([rng.standard_normal(1999) * 3, np.linspace(-12, 12, 2201)]).astype(dtype).reshape(2, -1, 7)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, dx = ours(kind, x, dy)
    y_t, dx_t = theirs(kind, x, dy)
    assert y.dtype == dtype and dx.dtype == dtype and y.shape == x.shape and dx.shape == x.shape
    assert err_vs_torch(y, y_t, x) < tol
    assert err_vs_torch(dx, dx_t, dy) < tol


def test_normal_cdf_matches_math_erfc():
    x = np.concatenate([np.linspace(-37, 37, 7401), np.random.default_rng(1).standard_normal(5000) * 4])
    exact = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    P = activations._normal_cdf(x)
    # float64: the interpolant's own error is ~2e-15 absolute (see the module docstring); 1e-14 gives 5x margin.
    assert np.abs(P - exact).max() < 1e-14
    # the left tail keeps relative accuracy down to Phi(-30) ~ 5e-198: exp(-x^2/2) with x^2 ~ 900 carries
    # ~900 * 1.1e-16 = 1e-13 relative error from rounding x^2, so 1e-12 is the right bound.
    tail = (x < 0) & (x > -30)
    assert (np.abs(P - exact) / exact)[tail].max() < 1e-12
    P32 = activations._normal_cdf(x.astype(np.float32))
    # float32: the degree-10 interpolant is ~1e-9 off; rounding to float32 near 1 costs 6e-8 per step.
    assert P32.dtype == np.float32 and np.abs(P32 - exact).max() < 1e-6


@given(shape=st.lists(st.integers(0, 6), min_size=0, max_size=3), seed=st.integers(0, 2**16),
       kind=st.sampled_from(KINDS))
def test_activation_random_shapes_match_torch(shape, seed, kind):
    rng = np.random.default_rng(seed)
    x = np.asarray(rng.standard_normal(shape) * 4)
    dy = np.asarray(rng.standard_normal(shape))
    y, dx = ours(kind, x, dy)
    y_t, dx_t = theirs(kind, x, dy)
    assert y.shape == x.shape and dx.shape == x.shape
    assert err_vs_torch(y, y_t, x) < TOL64 and err_vs_torch(dx, dx_t, dy) < TOL64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_activation_extremes_are_finite(kind, dtype):
    x = np.array([-1e4, -40.0, -5.0, 0.0, 5.0, 40.0, 1e4], dtype=dtype)
    y, dx = ours(kind, x, np.ones_like(x))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    np.testing.assert_array_equal(y[[0, -1]], np.array([0.0, 1e4], dtype=dtype))     # -> 0 and -> x
    np.testing.assert_array_equal(dx[[0, -1]], np.array([0.0, 1.0], dtype=dtype))


def test_relu_gradient_at_zero_is_zero():
    x = np.zeros(3)
    assert np.all(ours("relu", x, np.ones(3))[1] == 0)        # PyTorch's convention
    assert np.all(theirs("relu", x, np.ones(3))[1] == 0)


def test_activation_bad_inputs():
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got int64"):
        activations.relu_forward(np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got complex128"):
        activations.gelu_forward(np.zeros(3, dtype=complex))
    with pytest.raises(TypeError, match=r"x: expected a numpy.ndarray of float32 or float64, got float"):
        activations.gelu_forward(1.0)
    with pytest.raises(ValueError, match=r"approximate: expected one of 'none', 'tanh', got 'erf'"):
        activations.gelu_forward(np.zeros(3), approximate="erf")
    _, c_relu = activations.relu_forward(np.zeros((2, 3)))
    _, c_gelu = activations.gelu_forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 3\), got \(3, 2\)"):
        activations.relu_backward(np.zeros((3, 2)), c_relu)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 3\), got \(3,\)"):
        activations.gelu_backward(np.zeros(3), c_gelu)
    with pytest.raises(TypeError, match=r"dy: expected dtype float64 \(that of the forward pass\), got float32"):
        activations.relu_backward(np.zeros((2, 3), dtype=np.float32), c_relu)
    with pytest.raises(TypeError, match=r"dy: expected dtype float64 \(that of the forward pass\), got float32"):
        activations.gelu_backward(np.zeros((2, 3), dtype=np.float32), c_gelu)
    with pytest.raises(TypeError, match=r"dy: expected dtype float32 or float64, got int64"):
        activations.gelu_backward(np.zeros((2, 3), dtype=np.int64), c_gelu)


# gelu_forward_fast/gelu_backward_fast against the readable pair: the same formulas with the products grouped
# differently (x (1 + c x^2) against x + c x^3, say), so in float64 they agree to a few ulps of outputs of size
# |x| at most: 1e-14 relative to max(|x|, 1) leaves room and no more; NaN where the readable one gives NaN.
@given(shape=st.lists(st.integers(0, 6), min_size=0, max_size=3), seed=st.integers(0, 2**16),
       kind=st.sampled_from(["gelu", "gelu_tanh"]))
def test_gelu_fast_equals_readable(shape, seed, kind):
    rng = np.random.default_rng(seed)
    x = np.asarray(4 * rng.standard_normal(shape))
    dy = np.asarray(rng.standard_normal(shape))
    approximate = "none" if kind == "gelu" else "tanh"
    y, cache = activations.gelu_forward(x, approximate)
    y_f, cache_f = activations.gelu_forward_fast(x, approximate)
    dx, dx_f = activations.gelu_backward(dy, cache), activations.gelu_backward_fast(dy, cache_f)
    for a, b in ((y_f, y), (dx_f, dx)):
        assert a.shape == b.shape == x.shape and a.dtype == b.dtype
        assert np.abs(a - b).max(initial=0) <= 1e-14 * max(1.0, np.abs(x).max(initial=0))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_fast_on_extremes_and_threads(approximate, dtype, rng, monkeypatch):
    # 3 chunks of _CHUNK elements over 1, 2 and 3 threads give the same bits; extremes, NaN and inf agree with the
    # readable pair (float32: a few float32 ulps of |x|, 1e-6 relative).
    monkeypatch.setattr(activations, "_MIN_PARALLEL", 0)
    x = (6 * rng.standard_normal(3 * activations._CHUNK - 5)).astype(dtype)
    x[:6] = [-1e4, -40.0, 40.0, 1e4, np.nan, np.inf]
    dy = rng.standard_normal(x.shape).astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):          # x^3 overflows, inf * 0 at x = inf
        y, cache = activations.gelu_forward(x, approximate)
        dx = activations.gelu_backward(dy, cache)
    runs = []
    for workers in (1, 2, 3):
        with _threads.using(workers), np.errstate(invalid="ignore"):
            y_f, cache_f = activations.gelu_forward_fast(x, approximate)
            runs.append((y_f, activations.gelu_backward_fast(dy, cache_f)))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for a, b in zip(runs[0], (y, dx)):
        finite = np.isfinite(b)
        np.testing.assert_array_equal(a[~finite], b[~finite])      # the same NaN and inf
        assert np.abs(a[finite] - b[finite]).max() <= tol * np.abs(x[np.isfinite(x)]).max()


def test_activation_table_names_every_activation():
    assert tuple(activations.ACTIVATIONS) == ("relu", "gelu", "gelu_tanh")
    assert activations.get("gelu_tanh").forward_fast.keywords == {"approximate": "tanh"}
    with pytest.raises(TypeError, match=r"activation: expected one of 'relu', 'gelu', 'gelu_tanh' \(a str\), got list"):
        activations.get(["relu"])
