r"""The position-wise FFN in Triton: two tiled GEMMs, with the bias and the activation fused into the epilogue.

.. math::
    Z = X W_1 + b_1,\quad H = \phi(Z),\quad Y = H W_2 + b_2

with :math:`\phi` = ReLU, GELU (erf) or GELU (tanh approximation). Backward, from :math:`dY`:

.. math::
    dZ = (dY\,W_2^\top) \odot \phi'(Z),\quad dW_2 = H^\top dY,\; db_2 = \textstyle\sum_m dY,\quad
    dW_1 = X^\top dZ,\; db_1 = \textstyle\sum_m dZ,\quad dX = dZ\,W_1^\top

One GEMM kernel does the five products: transposes are only swapped strides, and the epilogue is chosen by a
compile-time flag (bias + activation, bias, or times :math:`\phi'(Z)`). Only :math:`Z` is saved for the backward, not
:math:`H`: the backward recomputes :math:`H = \phi(Z)` in one element-wise pass right before :math:`dW_2` consumes it,
and frees it before :math:`dZ` is made, so the forward + backward peak holds two (M, d_ff) tensors where PyTorch eager
holds three (Z and H saved, plus dH). Bias gradients: :math:`db_1` is summed once per output tile in the epilogue of
the :math:`dZ` GEMM (one float32 row per row of tiles, then a column sum), :math:`db_2` is one column sum of
:math:`dY`; neither is summed inside a K loop. Only the last, ragged K step is masked along K.
NumPy twin: ``reference/ops/ffn.py``.
"""
import torch
import triton
import triton.language as tl

from ._common import (autotune, bucket, check_fp32_precision, check_shape, check_tensors, column_sum, dot_dtype,
                      dot_precision, load_tile, max_shared_mem)

ACTIVATIONS = {"relu": 0, "gelu": 1, "gelu_tanh": 2}

# Epilogues of the GEMM kernel.
_PLAIN, _BIAS_ACT, _BIAS, _TIMES_ACT_GRAD = 0, 1, 2, 3

@triton.jit
def _tanh(u):
    # tanh(u) = 2 sigmoid(2u) - 1: tl.sigmoid exists in every Triton version, a core tanh does not.
    return 2.0 * tl.sigmoid(2.0 * u) - 1.0


# The constants are literals: 0.7071067811865476 = 1/sqrt(2), 0.7978845608028654 = sqrt(2/pi),
# 0.3989422804014327 = 1/sqrt(2 pi). (Compiled Triton rejects plain-float globals, and the interpreter fails on
# tl.constexpr globals inside a nested @triton.jit function.)
@triton.jit
def _act(z, ACT: tl.constexpr):
    if ACT == 0:
        h = tl.maximum(z, 0.0)
    elif ACT == 1:
        h = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    else:
        h = 0.5 * z * (1.0 + _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z)))
    return h


@triton.jit
def _act_grad(z, ACT: tl.constexpr):
    if ACT == 0:
        # forward: h = max(z, 0)
        g = tl.where(z > 0.0, 1.0, 0.0)
    elif ACT == 1:
        # forward: h = z Phi(z), Phi(z) = (1 + erf(z / sqrt 2)) / 2  ->  h' = Phi(z) + z phi(z)
        g = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476)) + z * 0.3989422804014327 * tl.exp(-0.5 * z * z)
    else:
        # forward: h = z (1 + tanh u) / 2, u = sqrt(2/pi) (z + 0.044715 z^3)
        t = _tanh(0.7978845608028654 * (z + 0.044715 * z * z * z))
        g = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * z * z)
    return g


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, epilogues it is kept for), the larger tiles of Triton's tutorial
# 03 for Hopper first. An epilogue holds a second tile-sized tensor (Z, or act'(Z)) beside the accumulator: compiled for
# sm_90 with Triton 3.6 (tests/kernels/aot_sm90.py), the large tiles spill registers there, so they are kept only for
# the epilogues they compile cleanly with.
_ALL = (_PLAIN, _BIAS_ACT, _BIAS, _TIMES_ACT_GRAD)
_GEMM = [(128, 256, 64, 8, 3, (_PLAIN,)), (128, 128, 64, 8, 4, (_PLAIN, _BIAS_ACT, _BIAS)),
         (64, 128, 64, 4, 4, (_PLAIN, _BIAS_ACT, _BIAS)), (64, 64, 64, 4, 4, _ALL)]
