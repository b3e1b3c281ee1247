r"""Linear (fully connected) layer, with its backward pass.

.. math::

    y = x W + b, \qquad x \in \mathbb{R}^{\dots \times d_{in}},\ W \in \mathbb{R}^{d_{in} \times d_{out}},\
    b \in \mathbb{R}^{d_{out}}

Row-vector convention (as in llm.c and PyTorch's ``x @ W.T`` with our ``W`` being its transpose). With the leading
axes flattened into :math:`N` rows, :math:`X \in \mathbb{R}^{N \times d_{in}}`:

.. math::

    dx = dy\, W^\top, \qquad dW = X^\top dY, \qquad db = \textstyle\sum_n dY_n.
"""
import numpy as np

from reference._checks import check_float, check_same_dtype, check_shape


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
    cache : tuple ``(x, W, has_bias)``
    """
    check_float("x", x, ndim_min=1)
    check_float("W", W)
    check_shape("W", W, (x.shape[-1], None))
    if b is not None:
        check_float("b", b)
        check_shape("b", b, (W.shape[1],))
    check_same_dtype(x=x, W=W, b=b)
    y = x @ W                                   # (..., d_out)
    if b is not None:
        y += b
    return y, (x, W, b is not None)


def backward(dy, cache):
    r"""Gradients of :math:`y = xW + b`.

    Parameters
    ----------
    dy : ndarray (..., d_out), same dtype as the forward inputs
    cache : from :func:`forward`

    Returns
    -------
    dx : ndarray (..., d_in)
    dW : ndarray (d_in, d_out)
    db : ndarray (d_out,), or None when the forward had no bias
    """
    x, W, has_bias = cache
    check_float("dy", dy)
    check_same_dtype(dy=dy, x=x)
    check_shape("dy", dy, x.shape[:-1] + W.shape[1:])
    d_in, d_out = W.shape
    N = int(np.prod(x.shape[:-1]))              # rows: every leading axis flattened (explicit, so N = 0 works)
    dy2 = dy.reshape(N, d_out)                  # (N, d_out)
    # forward: y = x W + b
    dx = dy @ W.T                               # (..., d_in)
    dW = x.reshape(N, d_in).T @ dy2             # (d_in, d_out)
    db = dy2.sum(axis=0) if has_bias else None  # (d_out,)
    return dx, dW, db
