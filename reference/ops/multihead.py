r"""Multi-head attention (material §3.2.2), with its backward pass.

.. math::

    \mathrm{MultiHead}(X_q, X_{kv}) = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_H)\, W^O + b^O,
    \qquad \mathrm{head}_i = \mathrm{Attention}\big((X_q W^Q + b^Q)_{[i]},\ (X_{kv} W^K + b^K)_{[i]},\
    (X_{kv} W^V + b^V)_{[i]}\big)

where :math:`Z_{[i]}` is the i-th block of :math:`d_k = C / H` columns of :math:`Z`. So the per-head projections
:math:`W^Q_i, W^K_i, W^V_i` of the paper are the column blocks of one ``(C, C)`` matrix each, and all heads are
computed by one matrix product, then split.

**Erratum.** The material lists :math:`W^O` among "each head's parameter matrices". There is one :math:`W^O`,
of shape ``(C, C)``, applied once to the concatenation of all heads. Written per head it is
:math:`\mathrm{Concat}(\mathrm{head}_i) W^O = \sum_i \mathrm{head}_i\, W^O_{[i]}`, with :math:`W^O_{[i]}` the i-th
block of :math:`d_k` *rows*: the output projection mixes the heads, which H separate per-head matrices could not.

Shapes: ``x_q (B, T_q, C)``, ``x_kv (B, T_k, C)``, ``Wq, Wk, Wv, Wo (C, C)``, ``bq, bk, bv, bo (C,)`` (optional),
``mask`` bool broadcastable to ``(B, H, T_q, T_k)`` (True = may attend) -> ``y (B, T_q, C)``.
Self-attention is ``forward(x, x, ...)``; cross-attention (decoder to encoder) is ``forward(x, memory, ...)``.
"""
from collections.abc import Mapping

import numpy as np

from reference._checks import check_bool_mask, check_float, check_same_dtype, check_shape
from reference.ops import attention, linear

WEIGHTS = ("Wq", "Wk", "Wv", "Wo")
BIASES = ("bq", "bk", "bv", "bo")


def forward(x_q, x_kv, params, n_heads, mask=None):
    r"""Multi-head attention of the queries ``x_q`` over the keys and values ``x_kv``.

    Parameters
    ----------
    x_q : ndarray, shape (B, T_q, C)
        Inputs the queries come from; float32 or float64.
    x_kv : ndarray, shape (B, T_k, C)
        Inputs the keys and values come from (``x_q`` itself for self-attention); same dtype.
    params : dict
        ``Wq, Wk, Wv, Wo`` of shape (C, C), row-vector convention (``q = x_q @ Wq + bq``); optional ``bq, bk, bv, bo``
        of shape (C,). All one dtype.
    n_heads : int
        H, a divisor of C; each head has ``d_k = C / H``.
    mask : ndarray of bool, broadcastable to (B, H, T_q, T_k), optional
        True = may attend. A fully masked query row gives 0 before the output projection (so ``y = bo`` there).

    Returns
    -------
    y : ndarray, shape (B, T_q, C)
    cache : tuple
        For ``backward`` and :func:`attention_probs`.
    """
    B, T_q, T_k, C, H = _check_inputs(x_q, x_kv, params, n_heads, mask)
    q, cache_q = linear.forward(x_q, params["Wq"], params.get("bq"))      # (B, T_q, C)
    k, cache_k = linear.forward(x_kv, params["Wk"], params.get("bk"))     # (B, T_k, C)
    v, cache_v = linear.forward(x_kv, params["Wv"], params.get("bv"))     # (B, T_k, C)
    a, cache_a = attention.forward(_split_heads(q, H), _split_heads(k, H), _split_heads(v, H), mask)  # (B, H, T_q, d_k)
    y, cache_o = linear.forward(_merge_heads(a), params["Wo"], params.get("bo"))                     # (B, T_q, C)
    names = tuple(name for name in WEIGHTS + BIASES if name in params)
    return y, (cache_q, cache_k, cache_v, cache_a, cache_o, H, names)


