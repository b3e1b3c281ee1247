r"""FlashAttention in Triton: the online softmax, forward and backward, never holding the T_q x T_k matrix.

.. math::
    S = s\,Q K^\top,\quad P = \mathrm{softmax}(S),\quad O = P V,\qquad s = 1/\sqrt{d}\ \text{by default}

Forward: one program per (batch x head, query block). It walks the key blocks with a running row max ``m`` and a
running row sum ``l``, rescaling its accumulator whenever the max grows, and saves the log-sum-exp per row in base 2,
:math:`L_2 = \log_2 \sum_j 2^{c\,q_i\cdot k_j}` with :math:`c = s\log_2 e` (float32). The scale is folded into the
one fused multiply-add that ``exp2`` needs anyway: :math:`2^{c\,(q\cdot k) - m}`.

Backward, no atomics, three kernels:

1. preprocess: :math:`\delta_i = \sum_c dO_{ic} O_{ic}`, which equals :math:`\sum_j P_{ij}\,dP_{ij}`;
2. one program per (batch x K/V head, key block): loop over the query blocks (of every query head that shares
   this K/V head), recompute :math:`P = 2^{c\,q\cdot k - L_2}` and accumulate :math:`dV = P^\top dO` and
   :math:`dK = s\,dS^\top Q` with :math:`dS = P \odot (dO V^\top - \delta)`;
3. one program per (batch x head, query block): loop over the key blocks and accumulate :math:`dQ = s\,dS K`.

Only the blocks that cut the causal diagonal or the ragged edge of T_q or T_k are masked; every other block loads
and computes without predicates. Causal query blocks run heaviest first (the last rows see the most keys).

``causal`` is ``reference.ops.attention.causal_mask``: bottom-right aligned, query i sees key j iff
j <= i + T_k - T_q. A query row that sees no key (T_q > T_k) gets output 0, L = -inf and zero gradients: that is
decided by the mask, never by the numbers, so NaN and inf in the inputs propagate as in PyTorch (a NaN in q makes
its row of O NaN; float32 scores that overflow make NaN, not zeros).

Grouped-query attention: k and v may have fewer heads than q (``H % H_kv == 0``); query head h reads K/V head
``h // (H / H_kv)``, and the dK/dV programs sum over the query heads of their group.
NumPy twin: ``reference/ops/attention.py`` (``forward_blocked`` / ``backward_blocked`` run the same algorithm).
"""
import math

import torch
import triton
import triton.language as tl

from ._common import (autotune, bucket, check_fp32_precision, check_tensors, dot_dtype, dot_precision, load_tile,
                      max_shared_mem, tl_dtype)

HEAD_DIMS = (16, 32, 64, 128)
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
# Grid axis 1 (query or key blocks) is capped by CUDA at 65535 programs; axis 0 (batch x heads) at 2**31 - 1.
_MAX_GRID_AXIS1 = 65535

# Configurations (BLOCK_M, BLOCK_N, num_warps, num_stages, largest head dim). As in Triton's tutorial 06, 8 warps
# only for large tiles. The largest head dim comes from compiling each one for sm_90 with Triton 3.6
# (tests/kernels/aot_sm90.py): above it the configuration spills registers, so it is pruned there. Per call, configs
# whose tiles do not fit in shared memory or exceed the sequence are pruned too (``_prune``).
_FWD = [(128, 64, 4, 3, 64), (128, 128, 8, 3, 128), (64, 128, 4, 3, 64), (64, 64, 4, 4, 128), (128, 32, 4, 4, 128),
        (64, 32, 4, 3, 128)]
# dK/dV: 32 x 128 tiles with 4 warps (the tutorial's) spill from d = 64 on, and badly at d = 128: kept for d <= 32.
_DKDV = [(64, 128, 8, 3, 64), (32, 128, 8, 3, 128), (64, 64, 8, 3, 128), (32, 128, 4, 3, 32), (32, 64, 4, 4, 128),
         (16, 64, 4, 3, 128)]
