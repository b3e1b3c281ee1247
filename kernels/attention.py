r"""FlashAttention in Triton: the online softmax, forward and backward, never holding the T_q x T_k matrix.

.. math::
    S = s\,Q K^\top,\quad P = \mathrm{softmax}(S),\quad O = P V,\qquad s = 1/\sqrt{d}\ \text{by default}

Forward: one program per (query block, batch x head). It walks the key blocks with a running row max ``m`` and a
running row sum ``l``, rescaling its accumulator whenever the max grows, and saves the log-sum-exp
:math:`L = m + \log l` (natural log, float32) per row. The exponentials use ``exp2`` on :math:`S\log_2 e`.

Backward, no atomics, three kernels:

1. preprocess: :math:`\delta_i = \sum_c dO_{ic} O_{ic}`, which equals :math:`\sum_j P_{ij}\,dP_{ij}`;
2. one program per key block: loop over the query blocks, recompute :math:`P = \exp(S - L)` and accumulate
   :math:`dV = P^\top dO` and :math:`dK = s\,dS^\top Q` with :math:`dS = P \odot (dO V^\top - \delta)`;
3. one program per query block: loop over the key blocks and accumulate :math:`dQ = s\,dS K`.

``causal`` is ``reference.ops.attention.causal_mask``: bottom-right aligned, query i sees key j iff
j <= i + T_k - T_q. A query row that sees no key (T_q > T_k) gets output 0, L = -inf and zero gradients.
NumPy twin: ``reference/ops/attention.py`` (``forward_blocked`` / ``backward_blocked`` run the same algorithm).
"""
import math

import torch
import triton
import triton.language as tl

from ._common import autotune, check_tensors, dot_dtype, tl_dtype

HEAD_DIMS = (16, 32, 64, 128)
# Globals a kernel reads must be tl.constexpr (compiled Triton rejects plain Python floats; the interpreter does not).
_LOG2E = tl.constexpr(1.4426950408889634)
_LN2 = tl.constexpr(0.6931471805599453)


def _attn_configs(block_m_n):
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w, s in block_m_n
    ]


# Four configs per kernel on a GPU: each is compiled once per (d, causal), which dominates a benchmark's first call.
_FWD_CONFIGS = _attn_configs([(128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 4), (64, 32, 4, 4)])
_BWD_CONFIGS = _attn_configs([(64, 128, 8, 3), (32, 128, 4, 3), (64, 64, 4, 3), (32, 64, 4, 4)])
_DQ_CONFIGS = _attn_configs([(128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 4)])
# The interpreter: small blocks with BLOCK_M != BLOCK_N, so a swapped role or a ragged edge shows up at small T.
_INTERP_FWD = triton.Config({"BLOCK_M": 32, "BLOCK_N": 16})
_INTERP_DKDV = triton.Config({"BLOCK_M": 16, "BLOCK_N": 32})
_KEY = ["T_q", "T_k", "D", "CAUSAL"]


@autotune(configs=_FWD_CONFIGS, key=_KEY, interpreter_config=_INTERP_FWD)
@triton.jit
def _attn_fwd_kernel(
    Q, K, V, O, LSE,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    H, T_q, T_k, sm_scale,
    D: tl.constexpr, CAUSAL: tl.constexpr, IN_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    mask_m = offs_m < T_q
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    q = tl.load(Q + offs_m.to(tl.int64)[:, None] * stride_qt + offs_d[None, :] * stride_qd,
                mask=mask_m[:, None], other=0.0).to(DOT_DTYPE)                              # (BLOCK_M, D)
    qk_scale = sm_scale * _LOG2E                                                       # s * log2(e)
    shift = T_k - T_q                                     # causal: query i sees key j iff j <= i + shift
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)                              # running max
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)                                            # running sum
    acc = tl.zeros((BLOCK_M, D), dtype=tl.float32)                                          # running P V
    hi = T_k
    if CAUSAL:
        hi = tl.minimum(T_k, start_m + BLOCK_M + shift)   # keys past the block's last row's horizon: skipped
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < T_k
        n64 = offs_n.to(tl.int64)
        kT = tl.load(K + n64[None, :] * stride_kt + offs_d[:, None] * stride_kd,
                     mask=mask_n[None, :], other=0.0).to(DOT_DTYPE)                         # (D, BLOCK_N)
        v = tl.load(V + n64[:, None] * stride_vt + offs_d[None, :] * stride_vd,
                    mask=mask_n[:, None], other=0.0).to(DOT_DTYPE)                          # (BLOCK_N, D)
        s = tl.dot(q, kT, input_precision="ieee") * qk_scale                                # (BLOCK_M, BLOCK_N)
        valid = mask_n[None, :]
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= offs_m[:, None] + shift)
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)    # a row with no visible key yet: no NaN
        p = tl.where(valid, tl.math.exp2(s - m_safe[:, None]), 0.0)                         # (BLOCK_M, BLOCK_N)
        alpha = tl.math.exp2(m_i - m_safe)                       # rescales what was summed under the old max
        l_i = l_i * alpha + tl.sum(p, axis=1)
        # P is rounded to the input dtype before P V, as on the GPU's tensor cores.
        acc = acc * alpha[:, None] + tl.dot(p.to(IN_DTYPE).to(DOT_DTYPE), v, input_precision="ieee")
        m_i = m_new
    seen = l_i > 0.0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]                # rows that see no key stay 0
    lse = tl.where(seen, (m_i + tl.math.log2(tl.where(seen, l_i, 1.0))) * _LN2, float("-inf"))
    o_offs = (bh.to(tl.int64) * T_q + offs_m.to(tl.int64))                                  # O, LSE contiguous
    tl.store(O + o_offs[:, None] * D + offs_d[None, :], out.to(O.dtype.element_ty), mask=mask_m[:, None])
    tl.store(LSE + o_offs, lse, mask=mask_m)


