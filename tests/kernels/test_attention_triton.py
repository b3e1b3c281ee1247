"""kernels.flash_attention (Triton) against reference/ops/attention.py (NumPy, float64) and against torch in the same dtype.

Tolerances and the two gates are explained in tests/kernels/triton_checks.py. The interpreter's blocks are 32 x 16
(forward, dQ) and 16 x 32 (dK/dV), so every T below leaves a ragged last block, and T = 100 crosses several block
boundaries on the causal diagonal. Natively on a GPU:
``TRITON_INTERPRET=0 pytest -m gpu tests/kernels/test_attention_triton.py``. Budget: about 25 s in the interpreter.
"""
import math

import numpy as np
import pytest
import torch
from triton_checks import DEVICES, DTYPES, assert_close, nan_padded, to64

from kernels import flash_attention
from kernels.attention import attention_fwd
from reference.ops import attention as ref_attn

# (B, H, T_q, T_k, d, causal, layout). layout "bhtd": NaN-padded rows; "bthd": a (B, T, H, d) buffer seen as
# (B, H, T, d), as a fused QKV projection leaves it (no axis contiguous but the last).
CASES = [
    (2, 3, 17, 17, 16, False, "bhtd"),
    (1, 2, 1, 17, 32, True, "bhtd"),        # one query (decoding) sees every key
    (2, 1, 100, 100, 64, True, "bthd"),
    (1, 2, 17, 100, 32, True, "bhtd"),      # T_q < T_k: the mask's diagonal starts at key 83
    (1, 2, 100, 17, 16, True, "bthd"),      # T_q > T_k: the first 83 queries see no key
    (1, 1, 37, 45, 128, False, "bhtd"),
]
# T = 257: 17 x 9 blocks on the diagonal; ~3 s per dtype in the interpreter.
LONG = (1, 1, 257, 257, 64, True, "bhtd")


def _tensor(a, dtype, device, layout):
    if layout == "bthd":
        return nan_padded(a.transpose(0, 2, 1, 3), dtype, device).transpose(1, 2)
    return nan_padded(a, dtype, device)


def _torch_attention(q, k, v, causal, scale):
    """Attention as torch computes it in q's dtype (matmuls and softmax in that dtype), rows with no key -> 0."""
    s = (q @ k.transpose(-1, -2)) * scale                                       # (B, H, T_q, T_k)
    if not causal:
        return torch.softmax(s, dim=-1) @ v
    mask = torch.from_numpy(ref_attn.causal_mask(q.shape[2], k.shape[2])).to(q.device)     # (T_q, T_k)
    seen = mask.any(dim=-1, keepdim=True)                                       # (T_q, 1)
    p = torch.softmax(s.masked_fill(~(mask | ~seen), float("-inf")), dim=-1) * seen
    return p @ v


def _check_case(B, H, T_q, T_k, d, causal, layout, dtype, device, rng):
    q, k, v = (_tensor(rng.normal(size=(B, H, T, d)), dtype, device, layout) for T in (T_q, T_k, T_k))
    do = _tensor(rng.normal(size=(B, H, T_q, d)), dtype, device, layout)
    for t in (q, k, v):
        t.requires_grad_(True)

    o = flash_attention(q, k, v, causal=causal)
    got = (o, *torch.autograd.grad(o, (q, k, v), do))

    mask = ref_attn.causal_mask(T_q, T_k) if causal else None
    o_ref, cache = ref_attn.forward(to64(q), to64(k), to64(v), mask=mask)
    ref = (o_ref, *ref_attn.backward(to64(do), cache))

    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    ot = _torch_attention(*leaves, causal, 1.0 / math.sqrt(d))
    torch_got = (ot, *torch.autograd.grad(ot, leaves, do))

    for name, g, r, t in zip(("o", "dq", "dk", "dv"), got, ref, torch_got):
        assert g.dtype == dtype and tuple(g.shape) == r.shape
        assert_close(name, g, r, t, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,H,T_q,T_k,d,causal,layout", CASES)
def test_flash_attention_matches_reference(B, H, T_q, T_k, d, causal, layout, dtype, device, rng):
    _check_case(B, H, T_q, T_k, d, causal, layout, dtype, device, rng)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_flash_attention_long_sequence_matches_reference(dtype, device, rng):
    _check_case(*LONG, dtype, device, rng)


@pytest.mark.parametrize("device", DEVICES)
def test_flash_attention_rows_without_keys_are_zero_with_zero_gradients(device, rng):
    # T_q = 20 > T_k = 5, causal: queries 0..14 see no key. Their output and dq are exactly 0 (not NaN), and
    # their dO must not reach dk or dv.
    q, k, v = (torch.from_numpy(rng.normal(size=(1, 1, T, 16))).float().to(device).requires_grad_(True)
               for T in (20, 5, 5))
    o = flash_attention(q, k, v, causal=True)
    do = torch.zeros_like(o)
    do[:, :, :15] = 1.0
    dq, dk, dv = torch.autograd.grad(o, (q, k, v), do)
    assert torch.all(o[:, :, :15] == 0) and torch.all(dq == 0)
    assert torch.all(dk == 0) and torch.all(dv == 0)
    assert torch.isfinite(o).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [False, True])
