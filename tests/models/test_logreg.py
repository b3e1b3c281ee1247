"""Multinomial logistic regression (reference/models/logreg.py): sparse features, gradients, fit, bad inputs."""
import numpy as np
import pytest
import torch

from reference.gradcheck import check_grads, rel_error
from reference.models import logreg


def _problem(rng, N=9, T=6, D=7, K=3, dtype=np.float64):
    ids = rng.integers(0, D, size=(N, T))
    mask = rng.random((N, T)) < 0.7
    mask[0] = False                       # an empty row: no words at all
    X = logreg.bag_of_words(ids, mask, D, dtype=dtype)
    W = rng.standard_normal((D, K)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    y = rng.integers(0, K, size=N)
    return ids, mask, X, W, b, y


def test_bag_of_words_counts_real_tokens_and_forgets_order(rng):
    ids = np.array([[3, 1, 3, 0], [2, 2, 2, 2]])
    mask = np.array([[True, True, True, False], [False, False, False, False]])
    X = logreg.bag_of_words(ids, mask, 5)
    assert X.dense().tolist() == [[0, 1, 0, 2, 0], [0, 0, 0, 0, 0]]
    ids, mask, X, *_ = _problem(rng)
    rev = logreg.bag_of_words(ids[:, ::-1].copy(), mask[:, ::-1].copy(), 7)
    assert np.array_equal(X.dense(), rev.dense())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_products_equal_dense_ones(dtype, rng):
    _, _, X, W, b, _ = _problem(rng, dtype=dtype)
    G = rng.standard_normal((X.shape[0], 3)).astype(dtype)
    Xd = X.dense()
    logits, cache = logreg.forward(X, W, b)
    logits_d, cache_d = logreg.forward(Xd, W, b)
    assert logits.dtype == dtype and logits.shape == (9, 3)
    # the same sums in another order: float32 rounding (1e-7 relative) times a few terms
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert rel_error(logits, logits_d) < tol
    for g, g_d in zip(logreg.backward(G, cache), logreg.backward(G, cache_d)):
        assert g.dtype == dtype and rel_error(g, g_d) < tol


def test_gradients_match_finite_differences(rng):
    _, _, X, W, b, y = _problem(rng)
    for l2 in (0.0, 0.3):
        _, dW, db = logreg.loss_and_grad(W, b, X, y, l2)
        check_grads(lambda: logreg.loss_and_grad(W, b, X, y, l2)[0], {"W": W, "b": b}, {"W": dW, "b": db})


def test_backward_with_random_upstream_matches_finite_differences(rng):
    _, _, X, W, b, _ = _problem(rng)
    logits, cache = logreg.forward(X, W, b)
    dlogits = rng.standard_normal(logits.shape)
    dW, db = logreg.backward(dlogits, cache)
    check_grads(lambda: float(np.sum(logreg.forward(X, W, b)[0] * dlogits)), {"W": W, "b": b},
                {"W": dW, "b": db})


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_loss_and_gradient_match_torch(dtype, tol, rng):
    # float64: the same arithmetic, only summation order differs (1e-12); float32: a few roundings of 6e-8 each
    # in sums of ~10 terms, amplified by cancellation in p - onehot: 2e-5 relative leaves room for that only.
    _, _, X, W, b, y = _problem(rng, dtype=dtype)
    l2 = 0.1
    loss, dW, db = logreg.loss_and_grad(W, b, X, y, l2)
    Wt = torch.tensor(W, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(torch.tensor(X.dense()) @ Wt + bt, torch.tensor(y)) \
        + 0.5 * l2 * (Wt ** 2).sum()
    lt.backward()
    assert abs(loss - lt.item()) <= tol * abs(lt.item())
    assert rel_error(dW, Wt.grad.numpy()) < tol and rel_error(db, bt.grad.numpy()) < tol
    assert dW.dtype == dtype and db.dtype == dtype


def test_fit_reaches_the_regularised_minimum(rng):
    # The loss is strictly convex for l2 > 0: torch's L-BFGS, run to a 1e-12 gradient, finds the one minimum.
    # Full-batch Adam with a cosine-decayed step from 0 must reach it: loss within 1e-9, weights within 1e-4
    # (measured: 5e-14 and 2e-6 at l2 = 0.01).
    N, D, K, l2 = 60, 12, 3, 1e-2
    X = rng.poisson(0.5, (N, D)).astype(np.float64)
    y = rng.integers(0, K, N)
    W, b, losses = logreg.fit(X, y, K, l2=l2, steps=300, lr=0.1)
    Wt = torch.zeros(D, K, dtype=torch.float64, requires_grad=True)
    bt = torch.zeros(K, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([Wt, bt], max_iter=2000, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")
    Xt, yt = torch.tensor(X), torch.tensor(y)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Xt @ Wt + bt, yt) + 0.5 * l2 * (Wt ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    best = closure().item()
    final = logreg.loss_and_grad(W, b, X, y, l2)[0]
    assert final - best < 1e-9
    assert np.abs(W - Wt.detach().numpy()).max() < 1e-4
    assert losses[0] == pytest.approx(np.log(K))          # W = 0, b = 0: every class at 1/K


def test_fit_learns_a_separable_problem(rng):
    # word 1 only in class 0, word 2 only in class 1, plus shared noise words: a bag of words separates them
    N, T, D = 40, 5, 8
    y = rng.integers(0, 2, N)
    ids = rng.integers(3, D, size=(N, T))
    ids[:, 2] = np.where(y == 0, 1, 2)
    X = logreg.bag_of_words(ids, np.ones((N, T), bool), D)
    W, b, _ = logreg.fit(X, y, 2, l2=1e-3, steps=200)
    assert W.dtype == np.float32
    assert np.array_equal(logreg.predict(X, W, b), y)


def test_bad_inputs(rng):
    _, _, X, W, b, y = _problem(rng)
    with pytest.raises(ValueError, match="W: expected shape"):
        logreg.forward(X, W[:3], b)
    with pytest.raises(TypeError, match="one float dtype"):
        logreg.forward(X, W.astype(np.float32), b)
    with pytest.raises(ValueError, match="b: expected shape"):
        logreg.forward(X, W, b[:2])
    with pytest.raises(ValueError, match=r"ids: expected ids in \[0, 4\)"):
        logreg.bag_of_words(np.array([[5]]), np.array([[True]]), 4)
    with pytest.raises(TypeError, match="mask: expected a boolean"):
        logreg.bag_of_words(np.array([[1]]), np.array([[1]]), 4)
    with pytest.raises(ValueError, match=r"y: expected classes in \[0, 3\)"):
        logreg.fit(X, y + 3, 3)
    with pytest.raises(ValueError, match="l2: expected a finite number >= 0"):
        logreg.loss_and_grad(W, b, X, y, -1.0)
    with pytest.raises(ValueError, match="n_classes: expected an int >= 2"):
        logreg.fit(X, y, 1)