@triton.jit
def _attn_bwd_preprocess_kernel(
    O, DO, DELTA,
    stride_dob, stride_doh, stride_dot, stride_dod,
    H, T_q,
    D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_d = tl.arange(0, D)
    mask_m = offs_m < T_q
    rows = bh.to(tl.int64) * T_q + offs_m.to(tl.int64)
    o = tl.load(O + rows[:, None] * D + offs_d[None, :], mask=mask_m[:, None], other=0.0).to(tl.float32)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m.to(tl.int64)[:, None] * stride_dot
                 + offs_d[None, :] * stride_dod, mask=mask_m[:, None], other=0.0).to(tl.float32)
    # delta_i = sum_c dO_ic O_ic = sum_j P_ij dP_ij, the term that softmax's backward subtracts
    tl.store(DELTA + rows, tl.sum(do * o, axis=1), mask=mask_m)


@autotune(configs=_BWD_CONFIGS, key=_KEY, interpreter_config=_INTERP_DKDV)
@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_dob, stride_doh, stride_dot, stride_dod,
    H, T_q, T_k, sm_scale,
    D: tl.constexpr, CAUSAL: tl.constexpr, IN_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    mask_n = offs_n < T_k
    n64 = offs_n.to(tl.int64)
    Q += b * stride_qb + h * stride_qh
    DO += b * stride_dob + h * stride_doh
    k = tl.load(K + b * stride_kb + h * stride_kh + n64[:, None] * stride_kt + offs_d[None, :] * stride_kd,
                mask=mask_n[:, None], other=0.0).to(DOT_DTYPE)                              # (BLOCK_N, D)
    v = tl.load(V + b * stride_vb + h * stride_vh + n64[:, None] * stride_vt + offs_d[None, :] * stride_vd,
                mask=mask_n[:, None], other=0.0).to(DOT_DTYPE)                              # (BLOCK_N, D)
    qk_scale = sm_scale * _LOG2E
    shift = T_k - T_q
    dk = tl.zeros((BLOCK_N, D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, D), dtype=tl.float32)
    lo = 0
    if CAUSAL:
        # the first query that sees key start_n is i = start_n - shift; start at its block
        lo = (tl.maximum(start_n - shift, 0) // BLOCK_M) * BLOCK_M
    for start_m in range(lo, T_q, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        mask_m = offs_m < T_q
        m64 = offs_m.to(tl.int64)
        qT = tl.load(Q + m64[None, :] * stride_qt + offs_d[:, None] * stride_qd,
                     mask=mask_m[None, :], other=0.0).to(DOT_DTYPE)                         # (D, BLOCK_M)
        do = tl.load(DO + m64[:, None] * stride_dot + offs_d[None, :] * stride_dod,
                     mask=mask_m[:, None], other=0.0).to(DOT_DTYPE)                         # (BLOCK_M, D)
        rows = bh.to(tl.int64) * T_q + m64
        lse = tl.load(LSE + rows, mask=mask_m, other=0.0)
        delta = tl.load(DELTA + rows, mask=mask_m, other=0.0)
        # log2-domain L; a row that sees no key has L = -inf and must give P = 0, so its L becomes +inf
        lse2 = tl.where(lse == float("-inf"), float("inf"), lse * _LOG2E)
        sT = tl.dot(k, qT, input_precision="ieee") * qk_scale                               # (BLOCK_N, BLOCK_M)
        valid = mask_n[:, None] & mask_m[None, :]
        if CAUSAL:
            valid = valid & (offs_n[:, None] <= offs_m[None, :] + shift)
        # forward: P = exp(S - L), recomputed from the saved L
        pT = tl.where(valid, tl.math.exp2(sT - lse2[None, :]), 0.0)                        # (BLOCK_N, BLOCK_M)
        # forward: O = P V  ->  dV = P^T dO
        dv += tl.dot(pT.to(IN_DTYPE).to(DOT_DTYPE), do, input_precision="ieee")
        # forward: O = P V  ->  dP = dO V^T; softmax: dS = P * (dP - delta)
        dpT = tl.dot(v, tl.trans(do), input_precision="ieee")                               # (BLOCK_N, BLOCK_M)
        dsT = pT * (dpT - delta[None, :])
        # forward: S = s Q K^T  ->  dK = s dS^T Q
        dk += tl.dot(dsT.to(IN_DTYPE).to(DOT_DTYPE), tl.trans(qT), input_precision="ieee")
    out_rows = bh.to(tl.int64) * T_k + n64                                                  # DK, DV contiguous
    out_offs = out_rows[:, None] * D + offs_d[None, :]
    tl.store(DK + out_offs, (dk * sm_scale).to(DK.dtype.element_ty), mask=mask_n[:, None])
    tl.store(DV + out_offs, dv.to(DV.dtype.element_ty), mask=mask_n[:, None])


@autotune(configs=_DQ_CONFIGS, key=_KEY, interpreter_config=_INTERP_FWD)
@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_dob, stride_doh, stride_dot, stride_dod,
    H, T_q, T_k, sm_scale,
    D: tl.constexpr, CAUSAL: tl.constexpr, IN_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    mask_m = offs_m < T_q
    m64 = offs_m.to(tl.int64)
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    q = tl.load(Q + b * stride_qb + h * stride_qh + m64[:, None] * stride_qt + offs_d[None, :] * stride_qd,
                mask=mask_m[:, None], other=0.0).to(DOT_DTYPE)                              # (BLOCK_M, D)
    do = tl.load(DO + b * stride_dob + h * stride_doh + m64[:, None] * stride_dot + offs_d[None, :] * stride_dod,
                 mask=mask_m[:, None], other=0.0).to(DOT_DTYPE)                             # (BLOCK_M, D)
    rows = bh.to(tl.int64) * T_q + m64
    lse = tl.load(LSE + rows, mask=mask_m, other=0.0)
    delta = tl.load(DELTA + rows, mask=mask_m, other=0.0)
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * _LOG2E)
    qk_scale = sm_scale * _LOG2E
    shift = T_k - T_q
    dq = tl.zeros((BLOCK_M, D), dtype=tl.float32)
    hi = T_k
    if CAUSAL:
        hi = tl.minimum(T_k, start_m + BLOCK_M + shift)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < T_k
        n64 = offs_n.to(tl.int64)
        kT = tl.load(K + n64[None, :] * stride_kt + offs_d[:, None] * stride_kd,
                     mask=mask_n[None, :], other=0.0).to(DOT_DTYPE)                         # (D, BLOCK_N)
        vT = tl.load(V + n64[None, :] * stride_vt + offs_d[:, None] * stride_vd,
                     mask=mask_n[None, :], other=0.0).to(DOT_DTYPE)                         # (D, BLOCK_N)
        s = tl.dot(q, kT, input_precision="ieee") * qk_scale                                # (BLOCK_M, BLOCK_N)
        valid = mask_m[:, None] & mask_n[None, :]
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= offs_m[:, None] + shift)
        p = tl.where(valid, tl.math.exp2(s - lse2[:, None]), 0.0)
        # forward: O = P V -> dP = dO V^T; softmax: dS = P * (dP - delta)
        dp = tl.dot(do, vT, input_precision="ieee")
        ds = p * (dp - delta[:, None])
        # forward: S = s Q K^T  ->  dQ = s dS K
        dq += tl.dot(ds.to(IN_DTYPE).to(DOT_DTYPE), tl.trans(kT), input_precision="ieee")
    tl.store(DQ + rows[:, None] * D + offs_d[None, :], (dq * sm_scale).to(DQ.dtype.element_ty), mask=mask_m[:, None])


