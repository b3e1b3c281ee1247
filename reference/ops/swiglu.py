r"""The SwiGLU feed-forward network (Shazeer 2020; Llama, Mistral, Qwen), with its backward pass.

.. math::

    a = x W_{gate}, \qquad b = x W_{up}, \qquad h = \mathrm{silu}(a) \odot b, \qquad y = h\, W_{down},

    \mathrm{silu}(a) = a\, \sigma(a) = \frac{a}{1 + e^{-a}}.

Shapes: ``x (..., C)``, ``W_gate, W_up (C, F)``, ``W_down (F, C)`` -> ``y (..., C)``; no biases (Llama's
``mlp_bias=False``). Against the 2017 FFN (:mod:`reference.ops.ffn`) the activation is replaced by a *gate*: a
second projection ``b`` multiplied element-wise by ``silu(a)``. With three matrices instead of two, Llama takes
:math:`F \approx \tfrac{8}{3} C` instead of :math:`4C` to keep the parameter count.

Backward, in reverse, with :math:`\sigma' = \sigma (1 - \sigma)` so that
:math:`\mathrm{silu}'(a) = \sigma(a)\,(1 + a\,(1 - \sigma(a)))`:

.. math::

    dh = dy\, W_{down}^\top, \quad dW_{down} = h^\top dy, \quad
    db = dh \odot \mathrm{silu}(a), \quad da = dh \odot b \odot \mathrm{silu}'(a),

    dx = da\, W_{gate}^\top + db\, W_{up}^\top, \quad dW_{gate} = x^\top da, \quad dW_{up} = x^\top db

(``x`` feeds both projections, so its two gradients add). The gate alone, :math:`h = \mathrm{silu}(a) \odot b`, is
:func:`gate_forward` / :func:`gate_backward`: the NumPy twin of the Triton kernel ``kernels/swiglu.py``.

:func:`forward_fast` / :func:`backward_fast` (what the models call) run the two input projections as one product
:math:`x\,[W_{gate} \mid W_{up}]` and every product through :func:`reference.ops.linear.forward_fast` (rows over
threads), as the MLP of :mod:`reference.ops.ffn` does.

:math:`\sigma(a) = 1/(1 + e^{-a})` overflows :math:`e^{-a}` to ``inf`` for :math:`a \lesssim -88` (float32) or
:math:`-709` (float64), which gives :math:`\sigma = 0`: the right limit, so that overflow is silenced.
"""
from typing import NamedTuple

import numpy as np

from reference._checks import check_float, check_same_dtype, check_shape
from reference.ops import linear


class GateCache(NamedTuple):
    """What :func:`gate_backward` needs from :func:`gate_forward`."""

    a: np.ndarray           # (..., F) gate pre-activation
    b: np.ndarray           # (..., F) up projection
    sig: np.ndarray         # (..., F) sigma(a)
    silu: np.ndarray        # (..., F) a sigma(a)


class Cache(NamedTuple):
    """What :func:`backward` needs from :func:`forward`."""

    x: np.ndarray           # (..., C)
    W_gate: np.ndarray      # (C, F)
    W_up: np.ndarray        # (C, F)
    W_down: np.ndarray      # (F, C)
    h: np.ndarray           # (..., F) silu(a) * b
    gate: GateCache


def gate_forward(a, b):
    r"""The gate :math:`h = \mathrm{silu}(a) \odot b`, element-wise.

    Parameters
    ----------
    a, b : ndarray (..., F), one shape, float32 or float64

    Returns
    -------
    h : ndarray, a's shape and dtype
    cache : GateCache
    """
    check_float("a", a, ndim_min=1)
    check_float("b", b)
    check_shape("b", b, a.shape)
    check_same_dtype(a=a, b=b)
    with np.errstate(over="ignore"):                        # exp(-a) = inf for very negative a: sigma = 0, right
        sig = 1 / (1 + np.exp(-a))                          # sigma(a)
    silu = a * sig                                          # silu(a)
    h = silu * b
    return h, GateCache(a, b, sig, silu)


def gate_backward(dh, cache):
    r"""Gradients of the gate: :math:`da = dh \odot b \odot \sigma(a)(1 + a(1 - \sigma(a)))`, :math:`db = dh \odot \mathrm{silu}(a)`.

    Parameters
    ----------
    dh : ndarray, the shape and dtype of the forward's a
    cache : GateCache from :func:`gate_forward`

    Returns
    -------
    da, db : ndarray, dh's shape and dtype
    """
    a, b, sig, silu = cache
    check_float("dh", dh)
    check_same_dtype(dh=dh, a=a)
    check_shape("dh", dh, a.shape)
    # forward: h = silu(a) * b
    db = dh * silu
    # forward: silu(a) = a sigma(a), sigma' = sigma (1 - sigma)
    da = dh * b * (sig * (1 + a * (1 - sig)))
    return da, db


