r"""Layer normalisation over the last axis, with its backward pass.

For one row :math:`x \in \mathbb{R}^C`:

.. math::

    \mu = \frac1C \sum_i x_i, \qquad \sigma^2 = \frac1C \sum_i (x_i - \mu)^2 \ \text{(biased)}, \qquad
    \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad y = \gamma \odot \hat x + \beta.

:math:`\epsilon` sits inside the square root, as in the paper and PyTorch, so a constant row (:math:`\sigma^2 = 0`)
gives :math:`\hat x = 0` and :math:`y = \beta`: finite.

Backward, with :math:`r = 1/\sqrt{\sigma^2 + \epsilon}` and :math:`g = dy \odot \gamma` (derivation: :math:`\hat x`
depends on every :math:`x_j` through :math:`\mu` and :math:`\sigma^2`):

.. math::

    d\beta = \sum_{\text{rows}} dy, \qquad d\gamma = \sum_{\text{rows}} dy \odot \hat x, \qquad
    dx = r \left(g - \overline{g} - \hat x\, \overline{g \odot \hat x}\right),

where the bar is the mean over the row.

Two numerical guards, both in :func:`forward`, neither changing the formula:

- **No overflow.** The statistics are taken on :math:`x / 2^e`, with :math:`2^e` the power of two just above the
  row's largest magnitude, so every square is below 1. Dividing by a power of two is exact, so for ordinary rows
  nothing changes; a float32 row of magnitude 1e20, whose squares overflow (1e40 > 3.4e38), still normalises
  correctly instead of returning :math:`\beta`. :math:`\sqrt{\sigma^2 + \epsilon}` goes back to the units of
  :math:`x` through ``hypot``, which squares nothing large.
- **Exact constant rows.** The mean is taken relative to the row's first entry, :math:`\mu = x_1 + \overline{x - x_1}`.
  The floating-point mean of C equal numbers is not always that number (float32, C = 768, value 7e4: off by one
  ulp, 0.008), and with a variance of 0 the :math:`1/\sqrt{\epsilon} = 316` of :math:`\hat x` blows that ulp up to
  :math:`\hat x \approx \pm 0.9`. Relative to :math:`x_1` a constant row is exactly 0, so :math:`\hat x = 0`.

Speed (:func:`forward_fast`, :func:`backward_fast`): rows are independent, so both passes walk over blocks of rows
small enough (~128K elements) that the handful of element-wise steps on one block run from the CPU cache instead
of main memory; the row and column sums are matrix-vector products (BLAS); every step writes into a buffer
allocated once per call (in-place ufuncs) and stays in the input's dtype. The blocks are split over threads
(``reference/_threads.py``); dgamma is summed block by block in a fixed order, so the result does not depend on
the number of threads. The rescaling by :math:`2^{-e}` is skipped in a block whose rows all lie between
:math:`2^{-40}` and :math:`2^{40}`, where it changes no bit.
"""
import math
from typing import NamedTuple

import numpy as np

from reference import _threads
from reference._checks import check_float, check_grad, check_positive, check_same_dtype, check_shape

_BLOCK = 1 << 17                                # elements per block of rows (measured best of 2^13..2^22)
_MIN_PARALLEL = 1 << 18                         # below this many elements, threads cost more than they save
_SAFE_EXPONENT = 40                             # rows within 2^-40 .. 2^40 need no rescaling (squares <= 2^80)


class LayerNormCache(NamedTuple):
    xhat: np.ndarray                            # (..., C) the normalised input
    rstd: np.ndarray                            # (..., 1) 1 / sqrt(var + eps) of each row
    gamma: np.ndarray                           # (C,)


class LayerNormFastCache(NamedTuple):
    x: np.ndarray                               # (..., C) the input (not copied: the caller must not change it)
    mu: np.ndarray                              # (..., 1) row means
    rstd: np.ndarray                            # (..., 1) 1 / sqrt(var + eps) of each row
    gamma: np.ndarray                           # (C,)


