r"""Scaled dot-product attention (material §3.2.1), naive and blocked (FlashAttention-style).

.. math::

    \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}} + M\right) V,
    \qquad M_{ij} = \begin{cases} 0 & \text{mask}_{ij}\ \text{True (may attend)} \\
                                  -\infty & \text{otherwise} \end{cases}

Shapes: ``q (..., T_q, d_k)``, ``k (..., T_k, d_k)``, ``v (..., T_k, d_v)`` -> ``out (..., T_q, d_v)``. The leading
axes (batch, heads, ...) must be equal in q, k and v; they are never broadcast against each other. The mask follows
PyTorch's convention (True = may attend) and broadcasts to ``(..., T_q, T_k)``.

A query row whose keys are all masked has no distribution to take; here its output is 0 and its gradients are 0
(rather than the NaN of ``softmax`` over all ``-inf``), which is what the Triton kernel does too. Which rows those
are is read from the mask, never from the scores: a NaN in ``q``, or float32 scores that overflow, give NaN, as in
PyTorch.

Two algorithms compute the same function:

* :func:`forward`/:func:`backward` materialise the ``(T_q, T_k)`` probabilities ``P`` and keep them for the backward
  pass. Memory O(T_q T_k) per (batch, head) slice. :func:`forward_fast`/:func:`backward_fast` compute the same,
  one slice at a time in place on one score buffer, the slices split over threads (``reference/_threads.py``).
* :func:`forward_blocked`/:func:`backward_blocked` run the online softmax over ``block_size x block_size`` tiles,
  keeping only the per-row log-sum-exp, and recompute ``P`` tile by tile in the backward pass. Memory O(T d). This
  is the algorithm of the Triton kernel (``kernels/``); here it is written in NumPy so that the two can be compared
  line by line.

The softmax is computed inline instead of calling ``reference.ops.softmax``: it has to treat masked entries and fully
masked rows specially, and its backward uses the cheaper ``delta = rowsum(dout * out)`` (``(T_q, d_v)`` work) instead
of ``rowsum(dp * p)`` (``(T_q, T_k)``).
"""
import math
import tracemalloc
from typing import NamedTuple

import numpy as np

from reference import _threads
from reference._checks import check_bool_mask, check_count, check_float, check_grad, check_same_dtype, check_shape

_MIN_PARALLEL_SCORES = 1 << 16                  # below this many scores in total, threads cost more than they save


class AttentionCache(NamedTuple):
    qs: np.ndarray                              # (..., T_q, d_k) the queries times 1/sqrt(d_k)
    k: np.ndarray                               # (..., T_k, d_k)
    v: np.ndarray                               # (..., T_k, d_v)
    P: np.ndarray                               # (..., T_q, T_k) the attention probabilities
    out: np.ndarray                             # (..., T_q, d_v)
    scale: np.floating                          # 1/sqrt(d_k), in the dtype of q


def causal_mask(T_q, T_k):
    r"""Boolean causal mask, aligned bottom-right: query i may attend to key j iff :math:`j \le i + T_k - T_q`.

    With ``T_q == T_k`` this is the usual lower triangle. With ``T_q < T_k`` (decoding with a KV cache: the
    ``T_q`` new tokens are the last ones of a sequence of length ``T_k``) the last query sees every key. With
    ``T_q > T_k`` the first ``T_q - T_k`` rows see no key at all: they are fully masked, and ``forward`` gives
    them output 0.

    Parameters
    ----------
    T_q, T_k : int
        Number of queries and keys (>= 0).

    Returns
    -------
    mask : ndarray of bool, shape (T_q, T_k)
        True where the query may attend to the key.
    """
    T_q, T_k = check_count("T_q", T_q, minimum=0), check_count("T_k", T_k, minimum=0)
    i = np.arange(T_q)[:, None]                     # (T_q, 1) query positions
    j = np.arange(T_k)[None, :]                     # (1, T_k) key positions
    return j <= i + (T_k - T_q)                     # (T_q, T_k)


