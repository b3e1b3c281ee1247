"""reference/ops/ffn.py against finite differences, torch autograd, random shapes and bad inputs."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference.gradcheck import check_grads, rel_error
from reference import _threads
from reference.ops import ffn

ACTS = ["relu", "gelu", "gelu_tanh"]
TORCH_ACT = {
    "relu": torch.relu,
    "gelu": lambda a: torch.nn.functional.gelu(a, approximate="none"),
    "gelu_tanh": lambda a: torch.nn.functional.gelu(a, approximate="tanh"),
}
# float64 vs torch: two matrix products (summation order differs, ~d ulps) and an activation (~1e-15 for GELU,
# see test_activations); 1e-12 is a 100x margin.
TOL64 = 1e-12
# float32 vs torch float32: sums of d_model = 32 and d_ff = 64 float32 products, ~sqrt(d) * eps ~ 1e-6 each, through
# two layers and the activation's own ~1e-7; 1e-5 relative to the largest entry is right, a wrong term errs O(1).
TOL32 = 1e-5


def params(rng, d_model, d_ff, dtype=np.float64):
    W1 = rng.standard_normal((d_model, d_ff)) / np.sqrt(d_model)
    W2 = rng.standard_normal((d_ff, d_model)) / np.sqrt(d_ff)
    return [a.astype(dtype) for a in (W1, rng.standard_normal(d_ff) * 0.5, W2, rng.standard_normal(d_model) * 0.5)]


def torch_ffn(x, W1, b1, W2, b2, activation, dy):
    ts = [torch.tensor(a, requires_grad=True) for a in (x, W1, b1, W2, b2)]
    xt, W1t, b1t, W2t, b2t = ts
    yt = TORCH_ACT[activation](xt @ W1t + b1t) @ W2t + b2t
    yt.backward(torch.tensor(dy))
    return (yt.detach().numpy(),) + tuple(t.grad.numpy() for t in ts)


@pytest.mark.parametrize("activation", ACTS)
def test_ffn_matches_finite_differences(activation, rng):
    x = rng.standard_normal((2, 3, 4))
    W1, b1, W2, b2 = params(rng, 4, 6)
    dy = rng.standard_normal(x.shape)

    def loss():
        return float(np.sum(dy * ffn.forward(x, W1, b1, W2, b2, activation)[0]))

    y, cache = ffn.forward(x, W1, b1, W2, b2, activation)
    a = x @ W1 + b1
    assert np.abs(a).min() > 1e-4           # ReLU's kink: central differences need |a| > h = 1e-6
    dx, dW1, db1, dW2, db2 = ffn.backward(dy, cache)
    check_grads(loss, {"x": x, "W1": W1, "b1": b1, "W2": W2, "b2": b2},
                {"x": dx, "W1": dW1, "b1": db1, "W2": dW2, "b2": db2})


@pytest.mark.parametrize("dtype, tol", [(np.float64, TOL64), (np.float32, TOL32)])
@pytest.mark.parametrize("activation", ACTS)
def test_ffn_matches_torch(activation, dtype, tol, rng):
    x = rng.standard_normal((3, 10, 32)).astype(dtype)
    W1, b1, W2, b2 = params(rng, 32, 64, dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, cache = ffn.forward(x, W1, b1, W2, b2, activation)
    ours = (y,) + ffn.backward(dy, cache)
    theirs = torch_ffn(x, W1, b1, W2, b2, activation, dy)
    for a, b in zip(ours, theirs):
        assert a.dtype == dtype and a.shape == b.shape
        assert rel_error(a, b) < tol


@given(lead=st.lists(st.integers(0, 3), min_size=0, max_size=2), d_model=st.integers(1, 5), d_ff=st.integers(1, 7),
       activation=st.sampled_from(ACTS), seed=st.integers(0, 2**16))
def test_ffn_random_shapes_match_torch(lead, d_model, d_ff, activation, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*lead, d_model))
    W1, b1, W2, b2 = params(rng, d_model, d_ff)
    dy = rng.standard_normal(x.shape)
    y, cache = ffn.forward(x, W1, b1, W2, b2, activation)
    ours = (y,) + ffn.backward(dy, cache)
    theirs = torch_ffn(x, W1, b1, W2, b2, activation, dy)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        # on the scale of the O(1) inputs: torch's GELU cancels in 1 + erf(x/sqrt 2) for negative x
        # (see test_activations), so a tiny entry is judged against 1, not against itself
        assert np.abs(a - b).max(initial=0) <= TOL64 * max(1.0, np.abs(b).max(initial=0))


def test_ffn_without_biases(rng):
    x = rng.standard_normal((5, 4))
    W1, _, W2, _ = params(rng, 4, 8)
    dy = rng.standard_normal(x.shape)
    y, cache = ffn.forward(x, W1, None, W2, None)
    dx, dW1, db1, dW2, db2 = ffn.backward(dy, cache)
    assert db1 is None and db2 is None
    np.testing.assert_allclose(y, np.maximum(x @ W1, 0) @ W2, rtol=1e-13)


def test_ffn_bad_inputs(rng):
    x = np.zeros((2, 4))
    W1, b1, W2, b2 = params(rng, 4, 8)
    with pytest.raises(ValueError, match=r"activation: expected one of 'relu', 'gelu', 'gelu_tanh', got 'tanh'"):
        ffn.forward(x, W1, b1, W2, b2, activation="tanh")
    # a list is not a name (it used to fail inside the table lookup with "unhashable type: 'list'")
    with pytest.raises(TypeError, match=r"activation: expected one of 'relu', 'gelu', 'gelu_tanh' \(a str\), "
                                        r"got list \['relu'\]"):
        ffn.forward(x, W1, b1, W2, b2, activation=["relu"])
    with pytest.raises(ValueError, match=r"W1: expected shape \(4, \*\), got \(8, 4\)"):
        ffn.forward(x, W1.T, b1, W2, b2)
    with pytest.raises(ValueError, match=r"W2: expected shape \(8, 4\), got \(4, 8\)"):
        ffn.forward(x, W1, b1, W2.T, b2)
    with pytest.raises(ValueError, match=r"W2: expected shape \(8, 4\), got \(8, 5\)"):
        ffn.forward(x, W1, b1, np.zeros((8, 5)), b2)
    with pytest.raises(ValueError, match=r"b1: expected shape \(8,\), got \(4,\)"):
        ffn.forward(x, W1, b2, W2, b2)
    with pytest.raises(ValueError, match=r"b2: expected shape \(4,\), got \(8,\)"):
        ffn.forward(x, W1, b1, W2, b1)
    with pytest.raises(TypeError, match=r"b2: expected dtype float32 or float64, got int64"):
        ffn.forward(x, W1, b1, W2, b2.astype(np.int64))
    with pytest.raises(TypeError, match=r"expected one float dtype for all inputs, got x: float64, W1: float64, "
                                        r"b1: float64, W2: float32, b2: float64"):
        ffn.forward(x, W1, b1, W2.astype(np.float32), b2)
    with pytest.raises(TypeError, match=r"expected one float dtype for all inputs, got x: float32, W1: float64"):
        ffn.forward(x.astype(np.float32), W1, b1, W2, b2)
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or float64, got int64"):
        ffn.forward(x.astype(np.int64), W1, b1, W2, b2)
    with pytest.raises(TypeError, match=r"W1: expected dtype float32 or float64, got complex128"):
        ffn.forward(x, W1.astype(complex), b1, W2, b2)
    _, cache = ffn.forward(x, W1, b1, W2, b2)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4\), got \(2, 8\)"):
        ffn.backward(np.zeros((2, 8)), cache)


# forward_fast/backward_fast against forward/backward: the same two products (split over threads by rows and
# columns) and the fast activation (a few ulps off the readable one, see test_activations), so float64 agreement is
# ~1e-15 relative; 1e-13 allows that and nothing more.
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("workers", [1, 2])
def test_ffn_fast_equals_readable(activation, workers, rng):
    x = rng.standard_normal((3, 40, 32))
    W1, b1, W2, b2 = params(rng, 32, 64)
    dy = rng.standard_normal(x.shape)
    y, cache = ffn.forward(x, W1, b1, W2, b2, activation)
    with _threads.using(workers):
        y_f, cache_f = ffn.forward_fast(x, W1, b1, W2, b2, activation)
        fast = (y_f,) + ffn.backward_fast(dy, cache_f)
    for a, b in zip(fast, (y,) + ffn.backward(dy, cache)):
        assert a.shape == b.shape and rel_error(a, b) < 1e-13
