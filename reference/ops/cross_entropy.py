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
import math
from typing import NamedTuple

import numpy as np

from reference._checks import check_float, check_int, check_shape


class CrossEntropyCache(NamedTuple):
    probs: np.ndarray                           # (N, V) softmax of the logits, N the flattened leading axes
    targets: np.ndarray                         # (...) as given
    keep: np.ndarray                            # (...) bool, False where the target is ignore_index
    n_kept: int                                 # |K|, the number of positions averaged over


def forward(logits, targets, ignore_index=None):
    r"""Mean cross-entropy over the non-ignored positions.

    Parameters
    ----------
    logits : ndarray (..., V), float32 or float64, V >= 1
    targets : ndarray (...), integer
        Class indices in ``[0, V)``, or ``ignore_index``.
    ignore_index : int or None
        Positions whose target equals it are left out of the mean and get zero gradient.

    Returns
    -------
    loss : 0-d ndarray of ``logits.dtype``
    cache : CrossEntropyCache
    """
    keep = _check_inputs(logits, targets, ignore_index)         # (...) bool
    V, N = logits.shape[-1], math.prod(targets.shape)
    n_kept = int(keep.sum())
    z = logits.reshape(N, V)                                    # (N, V)
    t = np.where(keep, targets, 0).reshape(N)                   # (N,) an ignored position reads class 0, unused
    m = np.max(z, axis=1, keepdims=True, initial=-np.inf)       # (N, 1) row max
    e = np.exp(z - m)                                           # (N, V) every exponent <= 0: no overflow
    s = np.sum(e, axis=1, keepdims=True)                        # (N, 1)
    lse = m[:, 0] + np.log(s[:, 0])                             # (N,) log sum_v exp(z_v)
    nll = lse - z[np.arange(N), t]                              # (N,) -log softmax(z)_t
    total = np.sum(nll[keep.reshape(N)], dtype=logits.dtype)
    loss = total / max(n_kept, 1)                               # nothing kept: 0 (module docstring)
    probs = e / s                                               # (N, V) softmax, for the backward
    return np.asarray(loss, dtype=logits.dtype), CrossEntropyCache(probs, targets, keep, n_kept)


def backward(dloss, cache):
    r"""Gradient of the mean cross-entropy with respect to the logits.

    Parameters
    ----------
    dloss : float or 0-d ndarray
        Upstream gradient :math:`\partial \ell / \partial L` (1.0 when ``L`` is the final loss).
    cache : CrossEntropyCache

    Returns
    -------
    dlogits : ndarray (..., V), dtype of the logits
    """
    probs, targets, keep, n_kept = cache
    _check_dloss(dloss)
    N, V = probs.shape
    rows = np.flatnonzero(keep.reshape(N))                      # (n_kept,) the positions in the mean
    # forward: L = sum_{n kept} (lse(z_n) - z_{n, t_n}) / n_kept,  d lse(z) / dz = softmax(z)
    dz = np.zeros_like(probs)                                   # (N, V) ignored positions get no gradient
    dz[rows] = probs[rows]
    dz[rows, targets.reshape(N)[rows]] -= 1                     # softmax(z) - onehot(t)
    dz *= probs.dtype.type(dloss) / probs.dtype.type(max(n_kept, 1))
    return dz.reshape(targets.shape + (V,))


def _check_inputs(logits, targets, ignore_index):
    """Validate; return ``keep`` (bool, the shape of targets), False at ignored positions."""
    check_float("logits", logits, ndim_min=1)
    V = logits.shape[-1]
    if V == 0:
        raise ValueError(f"logits: expected at least one class (a last axis V >= 1), got shape {logits.shape}")
    check_int("targets", targets)
    check_shape("targets", targets, logits.shape[:-1])
    if ignore_index is not None and (isinstance(ignore_index, (bool, np.bool_))
                                     or not isinstance(ignore_index, (int, np.integer))):
        raise TypeError(f"ignore_index: expected an int or None, got {type(ignore_index).__name__}")
    keep = np.ones(targets.shape, dtype=bool) if ignore_index is None else targets != ignore_index
    bad = keep & ((targets < 0) | (targets >= V))
    if bad.any():
        raise ValueError(f"targets: expected class indices in [0, {V - 1}] (or ignore_index={ignore_index}), "
                         f"got {targets[bad].ravel()[0]}")
    return keep


def _check_dloss(dloss):
    if isinstance(dloss, np.ndarray):
        check_float("dloss", dloss)
        check_shape("dloss", dloss, ())
    elif isinstance(dloss, (bool, np.bool_)) or not isinstance(dloss, (int, float, np.integer, np.floating)):
        raise TypeError(f"dloss: expected a real number or a 0-d float ndarray, got {type(dloss).__name__}")
