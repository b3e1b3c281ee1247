r"""Rotary position embedding (RoPE; Su et al. 2021, RoFormer), applied to queries and keys, with its backward pass.

A query or key vector :math:`x \in \mathbb{R}^d` at position :math:`m` is cut into :math:`d/2` pairs, and pair
:math:`i` is rotated by the angle :math:`m\,\theta_i`, with :math:`\theta_i = \Theta^{-2i/d}` (:math:`\Theta` =
``theta``, 10000 in the paper and Llama 2, 500000 in Llama 3: Hugging Face's ``rope_theta``):

.. math::

    \begin{pmatrix} y_{a} \\ y_{b} \end{pmatrix} =
    \begin{pmatrix} \cos m\theta_i & -\sin m\theta_i \\ \sin m\theta_i & \cos m\theta_i \end{pmatrix}
    \begin{pmatrix} x_{a} \\ x_{b} \end{pmatrix}, \qquad i = 0, \dots, d/2 - 1.

Which channels :math:`(a, b)` form pair :math:`i` is the *layout*:

* ``"interleaved"`` (the paper, Meta's original Llama code): neighbours, :math:`(a, b) = (2i, 2i + 1)`;
* ``"half"`` (Hugging Face's ``rotate_half``, GPT-NeoX): the two halves, :math:`(a, b) = (i, i + d/2)`, i.e.
  :math:`y = x \odot \cos + \mathrm{rotate\_half}(x) \odot \sin` with
  :math:`\mathrm{rotate\_half}(x) = (-x_{d/2:},\ x_{:d/2})`.

The two are the same map up to a fixed permutation of the channels (:func:`interleave_permutation`): that is why
Hugging Face's conversion script permutes the rows of Meta's :math:`W^Q` and :math:`W^K`, and why weights trained
in one layout work in the other only after that permutation.

Why it encodes *relative* position: a rotation is orthogonal and rotations by one pair's angles compose, so for a
query at :math:`m` and a key at :math:`n`,
:math:`\langle R_m q, R_n k\rangle = \langle q, R_m^\top R_n k\rangle = \langle q, R_{n-m}\, k\rangle`: the score
depends on :math:`n - m` only (``tests/ops/test_rope.py`` checks it numerically).

Backward: :math:`y = R_m x` with :math:`R_m` orthogonal, so :math:`dx = R_m^\top dy = R_{-m}\, dy`, the inverse
rotation (the same formula with :math:`\sin` negated). RoPE has no parameters.

The angles :math:`m\theta_i` are computed in float64 and their cosines and sines rounded to x's dtype once.
(Hugging Face computes :math:`\theta_i` and :math:`m\theta_i` in float32, whose rounding grows with the angle: at
positions below 4096 its cosines and sines differ from these by up to 1.5e-4 (half a float32 ulp of 4096 is
2.4e-4), measured in ``tests/ops/test_rope.py``.)

Shapes: ``x (..., T, d)`` (e.g. ``(B, H, T, d)``), ``positions`` integers broadcastable to ``x.shape[:-1]`` (e.g.
``(T,)``; decoding with a KV cache of ``t0`` tokens passes ``t0 + arange(T)``) -> ``y`` of x's shape.
"""
from typing import NamedTuple

import numpy as np

from reference._checks import check_float, check_int, check_shape

LAYOUTS = ("half", "interleaved")


class Cache(NamedTuple):
    """What :func:`backward` needs from :func:`forward`."""

    cos: np.ndarray         # (..., d/2) cos(m theta_i), x's dtype, broadcastable to x's pairs
    sin: np.ndarray         # (..., d/2) sin(m theta_i)
    layout: str
    shape: tuple            # x.shape
    dtype: np.dtype


def frequencies(d, theta=10000.0):
    r"""The rotation speeds :math:`\theta_i = \Theta^{-2i/d}`, :math:`i = 0, \dots, d/2 - 1`, float64 of shape (d/2,)."""
    return float(theta) ** (-np.arange(0, d, 2, dtype=np.float64) / d)


def angles(positions, d, theta=10000.0):
    r"""The angles :math:`m\,\theta_i`: float64 of shape ``positions.shape + (d/2,)``."""
    return positions[..., None].astype(np.float64) * frequencies(d, theta)


