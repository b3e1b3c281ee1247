r"""LayerNorm in Triton: one row per program, statistics in float32.

.. math::
    \mu = \frac{1}{N}\sum_j x_j,\quad \sigma^2 = \frac{1}{N}\sum_j (x_j-\mu)^2,\quad
    \hat x = (x-\mu)\,r,\; r = \frac{1}{\sqrt{\sigma^2+\epsilon}},\quad y = \hat x\,\gamma + \beta

Forward: one program per row; it saves the row's mean and rstd ``r`` in float32 for the backward.
Backward, two stages and no locks: ``G`` programs (one per multiprocessor) each take the rows ``g, g + G, g + 2G,
...``, write their ``dx`` and keep running float32 sums of ``dy * xhat`` (dgamma) and ``dy`` (dbeta) in registers;
each writes its partial sums to row ``g`` of a (G, 2N) float32 buffer, ``[dgamma_g | dbeta_g]``, and one column sum
(``kernels._common.column_sum``, narrow column strips so that it too covers the GPU) adds the G rows.
Warps per program grow with the row length as in Liger-Kernel: 4, then 8 from 2048 columns, 16 from 8192, 32 from
32768.
NumPy twin: ``reference/ops/layernorm.py``.
"""
import torch
import triton
import triton.language as tl

from ._common import check_shape, check_tensors, column_sum, sm_count

# A whole row lives in registers: 64 KiB of the input per program, as in the Triton tutorial.
_MAX_ROW_BYTES = 65536


@triton.jit
def _layer_norm_fwd_kernel(
    X,                     # (M, N) input rows, any strides
    Y,                     # (M, N) output, contiguous
    W, B,                  # (N,) gamma and beta, any stride
    Mean, Rstd,            # (M,) float32 outputs: each row's mean and 1 / sqrt(var + eps)
    stride_xm, stride_xn, stride_w, stride_b,
    N, eps,
    BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)                  # int64: row * stride can pass 2**31
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    # int32 offsets within a row (the host makes sure (N - 1) * stride_xn < 2**31): half the registers of int64
    x = tl.load(X + row * stride_xm + cols * stride_xn, mask=mask, other=0.0).to(tl.float32)       # (BLOCK_N,)
    mean = tl.sum(x, axis=0) / N
    xc = tl.where(mask, x - mean, 0.0)                                                        # (BLOCK_N,)
    var = tl.sum(xc * xc, axis=0) / N                    # biased (population) variance, as in the paper
    rstd = 1.0 / tl.sqrt(var + eps)                      # eps inside the square root
    w = tl.load(W + cols * stride_w, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + cols * stride_b, mask=mask, other=0.0).to(tl.float32)
    y = xc * rstd * w + b
    tl.store(Y + row * N + cols, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)


