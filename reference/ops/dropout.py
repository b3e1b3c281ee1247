r"""Dropout (Srivastava et al. 2014; the Transformer's regulariser, Vaswani et al. 2017 §5.4), with its backward pass.

In training, every entry is kept with probability :math:`1 - p` and scaled by :math:`1/(1 - p)` ("inverted"
dropout, as in PyTorch), so that its expected value is unchanged; at evaluation dropout is the identity:

.. math::

    m \sim \mathrm{Bernoulli}(1 - p)\ \text{elementwise}, \qquad
    y = \frac{m \odot x}{1 - p}\ \ \text{(training)}, \qquad y = x\ \ \text{(evaluation)},
    \qquad \mathbb{E}_m[y] = x .

Backward: :math:`y` is linear in :math:`x` for a fixed mask, so :math:`dx = m \odot dy / (1 - p)`: the gradient
flows only through the kept entries, with the same scale.

Pure function: the randomness comes in as an argument, either a ``numpy.random.Generator`` (``rng``) from which the
mask is drawn, or the boolean ``mask`` itself (True = kept). Two calls with generators in the same state, or with
the same mask, give the same output. With :math:`p = 1` every entry is dropped and the output is 0 (PyTorch's
convention), with no division by zero. NaN and inf propagate as in PyTorch, which multiplies by the scaled mask:
a dropped NaN stays NaN (NaN times 0 is NaN), a dropped inf becomes NaN.

Shapes: ``x`` any shape; ``mask`` the shape of ``x``; ``y`` and ``dx`` the shape and dtype of ``x``.
"""
import math

import numpy as np

from reference._checks import check_float, check_shape


def forward(x, p, rng=None, mask=None, training=True):
    r"""Inverted dropout of ``x`` with drop probability ``p``.

    Parameters
    ----------
    x : ndarray, float32 or float64
    p : float in [0, 1]
        The probability of dropping an entry.
    rng : numpy.random.Generator, optional
        Draws the mask (``rng.random(x.shape) >= p``); exactly one of ``rng`` and ``mask`` in training.
    mask : ndarray of bool, shape of ``x``, optional
        True = kept. Given instead of ``rng`` to replay a mask (tests, and a backward that needs the same one).
    training : bool
        False: the identity, ``rng`` and ``mask`` ignored.

    Returns
    -------
    y : ndarray, the shape and dtype of ``x`` (a new array; ``x`` is never written to)
    cache : ``(mask, scale)`` for :func:`backward`; ``mask`` is None in evaluation
    """
    check_float("x", x)
    p = _check_p(p)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"training: expected a bool, got {type(training).__name__}")
    if not training:
        return x.copy(), (None, x.dtype.type(1))
    mask = _mask(x, p, rng, mask)
    scale = x.dtype.type(0.0 if p == 1.0 else 1.0 / (1.0 - p))      # 1 / (1 - p); 0 when everything is dropped
    y = x * (mask * scale)                                          # m x / (1 - p)
    return y, (mask, scale)


def backward(dy, cache):
    r"""Gradient of :func:`forward`: :math:`dx = m \odot dy / (1 - p)` (training), :math:`dx = dy` (evaluation).

    Parameters
    ----------
    dy : ndarray, the shape and dtype of the forward's ``x``
    cache : from :func:`forward`

    Returns
    -------
    dx : ndarray
    """
    mask, scale = cache
    check_float("dy", dy)
    if mask is None:
        # forward: y = x
        return dy.copy()
    check_shape("dy", dy, mask.shape)
    if dy.dtype != scale.dtype:
        raise TypeError(f"dy: expected dtype {scale.dtype} (the forward's), got {dy.dtype}")
    # forward: y = x * (m / (1 - p))
    return dy * (mask * scale)


def _check_p(p):
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"p: expected a float in [0, 1], got {type(p).__name__}")
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ValueError(f"p: expected a float in [0, 1], got {p!r}")
    return float(p)


def _mask(x, p, rng, mask):
    if (rng is None) == (mask is None):
        raise ValueError("expected exactly one of rng (to draw the mask) and mask (to replay one) in training")
    if mask is None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
        return rng.random(x.shape) >= p                              # True with probability 1 - p
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        got = mask.dtype if isinstance(mask, np.ndarray) else type(mask).__name__
        raise TypeError(f"mask: expected a boolean numpy.ndarray (True = kept), got {got}")
    check_shape("mask", mask, x.shape)
    return mask
