r"""Cross-entropy with label smoothing (Szegedy et al. 2016; Vaswani et al. 2017 §5.4, :math:`\epsilon_{ls} = 0.1`).

The one-hot target is mixed with the uniform distribution over the :math:`V` classes, and the loss is the
cross-entropy against that mixture, averaged over the set :math:`\mathcal{K}` of positions whose target is not
``ignore_index``:

.. math::

    q_{n,v} = (1 - \epsilon)\,[v = t_n] + \frac{\epsilon}{V}, \qquad
    L = -\frac{1}{|\mathcal{K}|} \sum_{n \in \mathcal{K}} \sum_v q_{n,v} \log \mathrm{softmax}(z_n)_v
      = \frac{1}{|\mathcal{K}|} \sum_{n \in \mathcal{K}} \Big((1 - \epsilon)
        \big(\operatorname{lse}(z_n) - z_{n,t_n}\big) + \epsilon\big(\operatorname{lse}(z_n) - \bar z_n\big)\Big),

with :math:`\bar z_n` the mean logit of row n. The uniform share :math:`\epsilon/V` goes to every class, the true
one included, which is what PyTorch's ``cross_entropy(..., label_smoothing=eps)`` computes (the tests hold the two
equal). With :math:`\epsilon = 0` it is :mod:`reference.ops.cross_entropy`.

The loss no longer reaches 0: its minimum over :math:`z_n` is the entropy of :math:`q_n`, reached at
:math:`\mathrm{softmax}(z_n) = q_n`, so the model is rewarded for keeping a finite gap between the true logit and the
others instead of growing it without bound. The paper: it "hurts perplexity, as the model learns to be more unsure,
but improves accuracy and BLEU score".

Backward: :math:`\partial L / \partial z_n = (\mathrm{softmax}(z_n) - q_n) / |\mathcal{K}|` for :math:`n \in
\mathcal{K}`, 0 for ignored positions. As in :mod:`reference.ops.cross_entropy`, when every position is ignored the
loss and the gradient are 0 (PyTorch returns NaN).
"""
import math

import numpy as np

from reference._checks import check_float, check_int, check_shape


def forward(logits, targets, eps, ignore_index=None):
    r"""Mean label-smoothed cross-entropy over the non-ignored positions.

    Parameters
    ----------
    logits : ndarray (..., V), float32 or float64
    targets : ndarray (...), integer
        Class indices in ``[0, V)``, or ``ignore_index``.
    eps : float in [0, 1]
        :math:`\epsilon`, the mass moved from the true class to the uniform distribution.
    ignore_index : int or None
        Positions whose target equals it (padding) are left out of the mean and get zero gradient.

    Returns
    -------
    loss : 0-d ndarray of ``logits.dtype``
    cache : tuple for :func:`backward`
    """
    check_float("logits", logits, ndim_min=1)
    check_int("targets", targets)
    check_shape("targets", targets, logits.shape[:-1])
    eps = _check_eps(eps)
    if ignore_index is not None and (isinstance(ignore_index, (bool, np.bool_))
                                     or not isinstance(ignore_index, (int, np.integer))):
        raise TypeError(f"ignore_index: expected an int or None, got {type(ignore_index).__name__}")
    V = logits.shape[-1]
    keep = np.ones(targets.shape, dtype=bool) if ignore_index is None else targets != ignore_index   # (...)
    bad = keep & ((targets < 0) | (targets >= V))
    if bad.any():
        raise ValueError(f"targets: expected class indices in [0, {V - 1}] (or ignore_index={ignore_index}), "
                         f"got {targets[bad].ravel()[0]}")
    dtype = logits.dtype
    rows = np.flatnonzero(keep.reshape(-1))                          # (K,) the positions that count
    t = targets.reshape(-1)[rows]                                    # (K,)
    if rows.size == 0:
        return np.zeros((), dtype=dtype), (None, rows, t, eps, keep.shape, V, dtype)
    z = logits.reshape(-1, V)[rows]                                  # (K, V)
    m = z.max(axis=1, keepdims=True)                                 # (K, 1)
    log_p = (z - m) - np.log(np.exp(z - m).sum(axis=1, keepdims=True))   # (K, V) log softmax, no exp of a positive
    nll_true = -log_p[np.arange(rows.size), t]                       # (K,) lse - z_t
    nll_uniform = -log_p.mean(axis=1)                                # (K,) lse - mean(z)
    loss = ((1 - eps) * nll_true + eps * nll_uniform).sum(dtype=dtype) / dtype.type(rows.size)
    return np.asarray(loss, dtype=dtype), (np.exp(log_p), rows, t, eps, keep.shape, V, dtype)


def backward(dloss, cache):
    r"""Gradient with respect to the logits: :math:`(\mathrm{softmax}(z_n) - q_n) / |\mathcal{K}|`, times ``dloss``.

    Parameters
    ----------
    dloss : float or 0-d float ndarray
    cache : from :func:`forward`

    Returns
    -------
    dlogits : ndarray (..., V), the dtype of the logits; 0 at ignored positions
    """
    p, rows, t, eps, lead_shape, V, dtype = cache
    if isinstance(dloss, np.ndarray):
        check_float("dloss", dloss)
        check_shape("dloss", dloss, ())
    elif isinstance(dloss, (bool, np.bool_)) or not isinstance(dloss, (int, float, np.integer, np.floating)):
        raise TypeError(f"dloss: expected a real number or a 0-d float ndarray, got {type(dloss).__name__}")
    dz = np.zeros((int(np.prod(lead_shape)), V), dtype=dtype)        # (N, V) zero at ignored positions
    if rows.size == 0:
        return dz.reshape(*lead_shape, V)
    # forward: q = (1 - eps) onehot(t) + eps / V
    q = np.full(p.shape, eps / V, dtype=dtype)                       # (K, V)
    q[np.arange(rows.size), t] += dtype.type(1 - eps)
    # forward: L = -sum_{n kept} q_n . log softmax(z_n) / K
    dz[rows] = (p - q) * (dtype.type(dloss) / dtype.type(rows.size))
    return dz.reshape(*lead_shape, V)


def _check_eps(eps):
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.integer, np.floating)):
        raise TypeError(f"eps: expected a float in [0, 1], got {type(eps).__name__}")
    if not (math.isfinite(eps) and 0.0 <= eps <= 1.0):
        raise ValueError(f"eps: expected a float in [0, 1], got {eps!r}")
    return float(eps)
