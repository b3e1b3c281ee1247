r"""Worked solutions to the exercises of chapter 11 ("Errata"), checked by ``tests/book/test_solutions_11.py``."""
import math

import numpy as np

from reference.ops import layernorm


def spike_fraction(threshold=0.5, power=2048):
    r"""Exercise 1: the fraction of angles with :math:`|\sin\theta|^{p} > t`.

    :math:`|\sin\theta| > c` with :math:`c = t^{1/p}` holds on :math:`\pi - 2\arcsin c` of every period
    :math:`\pi` of :math:`|\sin|`, a fraction :math:`1 - \tfrac{2}{\pi}\arcsin c`. For :math:`t = 0.5`,
    :math:`p = 2048`: :math:`c = 0.99966` and the fraction is 1.65 %.
    """
    c = threshold ** (1.0 / power)
    return 1.0 - 2.0 * math.asin(c) / math.pi


def printed_layernorm_affine(beta):
    r"""Exercise 2a: with :math:`\gamma = 1` the printed formula is :math:`x \mapsto A x + c`,
    :math:`A = I / \sqrt d`, :math:`c = \beta / \sqrt d`. ``A`` is invertible, so two different rows never give
    the same output: it cannot normalise anything away.
    """
    d = beta.shape[-1]
    return np.eye(d) / math.sqrt(d), beta / math.sqrt(d)


def layernorm_jacobian(x, eps=1e-5):
    r"""Exercise 2b: the Jacobian of the correct LayerNorm (:math:`\gamma = 1, \beta = 0`) at one row ``x`` (d,).

    With :math:`\hat x = (x - \mu)/s`, :math:`s = \sqrt{\sigma^2 + \epsilon}`:
    :math:`J = \frac{1}{s}\left(I - \frac{1}{d}\mathbf{1}\mathbf{1}^\top - \frac{1}{d}\hat x \hat x^\top\right)`.
    It is singular: :math:`J\mathbf{1} = 0` (a shift of the row changes nothing) and, for
    :math:`\epsilon \to 0`, :math:`J x \to 0` (nor does a rescaling). So rows :math:`a x + b\mathbf{1}` with
    :math:`a > 0` all map to (almost) the same output.
    """
    d = x.shape[-1]
    s = math.sqrt(x.var() + eps)
    xhat = (x - x.mean()) / s
    return (np.eye(d) - np.ones((d, d)) / d - np.outer(xhat, xhat) / d) / s


def shifted_and_scaled_rows_collide(x, a=3.0, b=-2.0, eps=1e-12):
    """LayerNorm(a x + b) vs LayerNorm(x) for one row: the largest difference (about eps-sized)."""
    d = x.shape[-1]
    ones, zeros = np.ones(d), np.zeros(d)
    y1, _ = layernorm.forward(x[None, :], ones, zeros, eps=eps)
    y2, _ = layernorm.forward((a * x + b)[None, :], ones, zeros, eps=eps)
    return float(np.abs(y1 - y2).max())
