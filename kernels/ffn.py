r"""The position-wise FFN in Triton: two tiled GEMMs, with the bias and the activation fused into the epilogue.

.. math::
    Z = X W_1 + b_1,\quad H = \phi(Z),\quad Y = H W_2 + b_2

with :math:`\phi` = ReLU, GELU (erf) or GELU (tanh approximation). Backward, from :math:`dY`:

.. math::
    dZ = (dY\,W_2^\top) \odot \phi'(Z),\quad dW_2 = H^\top dY,\; db_2 = \textstyle\sum_m dY,\quad
    dW_1 = X^\top dZ,\; db_1 = \textstyle\sum_m dZ,\quad dX = dZ\,W_1^\top

One GEMM kernel does all six products: transposes are only swapped strides, and the epilogue is chosen by a
compile-time flag (bias + activation, bias, or times :math:`\phi'(Z)`). Bias gradients are column sums of the B
operand, which the ``X^T dZ`` and ``H^T dY`` GEMMs load anyway, so the programs of the first row of tiles add them up
as they go. NumPy twin: ``reference/ops/ffn.py``.
"""
import torch
import triton
import triton.language as tl

from ._common import autotune, check_shape, check_tensors, dot_dtype

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


def _gemm_configs():
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in [
            (128, 256, 64, 8, 3), (128, 128, 64, 8, 4), (128, 128, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 32, 4, 5),
        ]
    ]