def forward(x, positions, theta=10000.0, layout="half"):
    r"""Rotate each pair of x's channels by its position's angle: :math:`y = R_m x`.

    Parameters
    ----------
    x : ndarray (..., d), float32 or float64, d even
        Queries or keys, heads already split (apply it to both).
    positions : integer ndarray, broadcastable to ``x.shape[:-1]``
        The position m of each vector; with a cache of t0 earlier tokens, ``t0 + np.arange(T)``.
    theta : float > 0
        The base :math:`\Theta` (Hugging Face's ``rope_theta``).
    layout : {"half", "interleaved"}
        Hugging Face's rotate-half pairs ``(i, i + d/2)`` or the paper's neighbours ``(2i, 2i + 1)``.

    Returns
    -------
    y : ndarray, x's shape and dtype
    cache : Cache
    """
    d = _check_inputs(x, positions, theta, layout)
    a = angles(positions, d, theta)                         # (..., d/2) m theta_i, float64
    cos = np.cos(a).astype(x.dtype)                         # (..., d/2)
    sin = np.sin(a).astype(x.dtype)                         # (..., d/2)
    y = _rotate(x, cos, sin, layout)                        # (..., d) R_m x
    return y, Cache(cos, sin, layout, x.shape, x.dtype)


def backward(dy, cache):
    r"""Gradient of RoPE: the inverse rotation, :math:`dx = R_m^\top dy = R_{-m}\, dy`.

    Parameters
    ----------
    dy : ndarray, the forward input's shape and dtype
    cache : Cache from :func:`forward`

    Returns
    -------
    dx : ndarray, dy's shape and dtype
    """
    cos, sin, layout, shape, dtype = cache
    check_float("dy", dy)
    if dy.dtype != dtype:
        raise TypeError(f"dy: expected dtype {dtype} (the dtype of x), got {dy.dtype}")
    check_shape("dy", dy, shape)
    # forward: y = R(m theta) x, R orthogonal  ->  dx = R(m theta)^T dy = R(-m theta) dy
    return _rotate(dy, cos, -sin, layout)


def interleave_permutation(d):
    """The channel order that takes the rotate-half layout to the interleaved one.

    With ``p = interleave_permutation(d)`` = ``[0, d/2, 1, d/2 + 1, ...]``, for every x and positions::

        forward(x[..., p], pos, layout="interleaved") == forward(x, pos, layout="half")[..., p]

    (exactly: the same products in the same order), because ``x[..., p]`` puts the half-layout pair
    ``(i, i + d/2)`` at the neighbours ``(2i, 2i + 1)``.
    """
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 2 or d % 2:
        raise ValueError(f"d: expected an even int >= 2, got {d!r}")
    return np.stack([np.arange(d // 2), np.arange(d // 2, d)], axis=1).reshape(-1)


def _rotate(x, cos, sin, layout):
    """Rotate each channel pair (a, b) of x: y_a = x_a cos - x_b sin, y_b = x_b cos + x_a sin."""
    d = x.shape[-1]
    a, b = (slice(0, d // 2), slice(d // 2, d)) if layout == "half" else (slice(0, d, 2), slice(1, d, 2))
    xa, xb = x[..., a], x[..., b]                           # (..., d/2) each
    y = np.empty(x.shape, dtype=x.dtype)                    # cos, sin broadcast to x's pairs (checked in forward)
    y[..., a] = xa * cos - xb * sin
    y[..., b] = xb * cos + xa * sin
    return y


def _check_inputs(x, positions, theta, layout):
    """Validate the arguments of :func:`forward`; return d."""
    check_float("x", x, ndim_min=1)
    d = x.shape[-1]
    if d < 2 or d % 2:
        raise ValueError(f"x: expected an even last axis (the head size d) >= 2, got shape {x.shape}")
    check_int("positions", positions)
    try:
        lead = np.broadcast_shapes(positions.shape, x.shape[:-1])
    except ValueError:
        lead = None
    if lead != x.shape[:-1]:
        raise ValueError(f"positions: expected a shape broadcastable to {x.shape[:-1]} (x.shape[:-1]), "
                         f"got {positions.shape}")
    if isinstance(theta, (bool, np.bool_)) or not isinstance(theta, (int, float, np.integer, np.floating)):
        raise TypeError(f"theta: expected a positive real number, got {type(theta).__name__}")
    if not theta > 0 or not np.isfinite(theta):
        raise ValueError(f"theta: expected a positive finite number, got {theta}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
    return d