@triton.jit
def _layer_norm_bwd_dx_kernel(
    X, DY,                 # (M, N) forward input and upstream gradient, any strides
    DX,                    # (M, N) output, contiguous
    W,                     # (N,) gamma, any stride
    Mean, Rstd,            # (M,) float32, saved by the forward
    Partial,               # (G, 2N) float32 output: row g = [sum of dy * xhat | sum of dy] over this program's rows
    stride_xm, stride_xn, stride_dym, stride_dyn, stride_w,
    M, N,
    BLOCK_N: tl.constexpr,
):
    g = tl.program_id(0)
    n_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    dw_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    db_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    row = g.to(tl.int64)                                 # int64: row * stride can pass 2**31
    for _ in range(g, M, n_programs):
        # int32 offsets within a row (the host makes sure (N - 1) * stride < 2**31)
        x = tl.load(X + row * stride_xm + cols * stride_xn, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride_dym + cols * stride_dyn, mask=mask, other=0.0).to(tl.float32)
        # gamma is re-read each row (from L1/L2) rather than held: one row-long vector fewer in registers
        w = tl.load(W + cols * stride_w, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(Mean + row)
        rstd = tl.load(Rstd + row)
        xhat = tl.where(mask, (x - mean) * rstd, 0.0)
        # forward: y = xhat * gamma + beta
        dw_acc += dy * xhat
        db_acc += dy
        dxhat = dy * w
        # forward: xhat = (x - mean) * rstd, with mean and rstd functions of the whole row:
        # dx = rstd * (dxhat - mean_j(dxhat) - xhat * mean_j(dxhat * xhat))
        c1 = tl.sum(dxhat * xhat, axis=0) / N
        c2 = tl.sum(dxhat, axis=0) / N
        dx = (dxhat - (xhat * c1 + c2)) * rstd
        tl.store(DX + row * N + cols, dx.to(DX.dtype.element_ty), mask=mask)
        row += n_programs
    tl.store(Partial + g * 2 * N + cols, dw_acc, mask=mask)
    tl.store(Partial + g * 2 * N + N + cols, db_acc, mask=mask)


def _num_warps(block_n):
    """Warps per program by row length, as Liger-Kernel scales them: 4, 8 from 2048, 16 from 8192, 32 from 32768.

    Compiled for sm_90 (tests/kernels/aot_sm90.py), the backward's first stage, which holds five row-long float32
    vectors per program, spills a little from N = 8192 (about 50 bytes a thread) and more from 16384 (0.7-1.6 KB);
    other warp counts measured there spill as much or more.
    """
    if block_n >= 32768:
        return 32
    if block_n >= 8192:
        return 16
    if block_n >= 2048:
        return 8
    return 4


def _rows(t):
    """t (..., N) as (M, N): a view when the layout allows; contiguous if a row's offsets would pass 2**31."""
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if (t2.shape[1] - 1) * abs(t2.stride(1)) < 2**31 else t2.contiguous()


def _check(x, weight, bias, eps):
    dtype, _ = check_tensors(x=x, weight=weight, bias=bias)
    if x.ndim < 1:
        raise ValueError(f"x: expected at least 1 dimension (..., N), got shape {tuple(x.shape)}")
    n = x.shape[-1]
    check_shape("weight", weight, (n,))
    check_shape("bias", bias, (n,))
    max_n = _MAX_ROW_BYTES // x.element_size()
    if n < 1 or n > max_n:
        raise ValueError(f"x: expected 1 <= N <= {max_n} features for {dtype} (one row per program), got N = {n}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps: expected a positive number, got {type(eps).__name__}")
    if not 0 < eps < float("inf"):
        raise ValueError(f"eps: expected a positive finite number, got {eps!r}")


def layer_norm_fwd(x, weight, bias, eps=1e-5):
    """Forward launch. x (..., N), weight/bias (N,) -> y (..., N) in x's dtype, mean and rstd (M,) in float32."""
    _check(x, weight, bias, eps)
    n = x.shape[-1]
    x2 = _rows(x)                                          # (M, N), a view when the layout allows, strides passed
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    mean = torch.empty((m,), dtype=torch.float32, device=x.device)
    rstd = torch.empty((m,), dtype=torch.float32, device=x.device)
    if m > 0:
        block_n = triton.next_power_of_2(n)
        _layer_norm_fwd_kernel[(m,)](
            x2, y, weight, bias, mean, rstd,
            x2.stride(0), x2.stride(1), weight.stride(0), bias.stride(0),
            n, float(eps),
            BLOCK_N=block_n, num_warps=_num_warps(block_n),
        )
    return y.reshape(x.shape), mean, rstd


def _n_partials(m, device):
    """G, the programs of the backward's first stage: one per multiprocessor (each keeps 2N float32 sums)."""
    return min(m, sm_count(device))


def layer_norm_bwd(dy, x, weight, mean, rstd):
    """Backward launches. dy, x (..., N) -> dx (..., N), dweight (N,), dbias (N,) in the input's dtype."""
    n = x.shape[-1]
    check_tensors(dy=dy, x=x, weight=weight)
    check_shape("dy", dy, tuple(x.shape))
    x2 = _rows(x)                                          # (M, N)
    dy2 = _rows(dy)                                        # (M, N)
    m = x2.shape[0]
    dx = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0:
        return dx.reshape(x.shape), torch.zeros_like(weight), torch.zeros_like(weight)
    n_partials = _n_partials(m, x.device)
    partial = torch.empty((n_partials, 2 * n), dtype=torch.float32, device=x.device)    # (G, 2N)
    block_n = triton.next_power_of_2(n)
    _layer_norm_bwd_dx_kernel[(n_partials,)](
        x2, dy2, dx, weight, mean, rstd, partial,
        x2.stride(0), x2.stride(1), dy2.stride(0), dy2.stride(1), weight.stride(0),
        m, n,
        BLOCK_N=block_n, num_warps=_num_warps(block_n),
    )
    dwdb = column_sum(partial, torch.empty((2 * n,), dtype=weight.dtype, device=x.device))   # [dgamma | dbeta]
    return dx.reshape(x.shape), dwdb[:n], dwdb[n:]


class LayerNormFunction(torch.autograd.Function):
    """Autograd wrapper: forward and backward both run the Triton kernels above."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        y, mean, rstd = layer_norm_fwd(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        dx, dw, db = layer_norm_bwd(dy, x, weight, mean, rstd)
        return dx, dw, db, None


def layer_norm(x, weight, bias, eps=1e-5):
    r"""LayerNorm over the last axis, :math:`y = \frac{x-\mu}{\sqrt{\sigma^2+\epsilon}}\gamma + \beta`, in Triton.

    Parameters
    ----------
    x : torch.Tensor, shape (..., N)
        fp32, fp16 or bf16; any strides (a copy is made only when the leading axes cannot be flattened as a view).
    weight, bias : torch.Tensor, shape (N,)
        gamma and beta, same dtype and device as ``x``.
    eps : float
        Added to the variance inside the square root.

    Returns
    -------
    torch.Tensor, shape (..., N)
        y in x's dtype; differentiable in x, weight and bias.
    """
    _check(x, weight, bias, eps)
    return LayerNormFunction.apply(x, weight, bias, eps)
