r"""Mean cross-entropy of logits against integer targets, with its backward pass.

For logits :math:`z \in \mathbb{R}^{N \times V}` (any leading shape, flattened to N positions) and targets
:math:`t_n`, over the set :math:`\mathcal{K}` of positions whose target is not ``ignore_index``:

.. math::

    L = -\frac{1}{|\mathcal{K}|} \sum_{n \in \mathcal{K}} \log \mathrm{softmax}(z_n)_{t_n}
      = \frac{1}{|\mathcal{K}|} \sum_{n \in \mathcal{K}} \left(\operatorname{lse}(z_n) - z_{n, t_n}\right),
    \qquad \operatorname{lse}(z) = m + \log \sum_v e^{z_v - m},\ m = \max_v z_v.

The log-sum-exp never exponentiates a positive number, so logits of magnitude 1e4 are fine in float32.

Backward: :math:`\partial L / \partial z_{n} = (\mathrm{softmax}(z_n) - \mathrm{onehot}(t_n)) / |\mathcal{K}|` for
:math:`n \in \mathcal{K}`, and 0 for ignored positions.

Convention (differs from PyTorch, which returns NaN): when every position is ignored, or there are no positions,
:math:`|\mathcal{K}| = 0` and we return loss 0 and gradient 0; an empty batch then contributes nothing.
"""
import numpy as np

from reference._checks import check_float, check_int, check_shape


def forward(logits, targets, ignore_index=None):
    r"""Mean cross-entropy over the non-ignored positions.

    Parameters
    ----------
    logits : ndarray (..., V), float32 or float64
    targets : ndarray (...), integer
        Class indices in ``[0, V)``, or ``ignore_index``.
    ignore_index : int or None
        Positions whose target equals it are left out of the mean and get zero gradient.

    Returns
    -------
    loss : 0-d ndarray of ``logits.dtype``
    cache : tuple for :func:`backward`
    """
    check_float("logits", logits, ndim_min=1)
    check_int("targets", targets)
    check_shape("targets", targets, logits.shape[:-1])
    if ignore_index is not None and (isinstance(ignore_index, (bool, np.bool_))
                                     or not isinstance(ignore_index, (int, np.integer))):
        raise TypeError(f"ignore_index: expected an int or None, got {type(ignore_index).__name__}")
    V = logits.shape[-1]
    keep = np.ones(targets.shape, dtype=bool) if ignore_index is None else targets != ignore_index   # (...)
    bad = keep & ((targets < 0) | (targets >= V))
    if bad.any():
        raise ValueError(f"targets: expected class indices in [0, {V - 1}] (or ignore_index={ignore_index}), "
                         f"got {targets[bad].ravel()[0]}")
    n_kept = int(keep.sum())
    dtype = logits.dtype.type
    if n_kept == 0:
        return np.zeros((), dtype=logits.dtype), (None, targets, keep, 0, logits.dtype, V)

    z = logits.reshape(-1, V)                                # (N, V)
    t = np.where(keep, targets, 0).reshape(-1, 1)           # (N, 1) safe index for ignored positions
    m = z.max(axis=1, keepdims=True)                         # (N, 1)
    p = np.subtract(z, m)                                    # (N, V), every entry <= 0
    z_t = np.take_along_axis(p, t, axis=1)                   # (N, 1) z_t - m
    np.exp(p, out=p)
    s = p.sum(axis=1, keepdims=True)                         # (N, 1) sum_v exp(z_v - m)
    p /= s                                                   # (N, V) softmax, kept for backward
    nll = np.log(s) - z_t                                    # (N, 1) lse - z_t
    loss = nll[keep.reshape(-1)].sum(dtype=logits.dtype) / dtype(n_kept)
    return np.asarray(loss, dtype=logits.dtype), (p, targets, keep, n_kept, logits.dtype, V)


def backward(dloss, cache):
    r"""Gradient of the mean cross-entropy with respect to the logits.

    Parameters
    ----------
    dloss : float or 0-d ndarray
        Upstream gradient :math:`\partial \ell / \partial L` (1.0 when ``L`` is the final loss).
    cache : tuple
        From :func:`forward`.

    Returns
    -------
    dlogits : ndarray (..., V), dtype of the logits
    """
    p, targets, keep, n_kept, dtype, V = cache
    if isinstance(dloss, np.ndarray):
        check_float("dloss", dloss)
        check_shape("dloss", dloss, ())
    elif isinstance(dloss, (bool, np.bool_)) or not isinstance(dloss, (int, float, np.integer, np.floating)):
        raise TypeError(f"dloss: expected a real number or a 0-d float ndarray, got {type(dloss).__name__}")
    if n_kept == 0:
        return np.zeros(targets.shape + (V,), dtype=dtype)
    scale = dtype.type(dloss) / dtype.type(n_kept)
    # forward: L = sum_{n kept} (lse(z_n) - z_{n, t_n}) / n_kept
    dz = p * scale                                           # (N, V) softmax(z) / n_kept
    rows = np.flatnonzero(keep.reshape(-1))                  # (n_kept,)
    dz[rows, targets.reshape(-1)[rows]] -= scale             # - onehot(t) / n_kept
    if n_kept < keep.size:
        dz[~keep.reshape(-1)] = 0                            # ignored positions get no gradient
    return dz.reshape(*targets.shape, V)