def test_flash_attention_saves_float32_lse_equal_to_the_blocked_reference(causal, device, rng):
    q, k, v = (torch.from_numpy(rng.normal(size=(2, 2, T, 32))).to(device) for T in (40, 50, 50))
    q, k, v = q.half(), k.half(), v.half()
    _, lse = attention_fwd(q, k, v, causal=causal)
    mask = ref_attn.causal_mask(40, 50) if causal else None
    _, lse_ref = ref_attn.forward_blocked(to64(q), to64(k), to64(v), mask=mask)
    assert lse.dtype == torch.float32 and tuple(lse.shape) == (2, 2, 40)
    # lse = m + log(l) in float32 from exact fp16 inputs: a few float32 roundings of O(10) numbers.
    np.testing.assert_allclose(to64(lse), lse_ref.reshape(2, 2, 40), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_flash_attention_sm_scale_scales_the_scores(device, rng):
    # sm_scale = c is attention on q * c * sqrt(d) with the default scale 1 / sqrt(d); both in float32.
    q, k, v = (torch.from_numpy(rng.normal(size=(1, 2, 33, 16))).float().to(device) for _ in range(3))
    out = flash_attention(q, k, v, causal=True, sm_scale=0.3)
    expected = flash_attention(q * (0.3 * 4.0), k, v, causal=True)
    # the same kernel on scores that differ by float32 rounding of q * 1.2: a few ulps of O(1) outputs.
    np.testing.assert_allclose(to64(out), to64(expected), atol=1e-6)


def _qkv(dev, B=1, H=2, T=8, d=16, dtype=torch.float32):
    return [torch.zeros(B, H, T, d, dtype=dtype, device=dev) for _ in range(3)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "make,kwargs,error,match",
    [
        (lambda dev: _qkv(dev, dtype=torch.float64), {}, TypeError, "float32, float16 or bfloat16"),
        (lambda dev: [*_qkv(dev)[:2], _qkv(dev, dtype=torch.bfloat16)[2]], {}, TypeError, "one dtype"),
        (lambda dev: [*_qkv(dev)[:2], _qkv("meta")[2]], {}, ValueError, "one device"),
        (lambda dev: [torch.zeros(2, 8, 16, device=dev), *_qkv(dev)[1:]], {}, ValueError,
         r"q: expected shape \(B, H, T, d\)"),
        (lambda dev: [_qkv(dev)[0], _qkv(dev, T=9)[1], _qkv(dev)[2]], {}, ValueError, "k and v"),
        (lambda dev: [_qkv(dev, H=3)[0], *_qkv(dev)[1:]], {}, ValueError, "same B, H and d"),
        (lambda dev: [_qkv(dev, d=32)[0], *_qkv(dev)[1:]], {}, ValueError, "same B, H and d"),
        (lambda dev: _qkv(dev, d=48), {}, ValueError, r"head dim d: expected one of \(16, 32, 64, 128\), got 48"),
        (lambda dev: _qkv(dev, T=0), {}, ValueError, "T_q >= 1"),
        (lambda dev: _qkv(dev), {"causal": 1}, TypeError, "causal: expected a bool"),
        (lambda dev: _qkv(dev), {"sm_scale": -1.0}, ValueError, "sm_scale"),
        (lambda dev: _qkv(dev), {"sm_scale": "0.1"}, TypeError, "sm_scale"),
    ],
)
def test_flash_attention_rejects_bad_inputs_before_launch(make, kwargs, error, match, device):
    with pytest.raises(error, match=match):
        flash_attention(*make(device), **kwargs)
