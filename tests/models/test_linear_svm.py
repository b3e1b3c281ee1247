"""reference/models/linear_svm.py: the hinge loss against PyTorch's multi_margin_loss, subgradients against finite
differences away from the kinks, the binary case, the fit, and bad inputs."""
import numpy as np
import pytest
import torch

from reference.gradcheck import check_grads, rel_error
from reference.models import linear_svm, logreg


def _away_from_kinks(logits, y, gap=1e-3):
    """True when no margin 1 + z_k - z_y is within ``gap`` of 0: finite differences of step 1e-6 stay on one side."""
    m = 1 + logits - logits[np.arange(len(y)), y][:, None]
    m[np.arange(len(y)), y] = 1.0
    return np.abs(m).min() > gap


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_hinge_matches_torch_multi_margin_loss(dtype, tol, rng):
    # torch divides each example's sum by the number of classes K; ours is K times it. float64: the same sums in
    # another order (a few ulps); float32: a mean of N sums of K terms, each a few ulps (1.2e-7) off
    N, K = 32, 5
    logits = (2 * rng.standard_normal((N, K))).astype(dtype)
    y = rng.integers(0, K, size=N)
    loss, cache = linear_svm.hinge_forward(logits, y)
    dz = linear_svm.hinge_backward(1.0, cache)
    zt = torch.tensor(logits, requires_grad=True)
    lt = torch.nn.functional.multi_margin_loss(zt, torch.tensor(y), p=1, margin=1.0)
    lt.backward()
    assert loss.dtype == dtype and dz.dtype == dtype
    assert rel_error(loss, K * lt.item()) < tol
    assert rel_error(dz, K * zt.grad.numpy()) < tol


def test_svm_subgradient_matches_finite_differences_away_from_kinks(rng):
    D, K, N = 6, 4, 20
    X = rng.standard_normal((N, D))
    y = rng.integers(0, K, size=N)
    W, b = rng.standard_normal((D, K)), rng.standard_normal(K)
    assert _away_from_kinks(X @ W + b, y)             # the hinge is linear around this point: FD are exact there
    _, dW, db = linear_svm.loss_and_grad(W, b, X, y, 0.1)
    check_grads(lambda: linear_svm.loss_and_grad(W, b, X, y, 0.1)[0], {"W": W, "b": b}, {"W": dW, "b": db})


def test_sparse_and_dense_features_give_the_same_loss(rng):
    ids = rng.integers(0, 30, size=(12, 7))
    mask = rng.random((12, 7)) < 0.8
    Xs = logreg.bag_of_words(ids, mask, 30, dtype=np.float64)
    y = rng.integers(0, 3, size=12)
    W, b = rng.standard_normal((30, 3)), rng.standard_normal(3)
    a = linear_svm.loss_and_grad(W, b, Xs, y, 1e-2)
    d = linear_svm.loss_and_grad(W, b, Xs.dense(), y, 1e-2)
    assert a[0] == pytest.approx(d[0], rel=1e-13)     # the same sums in another order
    np.testing.assert_allclose(a[1], d[1], rtol=0, atol=1e-13)


def test_binary_case_is_the_classic_hinge(rng):
    # with two classes and z_0 fixed at 0, the loss is max(0, 1 - s f) with s = +-1 and f = z_1
    f = rng.standard_normal(50) * 2
    y = rng.integers(0, 2, size=50)
    logits = np.stack([np.zeros(50), f], axis=1)
    loss, _ = linear_svm.hinge_forward(logits, y)
    s = 2 * y - 1
    assert float(loss) == pytest.approx(np.maximum(0, 1 - s * f).mean(), rel=1e-14)


def test_met_margins_contribute_nothing():
    logits = np.array([[3.0, 1.0, 0.5], [0.0, 0.2, 0.0]])   # row 0: every margin met; row 1: two active
    y = np.array([0, 1])
    loss, cache = linear_svm.hinge_forward(logits, y)
    assert float(loss) == pytest.approx((0.8 + 0.8) / 2)
    dz = linear_svm.hinge_backward(1.0, cache)
    np.testing.assert_array_equal(dz[0], 0)                 # not a support vector: no gradient
    np.testing.assert_allclose(dz[1], [0.5, -1.0, 0.5])


def test_fit_separates_separable_data_with_a_margin(rng):
    # two well-separated clouds: the fitted SVM classifies all of them, with every margin met or nearly so
    X = np.concatenate([rng.standard_normal((40, 2)) + 4, rng.standard_normal((40, 2)) - 4])
    y = np.repeat([0, 1], 40)
    W, b, losses = linear_svm.fit(X, y, 2, l2=1e-3, steps=300, lr=0.1)
    assert np.all(linear_svm.predict(X, W, b) == y)
    assert losses[-1] < 0.05 * losses[0]


def test_linear_svm_bad_inputs():
    with pytest.raises(ValueError, match=r"y: expected classes in \[0, 3\)"):
        linear_svm.hinge_forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="l2: expected a finite number >= 0"):
        linear_svm.loss_and_grad(np.zeros((2, 3)), np.zeros(3), np.zeros((4, 2)), np.zeros(4, np.int64), -1)
    with pytest.raises(TypeError, match="logits: expected dtype float32 or float64"):
        linear_svm.hinge_forward(np.zeros((2, 3), np.int64), np.array([0, 1]))
    with pytest.raises(ValueError, match="n_classes: expected an int >= 2"):
        linear_svm.fit(np.zeros((4, 2)), np.zeros(4, np.int64), 1)
