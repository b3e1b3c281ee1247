r"""Softmax along one axis, with its backward pass.

.. math::

    y_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \qquad m = \max_j x_j

Subtracting the maximum changes nothing mathematically (it cancels between numerator and denominator) but keeps
every exponent at most 0, so ``exp`` never overflows, even for inputs of magnitude 1e4 in float32.

Backward: the Jacobian is :math:`\partial y_i / \partial x_j = y_i(\delta_{ij} - y_j)`, so

.. math::

    dx_i = y_i \left(dy_i - \sum_j dy_j\, y_j\right).

Conventions: a 0-d input is a softmax over one element (the result is 1); an empty input gives an empty output; a
row of ``-inf`` (nothing to choose) or with a NaN or ``+inf`` gives NaN, as in PyTorch.

No fast variant: attention and cross-entropy compute their softmax inline, in place on their own buffers.
"""
from typing import NamedTuple

import numpy as np

from reference._checks import check_float, check_grad


class SoftmaxCache(NamedTuple):
    y: np.ndarray                               # the output
    axis: int                                   # the axis that sums to one (non-negative)


def forward(x, axis=-1):
    r"""Softmax of ``x`` along ``axis``.

    Parameters
    ----------
    x : ndarray, float32 or float64, any shape (0-d and empty included)
    axis : int
        The axis that sums to one.

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``
        :math:`y = e^{x - \max x} / \sum e^{x - \max x}` along ``axis``.
    cache : SoftmaxCache
    """
    check_float("x", x)
    axis = _normalize_axis(axis, x.ndim)
    if x.ndim == 0:
        return np.ones_like(x), SoftmaxCache(np.ones_like(x), axis)            # one element: probability 1
    m = np.max(x, axis=axis, keepdims=True, initial=-np.inf)   # row max (initial: an empty axis has none)
    e = np.exp(x - m)                                           # every exponent <= 0: no overflow
    s = np.sum(e, axis=axis, keepdims=True)
    y = e / s
    return y, SoftmaxCache(y, axis)


def backward(dy, cache):
    r"""Gradient of the softmax.

    Parameters
    ----------
    dy : ndarray, same shape and dtype as the forward output
        Upstream gradient :math:`\partial L / \partial y`.
    cache : SoftmaxCache

    Returns
    -------
    dx : ndarray, same shape and dtype as ``dy``
        :math:`dx = y \odot (dy - \sum_{axis} dy \odot y)`.
    """
    y, axis = cache.y, cache.axis
    check_grad("dy", dy, y.shape, y.dtype)
    if y.ndim == 0:
        return np.zeros_like(dy)                                # y = 1 whatever x is
    # forward: y_i = e_i / s  =>  dx_i = sum_j dy_j y_j (delta_ij - y_i) = y_i (dy_i - sum_j dy_j y_j)
    dot = np.sum(dy * y, axis=axis, keepdims=True)
    dx = y * (dy - dot)
    return dx


def _normalize_axis(axis, ndim):
    """Return ``axis`` as a non-negative int, or raise a clear error (a 0-d array counts as one axis)."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis: expected an int, got {type(axis).__name__}")
    n = max(ndim, 1)
    if not -n <= axis < n:
        raise ValueError(f"axis: expected an int in [{-n}, {n - 1}] for a {ndim}-d input, got {axis}")
    return int(axis) % n
