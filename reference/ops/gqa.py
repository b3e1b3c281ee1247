r"""Grouped-query attention (Ainslie et al. 2023; Llama 2 70B, Llama 3, Mistral), with its backward pass.

Multi-head attention with fewer key/value heads than query heads: :math:`H_{kv}` divides :math:`H`, and each K/V
head is shared by a group of :math:`G = H / H_{kv}` consecutive query heads. Query head :math:`h` reads K/V head
:math:`\lfloor h / G \rfloor`:

.. math::

    O_h = \mathrm{Attention}\big(Q_h,\ K_{\lfloor h/G \rfloor},\ V_{\lfloor h/G \rfloor}\big), \qquad h = 0, \dots, H - 1.

:math:`H_{kv} = H` is ordinary multi-head attention, :math:`H_{kv} = 1` is multi-query attention (Shazeer 2019).
The point is the KV cache: decoding stores :math:`H_{kv}` heads of K and V per token instead of :math:`H`, i.e.
:math:`G` times fewer bytes, while the number of query heads (and of parameters in :math:`W^Q, W^O`) stays.

Written as the maths (:func:`forward`): repeat each K/V head :math:`G` times (Hugging Face's ``repeat_kv``) and run
plain attention (:mod:`reference.ops.attention`). Backward: repeating is a copy, and the adjoint of a copy is a
sum, so the gradient of a K/V head is the sum of the gradients that its :math:`G` query heads send to their copies:

.. math::

    dK_g = \sum_{j=0}^{G-1} dK^{\mathrm{rep}}_{gG + j}, \qquad dV_g = \sum_{j=0}^{G-1} dV^{\mathrm{rep}}_{gG + j}.

:func:`forward_fast` / :func:`backward_fast` compute the same without the copies: the :math:`G` query heads of a
group are stacked along the query axis, ``(..., H, T_q, d) -> (..., H_kv, G T_q, d)`` (a view), and attend to their
one K/V head in one call. The sum over the group then happens inside the product :math:`dS^\top Q`, and when
decoding (``T_q = 1``) the G matrix-vector products become one matrix product. The mask is stacked likewise (an
explicit mask is needed: a causal mask built for ``G T_q`` queries would be wrong). This is how GQA kernels load one
K/V tile for a whole group.

Shapes: ``q (..., H, T_q, d_k)``, ``k (..., H_kv, T_k, d_k)``, ``v (..., H_kv, T_k, d_v)``, ``mask`` bool
broadcastable to ``(..., H, T_q, T_k)`` (True = may attend) -> ``out (..., H, T_q, d_v)``. Heads come before time,
as in :mod:`reference.ops.multihead`.
"""
from typing import NamedTuple

import numpy as np

from reference._checks import check_bool_mask, check_float, check_same_dtype, check_shape
from reference.ops import attention


class Cache(NamedTuple):
    """What :func:`backward` / :func:`backward_fast` need."""

    attention: object       # the cache of attention.forward (or forward_fast, for backward_fast)
    n_rep: int              # G = H / H_kv, query heads per K/V head
    q_shape: tuple          # (..., H, T_q, d_k)
    k_shape: tuple          # (..., H_kv, T_k, d_k)
    v_shape: tuple          # (..., H_kv, T_k, d_v)


def repeat_kv(x, n_rep):
    """K/V heads repeated for their query heads: ``(..., H_kv, T, d) -> (..., H_kv n_rep, T, d)``, head g at
    ``g n_rep, ..., g n_rep + n_rep - 1`` (the order of Hugging Face's ``repeat_kv``). A copy."""
    return np.repeat(x, n_rep, axis=-3)


def forward(q, k, v, mask=None):
    r"""Grouped-query attention by repeating the K/V heads, then plain attention.

    Parameters
    ----------
    q : ndarray (..., H, T_q, d_k)
    k : ndarray (..., H_kv, T_k, d_k)
    v : ndarray (..., H_kv, T_k, d_v)
        float32 or float64, one dtype, the same leading axes; H_kv divides H.
    mask : ndarray of bool, broadcastable to (..., H, T_q, T_k), optional
        True = may attend (e.g. ``attention.causal_mask(T_q, T_k)``).

    Returns
    -------
    out : ndarray (..., H, T_q, d_v)
    cache : Cache
    """
    G = _check_inputs(q, k, v, mask)
    k_rep = repeat_kv(k, G)                                 # (..., H, T_k, d_k)
    v_rep = repeat_kv(v, G)                                 # (..., H, T_k, d_v)
    out, attn_cache = attention.forward(q, k_rep, v_rep, mask)     # (..., H, T_q, d_v)
    return out, Cache(attn_cache, G, q.shape, k.shape, v.shape)