_DQ = [(128, 64, 8, 3, 128), (128, 32, 4, 3, 64), (64, 64, 4, 3, 128), (64, 32, 4, 4, 128), (32, 32, 4, 3, 128)]
# Exact float32 dots (input_precision="ieee") run on CUDA cores, not tensor cores: large tiles spill heavily and take
# minutes to compile, so they get one small tile of their own (it is the checking path, not the fast one).
_IEEE32 = [(32, 32, 8, 2, 128)]
# The interpreter: small blocks with BLOCK_M != BLOCK_N, so a swapped role or a ragged edge shows up at small T.
_INTERP_FWD = triton.Config({"BLOCK_M": 32, "BLOCK_N": 16})
_INTERP_DKDV = triton.Config({"BLOCK_M": 16, "BLOCK_N": 32})
# Sequence lengths enter the autotune key as power-of-two buckets: a new length re-tunes only in a new bucket.
_KEY = ["T_Q_BUCKET", "T_K_BUCKET", "D", "CAUSAL", "PRECISION"]


def _configs(table):
    """(triton.Config list, {(BLOCK_M, BLOCK_N, num_warps, num_stages): (kind, largest head dim)})."""
    rows = [(r, "tensor cores") for r in table] + [(r, "ieee fp32") for r in _IEEE32]
    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
               for (bm, bn, w, s, _), _ in rows]
    return configs, {r[:4]: (kind, r[4]) for r, kind in rows}


def _config_key(cfg):
    return cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], cfg.num_warps, cfg.num_stages


def _tile_bytes(kernel, cfg, D, elsize):
    """Shared memory a configuration needs, estimated as the pipelined tiles (``num_stages`` copies) plus the tiles
    a program holds; at or above what Triton 3.6 allocates for sm_90 (``tests/kernels/aot_sm90.py`` prints both)."""
    bm, bn, stages = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], cfg.num_stages
    if kernel == "fwd":        # Q held; K and V tiles streamed
        return elsize * D * (bm + stages * 2 * bn)
    if kernel == "dkdv":       # K and V held; Q and dO tiles streamed, P^T and dS^T staged for the dots
        return elsize * (D * (2 * bn + stages * 2 * bm) + 2 * bm * bn)
    return elsize * (D * (2 * bm + stages * 2 * bn) + 2 * bm * bn)   # dq: Q and dO held; K and V streamed


def _prune(kernel, meta):
    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        D, t_q, t_k = args["D"], args["T_Q_BUCKET"], args["T_K_BUCKET"]
        fp32 = args["DOT_DTYPE"] == tl.float32
        kind = "ieee fp32" if fp32 and args["PRECISION"] == "ieee" else "tensor cores"
        # tf32x3 keeps each float32 operand tile as two TF32 parts: about 1.5x the shared memory (measured, sm_90)
        scale = (4 if fp32 else 2) * (1.5 if args["PRECISION"] == "tf32x3" else 1)
        limit = max_shared_mem()
        fits = [c for c in configs if meta[_config_key(c)][0] == kind and D <= meta[_config_key(c)][1]
                and scale * _tile_bytes(kernel, c, D, 1) <= limit]
        # the tile along the sequence a program walks must not exceed that sequence's bucket (tutorial 06's rule)
        walk, t = ("BLOCK_M", t_q) if kernel in ("fwd", "dq") else ("BLOCK_N", t_k)
        small = [c for c in fits if c.kwargs[walk] <= t]
        return small or sorted(fits, key=lambda c: c.kwargs[walk])[:1]
    return prune


_FWD_CONFIGS, _FWD_META = _configs(_FWD)
_DKDV_CONFIGS, _DKDV_META = _configs(_DKDV)
_DQ_CONFIGS, _DQ_META = _configs(_DQ)


