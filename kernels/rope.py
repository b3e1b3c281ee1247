r"""Rotary position embedding in Triton, applied to q and k in one launch, forward and backward.

Hugging Face's rotate-half layout: channel :math:`i` pairs with :math:`i + d/2`, and the pair of position
:math:`m` turns by :math:`m\theta_i`, :math:`\theta_i = \Theta^{-2i/d}`:

.. math::
    y_i = x_i \cos m\theta_i - x_{i+d/2} \sin m\theta_i, \qquad
    y_{i+d/2} = x_{i+d/2} \cos m\theta_i + x_i \sin m\theta_i.

The backward is the inverse rotation, the same kernel with :math:`\sin` negated. One program per (batch, position)
rotates every head of q and of k at that position (Liger-Kernel's grid), so the row of cos/sin is loaded once for
all of them; the heads go through in blocks of ``BLOCK_H``. The cos/sin tables, ``(1 or B, T, d/2)`` float32, are
computed on the host from float64 angles, as in the NumPy twin ``reference/ops/rope.py``; positions may start
anywhere (decoding after a KV cache of ``t0`` tokens passes ``t0 + arange(T)``).
"""
import math

import torch
import triton
import triton.language as tl

from ._common import check_tensors


@triton.jit
def _rotate_heads(
    X, Y,                           # X (B, n_heads, T, D) at any strides; Y the same shape, contiguous
    b, t, stride_b, stride_h, stride_t, stride_d,
    n_heads, T, HALF, cos, sin,     # cos, sin (BLOCK_D,) float32, masked to HALF
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    cols = tl.arange(0, BLOCK_D).to(tl.int64)
    col_mask = cols < HALF
    for h0 in range(0, n_heads, BLOCK_H):
        heads = h0 + tl.arange(0, BLOCK_H).to(tl.int64)
        mask = (heads[:, None] < n_heads) & col_mask[None, :]                   # (BLOCK_H, BLOCK_D)
        src = X + b * stride_b + t * stride_t + heads[:, None] * stride_h + cols[None, :] * stride_d
        x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)                  # channels i
        x2 = tl.load(src + HALF * stride_d, mask=mask, other=0.0).to(tl.float32)   # channels i + d/2
        y1 = x1 * cos[None, :] - x2 * sin[None, :]
        y2 = x2 * cos[None, :] + x1 * sin[None, :]
        dst = Y + ((b * n_heads + heads[:, None]) * T + t) * (2 * HALF) + cols[None, :]
        tl.store(dst, y1.to(Y.dtype.element_ty), mask=mask)
        tl.store(dst + HALF, y2.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _rope_kernel(
    Q, K, QO, KO, Cos, Sin,         # Q (B, H, T, D), K (B, H_kv, T, D) any strides; QO, KO contiguous
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_cb, stride_ct,           # Cos, Sin (1 or B, T, D/2), last axis contiguous; stride_cb = 0 if shared
    T, H, H_kv, HALF, sign,         # sign = 1: forward, -1: backward (the inverse rotation)
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    b = pid // T
    t = pid % T
    cols = tl.arange(0, BLOCK_D)
    c_off = b * stride_cb + t * stride_ct + cols
    cos = tl.load(Cos + c_off, mask=cols < HALF, other=0.0)
    sin = sign * tl.load(Sin + c_off, mask=cols < HALF, other=0.0)
    _rotate_heads(Q, QO, b, t, stride_qb, stride_qh, stride_qt, stride_qd, H, T, HALF, cos, sin, BLOCK_H, BLOCK_D)
    _rotate_heads(K, KO, b, t, stride_kb, stride_kh, stride_kt, stride_kd, H_kv, T, HALF, cos, sin, BLOCK_H, BLOCK_D)


def rope_tables(positions, head_dim, theta=10000.0, device=None):
    """cos and sin of the angles m theta_i, float32 of shape positions.shape + (head_dim/2,), from float64 angles."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq
    return angles.cos().float().to(device), angles.sin().float().to(device)


def _launch(q, k, cos, sin, sign):
    B, H, T, D = q.shape
    H_kv = k.shape[1]
    qo = torch.empty((B, H, T, D), dtype=q.dtype, device=q.device)
    ko = torch.empty((B, H_kv, T, D), dtype=k.dtype, device=k.device)
    if B * T > 0:
        block_d = triton.next_power_of_2(D // 2)
        block_h = max(1, min(triton.next_power_of_2(max(H, H_kv)), 4096 // block_d))   # <= 4096 elements a tile
        _rope_kernel[(B * T,)](
            q, k, qo, ko, cos, sin,
            *q.stride(), *k.stride(),
            cos.stride(0) if cos.shape[0] > 1 else 0, cos.stride(1),
            T, H, H_kv, D // 2, sign,
            BLOCK_H=block_h, BLOCK_D=block_d, num_warps=4,
        )
    return qo, ko


class RoPEFunction(torch.autograd.Function):
    """Autograd wrapper: the backward runs the same kernel, rotating the gradients back."""

    @staticmethod
    def forward(ctx, q, k, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _launch(q, k, cos, sin, 1.0)

    @staticmethod
    def backward(ctx, dqo, dko):
        cos, sin = ctx.saved_tensors
        dq, dk = _launch(dqo, dko, cos, sin, -1.0)
        return dq, dk, None, None


def rope(q, k, positions, theta=10000.0):
    r"""Rotate q and k by their positions (Hugging Face's rotate-half layout), in Triton.

    Parameters
    ----------
    q : torch.Tensor, shape (B, H, T, d)
    k : torch.Tensor, shape (B, H_kv, T, d)
        fp32, fp16 or bf16, one dtype and device, any strides; d even. H_kv may differ from H (grouped-query).
    positions : torch.Tensor of integers, shape (T,) or (B, T)
        The position of each of the T tokens; ``t0 + torch.arange(T)`` after a KV cache of t0 tokens.
    theta : float
        The base :math:`\Theta` (Hugging Face's ``rope_theta``).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        q and k rotated, contiguous, in their dtype; differentiable in q and k.
    """
    check_tensors(q=q, k=k)
    if q.ndim != 4 or k.ndim != 4:
        raise ValueError(f"q, k: expected 4 dimensions (B, H, T, d), got shapes {tuple(q.shape)} and {tuple(k.shape)}")
    B, _, T, D = q.shape
    if k.shape[0] != B or k.shape[2:] != q.shape[2:]:
        raise ValueError(f"k: expected shape ({B}, *, {T}, {D}) to match q {tuple(q.shape)}, got {tuple(k.shape)}")
    if D < 2 or D % 2:
        raise ValueError(f"q: expected an even head size d >= 2, got {D}")
    if not isinstance(positions, torch.Tensor) or positions.dtype.is_floating_point or positions.is_complex() \
            or positions.dtype == torch.bool:
        got = positions.dtype if isinstance(positions, torch.Tensor) else type(positions).__name__
        raise TypeError(f"positions: expected an integer torch.Tensor, got {got}")
    if tuple(positions.shape) not in ((T,), (B, T)):
        raise ValueError(f"positions: expected shape ({T},) or ({B}, {T}), got {tuple(positions.shape)}")
    if isinstance(theta, bool) or not isinstance(theta, (int, float)):
        raise TypeError(f"theta: expected a positive number, got {type(theta).__name__}")
    if not 0 < theta < math.inf:
        raise ValueError(f"theta: expected a positive finite number, got {theta!r}")
    cos, sin = rope_tables(positions.reshape(-1, T), D, theta, device=q.device)    # (1 or B, T, d/2)
    return RoPEFunction.apply(q, k, cos, sin)