def _strides(t):
    return tuple(t.stride())


def _check(q, k, v, causal, sm_scale):
    check_tensors(q=q, k=k, v=v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim != 4:
            raise ValueError(f"{name}: expected shape (B, H, T, d), got {tuple(t.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v: expected the same shape (B, H, T_k, d), got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"q and k: expected (B, H, T_q, d) and (B, H, T_k, d) with the same B, H and d, "
            f"got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if q.shape[3] not in HEAD_DIMS:
        raise ValueError(f"head dim d: expected one of {HEAD_DIMS}, got {q.shape[3]}")
    if q.shape[2] < 1 or k.shape[2] < 1:
        raise ValueError(f"expected T_q >= 1 and T_k >= 1, got T_q = {q.shape[2]}, T_k = {k.shape[2]}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    if sm_scale is not None:
        if isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float)):
            raise TypeError(f"sm_scale: expected None or a positive number, got {type(sm_scale).__name__}")
        if not 0 < sm_scale < float("inf"):
            raise ValueError(f"sm_scale: expected None or a positive finite number, got {sm_scale!r}")


def attention_fwd(q, k, v, causal=False, sm_scale=None):
    """Forward launch: o (B, H, T_q, d) in q's dtype and lse (B, H, T_q) in float32 (natural log)."""
    _check(q, k, v, causal, sm_scale)
    B, H, T_q, D = q.shape
    T_k = k.shape[2]
    scale = 1.0 / math.sqrt(D) if sm_scale is None else float(sm_scale)
    o = torch.empty((B, H, T_q, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, T_q), dtype=torch.float32, device=q.device)

    def grid(meta):
        return (triton.cdiv(T_q, meta["BLOCK_M"]), B * H)

    _attn_fwd_kernel[grid](
        q, k, v, o, lse, *_strides(q), *_strides(k), *_strides(v),
        H, T_q, T_k, scale,
        D=D, CAUSAL=causal, IN_DTYPE=tl_dtype(q.dtype), DOT_DTYPE=dot_dtype(q.dtype),
    )
    return o, lse


def attention_bwd(do, q, k, v, o, lse, causal=False, sm_scale=None):
    """Backward launches: (dq, dk, dv), from dO and the forward's O and lse."""
    check_tensors(do=do, q=q)
    if do.shape != q.shape:
        raise ValueError(f"dO: expected shape {tuple(q.shape)}, got {tuple(do.shape)}")
    B, H, T_q, D = q.shape
    T_k = k.shape[2]
    scale = 1.0 / math.sqrt(D) if sm_scale is None else float(sm_scale)
    delta = torch.empty((B, H, T_q), dtype=torch.float32, device=q.device)
    _attn_bwd_preprocess_kernel[(triton.cdiv(T_q, 64), B * H)](
        o, do, delta, *_strides(do), H, T_q, D=D, BLOCK_M=64,
    )
    dq = torch.empty((B, H, T_q, D), dtype=q.dtype, device=q.device)
    dk = torch.empty((B, H, T_k, D), dtype=k.dtype, device=q.device)
    dv = torch.empty((B, H, T_k, D), dtype=v.dtype, device=q.device)
    common = dict(D=D, CAUSAL=causal, IN_DTYPE=tl_dtype(q.dtype), DOT_DTYPE=dot_dtype(q.dtype))
    strides = (*_strides(q), *_strides(k), *_strides(v), *_strides(do))

    def grid_kv(meta):
        return (triton.cdiv(T_k, meta["BLOCK_N"]), B * H)

    def grid_q(meta):
        return (triton.cdiv(T_q, meta["BLOCK_M"]), B * H)

    _attn_bwd_dkdv_kernel[grid_kv](q, k, v, do, lse, delta, dk, dv, *strides, H, T_q, T_k, scale, **common)
    _attn_bwd_dq_kernel[grid_q](q, k, v, do, lse, delta, dq, *strides, H, T_q, T_k, scale, **common)
    return dq, dk, dv


class FlashAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: forward and backward both run the Triton kernels above."""

    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale):
        o, lse = attention_fwd(q, k, v, causal, sm_scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal = causal
        ctx.sm_scale = sm_scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = attention_bwd(do, q, k, v, o, lse, ctx.causal, ctx.sm_scale)
        return dq, dk, dv, None, None


def flash_attention(q, k, v, causal=False, sm_scale=None):
    r"""Scaled dot-product attention :math:`\mathrm{softmax}(s\,QK^\top + \text{mask})\,V` in Triton.

    Parameters
    ----------
    q : torch.Tensor, shape (B, H, T_q, d)
        fp32, fp16 or bf16, any strides; d in {16, 32, 64, 128}.
    k, v : torch.Tensor, shape (B, H, T_k, d)
        Same dtype and device as ``q``; T_k may differ from T_q.
    causal : bool
        Bottom-right aligned mask: query i sees key j iff j <= i + T_k - T_q (``reference.ops.attention.causal_mask``).
        A query that sees no key gets output 0 and zero gradients.
    sm_scale : float, optional
        The scale s of the scores; 1 / sqrt(d) by default.

    Returns
    -------
    torch.Tensor, shape (B, H, T_q, d)
        O in q's dtype; differentiable in q, k and v.
    """
    _check(q, k, v, causal, sm_scale)
    return FlashAttentionFunction.apply(q, k, v, causal, sm_scale)
