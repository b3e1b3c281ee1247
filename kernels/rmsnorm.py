r"""RMSNorm in Triton: one row per program, statistics in float32.

.. math::
    r = \frac{1}{\sqrt{\tfrac1N \sum_j x_j^2 + \epsilon}},\quad \hat x = x\, r,\quad y = \hat x\, \gamma,
    \qquad dx = r\,(g - \hat x\ \overline{g \hat x}),\ g = dy\, \gamma,\quad d\gamma = \textstyle\sum_{rows} dy\, \hat x

As in the NumPy twin (``reference/ops/rmsnorm.py``), each row is first divided by a power of two
:math:`s \le \max(\max_j |x_j|, \sqrt\epsilon)`, taken from the exponent bits of that maximum: exact, so the result
equals the plain formula's wherever :math:`\sum x^2` fits in float32, and stays right where it does not (float32 and
bfloat16 rows beyond ~2e19, where the plain formula, Liger-Kernel's and ``LlamaRMSNorm``'s, return 0).

Forward: one program per row; it saves two float32 per row, ``s`` and ``rs`` = :math:`s\,r` (both O(1)-safe: ``r``
alone underflows to a float32 subnormal for rows near 3e38). Backward, two steps and no locks: ``G`` programs each
take the rows ``g, g + G, ...``, write their ``dx`` and keep a running float32 sum of ``dy * xhat`` (dgamma) in
registers, written to row ``g`` of a (G, N) float32 buffer that torch then sums over G.
"""
import torch
import triton
import triton.language as tl

from ._common import check_shape, check_tensors, interpreting

# A whole row lives in registers: 64 KiB of the input per program, as in the LayerNorm kernel.
_MAX_ROW_BYTES = 65536


@triton.jit
def _row_scale(x, eps):
    """The power of two s <= max(max|x|, sqrt eps) (1 if that is inf or NaN), from its float32 exponent bits."""
    top = tl.maximum(tl.max(tl.abs(x), axis=0), tl.sqrt(eps))
    bits = top.to(tl.int32, bitcast=True) & 0x7F800000           # keep the exponent, zero the mantissa and sign
    return tl.where(bits != 0x7F800000, bits.to(tl.float32, bitcast=True), 1.0)