def forward(x, gamma, beta, eps=1e-5):
    r"""LayerNorm over the last axis: :math:`y = \gamma \odot (x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta`.

    Parameters
    ----------
    x : ndarray (..., C), float32 or float64, C >= 1
    gamma, beta : ndarray (C,), same dtype
    eps : float > 0
        Added to the biased variance inside the square root.

    Returns
    -------
    y : ndarray (..., C)
    cache : LayerNormCache
    """
    _check_inputs(x, gamma, beta, eps)
    e = np.frexp(np.max(np.abs(x), axis=-1, keepdims=True))[1]    # (..., 1) max|x| < 2^e (e = 0 for a zero row)
    xs = np.ldexp(x, -e)                                            # x / 2^e, exact; |xs| < 1: no square overflows
    shift = xs[..., :1]                                             # (..., 1) the row's first entry
    mu = shift + np.mean(xs - shift, axis=-1, keepdims=True)        # (..., 1) exact for a constant row
    xc = xs - mu                                                    # (..., C)
    var = np.mean(xc ** 2, axis=-1, keepdims=True)                  # (..., 1) biased variance of xs
    std = np.hypot(np.ldexp(np.sqrt(var), e), math.sqrt(eps))       # (..., 1) sqrt(var(x) + eps), in x's units
    xhat = xc / np.ldexp(std, -e)                                   # (..., C) (x - mu(x)) / sqrt(var(x) + eps)
    y = gamma * xhat + beta
    return y, LayerNormCache(xhat, 1 / std, gamma)


def backward(dy, cache):
    r"""Gradients of LayerNorm.

    Parameters
    ----------
    dy : ndarray (..., C), dtype of the forward input
    cache : LayerNormCache, from :func:`forward` or :func:`forward_fast`

    Returns
    -------
    dx : ndarray (..., C)
    dgamma, dbeta : ndarray (C,)
    """
    xhat, rstd, gamma = cache.xhat, cache.rstd, cache.gamma
    check_grad("dy", dy, xhat.shape, xhat.dtype)
    C = xhat.shape[-1]
    # forward: y = gamma * xhat + beta
    dbeta = dy.reshape(-1, C).sum(axis=0)                           # (C,) summed over every row
    dgamma = (dy * xhat).reshape(-1, C).sum(axis=0)                 # (C,)
    g = dy * gamma                                                  # (..., C) dL/dxhat
    # forward: xhat = (x - mu) * rstd, where mu and rstd depend on the whole row
    g_mean = np.mean(g, axis=-1, keepdims=True)                     # (..., 1)
    gx_mean = np.mean(g * xhat, axis=-1, keepdims=True)             # (..., 1)
    dx = rstd * (g - g_mean - xhat * gx_mean)                       # (..., C)
    return dx, dgamma, dbeta


def forward_fast(x, gamma, beta, eps=1e-5):
    """:func:`forward` over blocks of rows in a scratch buffer, the blocks split over threads (module docstring).

    Returns ``(y, cache)`` like :func:`forward`. The cache is a :class:`LayerNormFastCache` (``x`` and the row
    statistics; :func:`backward_fast` recomputes ``xhat`` from them), or, when some row's variance is not finite
    (an overflow, or a NaN or inf in the input), the :class:`LayerNormCache` of :func:`forward`, which then
    computes the whole call with its rescaling.
    """
    _check_inputs(x, gamma, beta, eps)
    C = x.shape[-1]
    N = x.size // C
    x2 = x.reshape(N, C)                        # (N, C)
    w = np.full(C, 1.0 / C, dtype=x.dtype)      # (C,) row mean as a dot product
    y = np.empty_like(x2)                       # (N, C)
    mu = np.empty((N, 1), dtype=x.dtype)        # (N, 1)
    rstd = np.empty((N, 1), dtype=x.dtype)      # (N, 1)
    sqrt_eps = math.sqrt(eps)

    def block(_, rows, scratch):
        xb, yb = x2[rows], y[rows]
        hb = scratch[:len(xb)]                          # (R, C) stays in the CPU cache
        np.subtract(xb, xb[:, :1], out=hb)              # x - shift
        m = hb @ w                                      # (R,) mean(x - shift)
        hb -= m[:, None]                                # xc = x - mu
        np.add(xb[:, 0], m, out=mu[rows, 0])            # mu = shift + mean(x - shift)
        std = np.vecdot(hb, hb)[:, None]                # (R, 1) sum of squares, one read of xc
        std *= 1.0 / C                                  # biased variance
        np.sqrt(std, out=std)
        np.hypot(std, sqrt_eps, out=std)                # sqrt(var + eps)
        np.divide(1.0, std, out=rstd[rows])
        hb /= std                                       # xhat
        np.multiply(hb, gamma, out=yb)
        yb += beta                                      # y = gamma xhat + beta

    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is caught below, and redone
        _for_each_block(block, N, C, x.dtype, scratches=1)
    if not (np.all(rstd > 0) and np.all(np.isfinite(mu))):     # rstd = 0: the variance overflowed; NaN: a NaN
        return forward(x, gamma, beta, eps)
    lead = x.shape[:-1] + (1,)
    return y.reshape(x.shape), LayerNormFastCache(x, mu.reshape(lead), rstd.reshape(lead), gamma)


