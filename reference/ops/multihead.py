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

Shapes: ``x_q (B, T_q, C)``, ``x_kv (B, T_k, C)``, ``Wq, Wk, Wv, Wo (C, C)``, ``bq, bk, bv, bo (C,)`` (optional)
-> ``y (B, T_q, C)``. The ``mask`` (bool, True = may attend) is ``(T_q, T_k)``, the same for every row and head (a
causal mask), or ``(B, H, T_q, T_k)``, any axis 1 to broadcast (a key-padding mask is ``(B, 1, 1, T_k)``). No other
number of axes: a 3-d ``(B, T_q, T_k)`` would broadcast against ``(H, T_q, T_k)`` and, when B equals H, silently mask
each head with another batch row's mask.
Self-attention is ``forward(x, x, ...)``; cross-attention (decoder to encoder) is ``forward(x, memory, ...)``.

:func:`forward_fast`/:func:`backward_fast` wire the fast variants of the same ops (``linear``, ``attention``).
"""
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from reference._checks import check_count, check_float, check_same_dtype, check_shape
from reference.ops import attention, linear

WEIGHTS = ("Wq", "Wk", "Wv", "Wo")
BIASES = ("bq", "bk", "bv", "bo")


class MultiheadCache(NamedTuple):
    q: linear.LinearCache                       # q = x_q Wq + bq
    k: linear.LinearCache                       # k = x_kv Wk + bk
    v: linear.LinearCache                       # v = x_kv Wv + bv
    attn: attention.AttentionCache              # the heads, (B, H, T_q, d_k)
    o: linear.LinearCache                       # y = Concat(heads) Wo + bo
    names: tuple                                # the keys of params, so that the gradients have the same ones


def forward(x_q, x_kv, params, n_head, mask=None):
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
    n_head : int
        H, a divisor of C; each head has ``d_k = C / H``.
    mask : ndarray of bool, shape (T_q, T_k) or (B, H, T_q, T_k), any axis 1 to broadcast, optional
        True = may attend. A fully masked query row gives 0 before the output projection (so ``y = bo`` there).

    Returns
    -------
    y : ndarray, shape (B, T_q, C)
    cache : MultiheadCache
    """
    H = _check_inputs(x_q, x_kv, params, n_head, mask)
    q, cache_q = linear.forward(x_q, params["Wq"], params.get("bq"))      # (B, T_q, C)
    k, cache_k = linear.forward(x_kv, params["Wk"], params.get("bk"))     # (B, T_k, C)
    v, cache_v = linear.forward(x_kv, params["Wv"], params.get("bv"))     # (B, T_k, C)
    heads, cache_a = attention.forward(split_heads(q, H), split_heads(k, H), split_heads(v, H), mask)  # (B,H,T_q,d_k)
    y, cache_o = linear.forward(merge_heads(heads), params["Wo"], params.get("bo"))                   # (B, T_q, C)
    return y, MultiheadCache(cache_q, cache_k, cache_v, cache_a, cache_o, _names(params))


