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

Speed: rows are independent, so both passes walk over blocks of rows small enough (~128K elements) that the
handful of element-wise steps on one block run from the CPU cache instead of main memory; the row and column sums
are matrix-vector products (BLAS); every step writes into a buffer allocated once per call (in-place ufuncs) and
stays in the input's dtype. On a large input, ``workers`` threads take a contiguous run of blocks each (NumPy
releases the GIL inside BLAS and ufuncs, so they run at once); each block runs the same calls either way and
dgamma is summed block by block in a fixed order, so the result does not depend on ``workers``.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from reference._checks import check_float, check_same_dtype, check_shape

_BLOCK = 1 << 17                                # elements per block of rows (measured best of 2^13..2^22)
_MIN_PARALLEL = 1 << 18                         # below this many elements, threads cost more than they save


def _row_blocks(N, C):
    """Slices that cover rows 0..N-1 in blocks of about ``_BLOCK`` elements."""
    R = max(1, _BLOCK // C)
    return [slice(s, min(s + R, N)) for s in range(0, N, R)]


def _for_each_block(fn, blocks, workers, size):
    """Call ``fn(i, rows)`` for every block; big inputs are split into ``workers`` contiguous runs of blocks."""
    items = list(enumerate(blocks))

    def run(group):
        for i, rows in group:
            fn(i, rows)

    if workers > 1 and len(items) > 1 and size >= _MIN_PARALLEL:
        edges = [len(items) * j // workers for j in range(workers + 1)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(run, [items[a:b] for a, b in zip(edges[:-1], edges[1:])]):
                pass                            # consuming the results re-raises any error from a thread
    else:
        run(items)


def forward(x, gamma, beta, eps=1e-5, *, workers=2):
    r"""LayerNorm over the last axis: :math:`y = \gamma \odot (x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta`.

    Parameters
    ----------
    x : ndarray (..., C), float32 or float64
    gamma, beta : ndarray (C,), same dtype
    eps : float > 0
        Added to the biased variance inside the square root.
    workers : int >= 1, keyword-only
        Threads over blocks of rows for large inputs (the result is the same for any value).

    Returns
    -------
    y : ndarray (..., C)
    cache : tuple ``(xhat, rstd, gamma, x.shape, workers)``: ``xhat`` (N, C), ``rstd`` (N, 1), N the flattened
        leading axes
    """
    check_float("x", x, ndim_min=1)
    C = x.shape[-1]
    check_float("gamma", gamma)
    check_shape("gamma", gamma, (C,))
    check_float("beta", beta)
    check_shape("beta", beta, (C,))
    check_same_dtype(x=x, gamma=gamma, beta=beta)
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.integer, np.floating)):
        raise TypeError(f"eps: expected a positive real number, got {type(eps).__name__}")
    if not eps > 0 or not np.isfinite(eps):
        raise ValueError(f"eps: expected a positive finite number, got {eps}")
    if isinstance(workers, (bool, np.bool_)) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers: expected an int >= 1, got {workers!r}")
    if C == 0:
        raise ValueError(f"x: expected a last axis of size >= 1 to normalise, got shape {x.shape}")
    N = int(np.prod(x.shape[:-1]))
    x2 = x.reshape(N, C)                        # (N, C)
    w = np.full(C, 1.0 / C, dtype=x.dtype)      # (C,) row mean as a dot product
    xhat = np.empty_like(x2)                    # (N, C)
    y = np.empty_like(x2)                       # (N, C)
    rstd = np.empty((N, 1), dtype=x.dtype)      # (N, 1)

    def block(_, rows):
        xb, hb, yb, rb = x2[rows], xhat[rows], y[rows], rstd[rows]
        np.subtract(xb, (xb @ w)[:, None], out=hb)      # x - mu
        np.square(hb, out=yb)                           # scratch: (x - mu)^2
        np.matmul(yb, w, out=rb[:, 0])                  # biased variance
        rb += eps
        np.sqrt(rb, out=rb)
        np.divide(1.0, rb, out=rb)                      # r = 1 / sqrt(var + eps)
        hb *= rb                                        # xhat = (x - mu) r
        np.multiply(hb, gamma, out=yb)
        yb += beta                                      # y = gamma xhat + beta

    _for_each_block(block, _row_blocks(N, C), workers, N * C)
    return y.reshape(x.shape), (xhat, rstd, gamma, x.shape, workers)


def backward(dy, cache):
    r"""Gradients of LayerNorm.

    Parameters
    ----------
    dy : ndarray (..., C), dtype of the forward input
    cache : from :func:`forward`

    Returns
    -------
    dx : ndarray (..., C)
    dgamma, dbeta : ndarray (C,)
    """
    xhat, rstd, gamma, shape, workers = cache
    N, C = xhat.shape
    check_float("dy", dy)
    check_same_dtype(dy=dy, x=xhat)
    check_shape("dy", dy, shape)
    dy2 = dy.reshape(N, C)                      # (N, C)
    gamma_c = gamma / C                         # (C,) so that mean(dy gamma) = dy @ gamma_c
    dx = np.empty_like(dy2)                     # (N, C)
    blocks = _row_blocks(N, C)
    dgamma_part = np.empty((len(blocks), C), dtype=dy.dtype)    # (n_blocks, C) one partial sum per block

    def block(i, rows):
        dyb, hb, rb, dxb = dy2[rows], xhat[rows], rstd[rows], dx[rows]
        p = np.empty_like(dyb)                          # (R, C) scratch
        # forward: y = gamma * xhat + beta
        np.multiply(dyb, hb, out=p)                     # dy xhat
        np.matmul(np.ones(len(dyb), dtype=dy.dtype), p, out=dgamma_part[i])
        # forward: xhat = (x - mu) r, mu and r depend on the whole row; g = dy gamma = dL/dxhat
        a = (p @ gamma_c)[:, None]                      # (R, 1) mean(g xhat)
        a *= rb
        c = (dyb @ gamma_c)[:, None]                    # (R, 1) mean(g)
        c *= rb
        np.multiply(hb, a, out=p)
        p += c                                          # r (xhat mean(g xhat) + mean(g))
        np.multiply(dyb, gamma, out=dxb)
        dxb *= rb
        dxb -= p                                        # r (g - mean(g) - xhat mean(g xhat))

    _for_each_block(block, blocks, workers, N * C)
    dgamma = np.ones(len(blocks), dtype=dy.dtype) @ dgamma_part  # (C,) blocks summed in a fixed order
    dbeta = np.ones(N, dtype=dy.dtype) @ dy2    # (C,) column sums
    return dx.reshape(dy.shape), dgamma, dbeta