# Exact float32 dots run on CUDA cores: one small tile of their own (the checking path, not the fast one).
_GEMM_IEEE32 = [(32, 32, 32, 4, 2, _ALL)]


def _gemm_configs():
    rows = [(r, "tensor cores") for r in _GEMM] + [(r, "ieee fp32") for r in _GEMM_IEEE32]
    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
               for (bm, bn, bk, w, s, _), _ in rows]
    return configs, {r[:5]: (kind, r[5]) for r, kind in rows}


_GEMM_CONFIGS, _GEMM_META = _gemm_configs()


def _prune_gemm(configs, named_args, **kwargs):
    """Keep the configurations of the right kind for this epilogue whose pipelined A and B tiles fit in shared memory
    (float32 tiles are twice bf16's, tf32x3 about 1.5x that) and whose tiles do not exceed the problem's M and N
    buckets (the smallest fitting one if none is that small)."""
    args = {**named_args, **kwargs}
    fp32 = args["DOT_DTYPE"] == tl.float32
    kind = "ieee fp32" if fp32 and args["PRECISION"] == "ieee" else "tensor cores"
    scale = (4 if fp32 else 2) * (1.5 if args["PRECISION"] == "tf32x3" else 1)
    limit = max_shared_mem()

    def meta(c):
        k = c.kwargs
        return _GEMM_META[(k["BLOCK_M"], k["BLOCK_N"], k["BLOCK_K"], c.num_warps, c.num_stages)]

    fits = [c for c in configs if meta(c)[0] == kind and args["EPILOGUE"] in meta(c)[1]
            and c.num_stages * scale * c.kwargs["BLOCK_K"] * (c.kwargs["BLOCK_M"] + c.kwargs["BLOCK_N"]) <= limit]
    small = [c for c in fits if c.kwargs["BLOCK_M"] <= args["M_BUCKET"] and c.kwargs["BLOCK_N"] <= args["N_BUCKET"]]
    return small or sorted(fits, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])[:1]