def backward(dy, cache):
    r"""Gradients of multi-head attention.

    Parameters
    ----------
    dy : ndarray, shape (B, T_q, C)
        Upstream gradient, same dtype as the forward inputs.
    cache : MultiheadCache, from :func:`forward`

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
    H = cache.attn.qs.shape[1]
    # forward: y = Concat(heads) Wo + bo
    dheads, dWo, dbo = linear.backward(dy, cache.o)                             # (B, T_q, C)
    # forward: heads = Attention(split(q), split(k), split(v))
    dq, dk, dv = attention.backward(split_heads(dheads, H), cache.attn)         # (B, H, T, d_k) each
    # forward: q = x_q Wq + bq, k = x_kv Wk + bk, v = x_kv Wv + bv
    dx_q, dWq, dbq = linear.backward(merge_heads(dq), cache.q)                  # (B, T_q, C)
    dx_k, dWk, dbk = linear.backward(merge_heads(dk), cache.k)                  # (B, T_k, C)
    dx_v, dWv, dbv = linear.backward(merge_heads(dv), cache.v)                  # (B, T_k, C)
    dx_kv = dx_k + dx_v                                                         # x_kv is used by both k and v
    grads = {"Wq": dWq, "Wk": dWk, "Wv": dWv, "Wo": dWo, "bq": dbq, "bk": dbk, "bv": dbv, "bo": dbo}
    return dx_q, dx_kv, {name: grads[name] for name in cache.names}


def forward_fast(x_q, x_kv, params, n_head, mask=None):
    """:func:`forward` with the fast variants of ``linear`` and ``attention``."""
    H = _check_inputs(x_q, x_kv, params, n_head, mask)
    q, cache_q = linear.forward_fast(x_q, params["Wq"], params.get("bq"))
    k, cache_k = linear.forward_fast(x_kv, params["Wk"], params.get("bk"))
    v, cache_v = linear.forward_fast(x_kv, params["Wv"], params.get("bv"))
    heads, cache_a = attention.forward_fast(split_heads(q, H), split_heads(k, H), split_heads(v, H), mask)
    y, cache_o = linear.forward_fast(merge_heads(heads), params["Wo"], params.get("bo"))
    return y, MultiheadCache(cache_q, cache_k, cache_v, cache_a, cache_o, _names(params))


def backward_fast(dy, cache):
    """:func:`backward` with the fast variants of ``linear`` and ``attention``."""
    H = cache.attn.qs.shape[1]
    dheads, dWo, dbo = linear.backward_fast(dy, cache.o)
    dq, dk, dv = attention.backward_fast(split_heads(dheads, H), cache.attn)
    dx_q, dWq, dbq = linear.backward_fast(merge_heads(dq), cache.q)
    dx_k, dWk, dbk = linear.backward_fast(merge_heads(dk), cache.k)
    dx_v, dWv, dbv = linear.backward_fast(merge_heads(dv), cache.v)
    dx_k += dx_v
    grads = {"Wq": dWq, "Wk": dWk, "Wv": dWv, "Wo": dWo, "bq": dbq, "bk": dbk, "bv": dbv, "bo": dbo}
    return dx_q, dx_k, {name: grads[name] for name in cache.names}


def attention_probs(cache):
    """The attention probabilities of each head, shape (B, H, T_q, T_k), from a forward cache.

    Rows sum to 1 (0 for a fully masked row). A view into the cache: copy it before changing it.
    """
    return attention.probabilities(cache.attn)


def split_heads(x, H):
    """(B, T, C) -> (B, H, T, C / H): head i gets columns i*d_k .. (i+1)*d_k - 1."""
    B, T, C = x.shape
    return x.reshape(B, T, H, C // H).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, H, T, d_k) -> (B, T, H * d_k): the inverse of :func:`split_heads` (Concat over heads)."""
    B, H, T, d_k = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * d_k)


def _names(params):
    return tuple(name for name in WEIGHTS + BIASES if name in params)


def _check_inputs(x_q, x_kv, params, n_head, mask):
    """Validate everything ``forward`` takes; return H."""
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
    H = check_count("n_head", n_head, minimum=1)
    if C % H != 0:
        raise ValueError(f"n_head: expected a positive divisor of d_model = {C}, got {n_head}")
    if mask is not None:
        _check_mask(mask, B, H, T_q, T_k)
    return H


def _check_mask(mask, B, H, T_q, T_k):
    """A bool mask of shape (T_q, T_k) or (B or 1, H or 1, T_q, T_k): the shapes whose meaning is unambiguous."""
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        got = mask.dtype if isinstance(mask, np.ndarray) else type(mask).__name__
        raise TypeError(f"mask: expected a boolean numpy.ndarray (True = may attend), got {got}")
    full = {2: (T_q, T_k), 4: (B, H, T_q, T_k)}.get(mask.ndim)
    if full is None or any(m not in (1, n) for m, n in zip(mask.shape, full)):
        raise ValueError(f"mask: expected shape (T_q, T_k) = ({T_q}, {T_k}) or (B, H, T_q, T_k) = ({B}, {H}, {T_q}, "
                         f"{T_k}), any axis of them 1 to broadcast; got {mask.shape}")
