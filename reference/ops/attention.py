r"""Scaled dot-product attention (material §3.2.1), naive and blocked (FlashAttention-style).

.. math::

    \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}} + M\right) V,
    \qquad M_{ij} = \begin{cases} 0 & \text{mask}_{ij}\ \text{True (may attend)} \\
                                  -\infty & \text{otherwise} \end{cases}

Shapes: ``q (..., T_q, d_k)``, ``k (..., T_k, d_k)``, ``v (..., T_k, d_v)`` -> ``out (..., T_q, d_v)``. The leading
axes (batch, heads, ...) must be equal in q, k and v; they are never broadcast against each other. The mask follows
PyTorch's convention (True = may attend) and broadcasts to ``(..., T_q, T_k)``.

A query row whose keys are all masked has no distribution to take; here its output is 0 and its gradients are 0
(rather than the NaN of ``softmax`` over all ``-inf``), which is what the Triton kernel does too.

Two algorithms compute the same function:

* ``forward``/``backward`` materialise the ``(T_q, T_k)`` probabilities ``P`` for each (batch, head) slice and keep
  them for the backward pass. Memory O(T_q T_k) per slice.
* ``forward_blocked``/``backward_blocked`` run the online softmax over ``block_size x block_size`` tiles, keeping
  only the per-row log-sum-exp, and recompute ``P`` tile by tile in the backward pass. Memory O(T d). This is the
  algorithm of the Triton kernel (``kernels/``); here it is written in NumPy so that the two can be compared line
  by line.

The softmax is computed inline instead of calling ``reference.ops.softmax``: it has to treat masked entries and fully
masked rows specially, it runs in place on the score buffer (no extra ``(T_q, T_k)`` temporaries), and its backward
uses the cheaper ``delta = rowsum(dout * out)`` (``(T_q, d_v)`` work) instead of ``rowsum(dp * p)`` (``(T_q, T_k)``).
"""
import math
import operator
import os
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from reference._checks import check_bool_mask, check_float, check_same_dtype, check_shape

# Below this many score entries in total, starting threads costs more than the work they would share.
_MIN_PARALLEL_SCORES = 1 << 16


def _default_workers():
    """2 when NumPy's BLAS was told to run one thread per call (the variable its library reads first), else 1.

    With a multi-threaded BLAS (OpenBLAS's default: one thread per core) the matrix products already use every
    core, and two workers on top put four busy threads on two cores: each small product then waits at BLAS's
    barrier for a thread that is not running. Measured (float32 forward + backward, B=4, H=8, T=512, d=64, 2 cores)
    as torch eager time / ours: 1 worker 1.5-1.9x, 2 workers 0.3x. With ``OPENBLAS_NUM_THREADS=1`` the workers are
    the only parallelism: 1 worker 1.3x, 2 workers 1.6x.
    """
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            return min(2, os.cpu_count() or 1) if value == "1" else 1
    return 1


# Read once, like the BLAS library itself reads these variables once, when NumPy is imported.
DEFAULT_WORKERS = _default_workers()


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
    T_q, T_k = _check_count("T_q", T_q, minimum=0), _check_count("T_k", T_k, minimum=0)
    i = np.arange(T_q)[:, None]                     # (T_q, 1) query positions
    j = np.arange(T_k)[None, :]                     # (1, T_k) key positions
    return j <= i + (T_k - T_q)                     # (T_q, T_k)