def forward(x, W_gate, W_up, W_down):
    r"""SwiGLU feed-forward: :math:`y = (\mathrm{silu}(x W_{gate}) \odot x W_{up})\, W_{down}`.

    Parameters
    ----------
    x : ndarray (..., C), float32 or float64
    W_gate, W_up : ndarray (C, F), same dtype
    W_down : ndarray (F, C), same dtype

    Returns
    -------
    y : ndarray (..., C)
    cache : Cache
    """
    _check_inputs(x, W_gate, W_up, W_down)
    a = x @ W_gate                                          # (..., F)
    b = x @ W_up                                            # (..., F)
    h, gate = gate_forward(a, b)                            # (..., F) silu(a) * b
    y = h @ W_down                                          # (..., C)
    return y, Cache(x, W_gate, W_up, W_down, h, gate)


def backward(dy, cache):
    r"""Gradients of the SwiGLU feed-forward.

    Parameters
    ----------
    dy : ndarray (..., C), the forward input's shape and dtype
    cache : Cache from :func:`forward`

    Returns
    -------
    dx : ndarray (..., C)
    dW_gate, dW_up : ndarray (C, F)
    dW_down : ndarray (F, C)
    """
    x, W_gate, W_up, W_down, h, gate = cache
    check_float("dy", dy)
    check_same_dtype(dy=dy, x=x)
    check_shape("dy", dy, x.shape)
    C, F = W_gate.shape
    x2, dy2 = x.reshape(-1, C), dy.reshape(-1, C)           # (N, C) rows
    # forward: y = h W_down
    dh = dy @ W_down.T                                      # (..., F)
    dW_down = h.reshape(-1, F).T @ dy2                      # (F, C)
    # forward: h = silu(a) * b
    da, db = gate_backward(dh, gate)                        # (..., F) each
    # forward: a = x W_gate, b = x W_up (x is used twice: the two gradients add)
    dx = da @ W_gate.T
    dx += db @ W_up.T                                       # (..., C)
    dW_gate = x2.T @ da.reshape(-1, F)                      # (C, F)
    dW_up = x2.T @ db.reshape(-1, F)                        # (C, F)
    return dx, dW_gate, dW_up, dW_down


class FastCache(NamedTuple):
    """What :func:`backward_fast` needs from :func:`forward_fast`."""

    up: linear.LinearCache      # [a | b] = x [W_gate | W_up]
    gate: GateCache             # h = silu(a) * b
    down: linear.LinearCache    # y = h W_down


def forward_fast(x, W_gate, W_up, W_down):
    """:func:`forward` with one product for both input projections and the threaded products of ``linear``.

    Same arguments and result; use :func:`backward_fast` with its cache. Measured (float32, forward + backward,
    x (16, 128, 128), F = 341, one BLAS thread, best of 9, load average 1.9 on 2 cores): 15.3 ms against the
    readable pair's 20.3 ms (1.3x), from the two threads over rows; the gate's element-wise passes are unchanged.
    """
    _check_inputs(x, W_gate, W_up, W_down)
    F = W_gate.shape[1]
    ab, up_cache = linear.forward_fast(x, np.concatenate([W_gate, W_up], axis=1))   # (..., 2F)
    h, gate = gate_forward(ab[..., :F], ab[..., F:])        # (..., F) silu(a) * b
    y, down_cache = linear.forward_fast(h, W_down)          # (..., C)
    return y, FastCache(up_cache, gate, down_cache)


def backward_fast(dy, cache):
    """Gradients from a :func:`forward_fast` cache: ``(dx, dW_gate, dW_up, dW_down)``."""
    up_cache, gate, down_cache = cache
    # forward: y = h W_down
    dh, dW_down, _ = linear.backward_fast(dy, down_cache)   # (..., F)
    # forward: h = silu(a) * b
    da, db = gate_backward(dh, gate)
    F = da.shape[-1]
    dab = np.empty(da.shape[:-1] + (2 * F,), dtype=da.dtype)   # (..., 2F)
    dab[..., :F], dab[..., F:] = da, db
    # forward: [a | b] = x [W_gate | W_up]   (x feeds both: the product sums their gradients)
    dx, dW_ab, _ = linear.backward_fast(dab, up_cache)      # (..., C), (C, 2F)
    return dx, np.ascontiguousarray(dW_ab[:, :F]), np.ascontiguousarray(dW_ab[:, F:]), dW_down


def _check_inputs(x, W_gate, W_up, W_down):
    check_float("x", x, ndim_min=1)
    C = x.shape[-1]
    for name, W in (("W_gate", W_gate), ("W_up", W_up)):
        check_float(name, W)
        check_shape(name, W, (C, None))
    check_shape("W_up", W_up, W_gate.shape)
    check_float("W_down", W_down)
    check_shape("W_down", W_down, (W_gate.shape[1], C))
    check_same_dtype(x=x, W_gate=W_gate, W_up=W_up, W_down=W_down)
