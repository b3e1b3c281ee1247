r"""Position-wise feed-forward network, built from :mod:`reference.ops.linear` and :mod:`reference.ops.activations`.

.. math::

    \mathrm{FFN}(x) = \mathrm{act}(x W_1 + b_1)\, W_2 + b_2, \qquad
    W_1 \in \mathbb{R}^{d_{model} \times d_{ff}},\ W_2 \in \mathbb{R}^{d_{ff} \times d_{model}}

with act = ReLU (the paper), GELU (erf form) or GELU-tanh (GPT-2), from the one table
``reference.ops.activations.ACTIVATIONS``. The same two matrices act on every position.
Backward is the chain rule through the three steps, in reverse:
:math:`dh, dW_2, db_2` from the second linear map, :math:`da = \mathrm{act}'(a) \odot dh`, then
:math:`dx, dW_1, db_1` from the first.

:func:`forward_fast`/:func:`backward_fast` wire the fast variants of the same ops.
"""
from typing import NamedTuple

from reference._checks import check_float, check_same_dtype, check_shape
from reference.ops import activations, linear


class FfnCache(NamedTuple):
    first: linear.LinearCache                   # a = x W1 + b1
    act: tuple                                  # h = act(a): the activation's cache
    second: linear.LinearCache                  # y = h W2 + b2
    activation: str


def forward(x, W1, b1, W2, b2, activation="relu"):
    r"""Feed-forward block :math:`y = \mathrm{act}(x W_1 + b_1) W_2 + b_2`.

    Parameters
    ----------
    x : ndarray (..., d_model), float32 or float64
    W1 : ndarray (d_model, d_ff)
    b1 : ndarray (d_ff,) or None
    W2 : ndarray (d_ff, d_model)
    b2 : ndarray (d_model,) or None
    activation : {"relu", "gelu", "gelu_tanh"}

    Returns
    -------
    y : ndarray (..., d_model)
    cache : FfnCache
    """
    act = _check_inputs(x, W1, b1, W2, b2, activation)
    a, cache1 = linear.forward(x, W1, b1)       # (..., d_ff)
    h, cache_act = act.forward(a)               # (..., d_ff)
    y, cache2 = linear.forward(h, W2, b2)       # (..., d_model)
    return y, FfnCache(cache1, cache_act, cache2, activation)


def backward(dy, cache):
    r"""Gradients of the feed-forward block.

    Parameters
    ----------
    dy : ndarray (..., d_model)
    cache : FfnCache, from :func:`forward`

    Returns
    -------
    dx : ndarray (..., d_model)
    dW1 : ndarray (d_model, d_ff)
    db1 : ndarray (d_ff,) or None
    dW2 : ndarray (d_ff, d_model)
    db2 : ndarray (d_model,) or None
    """
    act = activations.get(cache.activation)
    # forward: y = h W2 + b2
    dh, dW2, db2 = linear.backward(dy, cache.second)    # (..., d_ff)
    # forward: h = act(a)
    da = act.backward(dh, cache.act)                    # (..., d_ff)
    # forward: a = x W1 + b1
    dx, dW1, db1 = linear.backward(da, cache.first)     # (..., d_model)
    return dx, dW1, db1, dW2, db2


def forward_fast(x, W1, b1, W2, b2, activation="relu"):
    """:func:`forward` with the fast variants of ``linear`` and the activation."""
    act = _check_inputs(x, W1, b1, W2, b2, activation)
    a, cache1 = linear.forward_fast(x, W1, b1)
    h, cache_act = act.forward_fast(a)
    y, cache2 = linear.forward_fast(h, W2, b2)
    return y, FfnCache(cache1, cache_act, cache2, activation)


def backward_fast(dy, cache):
    """:func:`backward` with the fast variants of ``linear`` and the activation."""
    act = activations.get(cache.activation)
    dh, dW2, db2 = linear.backward_fast(dy, cache.second)
    da = act.backward_fast(dh, cache.act)
    dx, dW1, db1 = linear.backward_fast(da, cache.first)
    return dx, dW1, db1, dW2, db2


def _check_inputs(x, W1, b1, W2, b2, activation):
    """Validate; return the activation's entry of ``activations.ACTIVATIONS``."""
    act = activations.get(activation)
    check_float("x", x, ndim_min=1)
    check_float("W1", W1)
    check_shape("W1", W1, (x.shape[-1], None))
    check_float("W2", W2)
    check_shape("W2", W2, (W1.shape[1], x.shape[-1]))
    for name, b, size in (("b1", b1, W1.shape[1]), ("b2", b2, x.shape[-1])):
        if b is not None:
            check_float(name, b)
            check_shape(name, b, (size,))
    check_same_dtype(x=x, W1=W1, b1=b1, W2=W2, b2=b2)
    return act