def forward(q, k, v, mask=None):
    r"""Scaled dot-product attention, keeping the probabilities for the backward pass.

    .. math::

        S = (Q / \sqrt{d_k}) K^\top + M, \qquad P = \mathrm{softmax}_{\text{row}}(S), \qquad O = P V

    Scaling ``q`` (``T_q d_k`` multiplications) before the product is cheaper than scaling ``S`` (``T_q T_k``).

    Parameters
    ----------
    q : ndarray, shape (..., T_q, d_k)
    k : ndarray, shape (..., T_k, d_k)
    v : ndarray, shape (..., T_k, d_v)
        float32 or float64, one dtype, equal leading axes.
    mask : ndarray of bool, broadcastable to (..., T_q, T_k), optional
        True = may attend. ``None`` attends everywhere.

    Returns
    -------
    out : ndarray, shape (..., T_q, d_v)
        The input dtype. Fully masked rows are 0.
    cache : AttentionCache
    """
    lead, T_q, T_k, d_k, d_v = _check_qkv(q, k, v, mask)
    if mask is None:
        mask = np.ones((T_q, T_k), dtype=bool)
    scale = q.dtype.type(1 / math.sqrt(d_k))       # in q's dtype: no promotion of float32 to float64
    qs = q * scale                                  # (..., T_q, d_k)
    S = np.where(mask, qs @ k.swapaxes(-1, -2), -np.inf)      # (..., T_q, T_k) scores, -inf where masked
    has_key = mask.any(axis=-1, keepdims=True)                # (..., T_q, 1) False: a fully masked row
    m = np.where(has_key, S.max(axis=-1, keepdims=True, initial=-np.inf), 0)   # row max; 0 where all is masked
    E = np.exp(S - m)                                         # every exponent <= 0; 0 where masked
    l = E.sum(axis=-1, keepdims=True)                         # (..., T_q, 1)
    P = E / np.where(has_key, l, 1)                           # a fully masked row: 0 / 1 = 0
    out = P @ v                                               # (..., T_q, d_v)
    return out, AttentionCache(qs, k, v, P, out, scale)


def backward(dout, cache):
    r"""Gradients of scaled dot-product attention.

    .. math::

        dV = P^\top dO, \quad dP = dO\, V^\top, \quad
        dS = P \circ (dP - \delta), \ \delta_i = \sum_j P_{ij} dP_{ij} = \sum_c dO_{ic} O_{ic}, \quad
        dQ = dS\, K / \sqrt{d_k}, \quad dK = dS^\top Q / \sqrt{d_k}

    Masked entries have ``P = 0``, hence ``dS = 0``: no gradient flows through them, and a fully masked row gives
    ``dq = 0`` and sends nothing to ``k`` or ``v``.

    Parameters
    ----------
    dout : ndarray, shape (..., T_q, d_v)
        Upstream gradient, same dtype as the forward inputs.
    cache : AttentionCache, from :func:`forward` or :func:`forward_fast`

    Returns
    -------
    dq, dk, dv : ndarray
        Shapes of q, k and v.
    """
    qs, k, v, P, out, scale = cache
    check_grad("dout", dout, out.shape, out.dtype)
    # forward: out = P V
    dv = P.swapaxes(-1, -2) @ dout                            # (..., T_k, d_v)
    dP = dout @ v.swapaxes(-1, -2)                            # (..., T_q, T_k)
    # forward: P = softmax(S) row by row  =>  dS = P (dP - rowsum(P dP)),  and rowsum(P dP) = rowsum(dout out)
    delta = np.sum(dout * out, axis=-1, keepdims=True)        # (..., T_q, 1)
    dS = P * (dP - delta)                                     # (..., T_q, T_k) 0 where masked
    # forward: S = qs K^T with qs = q / sqrt(d_k)
    dq = (dS @ k) * scale                                     # (..., T_q, d_k)
    dk = dS.swapaxes(-1, -2) @ qs                             # (..., T_k, d_k)
    return dq, dk, dv


def probabilities(cache):
    """The attention probabilities P, shape (..., T_q, T_k), from a forward cache.

    Rows sum to 1 (0 for a fully masked row). A view into the cache: copy it before changing it.
    """
    return cache.P


