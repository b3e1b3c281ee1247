"""reference/ops/dropout.py: finite differences, PyTorch with the same mask, the statistics of the mask, purity."""
import numpy as np
import pytest
import torch

from reference.gradcheck import check_grads
from reference.ops import dropout


@pytest.mark.parametrize("shape, p", [((5, 7), 0.1), ((2, 3, 4), 0.5), ((3,), 0.0), ((2, 2), 1.0)])
def test_dropout_matches_finite_differences(shape, p, rng):
    x = rng.standard_normal(shape)
    mask = rng.random(shape) >= p
    dy = rng.standard_normal(shape)                  # random upstream gradient
    _, cache = dropout.forward(x, p, mask=mask)
    # y is linear in x for a fixed mask: central differences are exact up to round-off (~1e-10)
    check_grads(lambda: float((dropout.forward(x, p, mask=mask)[0] * dy).sum()), {"x": x},
                {"x": dropout.backward(dy, cache)})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.1, 0.3])
def test_dropout_matches_torch_with_the_same_mask(dtype, p, rng):
    # torch draws its own mask; with the mask replayed, F.dropout's formula is x * mask / (1 - p), which we
    # write in torch and differentiate with autograd
    x = rng.standard_normal((4, 16)).astype(dtype)
    mask = rng.random(x.shape) >= p
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, cache = dropout.forward(x, p, mask=mask)
    xt = torch.tensor(x, requires_grad=True)
    yt = xt * torch.tensor(mask, dtype=xt.dtype) / (1 - p)
    yt.backward(torch.tensor(dy))
    # one multiply by a rounded 1/(1-p) against torch's division: 1 ulp apart at most
    tol = 1e-6 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=0)
    np.testing.assert_allclose(dropout.backward(dy, cache), xt.grad.numpy(), rtol=tol, atol=0)
    assert y.dtype == dtype


def test_dropout_keeps_the_mean_and_drops_a_fraction_p():
    rng = np.random.default_rng(1)
    p, n = 0.3, 200_000
    x = np.ones(n)
    y, (mask, _) = dropout.forward(x, p, rng=rng)
    # the dropped fraction is a binomial mean: std sqrt(p (1 - p) / n) = 1.0e-3, and 5 std bounds a fair draw
    assert abs((1 - mask.mean()) - p) < 5e-3
    # E[y] = x: the mean of y has std sqrt(p / (1 - p) / n) = 1.5e-3 around 1
    assert abs(y.mean() - 1) < 8e-3
    assert set(np.unique(y)) == {0.0, 1 / (1 - p)}


def test_dropout_is_a_pure_function(rng):
    x = rng.standard_normal((3, 5))
    x_before = x.copy()
    y1, _ = dropout.forward(x, 0.5, rng=np.random.default_rng(7))
    y2, _ = dropout.forward(x, 0.5, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(y1, y2)           # the same generator state, the same mask
    np.testing.assert_array_equal(x, x_before)       # the input is never written to


def test_dropout_at_evaluation_is_the_identity_and_training_is_not(rng):
    x = rng.standard_normal((64, 32))
    y_eval, cache = dropout.forward(x, 0.1, training=False)
    np.testing.assert_array_equal(y_eval, x)
    np.testing.assert_array_equal(dropout.backward(np.ones_like(x), cache), np.ones_like(x))
    y_train, _ = dropout.forward(x, 0.1, rng=rng)
    # ||y - x||^2 / ||x||^2 has expectation p / (1 - p) = 0.11 per entry; far from 0
    assert np.linalg.norm(y_train - x) / np.linalg.norm(x) > 0.2


def test_dropout_nan_and_inf_propagate_as_in_torch():
    x = np.array([np.nan, np.inf, np.nan, -np.inf, 1.0])
    mask = np.array([True, True, False, False, False])
    with np.errstate(invalid="ignore"):                # inf * 0 = NaN is the point of this test
        y, _ = dropout.forward(x, 0.5, mask=mask)
        y1, _ = dropout.forward(x, 1.0, mask=np.zeros(5, bool))
    yt = torch.tensor(x) * torch.tensor(mask, dtype=torch.float64) / 0.5
    np.testing.assert_array_equal(y, yt.numpy())     # kept NaN and inf stay; dropped NaN and inf become NaN; 1 -> 0
    t1 = torch.nn.functional.dropout(torch.tensor(x), p=1.0)
    np.testing.assert_array_equal(y1, t1.numpy())


def test_dropout_bad_inputs(rng):
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"p: expected a float in \[0, 1\], got 1.5"):
        dropout.forward(x, 1.5, rng=rng)
    with pytest.raises(ValueError, match="exactly one of rng"):
        dropout.forward(x, 0.5)
    with pytest.raises(ValueError, match="exactly one of rng"):
        dropout.forward(x, 0.5, rng=rng, mask=np.ones((2, 3), bool))
    with pytest.raises(TypeError, match="mask: expected a boolean numpy.ndarray"):
        dropout.forward(x, 0.5, mask=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"mask: expected shape \(2, 3\), got \(3, 2\)"):
        dropout.forward(x, 0.5, mask=np.ones((3, 2), bool))
    with pytest.raises(TypeError, match="x: expected dtype float32 or float64, got int64"):
        dropout.forward(np.zeros(3, np.int64), 0.5, rng=rng)
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        dropout.forward(x, 0.5, rng=0)
    _, cache = dropout.forward(x, 0.5, rng=rng)
    with pytest.raises(TypeError, match="dy: expected dtype float64"):
        dropout.backward(np.zeros((2, 3), np.float32), cache)