@triton.jit
def _rms_norm_fwd_kernel(
    X, Y, W, Scale, RS,             # X (M, N) any strides; Y (M, N) contiguous; W (N,); Scale, RS (M,) float32
    stride_xm, stride_xn, stride_w,
    N, eps,
    BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    cols64 = cols.to(tl.int64)                           # int64: a strided last axis can pass 2**31 too
    x = tl.load(X + row * stride_xm + cols64 * stride_xn, mask=mask, other=0.0).to(tl.float32)  # (BLOCK_N,)
    s = _row_scale(x, eps)
    u = x / s                                            # exact: s is a power of two; |u| < 2
    ms = tl.sum(u * u, axis=0) / N                       # mean(x^2) / s^2
    rs = 1.0 / tl.sqrt(ms + eps / s / s)                 # s r
    w = tl.load(W + cols * stride_w, mask=mask, other=0.0).to(tl.float32)
    y = u * rs * w                                       # xhat gamma
    tl.store(Y + row * N + cols, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(Scale + row, s)
    tl.store(RS + row, rs)


@triton.jit
def _rms_norm_bwd_kernel(
    X, DY, DX, W, Scale, RS, DW_partial,     # DX (M, N) contiguous; DW_partial (G, N) float32
    stride_xm, stride_xn, stride_dym, stride_dyn, stride_w,
    M, N,
    BLOCK_N: tl.constexpr,
):
    g = tl.program_id(0)
    n_programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    cols64 = cols.to(tl.int64)
    w = tl.load(W + cols * stride_w, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    row = g.to(tl.int64)                                 # int64: row * stride can pass 2**31
    for _ in range(g, M, n_programs):
        x = tl.load(X + row * stride_xm + cols64 * stride_xn, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride_dym + cols64 * stride_dyn, mask=mask, other=0.0).to(tl.float32)
        s = tl.load(Scale + row)
        rs = tl.load(RS + row)
        xhat = (x / s) * rs
        # forward: y = xhat * gamma
        dw_acc += dy * xhat
        gx = dy * w                                      # dL/dxhat
        # forward: xhat = x r, r = (mean(x^2) + eps)^(-1/2)  ->  dx = r (g - xhat mean(g xhat))
        c = tl.sum(gx * xhat, axis=0) / N
        dx = (gx - xhat * c) * rs / s
        tl.store(DX + row * N + cols, dx.to(DX.dtype.element_ty), mask=mask)
        row += n_programs
    tl.store(DW_partial + g * N + cols, dw_acc, mask=mask)


def _num_warps(block_n):
    return min(max(block_n // 256, 1), 8)


def _n_partials(m, device):
    """Programs of the backward: a few per SM on a GPU, so that the dgamma partial sums stay few."""
    if interpreting():
        return min(m, 4)
    return min(m, 4 * torch.cuda.get_device_properties(device).multi_processor_count)


def _check(x, weight, eps):
    dtype, _ = check_tensors(x=x, weight=weight)
    if x.ndim < 1:
        raise ValueError(f"x: expected at least 1 dimension (..., N), got shape {tuple(x.shape)}")
    n = x.shape[-1]
    check_shape("weight", weight, (n,))
    max_n = _MAX_ROW_BYTES // x.element_size()
    if n < 1 or n > max_n:
        raise ValueError(f"x: expected 1 <= N <= {max_n} features for {dtype} (one row per program), got N = {n}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps: expected a positive number, got {type(eps).__name__}")
    if not 0 < eps < float("inf") or torch.tensor(eps, dtype=torch.float32).item() == 0:
        raise ValueError(f"eps: expected a positive finite number that float32 can hold, got {eps!r}")


def rms_norm_fwd(x, weight, eps=1e-6):
    """Forward launch. x (..., N), weight (N,) -> y (..., N) in x's dtype, scale and rs (M,) in float32."""
    _check(x, weight, eps)
    n = x.shape[-1]
    x2 = x.reshape(-1, n)                                  # (M, N), a view when the layout allows, strides passed
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    scale = torch.empty((m,), dtype=torch.float32, device=x.device)
    rs = torch.empty((m,), dtype=torch.float32, device=x.device)
    if m > 0:
        block_n = triton.next_power_of_2(n)
        _rms_norm_fwd_kernel[(m,)](
            x2, y, weight, scale, rs,
            x2.stride(0), x2.stride(1), weight.stride(0),
            n, float(eps),
            BLOCK_N=block_n, num_warps=_num_warps(block_n),
        )
    return y.reshape(x.shape), scale, rs


def rms_norm_bwd(dy, x, weight, scale, rs):
    """Backward launches. dy, x (..., N) -> dx (..., N), dweight (N,) in the input's dtype."""
    n = x.shape[-1]
    check_tensors(dy=dy, x=x, weight=weight)
    check_shape("dy", dy, tuple(x.shape))
    x2 = x.reshape(-1, n)                                  # (M, N)
    dy2 = dy.reshape(-1, n)                                # (M, N)
    m = x2.shape[0]
    dx = torch.empty((m, n), dtype=x.dtype, device=x.device)
    if m == 0:
        return dx.reshape(x.shape), torch.zeros((n,), dtype=weight.dtype, device=x.device)
    n_partials = _n_partials(m, x.device)
    dw_partial = torch.empty((n_partials, n), dtype=torch.float32, device=x.device)   # (G, N)
    block_n = triton.next_power_of_2(n)
    _rms_norm_bwd_kernel[(n_partials,)](
        x2, dy2, dx, weight, scale, rs, dw_partial,
        x2.stride(0), x2.stride(1), dy2.stride(0), dy2.stride(1), weight.stride(0),
        m, n,
        BLOCK_N=block_n, num_warps=_num_warps(block_n),
    )
    return dx.reshape(x.shape), dw_partial.sum(dim=0).to(weight.dtype)


class RMSNormFunction(torch.autograd.Function):
    """Autograd wrapper: forward and backward both run the Triton kernels above."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        y, scale, rs = rms_norm_fwd(x, weight, eps)
        ctx.save_for_backward(x, weight, scale, rs)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, scale, rs = ctx.saved_tensors
        dx, dw = rms_norm_bwd(dy, x, weight, scale, rs)
        return dx, dw, None


def rms_norm(x, weight, eps=1e-6):
    r"""RMSNorm over the last axis, :math:`y = \gamma \odot x / \sqrt{\overline{x^2} + \epsilon}`, in Triton.

    Parameters
    ----------
    x : torch.Tensor, shape (..., N)
        fp32, fp16 or bf16; any strides (a copy is made only when the leading axes cannot be flattened as a view).
    weight : torch.Tensor, shape (N,)
        gamma, same dtype and device as ``x``.
    eps : float
        Added to the mean square inside the square root.

    Returns
    -------
    torch.Tensor, shape (..., N)
        y in x's dtype; differentiable in x and weight.
    """
    _check(x, weight, eps)
    return RMSNormFunction.apply(x, weight, eps)