@autotune(
    configs=_gemm_configs(),
    key=["M", "N", "K", "EPILOGUE", "SUM_B"],
    interpreter_config=triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2}),
)
@triton.jit
def _gemm_kernel(
    A, B, C, Bias, Z, DB,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_zm, stride_zn,
    EPILOGUE: tl.constexpr, ACT: tl.constexpr, SUM_B: tl.constexpr, DOT_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """C = A @ B (M, N) with an epilogue; A (M, K) and B (K, N) at any strides; C contiguous."""
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
    m64 = offs_m.to(tl.int64)
    n64 = offs_n.to(tl.int64)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    col_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k64 = offs_k.to(tl.int64)
        mask_k = offs_k < K
        a = tl.load(A + m64[:, None] * stride_am + k64[None, :] * stride_ak,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0).to(DOT_DTYPE)       # (BLOCK_M, BLOCK_K)
        b = tl.load(B + k64[:, None] * stride_bk + n64[None, :] * stride_bn,
                    mask=mask_k[:, None] & mask_n[None, :], other=0.0).to(DOT_DTYPE)       # (BLOCK_K, BLOCK_N)
        if SUM_B:
            col_sum += tl.sum(b.to(tl.float32), axis=0)
        acc = tl.dot(a, b, acc, input_precision="ieee")

    mask = mask_m[:, None] & mask_n[None, :]
    if EPILOGUE == 1:
        # Z = A B + bias is kept (for the backward); C = act(Z)
        z = acc + tl.load(Bias + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        tl.store(Z + m64[:, None] * stride_zm + n64[None, :] * stride_zn, z.to(Z.dtype.element_ty), mask=mask)
        out = _act(z, ACT)
    elif EPILOGUE == 2:
        out = acc + tl.load(Bias + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    elif EPILOGUE == 3:
        # C = (A B) * act'(Z): dZ = (dY W2^T) * act'(Z)
        z = tl.load(Z + m64[:, None] * stride_zm + n64[None, :] * stride_zn, mask=mask, other=0.0).to(tl.float32)
        out = acc * _act_grad(z, ACT)
    else:
        out = acc
    tl.store(C + m64[:, None] * N + n64[None, :], out.to(C.dtype.element_ty), mask=mask)
    if SUM_B:
        if pid_m == 0:
            tl.store(DB + offs_n, col_sum.to(DB.dtype.element_ty), mask=mask_n)


def _gemm(a, b, epilogue=_PLAIN, act=0, bias=None, z=None, db=None):
    """C = a @ b (+ epilogue) for 2-D ``a`` (M, K), ``b`` (K, N) at any strides; returns a new contiguous C.

    ``epilogue=_BIAS_ACT`` also writes the pre-activation into ``z`` (M, N); ``_TIMES_ACT_GRAD`` reads it.
    ``db`` (N,), if given, receives the column sums of ``b``.
    """
    m, k = a.shape
    n = b.shape[1]
    c = torch.empty((m, n), dtype=a.dtype, device=a.device)
    if m == 0 or n == 0:
        if db is not None:
            db.zero_()
        return c

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    _gemm_kernel[grid](
        a, b, c, bias, z, db,
        m, n, k,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1),
        z.stride(0) if z is not None else 0, z.stride(1) if z is not None else 0,
        EPILOGUE=epilogue, ACT=act, SUM_B=db is not None, DOT_DTYPE=dot_dtype(a.dtype),
    )
    return c


def _check(x, W1, b1, W2, b2, activation):
    check_tensors(x=x, W1=W1, b1=b1, W2=W2, b2=b2)
    if activation not in ACTIVATIONS:
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


def ffn_fwd(x, W1, b1, W2, b2, activation="relu"):
    """Forward launches. x (..., d_model) -> y (..., d_model), plus Z and H (M, d_ff) for the backward."""
    _check(x, W1, b1, W2, b2, activation)
    act = ACTIVATIONS[activation]
    x2 = x.reshape(-1, x.shape[-1])                                        # (M, d_model)
    z = torch.empty((x2.shape[0], W1.shape[1]), dtype=x.dtype, device=x.device)   # (M, d_ff)
    h = _gemm(x2, W1, _BIAS_ACT, act, bias=b1, z=z)                       # (M, d_ff)
    y = _gemm(h, W2, _BIAS, bias=b2)                                      # (M, d_model)
    return y.reshape(x.shape), z, h


def ffn_bwd(dy, x, W1, W2, z, h, activation="relu"):
    """Backward launches: (dx, dW1, db1, dW2, db2) from dy (..., d_model) and the forward's Z and H (M, d_ff)."""
    check_tensors(dy=dy, x=x)
    check_shape("dy", dy, tuple(x.shape))
    act = ACTIVATIONS[activation]
    x2 = x.reshape(-1, x.shape[-1])                                        # (M, d_model)
    dy2 = dy.reshape(-1, dy.shape[-1])                                     # (M, d_model)
    db1 = torch.empty((W1.shape[1],), dtype=W1.dtype, device=x.device)
    db2 = torch.empty((W2.shape[1],), dtype=W2.dtype, device=x.device)
    # forward: y = h W2 + b2, h = act(z)
    dz = _gemm(dy2, W2.t(), _TIMES_ACT_GRAD, act, z=z)                     # (M, d_ff)
    dW2 = _gemm(h.t(), dy2, db=db2)                                        # (d_ff, d_model)
    # forward: z = x W1 + b1
    dW1 = _gemm(x2.t(), dz, db=db1)                                        # (d_model, d_ff)
    dx = _gemm(dz, W1.t())                                                 # (M, d_model)
    return dx.reshape(x.shape), dW1, db1, dW2, db2


class FFNFunction(torch.autograd.Function):
    """Autograd wrapper: forward and backward both run the Triton GEMM kernel above."""

    @staticmethod
    def forward(ctx, x, W1, b1, W2, b2, activation):
        y, z, h = ffn_fwd(x, W1, b1, W2, b2, activation)
        ctx.save_for_backward(x, W1, W2, z, h)
        ctx.activation = activation
        return y

    @staticmethod
    def backward(ctx, dy):
        x, W1, W2, z, h = ctx.saved_tensors
        dx, dW1, db1, dW2, db2 = ffn_bwd(dy, x, W1, W2, z, h, ctx.activation)
        return dx, dW1, db1, dW2, db2, None


def fused_ffn(x, W1, b1, W2, b2, activation="relu"):
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

    Returns
    -------
    torch.Tensor, shape (..., d_model)
        y in x's dtype; differentiable in x, W1, b1, W2 and b2.
    """
    _check(x, W1, b1, W2, b2, activation)
    return FFNFunction.apply(x, W1, b1, W2, b2, activation)