@autotune(
    configs=_GEMM_CONFIGS,
    key=["M_BUCKET", "N_BUCKET", "K_BUCKET", "EPILOGUE", "PRECISION"],
    interpreter_config=triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2}),
    prune=_prune_gemm,
)
@triton.jit
def _gemm_kernel(
    A,                     # (M, K) left operand, any strides
    B,                     # (K, N) right operand, any strides
    C,                     # (M, N) output, contiguous
    Bias,                  # (N,) bias, read by the BIAS_ACT and BIAS epilogues
    Z,                     # (M, N) pre-activation at strides (stride_zm, stride_zn): BIAS_ACT writes it,
                           # TIMES_ACT_GRAD reads it
    Colsum,                # (cdiv(M, BLOCK_M), N) float32: with COLSUM, each row of tiles' column sums of C
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_zm, stride_zn,
    M_BUCKET, N_BUCKET, K_BUCKET,                                        # autotune key only
    EPILOGUE: tl.constexpr, ACT: tl.constexpr, COLSUM: tl.constexpr, DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """C = A @ B (M, N) with an epilogue."""
    # Tiles in groups of GROUP_M rows, so consecutive programs share B tiles in L2.
    pid = tl.program_id(0)
    n_tiles_m = tl.cdiv(M, BLOCK_M)
    n_tiles_n = tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * n_tiles_n)
    first_m = group * GROUP_M
    group_size = tl.minimum(n_tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * n_tiles_n)) % group_size
    pid_n = (pid % (GROUP_M * n_tiles_n)) // group_size

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # Every K step but a ragged last one loads without a K mask; the M and N masks are loop-invariant predicates.
    k_full = K // BLOCK_K * BLOCK_K
    for k0 in range(0, k_full, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a = load_tile(A, offs_m, offs_k, stride_am, stride_ak, M, K, True, False).to(DOT_DTYPE)   # (BLOCK_M, BLOCK_K)
        b = load_tile(B, offs_k, offs_n, stride_bk, stride_bn, K, N, False, True).to(DOT_DTYPE)   # (BLOCK_K, BLOCK_N)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    if k_full < K:
        offs_k = k_full + tl.arange(0, BLOCK_K)
        a = load_tile(A, offs_m, offs_k, stride_am, stride_ak, M, K, True, True).to(DOT_DTYPE)
        b = load_tile(B, offs_k, offs_n, stride_bk, stride_bn, K, N, True, True).to(DOT_DTYPE)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    m64 = offs_m.to(tl.int64)
    n64 = offs_n.to(tl.int64)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if EPILOGUE == 1:
        # Z = A B + bias is kept (for the backward); C = act(Z)
        z = acc + tl.load(Bias + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        tl.store(Z + m64[:, None] * stride_zm + n64[None, :] * stride_zn, z.to(Z.dtype.element_ty), mask=mask)
        out = _act(z, ACT)
    elif EPILOGUE == 2:
        out = acc + tl.load(Bias + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    elif EPILOGUE == 3:
        # C = (A B) * act'(Z): dZ = (dY W2^T) * act'(Z)
        z = load_tile(Z, offs_m, offs_n, stride_zm, stride_zn, M, N, True, True).to(tl.float32)
        out = acc * _act_grad(z, ACT)
    else:
        out = acc
    tl.store(C + m64[:, None] * N + n64[None, :], out.to(C.dtype.element_ty), mask=mask)
    if COLSUM:
        # rows past M hold 0 (their A rows loaded as 0, their Z as 0), so the tile's column sum is exact
        tl.store(Colsum + pid_m * N + offs_n, tl.sum(out, axis=0), mask=offs_n < N)


@triton.jit
def _act_kernel(
    Z,                     # (numel,) pre-activation, contiguous
    H,                     # (numel,) output act(Z), contiguous
    numel,
    ACT: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    z = tl.load(Z + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(H + offs, _act(z, ACT).to(H.dtype.element_ty), mask=mask)


def _gemm(a, b, precision, epilogue=_PLAIN, act=0, bias=None, z=None, colsum=False):
    """C = a @ b (+ epilogue) for 2-D ``a`` (M, K), ``b`` (K, N) at any strides; returns a new contiguous C.

    ``epilogue=_BIAS_ACT`` also writes the pre-activation into ``z`` (M, N); ``_TIMES_ACT_GRAD`` reads it.
    ``colsum``: also return the column sums of C, (N,) float32.
    """
    m, k = a.shape
    n = b.shape[1]
    c = torch.empty((m, n), dtype=a.dtype, device=a.device)
    if m == 0 or n == 0:
        return (c, torch.zeros((n,), dtype=torch.float32, device=a.device)) if colsum else c
    if k == 0:
        c.zero_()      # not reached from fused_ffn (d_model, d_ff >= 1); an empty sum is 0
    partial = torch.empty((triton.cdiv(m, 16), n), dtype=torch.float32, device=a.device) if colsum else None

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    _gemm_kernel[grid](
        a, b, c, bias, z, partial,
        m, n, k,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1),
        z.stride(0) if z is not None else 0, z.stride(1) if z is not None else 0,
        bucket(m), bucket(n), bucket(k),
        EPILOGUE=epilogue, ACT=act, COLSUM=colsum, DOT_DTYPE=dot_dtype(a.dtype), PRECISION=precision,
    )
    if not colsum:
        return c
    rows = triton.cdiv(m, _gemm_kernel.best_config.kwargs["BLOCK_M"])      # the rows of tiles that wrote a sum
    return c, column_sum(partial[:rows], torch.empty((n,), dtype=torch.float32, device=a.device))


def _check(x, W1, b1, W2, b2, activation, fp32_precision):
    check_tensors(x=x, W1=W1, b1=b1, W2=W2, b2=b2)
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if x.ndim < 1:
        raise ValueError(f"x: expected shape (..., d_model), got {tuple(x.shape)}")
    d_model = x.shape[-1]
    check_shape("W1", W1, (d_model, None))
    d_ff = W1.shape[1]
    check_shape("b1", b1, (d_ff,))
    check_shape("W2", W2, (d_ff, d_model))
    check_shape("b2", b2, (d_model,))
    if d_model == 0 or d_ff == 0:
        raise ValueError(f"expected d_model >= 1 and d_ff >= 1, got d_model = {d_model}, d_ff = {d_ff}")
    check_fp32_precision(fp32_precision)


def ffn_fwd(x, W1, b1, W2, b2, activation="relu", fp32_precision="ieee"):
    """Forward launches. x (..., d_model) -> y (..., d_model), Z (M, d_ff) for the backward, and H = act(Z) (M, d_ff).

    H is the forward's intermediate, returned for inspection; the autograd wrapper does not keep it.
    """
    _check(x, W1, b1, W2, b2, activation, fp32_precision)
    act = ACTIVATIONS[activation]
    precision = dot_precision(x.dtype, fp32_precision)
    x2 = x.reshape(-1, x.shape[-1])                                        # (M, d_model)
    z = torch.empty((x2.shape[0], W1.shape[1]), dtype=x.dtype, device=x.device)   # (M, d_ff)
    h = _gemm(x2, W1, precision, _BIAS_ACT, act, bias=b1, z=z)            # (M, d_ff)
    y = _gemm(h, W2, precision, _BIAS, bias=b2)                           # (M, d_model)
    return y.reshape(x.shape), z, h


def ffn_bwd(dy, x, W1, W2, z, activation="relu", fp32_precision="ieee"):
    """Backward launches: (dx, dW1, db1, dW2, db2) from dy (..., d_model) and the forward's Z (M, d_ff)."""
    check_tensors(dy=dy, x=x)
    check_shape("dy", dy, tuple(x.shape))
    act = ACTIVATIONS[activation]
    precision = dot_precision(x.dtype, fp32_precision)
    x2 = x.reshape(-1, x.shape[-1])                                        # (M, d_model)
    dy2 = dy.reshape(-1, dy.shape[-1])                                     # (M, d_model)
    # forward: h = act(z), recomputed here, where dW2 consumes it, and freed before dZ exists
    h = torch.empty_like(z)                                                # (M, d_ff)
    _act_kernel[(triton.cdiv(z.numel(), 1024),)](z, h, z.numel(), ACT=act, BLOCK=1024)
    # forward: y = h W2 + b2
    dW2 = _gemm(h.t(), dy2, precision)                                     # (d_ff, d_model)
    del h
    db2 = column_sum(dy2, torch.empty((W2.shape[1],), dtype=W2.dtype, device=x.device))   # (d_model,)
    dz, db1 = _gemm(dy2, W2.t(), precision, _TIMES_ACT_GRAD, act, z=z, colsum=True)     # (M, d_ff), (d_ff,) fp32
    # forward: z = x W1 + b1
    dW1 = _gemm(x2.t(), dz, precision)                                     # (d_model, d_ff)
    dx = _gemm(dz, W1.t(), precision)                                      # (M, d_model)
    return dx.reshape(x.shape), dW1, db1.to(W1.dtype), dW2, db2


class FFNFunction(torch.autograd.Function):
    """Autograd wrapper: forward and backward both run the Triton kernels above; only Z is saved, not H."""

    @staticmethod
    def forward(ctx, x, W1, b1, W2, b2, activation, fp32_precision):
        y, z, _ = ffn_fwd(x, W1, b1, W2, b2, activation, fp32_precision)
        ctx.save_for_backward(x, W1, W2, z)
        ctx.args = (activation, fp32_precision)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, W1, W2, z = ctx.saved_tensors
        dx, dW1, db1, dW2, db2 = ffn_bwd(dy, x, W1, W2, z, *ctx.args)
        return dx, dW1, db1, dW2, db2, None, None


def fused_ffn(x, W1, b1, W2, b2, activation="relu", fp32_precision="ieee"):
    r"""The FFN :math:`y = \phi(x W_1 + b_1) W_2 + b_2` in Triton, with the bias and :math:`\phi` fused into the GEMM.

    Parameters
    ----------
    x : torch.Tensor, shape (..., d_model)
        fp32, fp16 or bf16, any strides.
    W1 : torch.Tensor, shape (d_model, d_ff)
    b1 : torch.Tensor, shape (d_ff,)
    W2 : torch.Tensor, shape (d_ff, d_model)
    b2 : torch.Tensor, shape (d_model,)
    activation : {"relu", "gelu", "gelu_tanh"}
        ``"gelu"`` is the exact erf form, ``"gelu_tanh"`` the tanh approximation (GPT-2).
    fp32_precision : {"ieee", "tf32x3"}
        How float32 inputs are multiplied: exactly ("ieee", the default, on CUDA cores) or as three TF32
        tensor-core products ("tf32x3", a few float32 ulps from exact and much faster). Unused for fp16/bf16.

    Returns
    -------
    torch.Tensor, shape (..., d_model)
        y in x's dtype; differentiable in x, W1, b1, W2 and b2.
    """
    _check(x, W1, b1, W2, b2, activation, fp32_precision)
    return FFNFunction.apply(x, W1, b1, W2, b2, activation, fp32_precision)
