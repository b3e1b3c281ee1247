r"""Softmax along one axis, with its backward pass.

.. math::

    y_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \qquad m = \max_j x_j

Subtracting the maximum changes nothing mathematically (it cancels between numerator and denominator) but keeps
every exponent at most 0, so ``exp`` never overflows, even for inputs of magnitude 1e4 in float32.

Backward: the Jacobian is :math:`\partial y_i / \partial x_j = y_i(\delta_{ij} - y_j)`, so

.. math::

    dx_i = y_i \left(dy_i - \sum_j dy_j\, y_j\right).

Conventions: a 0-d input is a softmax over one element (the result is 1); an empty input gives an empty output.
"""
import numpy as np

from reference._checks import check_float, check_same_dtype, check_shape


def _normalize_axis(axis, ndim):
    """Return ``axis`` as a non-negative int, or raise a clear error (a 0-d array counts as one axis)."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis: expected an int, got {type(axis).__name__}")
    n = max(ndim, 1)
    if not -n <= axis < n:
        raise ValueError(f"axis: expected an int in [{-n}, {n - 1}] for a {ndim}-d input, got {axis}")
    return int(axis) % n


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
    cache : tuple
        ``(y, axis)`` for :func:`backward`.
    """
    check_float("x", x)
    axis = _normalize_axis(axis, x.ndim)
    if x.ndim == 0:
        return np.ones_like(x), (np.ones_like(x), axis)
    if x.size == 0:
        return x.copy(), (x.copy(), axis)
    m = x.max(axis=axis, keepdims=True)        # shape of x with size 1 on `axis`
    y = np.subtract(x, m)                      # every entry <= 0: exp cannot overflow
    np.exp(y, out=y)
    y /= y.sum(axis=axis, keepdims=True)
    return y, (y, axis)


def backward(dy, cache):
    r"""Gradient of the softmax.

    Parameters
    ----------
    dy : ndarray, same shape and dtype as the forward output
        Upstream gradient :math:`\partial L / \partial y`.
    cache : tuple
        From :func:`forward`.

    Returns
    -------
    dx : ndarray, same shape and dtype as ``dy``
        :math:`dx = y \odot (dy - \sum_{axis} dy \odot y)`.
    """
    y, axis = cache
    check_float("dy", dy)
    check_same_dtype(dy=dy, y=y)
    check_shape("dy", dy, y.shape)
    if y.ndim == 0:
        return np.zeros_like(dy)               # y = 1 whatever x is
    # forward: y = exp(x - m) / sum(exp(x - m))
    dx = dy * y
    dx -= y * dx.sum(axis=axis, keepdims=True)
    return dx