def backward(dout, cache):
    r"""Gradients of grouped-query attention: attention's, then each K/V head sums over its G query heads.

    Parameters
    ----------
    dout : ndarray (..., H, T_q, d_v)
    cache : Cache from :func:`forward`

    Returns
    -------
    dq : ndarray (..., H, T_q, d_k)
    dk : ndarray (..., H_kv, T_k, d_k)
    dv : ndarray (..., H_kv, T_k, d_v)
    """
    attn_cache, G, _, k_shape, v_shape = cache
    dq, dk_rep, dv_rep = attention.backward(dout, attn_cache)      # dk_rep (..., H, T_k, d_k)
    # forward: k_rep = repeat_kv(k, G), v_rep = repeat_kv(v, G): a copy per query head, so the gradients add
    dk = dk_rep.reshape(k_shape[:-2] + (G,) + k_shape[-2:]).sum(axis=-3)   # (..., H_kv, T_k, d_k)
    dv = dv_rep.reshape(v_shape[:-2] + (G,) + v_shape[-2:]).sum(axis=-3)   # (..., H_kv, T_k, d_v)
    return dq, dk, dv


def forward_fast(q, k, v, mask=None):
    """:func:`forward` without copying K and V: each group's G query heads are stacked along the query axis.

    Same arguments and results as :func:`forward`; use :func:`backward_fast` with its cache. The stacked call goes
    to :func:`reference.ops.attention.forward_fast` (one score buffer per slice, in place, slices over threads).
    Measured (float32, forward + backward, causal mask, one BLAS thread, the default two threads over slices, best
    of 11, load average 1.1-1.3 on 2 cores), readable time / this one: 1.4x at B=4, H=8, H_kv=2, T=256, d=64
    (training); 9.2x when decoding one token at B=8, H=32, H_kv=8, T_k=1024, d=128, and 16.5x with H_kv=4,
    T_k=2048, where copying K and V is most of the readable version's work. (Stacking alone, over the readable
    attention, gave 1.1x, 6.6x and 10.4x in the same run.)
    """
    G = _check_inputs(q, k, v, mask)
    *lead, H, T_q, d_k = q.shape
    H_kv, T_k = k.shape[-3], k.shape[-2]
    q_rows = q.reshape(*lead, H_kv, G * T_q, d_k)           # a view: the heads of a group are consecutive
    out_rows, attn_cache = attention.forward_fast(q_rows, k, v, _stack_mask(mask, lead, H, T_q, T_k, G))
    out = out_rows.reshape(*lead, H, T_q, v.shape[-1])      # (..., H, T_q, d_v)
    return out, Cache(attn_cache, G, q.shape, k.shape, v.shape)


def backward_fast(dout, cache):
    """Gradients from a :func:`forward_fast` cache; ``dk`` and ``dv`` already hold the sum over each group."""
    attn_cache, G, q_shape, k_shape, v_shape = cache
    check_float("dout", dout)
    check_shape("dout", dout, q_shape[:-1] + v_shape[-1:])
    H_kv = k_shape[-3]
    dout_rows = dout.reshape(q_shape[:-3] + (H_kv, G * q_shape[-2], v_shape[-1]))    # (..., H_kv, G T_q, d_v)
    dq_rows, dk, dv = attention.backward_fast(dout_rows, attn_cache)
    return dq_rows.reshape(q_shape), dk, dv


def _stack_mask(mask, lead, H, T_q, T_k, G):
    """The mask for the stacked queries, broadcastable to (..., H_kv, G T_q, T_k); None stays None."""
    if mask is None:
        return None
    if mask.ndim <= 2:                                      # one (T_q, T_k) pattern for every head: stack it G times
        return np.tile(np.broadcast_to(mask, (T_q, T_k)), (G, 1))          # (G T_q, T_k)
    full = np.broadcast_to(mask, tuple(lead) + (H, T_q, T_k))
    return full.reshape(tuple(lead) + (H // G, G * T_q, T_k))             # a copy where mask was broadcast


def _check_inputs(q, k, v, mask):
    """Validate q, k, v and mask; return G = H / H_kv."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_float(name, x, ndim_min=3)
    check_same_dtype(q=q, k=k, v=v)
    lead, H, T_q, d_k = q.shape[:-3], q.shape[-3], q.shape[-2], q.shape[-1]
    check_shape("k", k, lead + (None, None, d_k))
    H_kv, T_k = k.shape[-3], k.shape[-2]
    if H_kv == 0 or H % H_kv:
        raise ValueError(f"k: expected a number of K/V heads that divides the {H} query heads, got {H_kv} "
                         f"(k shape {k.shape})")
    check_shape("v", v, lead + (H_kv, T_k, None))
    if mask is not None:
        check_bool_mask("mask", mask, lead + (H, T_q, T_k))
    return H // H_kv