def forward_fast(q, k, v, mask=None):
    """:func:`forward`, one (batch, head) slice at a time in place, the slices split over threads."""
    lead, T_q, T_k, d_k, d_v = _check_qkv(q, k, v, mask)
    N = math.prod(lead)                             # number of (batch, head, ...) slices
    scale = q.dtype.type(1 / math.sqrt(d_k))
    qs = np.multiply(q, scale, order="C").reshape(N, T_q, d_k)    # (N, T_q, d_k) scaled queries, one copy
    k3 = k.reshape(N, T_k, d_k)                     # (N, T_k, d_k), a copy only if k's slices are not contiguous
    v3 = v.reshape(N, T_k, d_v)                     # (N, T_k, d_v)
    blocked, no_key = None, None                    # no mask: no masked entry, no fully masked row if T_k > 0
    if mask is not None:
        # bool, a quarter of P's float32 bytes; a copy only when the broadcast axes cannot be merged into one
        blocked = np.broadcast_to(~mask, lead + (T_q, T_k)).reshape(N, T_q, T_k)
        no_key = np.broadcast_to(~mask.any(axis=-1), lead + (T_q,)).reshape(N, T_q)   # fully masked rows
    elif T_k == 0:
        no_key = np.broadcast_to(True, (N, T_q))
    P = np.empty((N, T_q, T_k), dtype=q.dtype)      # (N, T_q, T_k) scores, then probabilities, in place
    out = np.empty((N, T_q, d_v), dtype=q.dtype)    # (N, T_q, d_v)

    def slices(part):
        for n in range(part.start, part.stop):
            _forward_slice(qs[n], k3[n], v3[n], None if blocked is None else blocked[n],
                           None if no_key is None else no_key[n], P[n], out[n])

    _threads.run(slices, _threads.parts(N, _threads.workers_for(N * T_q * T_k, _MIN_PARALLEL_SCORES)))
    cache = AttentionCache(qs.reshape(lead + (T_q, d_k)), k3.reshape(k.shape), v3.reshape(v.shape),
                           P.reshape(lead + (T_q, T_k)), out.reshape(lead + (T_q, d_v)), scale)
    return cache.out, cache


def backward_fast(dout, cache):
    """:func:`backward`, one (batch, head) slice at a time, the slices split over threads."""
    qs, k, v, P, out, scale = cache
    check_grad("dout", dout, out.shape, out.dtype)
    *lead, T_q, T_k = P.shape
    N, d_k, d_v = math.prod(lead), k.shape[-1], v.shape[-1]
    dout3 = dout.reshape(N, T_q, d_v)
    qs3, k3, v3 = qs.reshape(N, T_q, d_k), k.reshape(N, T_k, d_k), v.reshape(N, T_k, d_v)
    P3, out3 = P.reshape(N, T_q, T_k), out.reshape(N, T_q, d_v)
    dq = np.empty_like(qs3)                         # (N, T_q, d_k)
    dk = np.empty_like(k3)                          # (N, T_k, d_k)
    dv = np.empty_like(v3)                          # (N, T_k, d_v)

    def slices(part):
        ds = np.empty((T_q, T_k), dtype=P.dtype)   # scratch for dP and dS, allocated once per thread
        for n in range(part.start, part.stop):
            _backward_slice(dout3[n], qs3[n], k3[n], v3[n], P3[n], out3[n], scale, dq[n], dk[n], dv[n], ds)

    _threads.run(slices, _threads.parts(N, _threads.workers_for(N * T_q * T_k, _MIN_PARALLEL_SCORES)))
    return dq.reshape(qs.shape), dk.reshape(k.shape), dv.reshape(v.shape)