@triton.jit
def _head(pid_bh, n_head, stride_b, stride_h):
    """Element offset of (batch, head) = divmod(pid_bh, n_head) in a tensor with these batch and head strides."""
    b = (pid_bh // n_head).to(tl.int64)
    h = (pid_bh % n_head).to(tl.int64)
    return b * stride_b + h * stride_h


@triton.jit
def _kv_of(pid_bh, H, GROUP):
    """The (batch x K/V head) index of query program (batch x head) ``pid_bh``: K/V head = h // GROUP."""
    return (pid_bh // H) * (H // GROUP) + (pid_bh % H) // GROUP


@triton.jit
def _key_blocks(start_m, T_k, shift, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Keys [0, mid) are seen by every row of the query block (no mask); keys [mid, hi) need the mask."""
    if CAUSAL:
        hi = tl.maximum(tl.minimum(T_k, start_m + BLOCK_M + shift), 0)   # past the last row's horizon: nothing
        mid = tl.minimum(tl.maximum(start_m + shift + 1, 0), T_k) // BLOCK_N * BLOCK_N   # <= first row's horizon
    else:
        hi = T_k
        mid = T_k // BLOCK_N * BLOCK_N                                   # the ragged last key block is masked
    return mid, hi


@triton.jit
def _attn_fwd_inner(
    acc, l_i, m_i, q,
    K, V,                  # this head's keys and values, (T_k, D) at strides (stride_kt, stride_kd) etc.
    stride_kt, stride_kd, stride_vt, stride_vd,
    offs_m, lo, hi, T_k, shift, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, D: tl.constexpr, IN_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
):
    offs_d = tl.arange(0, D)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kT = load_tile(K, offs_d, offs_n, stride_kd, stride_kt, D, T_k, False, MASKED).to(DOT_DTYPE)  # (D, BLOCK_N)
        v = load_tile(V, offs_n, offs_d, stride_vt, stride_vd, T_k, D, MASKED, False).to(DOT_DTYPE)   # (BLOCK_N, D)
        s = tl.dot(q, kT, input_precision=PRECISION)                            # (BLOCK_M, BLOCK_N) raw q . k
        if MASKED:
            visible = offs_n[None, :] < T_k
            if CAUSAL:
                visible = visible & (offs_n[None, :] <= offs_m[:, None] + shift)
            s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1) * qk_scale)                   # running max, base-2 units
        # While a row has seen only -inf, subtract 0 instead of -inf (no -inf - -inf); FlashAttention does the same.
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s * qk_scale - m_use[:, None])                         # one FMA, then exp2
        alpha = tl.math.exp2(m_i - m_use)                        # rescales what was summed under the old max
        l_i = l_i * alpha + tl.sum(p, axis=1)
        # P is rounded to the input dtype before P V, as on the GPU's tensor cores.
        acc = tl.dot(p.to(IN_DTYPE).to(DOT_DTYPE), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@autotune(configs=_FWD_CONFIGS, key=_KEY, interpreter_config=_INTERP_FWD, prune=_prune("fwd", _FWD_META))
@triton.jit
def _attn_fwd_kernel(
    Q,                     # (B, H, T_q, D) queries, any strides
    K, V,                  # (B, H_kv, T_k, D) keys and values, any strides
    O,                     # (B, H, T_q, D) output, contiguous
    LSE,                   # (B, H, T_q) float32 base-2 log-sum-exp, contiguous
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    H, GROUP, T_q, T_k, qk_scale,
    T_Q_BUCKET, T_K_BUCKET,                                              # autotune key only
    D: tl.constexpr, CAUSAL: tl.constexpr, IN_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    bh = tl.program_id(0)
    m_block = tl.program_id(1)
    if CAUSAL:
        m_block = tl.num_programs(1) - 1 - m_block           # heaviest query blocks (most keys) start first
    start_m = m_block * BLOCK_M
    Q += _head(bh, H, stride_qb, stride_qh)
    kv = _kv_of(bh, H, GROUP)
    K += _head(kv, H // GROUP, stride_kb, stride_kh)
    V += _head(kv, H // GROUP, stride_vb, stride_vh)
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q = load_tile(Q, offs_m, offs_d, stride_qt, stride_qd, T_q, D, True, False).to(DOT_DTYPE)       # (BLOCK_M, D)
    shift = T_k - T_q                                     # causal: query i sees key j iff j <= i + shift
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)                              # running max
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)                                            # running sum
    acc = tl.zeros((BLOCK_M, D), dtype=tl.float32)                                          # running P V
    mid, hi = _key_blocks(start_m, T_k, shift, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
                                    offs_m, 0, mid, T_k, shift, qk_scale,
                                    False, CAUSAL, D, IN_DTYPE, DOT_DTYPE, PRECISION, BLOCK_N)
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
                                    offs_m, mid, hi, T_k, shift, qk_scale,
                                    True, CAUSAL, D, IN_DTYPE, DOT_DTYPE, PRECISION, BLOCK_N)
    # A row sees a key or not by the mask alone. One that does divides by its sum even when that is 0 or NaN
    # (overflowed or NaN scores): the NaN reaches O as in PyTorch. One that does not is 0, with L = -inf.
    if CAUSAL:
        sees = offs_m + shift >= 0
    else:
        sees = offs_m >= 0
    l_div = tl.where(sees, l_i, 1.0)                     # rows that see no key: 1, only to keep 0/0 out
    out = tl.where(sees[:, None], acc / l_div[:, None], 0.0)
    lse2 = tl.where(sees, m_i + tl.math.log2(l_div), float("-inf"))
    rows = bh.to(tl.int64) * T_q + offs_m                                                   # rows of O and LSE
    mask_m = offs_m < T_q
    tl.store(O + rows[:, None] * D + offs_d[None, :], out.to(O.dtype.element_ty), mask=mask_m[:, None])
    tl.store(LSE + rows, lse2, mask=mask_m)


@triton.jit
def _attn_bwd_preprocess_kernel(
    O,                     # (B, H, T_q, D) forward output, contiguous
    DO,                    # (B, H, T_q, D) upstream gradient, any strides
    DELTA,                 # (B, H, T_q) float32 output, contiguous
    stride_dob, stride_doh, stride_dot, stride_dod,
    H, T_q,
    D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    bh = tl.program_id(0)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    rows = bh.to(tl.int64) * T_q + offs_m
    o = load_tile(O + bh.to(tl.int64) * T_q * D, offs_m, offs_d, D, 1, T_q, D, True, False).to(tl.float32)
    do = load_tile(DO + _head(bh, H, stride_dob, stride_doh), offs_m, offs_d, stride_dot, stride_dod, T_q, D,
                   True, False).to(tl.float32)
    # delta_i = sum_c dO_ic O_ic = sum_j P_ij dP_ij, the term that softmax's backward subtracts
    tl.store(DELTA + rows, tl.sum(do * o, axis=1), mask=offs_m < T_q)


@triton.jit
def _attn_bwd_dkdv_step(
    dk, dv, k, v,
    Q, DO,                 # one query head's queries and upstream gradient, (T_q, D) at their strides
    LSE, DELTA,            # that head's base-2 log-sum-exp and delta, (T_q,) contiguous
    stride_qt, stride_qd, stride_dot, stride_dod,
    start_m, offs_n, T_q, T_k, shift, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, D: tl.constexpr, IN_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """Add one query block's contribution to this key block's dK and dV."""
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    qT = load_tile(Q, offs_d, offs_m, stride_qd, stride_qt, D, T_q, False, MASKED).to(DOT_DTYPE)      # (D, BLOCK_M)
    do = load_tile(DO, offs_m, offs_d, stride_dot, stride_dod, T_q, D, MASKED, False).to(DOT_DTYPE)   # (BLOCK_M, D)
    if MASKED:
        lse2 = tl.load(LSE + offs_m, mask=offs_m < T_q, other=0.0)
        delta = tl.load(DELTA + offs_m, mask=offs_m < T_q, other=0.0)
    else:
        lse2 = tl.load(LSE + offs_m)
        delta = tl.load(DELTA + offs_m)
    sT = tl.dot(k, qT, input_precision=PRECISION)                               # (BLOCK_N, BLOCK_M) raw k . q
    # forward: P = 2^(c q.k - L2), recomputed from the saved L2
    pT = tl.math.exp2(sT * qk_scale - lse2[None, :])
    if MASKED:
        visible = (offs_n[:, None] < T_k) & (offs_m[None, :] < T_q)
        if CAUSAL:
            visible = visible & (offs_n[:, None] <= offs_m[None, :] + shift)
        pT = tl.where(visible, pT, 0.0)
    # forward: O = P V  ->  dV = P^T dO
    dv = tl.dot(pT.to(IN_DTYPE).to(DOT_DTYPE), do, dv, input_precision=PRECISION)
    # forward: O = P V  ->  dP = dO V^T; softmax: dS = P * (dP - delta)
    dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)                   # (BLOCK_N, BLOCK_M)
    dsT = pT * (dpT - delta[None, :])
    # forward: S = s Q K^T  ->  dK = s dS^T Q (the factor s is applied once, at the end)
    dk = tl.dot(dsT.to(IN_DTYPE).to(DOT_DTYPE), tl.trans(qT), dk, input_precision=PRECISION)
    return dk, dv


@triton.jit
def _query_head(pid_bkv, g, H, GROUP, LSE, DELTA, T_q):
    """(batch x head) index of the g-th query head that shares K/V head ``pid_bkv``, and its LSE and delta rows."""
    H_kv = H // GROUP
    bh = (pid_bkv // H_kv) * H + (pid_bkv % H_kv) * GROUP + g
    return bh, LSE + bh.to(tl.int64) * T_q, DELTA + bh.to(tl.int64) * T_q


@autotune(configs=_DKDV_CONFIGS, key=_KEY, interpreter_config=_INTERP_DKDV, prune=_prune("dkdv", _DKDV_META))
@triton.jit
def _attn_bwd_dkdv_kernel(
    Q,                     # (B, H, T_q, D) queries, any strides
    K, V,                  # (B, H_kv, T_k, D) keys and values, any strides
    DO,                    # (B, H, T_q, D) upstream gradient, any strides
    LSE, DELTA,            # (B, H, T_q) float32, contiguous: base-2 log-sum-exp and delta
    DK, DV,                # (B, H_kv, T_k, D) outputs, contiguous
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_dob, stride_doh, stride_dot, stride_dod,
    H, GROUP, T_q, T_k, qk_scale, sm_scale,
    T_Q_BUCKET, T_K_BUCKET,                                              # autotune key only
    D: tl.constexpr, CAUSAL: tl.constexpr, IN_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    bkv = tl.program_id(0)                               # batch x K/V head
    start_n = tl.program_id(1) * BLOCK_N
    H_kv = H // GROUP
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    k = load_tile(K + _head(bkv, H_kv, stride_kb, stride_kh), offs_n, offs_d, stride_kt, stride_kd, T_k, D,
                  True, False).to(DOT_DTYPE)                                                 # (BLOCK_N, D)
    v = load_tile(V + _head(bkv, H_kv, stride_vb, stride_vh), offs_n, offs_d, stride_vt, stride_vd, T_k, D,
                  True, False).to(DOT_DTYPE)                                                 # (BLOCK_N, D)
    shift = T_k - T_q
    # Query blocks [first, mid) cut the diagonal and [full, T_q) is the ragged last one: masked. Blocks in
    # [mid, full) see every key of this block: no mask. A ragged key block is masked against every query block.
    full = T_q // BLOCK_M * BLOCK_M
    if CAUSAL:
        first = tl.maximum(start_n - shift, 0) // BLOCK_M * BLOCK_M        # first query that sees key start_n
        mid = tl.cdiv(tl.maximum(start_n + BLOCK_N - 1 - shift, 0), BLOCK_M) * BLOCK_M
    else:
        first = 0
        mid = 0
    mid = tl.where(start_n + BLOCK_N > T_k, tl.cdiv(T_q, BLOCK_M) * BLOCK_M, mid)
    n_diag = tl.cdiv(tl.maximum(tl.minimum(mid, T_q) - first, 0), BLOCK_M)
    n_masked = n_diag + ((full < T_q) & (mid <= full)).to(tl.int32)
    n_full = tl.maximum(full - mid, 0) // BLOCK_M
    dk = tl.zeros((BLOCK_N, D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, D), dtype=tl.float32)
    # One flat loop per kind of block over (query head of the group, query block): each is one pipelined loop.
    for it in range(0, GROUP * n_full):
        bh, LSEh, DELTAh = _query_head(bkv, it // n_full, H, GROUP, LSE, DELTA, T_q)
        dk, dv = _attn_bwd_dkdv_step(dk, dv, k, v, Q + _head(bh, H, stride_qb, stride_qh),
                                     DO + _head(bh, H, stride_dob, stride_doh), LSEh, DELTAh,
                                     stride_qt, stride_qd, stride_dot, stride_dod,
                                     mid + (it % n_full) * BLOCK_M, offs_n, T_q, T_k, shift, qk_scale,
                                     False, CAUSAL, D, IN_DTYPE, DOT_DTYPE, PRECISION, BLOCK_M)
    for it in range(0, GROUP * n_masked):
        bh, LSEh, DELTAh = _query_head(bkv, it // n_masked, H, GROUP, LSE, DELTA, T_q)
        j = it % n_masked
        start_m = tl.where(j < n_diag, first + j * BLOCK_M, full)
        dk, dv = _attn_bwd_dkdv_step(dk, dv, k, v, Q + _head(bh, H, stride_qb, stride_qh),
                                     DO + _head(bh, H, stride_dob, stride_doh), LSEh, DELTAh,
                                     stride_qt, stride_qd, stride_dot, stride_dod,
                                     start_m, offs_n, T_q, T_k, shift, qk_scale,
                                     True, CAUSAL, D, IN_DTYPE, DOT_DTYPE, PRECISION, BLOCK_M)
    rows = bkv.to(tl.int64) * T_k + offs_n                                                  # rows of DK and DV
    mask_n = offs_n < T_k
    tl.store(DK + rows[:, None] * D + offs_d[None, :], (dk * sm_scale).to(DK.dtype.element_ty), mask=mask_n[:, None])
    tl.store(DV + rows[:, None] * D + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=mask_n[:, None])


@triton.jit
def _attn_bwd_dq_inner(
    dq, q, do, lse2, delta,
    K, V,                  # this head's keys and values, (T_k, D) at their strides
    stride_kt, stride_kd, stride_vt, stride_vd,
    offs_m, lo, hi, T_k, shift, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, D: tl.constexpr, IN_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
):
    offs_d = tl.arange(0, D)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kT = load_tile(K, offs_d, offs_n, stride_kd, stride_kt, D, T_k, False, MASKED).to(DOT_DTYPE)  # (D, BLOCK_N)
        vT = load_tile(V, offs_d, offs_n, stride_vd, stride_vt, D, T_k, False, MASKED).to(DOT_DTYPE)  # (D, BLOCK_N)
        s = tl.dot(q, kT, input_precision=PRECISION)                            # (BLOCK_M, BLOCK_N) raw q . k
        p = tl.math.exp2(s * qk_scale - lse2[:, None])
        if MASKED:
            visible = offs_n[None, :] < T_k
            if CAUSAL:
                visible = visible & (offs_n[None, :] <= offs_m[:, None] + shift)
            p = tl.where(visible, p, 0.0)
        # forward: O = P V -> dP = dO V^T; softmax: dS = P * (dP - delta)
        dp = tl.dot(do, vT, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        # forward: S = s Q K^T  ->  dQ = s dS K (the factor s is applied once, at the end)
        dq = tl.dot(ds.to(IN_DTYPE).to(DOT_DTYPE), tl.trans(kT), dq, input_precision=PRECISION)
    return dq


@autotune(configs=_DQ_CONFIGS, key=_KEY, interpreter_config=_INTERP_FWD, prune=_prune("dq", _DQ_META))
@triton.jit
def _attn_bwd_dq_kernel(
    Q,                     # (B, H, T_q, D) queries, any strides
    K, V,                  # (B, H_kv, T_k, D) keys and values, any strides
    DO,                    # (B, H, T_q, D) upstream gradient, any strides
    LSE, DELTA,            # (B, H, T_q) float32, contiguous: base-2 log-sum-exp and delta
    DQ,                    # (B, H, T_q, D) output, contiguous
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_dob, stride_doh, stride_dot, stride_dod,
    H, GROUP, T_q, T_k, qk_scale, sm_scale,
    T_Q_BUCKET, T_K_BUCKET,                                              # autotune key only
    D: tl.constexpr, CAUSAL: tl.constexpr, IN_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    bh = tl.program_id(0)
    m_block = tl.program_id(1)
    if CAUSAL:
        m_block = tl.num_programs(1) - 1 - m_block           # heaviest query blocks start first
    start_m = m_block * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    mask_m = offs_m < T_q
    kv = _kv_of(bh, H, GROUP)
    K += _head(kv, H // GROUP, stride_kb, stride_kh)
    V += _head(kv, H // GROUP, stride_vb, stride_vh)
    q = load_tile(Q + _head(bh, H, stride_qb, stride_qh), offs_m, offs_d, stride_qt, stride_qd, T_q, D,
                  True, False).to(DOT_DTYPE)                                                 # (BLOCK_M, D)
    do = load_tile(DO + _head(bh, H, stride_dob, stride_doh), offs_m, offs_d, stride_dot, stride_dod, T_q, D,
                   True, False).to(DOT_DTYPE)                                                # (BLOCK_M, D)
    rows = bh.to(tl.int64) * T_q + offs_m
    lse2 = tl.load(LSE + rows, mask=mask_m, other=0.0)
    delta = tl.load(DELTA + rows, mask=mask_m, other=0.0)
    shift = T_k - T_q
    dq = tl.zeros((BLOCK_M, D), dtype=tl.float32)
    mid, hi = _key_blocks(start_m, T_k, shift, CAUSAL, BLOCK_M, BLOCK_N)
    dq = _attn_bwd_dq_inner(dq, q, do, lse2, delta, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
                            offs_m, 0, mid, T_k, shift, qk_scale,
                            False, CAUSAL, D, IN_DTYPE, DOT_DTYPE, PRECISION, BLOCK_N)
    dq = _attn_bwd_dq_inner(dq, q, do, lse2, delta, K, V, stride_kt, stride_kd, stride_vt, stride_vd,
                            offs_m, mid, hi, T_k, shift, qk_scale,
                            True, CAUSAL, D, IN_DTYPE, DOT_DTYPE, PRECISION, BLOCK_N)
    tl.store(DQ + rows[:, None] * D + offs_d[None, :], (dq * sm_scale).to(DQ.dtype.element_ty), mask=mask_m[:, None])


def _check(q, k, v, causal, sm_scale, fp32_precision):
    check_tensors(q=q, k=k, v=v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim != 4:
            raise ValueError(f"{name}: expected shape (B, H, T, d), got {tuple(t.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v: expected the same shape (B, H_kv, T_k, d), got {tuple(k.shape)} and "
                         f"{tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or k.shape[1] < 1 or q.shape[1] % k.shape[1]:
        raise ValueError(
            f"q and k: expected (B, H, T_q, d) and (B, H_kv, T_k, d) with the same B and d and H a multiple of "
            f"H_kv, got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if q.shape[3] not in HEAD_DIMS:
        raise ValueError(f"head dim d: expected one of {HEAD_DIMS}, got {q.shape[3]}")
    if q.shape[2] < 1 or k.shape[2] < 1:
        raise ValueError(f"expected T_q >= 1 and T_k >= 1, got T_q = {q.shape[2]}, T_k = {k.shape[2]}")
    if max(q.shape[2], k.shape[2]) > 16 * _MAX_GRID_AXIS1:
        raise ValueError(f"expected T_q, T_k <= {16 * _MAX_GRID_AXIS1} (grid limit), got {q.shape[2]}, {k.shape[2]}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    if sm_scale is not None:
        if isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float)):
            raise TypeError(f"sm_scale: expected None or a positive number, got {type(sm_scale).__name__}")
        if not 0 < sm_scale < float("inf"):
            raise ValueError(f"sm_scale: expected None or a positive finite number, got {sm_scale!r}")
    check_fp32_precision(fp32_precision)


def _strides(t):
    return tuple(t.stride())


def _launch_args(q, k, causal, sm_scale, fp32_precision):
    """(scalar arguments, compile-time arguments) shared by the forward and backward launches."""
    B, H, T_q, D = q.shape
    T_k = k.shape[2]
    scale = 1.0 / math.sqrt(D) if sm_scale is None else float(sm_scale)
    const = dict(D=D, CAUSAL=causal, IN_DTYPE=tl_dtype(q.dtype), DOT_DTYPE=dot_dtype(q.dtype),
                 PRECISION=dot_precision(q.dtype, fp32_precision))
    return (H, H // k.shape[1], T_q, T_k, scale * _LOG2E), scale, (bucket(T_q), bucket(T_k)), const


def _forward(q, k, v, causal, sm_scale, fp32_precision):
    """Forward launch: o (B, H, T_q, d) in q's dtype and the base-2 log-sum-exp (B, H, T_q) in float32."""
    B, H, T_q, D = q.shape
    scalars, _, buckets, const = _launch_args(q, k, causal, sm_scale, fp32_precision)
    o = torch.empty((B, H, T_q, D), dtype=q.dtype, device=q.device)
    lse2 = torch.empty((B, H, T_q), dtype=torch.float32, device=q.device)

    def grid(meta):
        return (B * H, triton.cdiv(T_q, meta["BLOCK_M"]))

    _attn_fwd_kernel[grid](q, k, v, o, lse2, *_strides(q), *_strides(k), *_strides(v), *scalars, *buckets, **const)
    return o, lse2


def _backward(do, q, k, v, o, lse2, causal, sm_scale, fp32_precision):
    """Backward launches: (dq, dk, dv), from dO and the forward's O and base-2 log-sum-exp."""
    check_tensors(do=do, q=q)
    if do.shape != q.shape:
        raise ValueError(f"dO: expected shape {tuple(q.shape)}, got {tuple(do.shape)}")
    B, H, T_q, D = q.shape
    H_kv, T_k = k.shape[1], k.shape[2]
    scalars, scale, buckets, const = _launch_args(q, k, causal, sm_scale, fp32_precision)
    delta = torch.empty((B, H, T_q), dtype=torch.float32, device=q.device)
    _attn_bwd_preprocess_kernel[(B * H, triton.cdiv(T_q, 64))](o, do, delta, *_strides(do), H, T_q, D=D, BLOCK_M=64)
    dq = torch.empty((B, H, T_q, D), dtype=q.dtype, device=q.device)
    dk = torch.empty((B, H_kv, T_k, D), dtype=k.dtype, device=q.device)
    dv = torch.empty((B, H_kv, T_k, D), dtype=v.dtype, device=q.device)
    strides = (*_strides(q), *_strides(k), *_strides(v), *_strides(do))

    def grid_kv(meta):
        return (B * H_kv, triton.cdiv(T_k, meta["BLOCK_N"]))

    def grid_q(meta):
        return (B * H, triton.cdiv(T_q, meta["BLOCK_M"]))

    _attn_bwd_dkdv_kernel[grid_kv](q, k, v, do, lse2, delta, dk, dv, *strides, *scalars, scale, *buckets, **const)
    _attn_bwd_dq_kernel[grid_q](q, k, v, do, lse2, delta, dq, *strides, *scalars, scale, *buckets, **const)
    return dq, dk, dv


def attention_fwd(q, k, v, causal=False, sm_scale=None, fp32_precision="ieee"):
    """Forward launch: o (B, H, T_q, d) in q's dtype and lse (B, H, T_q) in float32, natural log (as the reference)."""
    _check(q, k, v, causal, sm_scale, fp32_precision)
    o, lse2 = _forward(q, k, v, causal, sm_scale, fp32_precision)
    return o, lse2 * _LN2


def attention_bwd(do, q, k, v, o, lse, causal=False, sm_scale=None, fp32_precision="ieee"):
    """Backward launches: (dq, dk, dv), from dO and the forward's O and natural-log lse (as ``attention_fwd``)."""
    return _backward(do, q, k, v, o, lse * _LOG2E, causal, sm_scale, fp32_precision)


class FlashAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: forward and backward both run the Triton kernels above."""

    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale, fp32_precision):
        o, lse2 = _forward(q, k, v, causal, sm_scale, fp32_precision)
        ctx.save_for_backward(q, k, v, o, lse2)
        ctx.args = (causal, sm_scale, fp32_precision)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse2 = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, o, lse2, *ctx.args)
        return dq, dk, dv, None, None, None


def flash_attention(q, k, v, causal=False, sm_scale=None, fp32_precision="ieee"):
    r"""Scaled dot-product attention :math:`\mathrm{softmax}(s\,QK^\top + \text{mask})\,V` in Triton.

    Parameters
    ----------
    q : torch.Tensor, shape (B, H, T_q, d)
        fp32, fp16 or bf16, any strides; d in {16, 32, 64, 128}.
    k, v : torch.Tensor, shape (B, H_kv, T_k, d)
        Same dtype and device as ``q``; T_k may differ from T_q; H_kv divides H (grouped-query attention: query
        head h uses K/V head h // (H / H_kv); H_kv = H is ordinary multi-head attention).
    causal : bool
        Bottom-right aligned mask: query i sees key j iff j <= i + T_k - T_q (``reference.ops.attention.causal_mask``).
        A query that sees no key gets output 0 and zero gradients.
    sm_scale : float, optional
        The scale s of the scores; 1 / sqrt(d) by default.
    fp32_precision : {"ieee", "tf32x3"}
        How float32 inputs are multiplied: exactly ("ieee", the default, on CUDA cores) or as three TF32
        tensor-core products ("tf32x3", a few float32 ulps from exact and much faster). Unused for fp16/bf16.

    Returns
    -------
    torch.Tensor, shape (B, H, T_q, d)
        O in q's dtype; differentiable in q, k and v. NaN and inf in the inputs propagate as in PyTorch.
    """
    _check(q, k, v, causal, sm_scale, fp32_precision)
    return FlashAttentionFunction.apply(q, k, v, causal, sm_scale, fp32_precision)
