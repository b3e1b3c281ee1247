r"""Multinomial logistic regression on a bag of words: the "traditional" model of the material's §2.4.

For features :math:`X \in \mathbb{R}^{N \times D}` (word counts), weights :math:`W \in \mathbb{R}^{D \times K}` and
biases :math:`b \in \mathbb{R}^{K}`:

.. math::

    z = X W + b, \qquad p_n = \operatorname{softmax}(z_n), \qquad
    L(W, b) = -\frac{1}{N} \sum_n \log p_{n, y_n} + \frac{\lambda}{2} \lVert W \rVert_F^2

and its gradient, written out by hand:

.. math::

    \frac{\partial L}{\partial z} = \frac{1}{N}\left(p - \operatorname{onehot}(y)\right), \qquad
    \frac{\partial L}{\partial W} = X^\top \frac{\partial L}{\partial z} + \lambda W, \qquad
    \frac{\partial L}{\partial b} = \sum_n \frac{\partial L}{\partial z_n}

The biases are not penalised. :math:`L` is convex in :math:`(W, b)` and strictly convex in :math:`W` for
:math:`\lambda > 0`, so :func:`fit` finds the one minimum whatever the start. The model has
:math:`(D + 1) K` parameters: 10 005 for 2000 words and 5 classes.

A bag of words keeps how often each word occurs and forgets where: :func:`bag_of_words` of a sequence and of its
reversal are equal, so this model cannot learn anything that depends on word order (chapter 5).
"""
import dataclasses
import math

import numpy as np

from reference._checks import check_float, check_int, check_same_dtype, check_shape
from reference.ops import cross_entropy
from reference.training import optim


@dataclasses.dataclass(frozen=True)
class SparseRows:
    r"""A sparse matrix :math:`X \in \mathbb{R}^{N \times D}` stored by rows (the CSR layout), in plain NumPy.

    Row n holds the values ``data[indptr[n]:indptr[n+1]]`` in the columns ``indices[indptr[n]:indptr[n+1]]``;
    every other entry is 0. A verse of 25 words and a vocabulary of 2000 give at most 25 stored entries out of
    2000: the products below cost O(nnz K) instead of O(N D K).

    Attributes
    ----------
    indptr : ndarray (N + 1,) int64
    indices : ndarray (nnz,) int64
    data : ndarray (nnz,) float32 or float64
    shape : (N, D)
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: tuple

    @property
    def dtype(self):
        return self.data.dtype

    def dense(self):
        """The same matrix as a dense ndarray (N, D)."""
        X = np.zeros(self.shape, dtype=self.dtype)                                  # (N, D)
        X[self._rows(), self.indices] = self.data
        return X

    def _rows(self):
        return np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))          # (nnz,) row of each entry

    def matmul(self, W):
        """:math:`X W` for a dense ``W`` (D, K): each row sums its entries' rows of W."""
        out = np.zeros((self.shape[0], W.shape[1]), dtype=W.dtype)                 # (N, K)
        nonempty = self.indptr[1:] > self.indptr[:-1]                              # (N,)
        if nonempty.any():
            prod = self.data[:, None] * W[self.indices]                            # (nnz, K)
            out[nonempty] = np.add.reduceat(prod, self.indptr[:-1][nonempty], axis=0)
        return out

    def rmatmul(self, G):
        """:math:`X^\top G` for a dense ``G`` (N, K): entry (n, v) adds ``X[n, v] * G[n]`` to row v."""
        contrib = self.data[:, None] * G[self._rows()]                             # (nnz, K)
        out = np.empty((self.shape[1], G.shape[1]), dtype=G.dtype)                 # (D, K)
        for k in range(G.shape[1]):
            out[:, k] = np.bincount(self.indices, weights=contrib[:, k], minlength=self.shape[1])
        return out