def backward(dy, cache):
    r"""Gradients of multi-head attention.

    Parameters
    ----------
    dy : ndarray, shape (B, T_q, C)
        Upstream gradient, same dtype as the forward inputs.
    cache : tuple
        From :func:`forward`.

    Returns
    -------
    dx_q : ndarray, shape (B, T_q, C)
        Through the query projection only.
    dx_kv : ndarray, shape (B, T_k, C)
        Through the key and value projections (``x_kv`` feeds both, so the two add up).
    dparams : dict
        The same keys as ``params``: ``dWq, ...`` under ``"Wq", ...``.

    Notes
    -----
    For self-attention (``forward(x, x, ...)``) the gradient of ``x`` is ``dx_q + dx_kv``: the caller adds them,
    because ``x`` was used twice.
    """
    cache_q, cache_k, cache_v, cache_a, cache_o, H, names = cache
    # forward: y = Concat(heads) Wo + bo
    da, dWo, dbo = linear.backward(dy, cache_o)                 # (B, T_q, C)
    # forward: heads = Attention(split(q), split(k), split(v))
    dq, dk, dv = attention.backward(_split_heads(da, H), cache_a)   # (B, H, T, d_k) each
    # forward: q = x_q Wq + bq, k = x_kv Wk + bk, v = x_kv Wv + bv
    dx_q, dWq, dbq = linear.backward(_merge_heads(dq), cache_q)     # (B, T_q, C)
    dx_k, dWk, dbk = linear.backward(_merge_heads(dk), cache_k)     # (B, T_k, C)
    dx_v, dWv, dbv = linear.backward(_merge_heads(dv), cache_v)     # (B, T_k, C)
    dx_kv = dx_k + dx_v                                             # x_kv is used by both k and v
    grads = {"Wq": dWq, "Wk": dWk, "Wv": dWv, "Wo": dWo, "bq": dbq, "bk": dbk, "bv": dbv, "bo": dbo}
    return dx_q, dx_kv, {name: grads[name] for name in names}


def attention_probs(cache):
    """The attention probabilities of each head, shape (B, H, T_q, T_k), from a :func:`forward` cache.

    Rows sum to 1 (0 for a fully masked row). A view into the cache: copy it before changing it.
    """
    return attention.probabilities(cache[3])


def _split_heads(x, H):
    """(B, T, C) -> (B, H, T, C / H): head i gets columns i*d_k .. (i+1)*d_k - 1."""
    B, T, C = x.shape
    return x.reshape(B, T, H, C // H).transpose(0, 2, 1, 3)


def _merge_heads(x):
    """(B, H, T, d_k) -> (B, T, H * d_k): the inverse of ``_split_heads`` (Concat over heads)."""
    B, H, T, d_k = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * d_k)


def _check_inputs(x_q, x_kv, params, n_heads, mask):
    """Validate everything ``forward`` takes; return (B, T_q, T_k, C, H)."""
    check_float("x_q", x_q)
    check_float("x_kv", x_kv)
    check_shape("x_q", x_q, (None, None, None))    # (B, T_q, C)
    B, T_q, C = x_q.shape
    if C == 0:
        raise ValueError(f"x_q: expected d_model >= 1, got shape {x_q.shape}")
    check_shape("x_kv", x_kv, (B, None, C))        # same batch and model width as x_q
    T_k = x_kv.shape[1]
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a dict of arrays {WEIGHTS + BIASES}, got {type(params).__name__}")
    missing = [name for name in WEIGHTS if name not in params]
    unknown = sorted(set(params) - set(WEIGHTS + BIASES))
    if missing or unknown:
        raise ValueError(f"params: expected keys {', '.join(WEIGHTS)} and optionally {', '.join(BIASES)}; "
                         f"got {sorted(params)} (missing {missing}, unknown {unknown})")
    for name in WEIGHTS:
        check_float(name, params[name])
        check_shape(name, params[name], (C, C))
    for name in BIASES:
        if name in params:
            check_float(name, params[name])
            check_shape(name, params[name], (C,))
    check_same_dtype(x_q=x_q, x_kv=x_kv, **params)
    if isinstance(n_heads, bool) or not isinstance(n_heads, (int, np.integer)):
        raise TypeError(f"n_heads: expected a positive int, got {type(n_heads).__name__}")
    if n_heads < 1 or C % n_heads != 0:
        raise ValueError(f"n_heads: expected a positive divisor of d_model = {C}, got {n_heads}")
    H = int(n_heads)
    if mask is not None:
        check_bool_mask("mask", mask, (B, H, T_q, T_k))
    return B, T_q, T_k, C, H