def forward_blocked(q, k, v, mask=None, block_size=64):
    r"""Attention by the online softmax over tiles, never forming the ``(T_q, T_k)`` matrix.

    For each block of queries, walk over the blocks of keys keeping, per row, the running maximum ``m``, the running
    sum ``l`` of ``exp(s - m)`` and the running unnormalised output ``acc``. When a new key block raises the maximum
    to ``m'``, the old sums are rescaled by ``alpha = exp(m - m')``:

    .. math::

        m' = \max(m, \max_j s_j), \quad l' = \alpha\, l + \sum_j e^{s_j - m'}, \quad
        \mathrm{acc}' = \alpha\, \mathrm{acc} + \sum_j e^{s_j - m'} v_j,

    and at the end ``out = acc / l`` and ``lse = m + log l`` (the log-sum-exp of the row's scaled, masked scores).
    Only ``block_size x block_size`` tiles of scores exist at any time, so the memory is O(T d). A row that the mask
    leaves without keys gets ``out = 0`` and ``lse = -inf``; every other row divides, so a NaN (from ``q``, or from
    scores that overflow) stays NaN, as in :func:`forward`.

    To see the memory, run both algorithms under :func:`peak_memory`, e.g. at ``T = 4096, d = 64`` (a few seconds)::

        _, naive_bytes = peak_memory(forward_fast, q, k, v)        # holds P: 4096**2 * itemsize bytes
        _, blocked_bytes = peak_memory(forward_blocked, q, k, v)   # out, lse and a few 64 x 64 tiles

    A ``mask`` passed in is itself ``T_q x T_k`` bytes, owned by the caller; measure with ``mask=None``.

    Parameters
    ----------
    q, k, v, mask
        As in :func:`forward`.
    block_size : int
        Rows per query block and per key block (>= 1). Any ``T``: the last block is just shorter.

    Returns
    -------
    out : ndarray, shape (..., T_q, d_v)
        Equal to ``forward``'s output (to rounding).
    lse : ndarray, shape (..., T_q)
        ``log sum_j exp(s_ij)`` over the unmasked keys; ``-inf`` for a fully masked row (whose ``out`` is 0).
    """
    lead, T_q, T_k, d_k, d_v = _check_qkv(q, k, v, mask)
    block_size = check_count("block_size", block_size, minimum=1)
    dtype = q.dtype
    scale = dtype.type(1 / math.sqrt(d_k))
    qs = q * scale                                  # (..., T_q, d_k)
    keep = None if mask is None else np.broadcast_to(mask, lead + (T_q, T_k))   # a view, no copy
    # (..., T_q, 1) False: the mask leaves the row no key
    has_key = np.full(lead + (T_q, 1), T_k > 0) if keep is None else keep.any(axis=-1)[..., None]
    out = np.empty(lead + (T_q, d_v), dtype=dtype)
    lse = np.empty(lead + (T_q,), dtype=dtype)
    for i0 in range(0, T_q, block_size):
        rows = slice(i0, min(i0 + block_size, T_q))
        qs_i = qs[..., rows, :]                     # (..., Br, d_k)
        Br = qs_i.shape[-2]
        m = np.full(lead + (Br, 1), -np.inf, dtype=dtype)   # running row maximum
        l = np.zeros(lead + (Br, 1), dtype=dtype)           # running sum of exp(s - m)
        acc = np.zeros(lead + (Br, d_v), dtype=dtype)       # running sum of exp(s - m) v
        for j0 in range(0, T_k, block_size):
            cols = slice(j0, min(j0 + block_size, T_k))
            s = qs_i @ k[..., cols, :].swapaxes(-1, -2)     # (..., Br, Bc)
            if keep is not None:
                np.copyto(s, -np.inf, where=~keep[..., rows, cols])
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))   # (..., Br, 1)
            m_ref = _zero_where_neg_inf(m_new)      # rows with nothing unmasked yet: exp(-inf - 0) = 0, not NaN
            alpha = np.exp(m - m_ref)               # (..., Br, 1) rescales the old sums; 0 on the first block
            np.subtract(s, m_ref, out=s)
            np.exp(s, out=s)                        # (..., Br, Bc) unnormalised probabilities
            l = alpha * l + s.sum(axis=-1, keepdims=True)
            acc = alpha * acc + s @ v[..., cols, :]
            m = m_new
        seen = has_key[..., rows, :]                # (..., Br, 1) from the mask, not from l: NaN stays NaN
        out[..., rows, :] = acc / np.where(seen, l, 1)      # a fully masked row: acc = 0, so out = 0
        with np.errstate(divide="ignore"):          # log(0) = -inf: every unmasked score was -inf
            lse[..., rows] = np.where(seen, m + np.log(np.where(seen, l, 1)), -np.inf)[..., 0]
    return out, lse