def bag_of_words(ids, mask, n_features, dtype=np.float32):
    r"""Word counts :math:`X_{n, v} = \#\{t : \text{mask}_{n,t},\ \text{ids}_{n,t} = v\}`, stored sparse.

    Parameters
    ----------
    ids : ndarray (N, T) int
        Token ids in ``[0, n_features)``.
    mask : ndarray (N, T) bool
        True = a real token; padded positions are not counted.
    n_features : int
        D, the vocabulary size.
    dtype : float32 or float64

    Returns
    -------
    X : SparseRows (N, D)
    """
    check_int("ids", ids)
    check_shape("ids", ids, (None, None))
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise TypeError(f"mask: expected a boolean numpy.ndarray, got "
                        f"{mask.dtype if isinstance(mask, np.ndarray) else type(mask).__name__}")
    check_shape("mask", mask, ids.shape)
    if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) or n_features < 1:
        raise ValueError(f"n_features: expected a positive int, got {n_features!r}")
    real = ids[mask].astype(np.int64)                                              # (n_real,)
    if real.size and (real.min() < 0 or real.max() >= n_features):
        raise ValueError(f"ids: expected ids in [0, {n_features}) at real tokens, got values in "
                         f"[{real.min()}, {real.max()}]")
    N = ids.shape[0]
    rows = np.broadcast_to(np.arange(N)[:, None], ids.shape)[mask]                 # (n_real,)
    keys, counts = np.unique(rows * n_features + real, return_counts=True)         # sorted by row, then column
    indptr = np.zeros(N + 1, dtype=np.int64)                                        # (N + 1,)
    np.cumsum(np.bincount(keys // n_features, minlength=N), out=indptr[1:])
    return SparseRows(indptr, keys % n_features, counts.astype(dtype), (N, int(n_features)))


def _check_features(X):
    if isinstance(X, SparseRows):
        check_float("X.data", X.data)
        return
    check_float("X", X)
    check_shape("X", X, (None, None))


def _check_params(X, W, b):
    _check_features(X)
    check_float("W", W)
    check_shape("W", W, (X.shape[1], None))
    check_float("b", b)
    check_shape("b", b, (W.shape[1],))
    check_same_dtype(X=np.empty(0, X.dtype), W=W, b=b)


def forward(X, W, b):
    r"""Logits :math:`z = X W + b`.

    Parameters
    ----------
    X : SparseRows or ndarray (N, D)
    W : ndarray (D, K)
    b : ndarray (K,)
        All one dtype, float32 or float64.

    Returns
    -------
    logits : ndarray (N, K)
    cache : tuple
    """
    _check_params(X, W, b)
    XW = X.matmul(W) if isinstance(X, SparseRows) else X @ W   # (N, K)
    return XW + b, (X,)


def backward(dlogits, cache):
    r"""Gradients of :math:`z = X W + b` with respect to the parameters (the features are data: no ``dX``).

    Parameters
    ----------
    dlogits : ndarray (N, K)
    cache : from :func:`forward`

    Returns
    -------
    dW : ndarray (D, K)
    db : ndarray (K,)
    """
    (X,) = cache
    check_float("dlogits", dlogits)
    check_shape("dlogits", dlogits, (X.shape[0], None))
    check_same_dtype(dlogits=dlogits, X=np.empty(0, X.dtype))
    # forward: z = X W + b
    dW = X.rmatmul(dlogits) if isinstance(X, SparseRows) else X.T @ dlogits   # (D, K)
    db = dlogits.sum(axis=0)                                                    # (K,)
    return dW, db


def loss_and_grad(W, b, X, y, l2):
    r"""The penalised loss :math:`L(W, b)` and its gradients (module docstring).

    Parameters
    ----------
    W : ndarray (D, K)
    b : ndarray (K,)
    X : SparseRows or ndarray (N, D)
    y : ndarray (N,) int
        Classes in ``[0, K)``.
    l2 : float >= 0
        :math:`\lambda`.

    Returns
    -------
    loss : float
    dW : ndarray (D, K)
    db : ndarray (K,)
    """
    l2 = _nonnegative("l2", l2)
    check_int("y", y)
    check_shape("y", y, (X.shape[0],))
    logits, cache = forward(X, W, b)                          # (N, K)
    ce, ce_cache = cross_entropy.forward(logits, y)
    # forward: L = CE(z, y) + (l2 / 2) ||W||^2
    dW, db = backward(cross_entropy.backward(1.0, ce_cache), cache)
    dW += W * l2                                              # (D, K)
    return float(ce) + 0.5 * l2 * float(np.vdot(W, W)), dW, db


def fit(X, y, n_classes, l2=1e-3, steps=300, lr=0.1, objective=loss_and_grad):
    r"""Minimise :math:`L(W, b)` by full-batch Adam with a cosine-decayed step, from :math:`W = 0, b = 0`.

    Every step uses all N examples (the problem is convex and small, so there is no need for mini-batches), and
    the step size decays from ``lr`` to 0 over ``steps`` (``optim.warmup_cosine`` without warm-up), which lets
    Adam settle at the minimum instead of circling it.

    Parameters
    ----------
    X : SparseRows or ndarray (N, D), float32 or float64
    y : ndarray (N,) int
    n_classes : int
        K.
    l2 : float >= 0
    steps : int >= 1
    lr : float > 0
    objective : callable ``(W, b, X, y, l2) -> (loss, dW, db)``
        The loss to minimise: this module's :func:`loss_and_grad` (cross-entropy), or another linear model's
        (``linear_svm`` passes its hinge loss, so that the two models differ in their loss alone).

    Returns
    -------
    W : ndarray (D, K), X's dtype
    b : ndarray (K,)
    losses : list of float
        The loss before each step.
    """
    _check_features(X)
    check_int("y", y)
    check_shape("y", y, (X.shape[0],))
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise ValueError(f"n_classes: expected an int >= 2, got {n_classes!r}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"y: expected classes in [0, {n_classes}), got values in [{y.min()}, {y.max()}]")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps: expected a positive int, got {steps!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a positive number, got {lr!r}")
    params = {"W": np.zeros((X.shape[1], n_classes), dtype=X.dtype), "b": np.zeros(n_classes, dtype=X.dtype)}
    state = optim.adam_init(params)
    losses = []
    for step in range(1, steps + 1):
        loss, dW, db = objective(params["W"], params["b"], X, y, l2)
        losses.append(loss)
        optim.adam_step(params, {"W": dW, "b": db}, state, optim.warmup_cosine(step, lr, 0, steps))
    return params["W"], params["b"], losses


def predict(X, W, b):
    """The most probable class of each row: ``argmax(X W + b)``, shape (N,) int64."""
    logits, _ = forward(X, W, b)
    return logits.argmax(axis=1)


def _nonnegative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)
