r"""Linear (fully connected) layer, with its backward pass.

.. math::

    y = x W + b, \qquad x \in \mathbb{R}^{\dots \times d_{in}},\ W \in \mathbb{R}^{d_{in} \times d_{out}},\
    b \in \mathbb{R}^{d_{out}}

Row-vector convention (as in llm.c and PyTorch's ``x @ W.T`` with our ``W`` being its transpose). With the leading
axes flattened into :math:`N` rows, :math:`X \in \mathbb{R}^{N \times d_{in}}`:

.. math::

    dx = dy\, W^\top, \qquad dW = X^\top dY, \qquad db = \textstyle\sum_n dY_n.

Speed (:func:`forward_fast`, :func:`backward_fast`): the same three matrix products, split over threads (see
``reference/_threads.py``) when BLAS runs one thread per call: ``y`` and ``dx`` by rows, ``dW`` and ``db`` by
columns, so every entry is computed by the same BLAS call on the same numbers as in one thread.
"""
import math
from typing import NamedTuple

import numpy as np

from reference import _threads
from reference._checks import check_float, check_grad, check_same_dtype, check_shape

_MIN_PARALLEL = 1 << 20                         # multiply-adds below which threads cost more than they save


class LinearCache(NamedTuple):
    x: np.ndarray                               # (..., d_in) the input
    W: np.ndarray                               # (d_in, d_out)
    has_bias: bool                              # whether backward returns a db


def forward(x, W, b=None):
    r"""Affine map :math:`y = xW + b` over the last axis of ``x``.

    Parameters
    ----------
    x : ndarray (..., d_in), float32 or float64
    W : ndarray (d_in, d_out), same dtype
    b : ndarray (d_out,), same dtype, or None

    Returns
    -------
    y : ndarray (..., d_out)
    cache : LinearCache
    """
    _check_inputs(x, W, b)
    y = x @ W                                   # (..., d_out)
    if b is not None:
        y += b
    return y, LinearCache(x, W, b is not None)


def backward(dy, cache):
    r"""Gradients of :math:`y = xW + b`.

    Parameters
    ----------
    dy : ndarray (..., d_out), the dtype of the forward inputs
    cache : LinearCache, from :func:`forward` or :func:`forward_fast`

    Returns
    -------
    dx : ndarray (..., d_in)
    dW : ndarray (d_in, d_out)
    db : ndarray (d_out,), or None when the forward had no bias
    """
    x, W, has_bias = cache.x, cache.W, cache.has_bias
    check_grad("dy", dy, x.shape[:-1] + W.shape[1:], x.dtype)
    d_in, d_out = W.shape
    N = math.prod(x.shape[:-1])                 # rows: every leading axis flattened (explicit, so N = 0 works)
    X = x.reshape(N, d_in)                      # (N, d_in)
    dY = dy.reshape(N, d_out)                   # (N, d_out)
    # forward: y = x W + b
    dx = dy @ W.T                               # (..., d_in)
    dW = X.T @ dY                               # (d_in, d_out)
    db = dY.sum(axis=0) if has_bias else None   # (d_out,)
    return dx, dW, db


def forward_fast(x, W, b=None):
    """:func:`forward`, its rows split over ``reference._threads.workers()`` threads."""
    _check_inputs(x, W, b)
    (d_in, d_out), N = W.shape, math.prod(x.shape[:-1])
    X = x.reshape(N, d_in)                      # (N, d_in), a copy only if x's rows cannot be flattened in place
    y = np.empty((N, d_out), dtype=x.dtype)     # (N, d_out)

    def rows(r):
        np.matmul(X[r], W, out=y[r])
        if b is not None:
            y[r] += b

    _threads.run(rows, _threads.parts(N, _threads.workers_for(N * d_in * d_out, _MIN_PARALLEL)))
    return y.reshape(x.shape[:-1] + (d_out,)), LinearCache(x, W, b is not None)


def backward_fast(dy, cache):
    """:func:`backward`: ``dx`` split over threads by rows, ``dW`` and ``db`` by columns."""
    x, W, has_bias = cache.x, cache.W, cache.has_bias
    check_grad("dy", dy, x.shape[:-1] + W.shape[1:], x.dtype)
    (d_in, d_out), N = W.shape, math.prod(x.shape[:-1])
    X, dY = x.reshape(N, d_in), dy.reshape(N, d_out)
    dx = np.empty((N, d_in), dtype=x.dtype)     # (N, d_in)
    dW = np.empty((d_in, d_out), dtype=x.dtype)
    db = np.empty(d_out, dtype=x.dtype) if has_bias else None
    n = _threads.workers_for(N * d_in * d_out, _MIN_PARALLEL)
    row_parts, col_parts = _threads.parts(N, n), _threads.parts(d_out, n)

    def part(i):
        # forward: y = x W + b
        np.matmul(dY[row_parts[i]], W.T, out=dx[row_parts[i]])
        c = col_parts[i]
        np.matmul(X.T, dY[:, c], out=dW[:, c])
        if has_bias:
            np.sum(dY[:, c], axis=0, out=db[c])

    _threads.run(part, range(n))
    return dx.reshape(x.shape), dW, db


def _check_inputs(x, W, b):
    check_float("x", x, ndim_min=1)
    check_float("W", W)
    check_shape("W", W, (x.shape[-1], None))
    if b is not None:
        check_float("b", b)
        check_shape("b", b, (W.shape[1],))
    check_same_dtype(x=x, W=W, b=b)