def backward_fast(dy, cache):
    """:func:`backward` over blocks of rows, ``xhat`` recomputed in a scratch buffer, the blocks split over threads.

    ``cache`` from :func:`forward_fast` (a :class:`LayerNormCache` from its fallback goes to :func:`backward`).
    """
    if isinstance(cache, LayerNormCache):
        return backward(dy, cache)
    x, mu, rstd, gamma = cache
    check_grad("dy", dy, x.shape, x.dtype)
    C = x.shape[-1]
    N = x.size // C
    x2, dy2, mu2, r2 = x.reshape(N, C), dy.reshape(N, C), mu.reshape(N), rstd.reshape(N)
    gamma_c = gamma / C                         # (C,) so that mean(dy gamma) = dy @ gamma_c
    dx = np.empty_like(dy2)                     # (N, C)
    blocks = _row_blocks(N, C)
    dgamma_part = np.empty((len(blocks), C), dtype=dy.dtype)    # (n_blocks, C) one partial sum per block
    dbeta_part = np.empty((len(blocks), C), dtype=dy.dtype)

    def block(i, rows, h_scratch, p_scratch):
        xb, dyb, rb, dxb = x2[rows], dy2[rows], r2[rows], dx[rows]
        hb, p = h_scratch[:len(xb)], p_scratch[:len(xb)]   # (R, C) each, in the CPU cache
        np.subtract(xb, mu2[rows, None], out=hb)        # x - mu
        hb *= rb[:, None]                               # xhat (not r^2 times x - mu: r^2 overflows float16)
        np.multiply(dyb, hb, out=p)                     # dy xhat
        # forward: y = gamma * xhat + beta
        np.matmul(np.ones(len(xb), dtype=dy.dtype), p, out=dgamma_part[i])     # sum_rows dy xhat
        np.matmul(np.ones(len(xb), dtype=dy.dtype), dyb, out=dbeta_part[i])
        # forward: xhat = (x - mu) r, mu and r depend on the whole row; g = dy gamma = dL/dxhat
        a = p @ gamma_c                                 # (R,) mean(g xhat)
        a *= rb                                         # r mean(g xhat)
        c = dyb @ gamma_c                               # (R,) mean(g)
        c *= rb                                         # r mean(g)
        hb *= a[:, None]                                # r xhat mean(g xhat)
        hb += c[:, None]                                # r (xhat mean(g xhat) + mean(g))
        np.multiply(dyb, gamma, out=dxb)
        dxb *= rb[:, None]                              # r g
        dxb -= hb                                       # r (g - mean(g) - xhat mean(g xhat))

    _for_each_block(block, N, C, dy.dtype, scratches=2)
    ones = np.ones(len(blocks), dtype=dy.dtype)
    return dx.reshape(dy.shape), ones @ dgamma_part, ones @ dbeta_part     # blocks summed in a fixed order


def _check_inputs(x, gamma, beta, eps):
    check_float("x", x, ndim_min=1)
    C = x.shape[-1]
    check_float("gamma", gamma)
    check_shape("gamma", gamma, (C,))
    check_float("beta", beta)
    check_shape("beta", beta, (C,))
    check_same_dtype(x=x, gamma=gamma, beta=beta)
    check_positive("eps", eps)
    if C == 0:
        raise ValueError(f"x: expected a last axis of size >= 1 to normalise, got shape {x.shape}")


def _row_blocks(N, C):
    """Slices that cover rows 0..N-1 in blocks of about ``_BLOCK`` elements."""
    R = max(1, _BLOCK // C)
    return [slice(s, min(s + R, N)) for s in range(0, N, R)]


def _for_each_block(fn, N, C, dtype, scratches):
    """Call ``fn(i, rows, *scratch)`` for every block of rows, with ``scratches`` buffers of one block's size that
    each thread reuses; the blocks are split into contiguous runs over threads."""
    blocks = list(enumerate(_row_blocks(N, C)))
    R = min(N, max(1, _BLOCK // C))

    def run(part):
        scratch = [np.empty((R, C), dtype=dtype) for _ in range(scratches)]
        for i, rows in blocks[part]:
            fn(i, rows, *scratch)

    _threads.run(run, _threads.parts(len(blocks), _threads.workers_for(N * C, _MIN_PARALLEL)))