def backward_blocked(dout, q, k, v, out, lse, mask=None, block_size=64):
    r"""Gradients of attention from ``(out, lse)``, recomputing P one tile at a time.

    With ``delta_i = sum_c dO_ic O_ic`` computed once, each tile needs only its own rows and columns:

    .. math::

        P_{ij} = e^{s_{ij} - \mathrm{lse}_i}, \quad dV_j \mathrel{+}= P^\top dO_i, \quad dP = dO_i V_j^\top, \quad
        dS = P \circ (dP - \delta_i), \quad dQ_i \mathrel{+}= dS\, K_j / \sqrt{d_k}, \quad
        dK_j \mathrel{+}= dS^\top Q_i / \sqrt{d_k}.

    The outer loop runs over key blocks (``dK_j`` and ``dV_j`` finish in one pass), the inner one over query blocks,
    as the Triton dK/dV kernel does. Memory O(T d).

    Parameters
    ----------
    dout : ndarray, shape (..., T_q, d_v)
    q, k, v, mask, block_size
        As in :func:`forward_blocked`.
    out : ndarray, shape (..., T_q, d_v)
    lse : ndarray, shape (..., T_q)
        From :func:`forward_blocked`.

    Returns
    -------
    dq, dk, dv : ndarray
        Equal to ``backward``'s gradients (to rounding).
    """
    lead, T_q, T_k, d_k, d_v = _check_qkv(q, k, v, mask)
    block_size = check_count("block_size", block_size, minimum=1)
    for name, x in (("dout", dout), ("out", out), ("lse", lse)):
        check_float(name, x)
    check_same_dtype(q=q, dout=dout, out=out, lse=lse)
    check_shape("dout", dout, lead + (T_q, d_v))
    check_shape("out", out, lead + (T_q, d_v))
    check_shape("lse", lse, lead + (T_q,))
    dtype = q.dtype
    scale = dtype.type(1.0 / math.sqrt(d_k))
    qs = q * scale                                  # (..., T_q, d_k)
    keep = None if mask is None else np.broadcast_to(mask, lead + (T_q, T_k))
    # forward: P = softmax(S)  =>  rowsum(P * dP) = rowsum(dO * O)
    delta = np.sum(dout * out, axis=-1, keepdims=True)     # (..., T_q, 1)
    lse_ref = _zero_where_neg_inf(lse)[..., None]           # (..., T_q, 1) fully masked rows: all s are -inf anyway
    dq = np.zeros_like(qs)                          # (..., T_q, d_k)
    dk = np.empty(k.shape, dtype=dtype)             # (..., T_k, d_k)
    dv = np.empty(v.shape, dtype=dtype)             # (..., T_k, d_v)
    for j0 in range(0, T_k, block_size):
        cols = slice(j0, min(j0 + block_size, T_k))
        k_j, v_j = k[..., cols, :], v[..., cols, :]         # (..., Bc, d_k), (..., Bc, d_v)
        dk_j = np.zeros(k_j.shape, dtype=dtype)
        dv_j = np.zeros(v_j.shape, dtype=dtype)
        for i0 in range(0, T_q, block_size):
            rows = slice(i0, min(i0 + block_size, T_q))
            qs_i, dout_i = qs[..., rows, :], dout[..., rows, :]
            s = qs_i @ k_j.swapaxes(-1, -2)         # (..., Br, Bc)
            if keep is not None:
                np.copyto(s, -np.inf, where=~keep[..., rows, cols])
            np.subtract(s, lse_ref[..., rows, :], out=s)
            p = np.exp(s, out=s)                    # (..., Br, Bc) recomputed probabilities
            # forward: out = P V
            dv_j += p.swapaxes(-1, -2) @ dout_i
            dp = dout_i @ v_j.swapaxes(-1, -2)      # (..., Br, Bc)
            # forward: P = softmax(S)
            ds = p * (dp - delta[..., rows, :])     # (..., Br, Bc)
            # forward: S = (Q / sqrt(d_k)) K^T
            dq[..., rows, :] += (ds @ k_j) * scale
            dk_j += ds.swapaxes(-1, -2) @ qs_i
        dk[..., cols, :] = dk_j
        dv[..., cols, :] = dv_j
    return dq, dk, dv


