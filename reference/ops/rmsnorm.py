r"""RMSNorm (Zhang & Sennrich 2019; Llama, Mistral, Qwen), with its backward pass.

For one row :math:`x \in \mathbb{R}^C`:

.. math::

    r = \frac{1}{\sqrt{\tfrac1C \sum_i x_i^2 + \epsilon}}, \qquad \hat x = x\, r, \qquad y = \gamma \odot \hat x.

LayerNorm without the mean and without :math:`\beta`: the row is divided by its root mean square, not centred, so
one reduction instead of two. :math:`\epsilon` sits inside the square root, as in ``LlamaRMSNorm`` and
``torch.nn.functional.rms_norm``.

Backward, with :math:`g = dy \odot \gamma` (:math:`\partial L/\partial \hat x`) and
:math:`\partial r/\partial x_j = -r^3 x_j / C`:

.. math::

    d\gamma = \sum_{\text{rows}} dy \odot \hat x, \qquad
    dx_j = r\, g_j + \sum_i g_i x_i \frac{\partial r}{\partial x_j} = r \left(g_j - \hat x_j\, \overline{g \odot \hat x}\right),

where the bar is the mean over the row: the LayerNorm formula without its :math:`-\overline{g}` term.

**Overflow.** Written as above, :math:`\sum x_i^2` overflows float32 once :math:`|x| \gtrsim 2 \cdot 10^{19}`; then
:math:`r = 1/\sqrt{\infty} = 0` and :math:`y = 0`, a wrong finite answer (``LlamaRMSNorm`` in float32 returns exactly
that). :func:`forward` first divides the row by a power of two :math:`s \le \max_i |x_i|` (with
:math:`s \ge \sqrt\epsilon`, so that :math:`\epsilon / s^2` cannot overflow either):

.. math::

    u = x / s, \quad |u| < 2, \qquad \hat x = u \cdot \frac{1}{\sqrt{\overline{u^2} + \epsilon / s^2}}.

Scaling by a power of two is exact in binary floating point, so wherever the plain formula does not overflow this
gives the same bits, and everywhere else it gives the right answer.

Shapes: ``x (..., C)``, ``gamma (C,)`` -> ``y (..., C)``.
"""
from typing import NamedTuple

import numpy as np

from reference._checks import check_float, check_same_dtype, check_shape


class Cache(NamedTuple):
    """What :func:`backward` needs from :func:`forward`."""

    xhat: np.ndarray        # (N, C) x r, N the flattened leading axes
    rstd: np.ndarray        # (N, 1) r = 1 / sqrt(mean(x^2) + eps)
    gamma: np.ndarray       # (C,)
    shape: tuple            # x.shape


def forward(x, gamma, eps=1e-6):
    r"""RMSNorm over the last axis: :math:`y = \gamma \odot x / \sqrt{\overline{x^2} + \epsilon}`.

    Parameters
    ----------
    x : ndarray (..., C), float32 or float64
    gamma : ndarray (C,), same dtype
    eps : float > 0
        Added to the mean square inside the square root (``LlamaRMSNorm``'s default, 1e-6).

    Returns
    -------
    y : ndarray (..., C), x's dtype
    cache : Cache
    """
    check_float("x", x, ndim_min=1)
    C = x.shape[-1]
    check_float("gamma", gamma)
    check_shape("gamma", gamma, (C,))
    check_same_dtype(x=x, gamma=gamma)
    _check_eps(eps)
    if x.dtype.type(eps) == 0:
        raise ValueError(f"eps: expected a value that does not round to 0 in {x.dtype}, got {eps}")
    eps = x.dtype.type(eps)                                 # a NumPy float64 eps would promote float32 to float64
    if C == 0:
        raise ValueError(f"x: expected a last axis of size >= 1 to normalise, got shape {x.shape}")
    x2 = x.reshape(-1, C)                                   # (N, C)
    top = np.maximum(np.abs(x2).max(axis=1, keepdims=True), np.sqrt(eps))   # (N, 1)
    s = _power_of_two_below(top)                            # (N, 1) s <= max|x|, s >= sqrt(eps)/2
    u = x2 / s                                              # (N, C) exact; |u| < 2, so u^2 cannot overflow
    ms = np.mean(u * u, axis=1, keepdims=True)              # (N, 1) mean(x^2) / s^2
    rs = 1 / np.sqrt(ms + eps / s / s)                      # (N, 1) s r = s / sqrt(mean(x^2) + eps)
    xhat = u * rs                                           # (N, C) x r
    y = xhat * gamma                                        # (N, C)
    rstd = rs / s                                           # (N, 1) r
    return y.reshape(x.shape), Cache(xhat, rstd, gamma, x.shape)


def backward(dy, cache):
    r"""Gradients of RMSNorm.

    Parameters
    ----------
    dy : ndarray (..., C), the forward input's shape and dtype
    cache : Cache from :func:`forward`

    Returns
    -------
    dx : ndarray (..., C)
    dgamma : ndarray (C,)
    """
    xhat, rstd, gamma, shape = cache
    check_float("dy", dy)
    check_same_dtype(dy=dy, x=xhat)
    check_shape("dy", dy, shape)
    dy2 = dy.reshape(xhat.shape)                            # (N, C)
    # forward: y = xhat * gamma
    dgamma = np.sum(dy2 * xhat, axis=0)                     # (C,)
    g = dy2 * gamma                                         # (N, C) dL/dxhat
    # forward: xhat = x r, r = (mean(x^2) + eps)^(-1/2), so dr/dx_j = -r^3 x_j / C
    dx = rstd * (g - xhat * np.mean(g * xhat, axis=1, keepdims=True))   # (N, C)
    return dx.reshape(shape), dgamma


def _power_of_two_below(a):
    """The power of two 2^k with 2^k <= a < 2^(k+1), elementwise, in a's dtype (1/2 where a is NaN or inf)."""
    _, e = np.frexp(a)                                      # a = m 2^e, 1/2 <= m < 1
    return np.ldexp(np.ones_like(a), e - 1)


def _check_eps(eps):
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.integer, np.floating)):
        raise TypeError(f"eps: expected a positive real number, got {type(eps).__name__}")
    if not eps > 0 or not np.isfinite(eps):
        raise ValueError(f"eps: expected a positive finite number, got {eps}")
