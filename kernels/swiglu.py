r"""The SwiGLU gate in Triton: :math:`h = \mathrm{silu}(a) \odot b`, forward and backward, element-wise.

.. math::
    h = a\,\sigma(a)\, b, \qquad db = dh\ a\,\sigma(a), \qquad da = dh\ b\ \sigma(a)\,\big(1 + a\,(1 - \sigma(a))\big)

Memory-bound: the forward reads a and b and writes h; the backward reads dh, a and b and writes da and db,
recomputing :math:`\sigma(a)` instead of saving it (as Liger-Kernel's ``LigerSiLUMulFunction`` does). Arithmetic in
float32. The rows of ``(..., F)`` inputs are programs along axis 0 and blocks of ``BLOCK_F`` columns along axis 1,
at any strides. NumPy twin: ``reference/ops/swiglu.py`` (``gate_forward``, ``gate_backward``); the matrix products
around the gate (``x W_gate``, ``x W_up``, ``h W_down``) stay with the GEMM kernels.
"""
import torch
import triton
import triton.language as tl

from ._common import check_tensors

_BLOCK_F = 1024


@triton.jit
def _gate_fwd_kernel(
    A, B, H,                        # A, B (M, F) any strides; H (M, F) contiguous
    stride_am, stride_af, stride_bm, stride_bf,
    F,
    BLOCK_F: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    mask = cols < F
    cols64 = cols.to(tl.int64)
    a = tl.load(A + row * stride_am + cols64 * stride_af, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + row * stride_bm + cols64 * stride_bf, mask=mask, other=0.0).to(tl.float32)
    h = a * tl.sigmoid(a) * b
    tl.store(H + row * F + cols64, h.to(H.dtype.element_ty), mask=mask)


@triton.jit
def _gate_bwd_kernel(
    DH, A, B, DA, DB,               # DH, A, B (M, F) any strides; DA, DB (M, F) contiguous
    stride_dhm, stride_dhf, stride_am, stride_af, stride_bm, stride_bf,
    F,
    BLOCK_F: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    mask = cols < F
    cols64 = cols.to(tl.int64)
    dh = tl.load(DH + row * stride_dhm + cols64 * stride_dhf, mask=mask, other=0.0).to(tl.float32)
    a = tl.load(A + row * stride_am + cols64 * stride_af, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + row * stride_bm + cols64 * stride_bf, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(a)
    # forward: h = silu(a) * b
    db = dh * a * sig
    # forward: silu(a) = a sigma(a), sigma' = sigma (1 - sigma)
    da = dh * b * sig * (1.0 + a * (1.0 - sig))
    tl.store(DA + row * F + cols64, da.to(DA.dtype.element_ty), mask=mask)
    tl.store(DB + row * F + cols64, db.to(DB.dtype.element_ty), mask=mask)


def _grid(m, f):
    block = min(_BLOCK_F, triton.next_power_of_2(f))
    return (m, triton.cdiv(f, block)), block


def swiglu_gate_fwd(a, b):
    """Forward launch: a, b (..., F) -> h (..., F) in their dtype."""
    f = a.shape[-1]
    a2, b2 = a.reshape(-1, f), b.reshape(-1, f)          # (M, F), views when the layout allows; strides passed
    h = torch.empty(a2.shape, dtype=a.dtype, device=a.device)
    if h.numel():
        grid, block = _grid(*a2.shape)
        _gate_fwd_kernel[grid](a2, b2, h, *a2.stride(), *b2.stride(), f, BLOCK_F=block, num_warps=4)
    return h.reshape(a.shape)


def swiglu_gate_bwd(dh, a, b):
    """Backward launch: dh, a, b (..., F) -> da, db (..., F)."""
    f = a.shape[-1]
    dh2, a2, b2 = dh.reshape(-1, f), a.reshape(-1, f), b.reshape(-1, f)      # (M, F)
    da = torch.empty(a2.shape, dtype=a.dtype, device=a.device)
    db = torch.empty(a2.shape, dtype=a.dtype, device=a.device)
    if da.numel():
        grid, block = _grid(*a2.shape)
        _gate_bwd_kernel[grid](dh2, a2, b2, da, db, *dh2.stride(), *a2.stride(), *b2.stride(), f,
                               BLOCK_F=block, num_warps=4)
    return da.reshape(a.shape), db.reshape(a.shape)


class SwiGLUGateFunction(torch.autograd.Function):
    """Autograd wrapper: forward and backward both run the Triton kernels above."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return swiglu_gate_fwd(a, b)

    @staticmethod
    def backward(ctx, dh):
        a, b = ctx.saved_tensors
        return swiglu_gate_bwd(dh, a, b)


def swiglu_gate(a, b):
    r"""The SwiGLU gate :math:`\mathrm{silu}(a) \odot b` in Triton.

    Parameters
    ----------
    a, b : torch.Tensor, one shape (..., F) with at least one axis
        The gate and up projections ``x W_gate`` and ``x W_up``; fp32, fp16 or bf16, one dtype and device, any
        strides.

    Returns
    -------
    torch.Tensor, shape (..., F)
        In the inputs' dtype; differentiable in a and b.
    """
    check_tensors(a=a, b=b)
    if a.ndim < 1 or a.shape != b.shape:
        raise ValueError(f"a, b: expected one shape (..., F) with at least one axis, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return SwiGLUGateFunction.apply(a, b)