def forward(q, k, v, mask=None, *, workers=None):
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
    workers : int or None, keyword-only
        Threads over the (batch x head) slices; ``None`` takes ``DEFAULT_WORKERS`` (see ``_default_workers``: 2 when
        NumPy's BLAS is single-threaded, else 1). NumPy releases the GIL inside BLAS and ufuncs, so two slices really
        run at once; every slice runs the same calls either way, so the result is bit-for-bit the serial one.
        Small inputs always run serially.

    Returns
    -------
    out : ndarray, shape (..., T_q, d_v)
        The input dtype. Fully masked rows are 0.
    cache : tuple
        What ``backward`` needs (the scaled q, k, v, P, out).
    """
    lead, T_q, T_k, d_k, d_v = _check_qkv(q, k, v, mask)
    workers = DEFAULT_WORKERS if workers is None else _check_count("workers", workers, minimum=1)
    N = math.prod(lead)                             # number of (batch, head, ...) slices
    scale = q.dtype.type(1.0 / math.sqrt(d_k))     # in q's dtype: no promotion of float32 to float64
    qs = (q * scale).reshape(N, T_q, d_k)           # (N, T_q, d_k) scaled queries
    k3 = k.reshape(N, T_k, d_k)                     # (N, T_k, d_k)
    v3 = v.reshape(N, T_k, d_v)                     # (N, T_k, d_v)
    # A copy only when the mask's broadcast axes cannot be merged into one; bool, so 1/4 of P's float32 bytes.
    blocked = None if mask is None else np.broadcast_to(~mask, lead + (T_q, T_k)).reshape(N, T_q, T_k)
    p = np.empty((N, T_q, T_k), dtype=q.dtype)      # (N, T_q, T_k) scores, then probabilities, in place
    out = np.empty((N, T_q, d_v), dtype=q.dtype)    # (N, T_q, d_v)

    def one_slice(n):
        _forward_slice(qs[n], k3[n], v3[n], None if blocked is None else blocked[n], p[n], out[n])

    _for_each_slice(one_slice, N, workers, T_q * T_k)
    cache = (qs, k3, v3, p, out, scale, q.shape, k.shape, v.shape, workers)
    return out.reshape(lead + (T_q, d_v)), cache


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
    cache : tuple
        From ``forward``.

    Returns
    -------
    dq, dk, dv : ndarray
        Shapes of q, k and v.
    """
    qs, k3, v3, p, out, scale, q_shape, k_shape, v_shape, workers = cache
    N, T_q, d_v = out.shape
    check_float("dout", dout)
    check_same_dtype(dout=dout, q=qs)
    check_shape("dout", dout, q_shape[:-1] + (d_v,))
    dout3 = dout.reshape(N, T_q, d_v)               # (N, T_q, d_v)
    dq = np.empty_like(qs)                          # (N, T_q, d_k)
    dk = np.empty_like(k3)                          # (N, T_k, d_k)
    dv = np.empty_like(v3)                          # (N, T_k, d_v)

    def one_slice(n):
        _backward_slice(dout3[n], qs[n], k3[n], v3[n], p[n], out[n], scale, dq[n], dk[n], dv[n])

    _for_each_slice(one_slice, N, workers, T_q * k3.shape[1])
    return dq.reshape(q_shape), dk.reshape(k_shape), dv.reshape(v_shape)


def probabilities(cache):
    """The attention probabilities P, shape (..., T_q, T_k), from a :func:`forward` cache.

    Rows sum to 1 (0 for a fully masked row). A view into the cache: copy it before changing it.
    """
    p, q_shape, k_shape = cache[3], cache[6], cache[7]
    return p.reshape(q_shape[:-1] + k_shape[-2:-1])


def forward_blocked(q, k, v, mask=None, block_size=64):
    r"""Attention by the online softmax over tiles, never forming the ``(T_q, T_k)`` matrix.

    For each block of queries, walk over the blocks of keys keeping, per row, the running maximum ``m``, the running
    sum ``l`` of ``exp(s - m)`` and the running unnormalised output ``acc``. When a new key block raises the maximum
    to ``m'``, the old sums are rescaled by ``alpha = exp(m - m')``:

    .. math::

        m' = \max(m, \max_j s_j), \quad l' = \alpha\, l + \sum_j e^{s_j - m'}, \quad
        \mathrm{acc}' = \alpha\, \mathrm{acc} + \sum_j e^{s_j - m'} v_j,

    and at the end ``out = acc / l`` and ``lse = m + log l`` (the log-sum-exp of the row's scaled, masked scores).
    Only ``block_size x block_size`` tiles of scores exist at any time, so the memory is O(T d).

    To see the memory, run both algorithms under :func:`peak_memory`, e.g. at ``T = 4096, d = 64`` (a few seconds)::

        _, naive_bytes = peak_memory(forward, q, k, v)             # holds P: 4096**2 * itemsize bytes
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
    block_size = _check_count("block_size", block_size, minimum=1)
    dtype = q.dtype
    scale = dtype.type(1.0 / math.sqrt(d_k))
    qs = q * scale                                  # (..., T_q, d_k)
    keep = None if mask is None else np.broadcast_to(mask, lead + (T_q, T_k))   # a view, no copy
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
        seen = l > 0                                # (..., Br, 1) False: fully masked row
        out[..., rows, :] = np.divide(acc, l, out=np.zeros_like(acc), where=seen)
        row_lse = np.full_like(l, -np.inf)
        np.log(l, out=row_lse, where=seen)
        row_lse += np.where(seen, m, 0)
        lse[..., rows] = row_lse[..., 0]
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
    block_size = _check_count("block_size", block_size, minimum=1)
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


def _forward_slice(qs, k, v, blocked, p, out):
    """One (batch, head) slice of ``forward``: fills ``p`` (T_q, T_k) with P and ``out`` (T_q, d_v) with P v."""
    np.matmul(qs, k.T, out=p)                       # (T_q, T_k) scores S
    if blocked is not None:
        np.copyto(p, -np.inf, where=blocked)        # S = -inf where the mask is False
    m = np.max(p, axis=-1, keepdims=True, initial=-np.inf)   # (T_q, 1) row max; -inf for a fully masked row
    m[m == -np.inf] = 0                             # ... so that exp(-inf - 0) = 0 instead of exp(-inf + inf) = NaN
    np.subtract(p, m, out=p)                        # stable: every exponent <= 0
    np.exp(p, out=p)
    l = p.sum(axis=-1, keepdims=True)               # (T_q, 1)
    l[l == 0] = 1                                   # fully masked row: P stays 0, so out = 0
    np.divide(p, l, out=p)                          # (T_q, T_k) P
    np.matmul(p, v, out=out)                        # (T_q, d_v)


def _backward_slice(dout, qs, k, v, p, out, scale, dq, dk, dv):
    """One (batch, head) slice of ``backward``: fills ``dq``, ``dk``, ``dv``."""
    # forward: out = P V
    np.matmul(p.T, dout, out=dv)                    # (T_k, d_v)
    ds = dout @ v.T                                 # (T_q, T_k) dP, turned into dS in place
    # forward: P = softmax(S)  =>  dS = P * (dP - rowsum(P * dP)), and rowsum(P * dP) = rowsum(dout * out)
    delta = np.sum(dout * out, axis=-1, keepdims=True)     # (T_q, 1)
    np.subtract(ds, delta, out=ds)
    np.multiply(ds, p, out=ds)                      # masked entries: P = 0, so dS = 0
    # forward: S = qs k^T with qs = q * scale
    np.matmul(ds, k, out=dq)                        # (T_q, d_k)
    dq *= scale
    np.matmul(ds.T, qs, out=dk)                     # (T_k, d_k)


def _for_each_slice(fn, n, workers, slice_size):
    """Call ``fn(i)`` for i in range(n), on ``workers`` threads when the n slices of ``slice_size`` are big enough."""
    if workers > 1 and n > 1 and n * slice_size >= _MIN_PARALLEL_SCORES:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(fn, range(n)):        # consuming the results re-raises any error from a thread
                pass
    else:
        for i in range(n):
            fn(i)


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


def _check_count(name, n, minimum):
    """Require a Python or NumPy int (not bool) >= minimum; return it as int."""
    want = "a positive int" if minimum == 1 else "a non-negative int"
    if isinstance(n, bool):
        raise TypeError(f"{name}: expected {want}, got bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{name}: expected {want}, got {type(n).__name__}") from None
    if n < minimum:
        raise ValueError(f"{name}: expected {want}, got {n}")
    return n