def peak_memory(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` under ``tracemalloc``; return ``(result, peak_bytes)``.

    NumPy reports its array buffers to ``tracemalloc``, so ``peak_bytes`` is the most memory the call held at once
    beyond what existed before it (its inputs are not counted, its outputs are). Tracing slows allocation down, so
    use it to measure memory, not time.
    """
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn(*args, **kwargs)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if started_here:
            tracemalloc.stop()
    return result, peak


def _forward_slice(qs, k, v, blocked, no_key, p, out):
    """One (batch, head) slice of :func:`forward_fast`: fills ``p`` (T_q, T_k) with P and ``out`` (T_q, d_v)."""
    np.matmul(qs, k.T, out=p)                       # (T_q, T_k) scores S
    if blocked is not None:
        np.copyto(p, -np.inf, where=blocked)        # S = -inf where the mask is False
    m = np.max(p, axis=-1, keepdims=True, initial=-np.inf)   # (T_q, 1) row max
    if no_key is not None:
        m[no_key] = 0                               # fully masked rows (from the mask): exp(-inf - 0) = 0
    np.subtract(p, m, out=p)                        # every exponent <= 0
    np.exp(p, out=p)
    l = p.sum(axis=-1, keepdims=True)               # (T_q, 1)
    if no_key is not None:
        l[no_key] = 1                               # fully masked row: P stays 0, so out = 0
    np.divide(p, l, out=p)                          # (T_q, T_k) P
    np.matmul(p, v, out=out)                        # (T_q, d_v)


def _backward_slice(dout, qs, k, v, p, out, scale, dq, dk, dv, ds):
    """One (batch, head) slice of :func:`backward_fast`: fills ``dq``, ``dk``, ``dv`` (``ds``: a (T_q, T_k) scratch)."""
    # forward: out = P V
    np.matmul(p.T, dout, out=dv)                    # (T_k, d_v)
    np.matmul(dout, v.T, out=ds)                    # (T_q, T_k) dP, turned into dS in place
    # forward: P = softmax(S)  =>  dS = P * (dP - rowsum(P * dP)), and rowsum(P * dP) = rowsum(dout * out)
    delta = np.sum(dout * out, axis=-1, keepdims=True)     # (T_q, 1)
    np.subtract(ds, delta, out=ds)
    np.multiply(ds, p, out=ds)                      # masked entries: P = 0, so dS = 0
    # forward: S = qs k^T with qs = q * scale
    np.matmul(ds, k, out=dq)                        # (T_q, d_k)
    dq *= scale
    np.matmul(ds.T, qs, out=dk)                     # (T_k, d_k)


def _zero_where_neg_inf(x):
    """x with -inf replaced by 0 (a new array): the reference point for rows where nothing is unmasked."""
    return np.where(x == -np.inf, x.dtype.type(0), x)


def _check_qkv(q, k, v, mask):
    """Validate q, k, v and mask; return (lead, T_q, T_k, d_k, d_v)."""
    check_float("q", q, ndim_min=2)
    check_float("k", k, ndim_min=2)
    check_float("v", v, ndim_min=2)
    check_same_dtype(q=q, k=k, v=v)
    lead, T_q, d_k = q.shape[:-2], q.shape[-2], q.shape[-1]
    if d_k == 0:
        raise ValueError(f"q: expected d_k >= 1 (the scale is 1/sqrt(d_k)), got shape {q.shape}")
    check_shape("k", k, lead + (None, d_k))        # same leading axes as q (no broadcasting) and the same d_k
    T_k = k.shape[-2]
    check_shape("v", v, lead + (T_k, None))        # one value per key
    if mask is not None:
        check_bool_mask("mask", mask, lead + (T_q, T_k))
    return lead, T_q, T_k, d_k, v.shape[-1]
