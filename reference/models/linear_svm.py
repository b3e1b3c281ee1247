r"""A linear support vector machine on a bag of words: the material's §2.4 names SVMs beside logistic regression.

The same linear scores as :mod:`reference.models.logreg`, :math:`z = X W + b`, trained with the multiclass hinge loss
(Weston & Watkins 1999; the SVM loss of CS231n) instead of the cross-entropy:

.. math::

    L(W, b) = \frac{1}{N} \sum_n \sum_{k \ne y_n} \max\left(0,\ 1 + z_{n,k} - z_{n,y_n}\right)
              + \frac{\lambda}{2} \lVert W \rVert_F^2 .

Each wrong class k is penalised only while its score comes within a margin of 1 of the true class's; once every
margin is met the example contributes nothing (it is not a support vector), where the cross-entropy keeps pushing.
With two classes and :math:`z_0 = 0` this is the classic :math:`\max(0, 1 - y f(x))` with labels :math:`y = \pm 1`.
The loss is convex, and the :math:`\lambda` term is what maximises the margin.

The hinge has a kink where a margin is exactly met, so the gradient is a *subgradient*: with
:math:`a_{n,k} = [1 + z_{n,k} - z_{n,y_n} > 0]` for :math:`k \ne y_n` (the active margins) and :math:`a_{n,y_n} = 0`,

.. math::

    \frac{\partial L}{\partial z_{n,k}} = \frac{1}{N}\left(a_{n,k} - [k = y_n] \sum_j a_{n,j}\right), \qquad
    \frac{\partial L}{\partial W} = X^\top \frac{\partial L}{\partial z} + \lambda W, \qquad
    \frac{\partial L}{\partial b} = \sum_n \frac{\partial L}{\partial z_n} .

At a kink (a margin exactly 0) we take the inactive side, :math:`a = 0`, as PyTorch's ``multi_margin_loss`` does;
any value in [0, 1] there is a valid subgradient. PyTorch's loss divides each example's sum by the number of
classes K: ours is K times it (the tests check both, and the finite differences away from the kinks).

:func:`fit` minimises it like :func:`reference.models.logreg.fit` (full-batch Adam, cosine-decayed step, from zero),
so chapter 5 can put the two side by side on the same features.
"""
import math

import numpy as np

from reference._checks import check_float, check_int, check_shape
from reference.models import logreg


def hinge_forward(logits, y):
    r"""Mean multiclass hinge loss :math:`\frac1N \sum_n \sum_{k \ne y_n} \max(0, 1 + z_{n,k} - z_{n,y_n})`.

    Parameters
    ----------
    logits : ndarray (N, K), float32 or float64
    y : ndarray (N,) int, classes in ``[0, K)``

    Returns
    -------
    loss : 0-d ndarray of the logits' dtype (0 for N = 0)
    cache : ``(active, N)`` for :func:`hinge_backward`; ``active`` (N, K) bool, the margins not yet met
    """
    check_float("logits", logits)
    check_shape("logits", logits, (None, None))
    check_int("y", y)
    check_shape("y", y, (logits.shape[0],))
    N, K = logits.shape
    if y.size and (y.min() < 0 or y.max() >= K):
        raise ValueError(f"y: expected classes in [0, {K}), got values in [{y.min()}, {y.max()}]")
    rows = np.arange(N)
    z_true = logits[rows, y][:, None]                                  # (N, 1)
    margins = 1 + logits - z_true                                      # (N, K); 1 at the true class itself
    margins[rows, y] = 0                                               # the true class is not a margin
    active = margins > 0                                               # (N, K)
    loss = np.where(active, margins, 0).sum(dtype=logits.dtype) / logits.dtype.type(max(N, 1))
    return np.asarray(loss, dtype=logits.dtype), (active, y, N, logits.dtype)


def hinge_backward(dloss, cache):
    r"""Subgradient of :func:`hinge_forward` with respect to the logits (inactive side at the kinks).

    Returns
    -------
    dlogits : ndarray (N, K)
    """
    active, y, N, dtype = cache
    # forward: L = sum_n sum_{k != y_n} max(0, 1 + z_nk - z_ny) / N
    dz = active.astype(dtype)                                          # (N, K) +1 per active margin
    dz[np.arange(N), y] = -active.sum(axis=1)                          # the true class: -1 per active margin
    return dz * (dtype.type(dloss) / dtype.type(max(N, 1)))


def loss_and_grad(W, b, X, y, l2):
    r"""The penalised hinge loss :math:`L(W, b)` and its subgradients (module docstring).

    Parameters
    ----------
    W : ndarray (D, K);  b : ndarray (K,)
    X : logreg.SparseRows or ndarray (N, D)
    y : ndarray (N,) int
    l2 : float >= 0, :math:`\lambda`

    Returns
    -------
    loss : float;  dW : ndarray (D, K);  db : ndarray (K,)
    """
    l2 = _nonnegative("l2", l2)
    logits, cache = logreg.forward(X, W, b)                            # (N, K)
    hinge, h_cache = hinge_forward(logits, y)
    # forward: L = hinge(X W + b, y) + (l2 / 2) ||W||^2
    dW, db = logreg.backward(hinge_backward(1.0, h_cache), cache)
    dW += W * l2
    return float(hinge) + 0.5 * l2 * float(np.vdot(W, W)), dW, db


def fit(X, y, n_classes, l2=1e-3, steps=300, lr=0.1):
    r"""Minimise :math:`L(W, b)` by full-batch Adam with a cosine-decayed step from :math:`W = 0, b = 0`.

    :func:`reference.models.logreg.fit` with this module's loss, so that the two models differ only in their loss.

    Returns
    -------
    W : ndarray (D, K);  b : ndarray (K,);  losses : list of float, the loss before each step
    """
    return logreg.fit(X, y, n_classes, l2, steps, lr, objective=loss_and_grad)


def predict(X, W, b):
    """The class with the largest score, ``argmax(X W + b)``, shape (N,) int64."""
    return logreg.predict(X, W, b)


def _nonnegative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)
