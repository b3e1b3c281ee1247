"""kernels.flash_attention (Triton) against reference/ops/attention.py (NumPy, float64) and against torch in the same dtype.

Tolerances and the two gates are explained in tests/kernels/triton_checks.py. The interpreter's blocks are 32 x 16
(forward, dQ) and 16 x 32 (dK/dV), so every T below leaves a ragged last block, and T = 100 crosses several block
boundaries on the causal diagonal. Natively on a GPU:
``TRITON_INTERPRET=0 pytest -m gpu tests/kernels/test_attention_triton.py``. Budget: about 45 s in the interpreter.
"""
import math

import numpy as np
import pytest
import torch
from triton_checks import DEVICES, DTYPES, TOL, assert_close, nan_padded, to64

from kernels import flash_attention
from kernels.attention import attention_fwd
from reference.gradcheck import rel_error
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
    # lse = (m + log2 l) ln 2 in float32 from exact fp16 inputs, |lse| ~ 3-5: a few float32 roundings plus the GPU's
    # approximate exp2/log2 (about 2 ulp each), ~1e-6 relative; 1e-5 leaves a margin, a missed key moves it by ~1e-2.
    assert rel_error(to64(lse), lse_ref.reshape(2, 2, 40)) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_flash_attention_sm_scale_scales_the_scores(device, rng):
    # sm_scale = c is attention on q * c * sqrt(d) with the default scale 1 / sqrt(d); both in float32.
    q, k, v = (torch.from_numpy(rng.normal(size=(1, 2, 33, 16))).float().to(device) for _ in range(3))
    out = flash_attention(q, k, v, causal=True, sm_scale=0.3)
    expected = flash_attention(q * (0.3 * 4.0), k, v, causal=True)
    # The same kernel on scores that differ by the float32 rounding of q * 1.2 (2^-24 relative): with scores of
    # magnitude < 10 the exponents move by < 1e-6, and the GPU's approximate exp2 and division add a few ulp.
    # 4e-6 of the output's scale holds that; a scale applied twice or not at all moves O by more than 1e-2.
    assert rel_error(to64(out), to64(expected)) < 4e-6


@pytest.mark.parametrize("device", DEVICES)
def test_flash_attention_tf32x3_is_close_to_exact_float32(device, rng):
    # tf32x3 splits each float32 operand into a TF32 high part and a TF32 remainder and keeps three of the four
    # products: what it drops is ~2^-22 relative per product, so a d = 64 dot stays within ~1e-6 of exact. Gate 1's
    # float32 tolerance (1e-5, tests/kernels/triton_checks.py) applies. (The interpreter computes every dot exactly.)
    q, k, v, do = (torch.from_numpy(rng.normal(size=(1, 2, 70, 64))).float().to(device) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    got = []
    for precision in ("ieee", "tf32x3"):
        o = flash_attention(q, k, v, causal=True, fp32_precision=precision)
        got.append((o, *torch.autograd.grad(o, (q, k, v), do)))
    for name, exact, fast in zip(("o", "dq", "dk", "dv"), *got):
        assert rel_error(to64(fast), to64(exact)) < TOL[torch.float32], name


def _gqa_reference(q, k, v, do, causal):
    """O and grads of grouped-query attention from the reference: K/V repeated per query head, grads summed back."""
    group = q.shape[1] // k.shape[1]
    k_rep, v_rep = (np.repeat(to64(t), group, axis=1) for t in (k, v))
    mask = ref_attn.causal_mask(q.shape[2], k.shape[2]) if causal else None
    o, cache = ref_attn.forward(to64(q), k_rep, v_rep, mask=mask)
    dq, dk, dv = ref_attn.backward(to64(do), cache)
    B, H_kv, T_k, d = k.shape
    return o, dq, dk.reshape(B, H_kv, group, T_k, d).sum(2), dv.reshape(B, H_kv, group, T_k, d).sum(2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,H_kv,T_q,T_k,causal", [(4, 2, 37, 37, True), (6, 1, 20, 45, False), (4, 2, 50, 19, True)])
def test_flash_attention_grouped_query_heads_match_repeated_kv(H, H_kv, T_q, T_k, causal, dtype, device, rng):
    q = nan_padded(rng.normal(size=(2, H, T_q, 32)), dtype, device)
    k, v = (nan_padded(rng.normal(size=(2, H_kv, T_k, 32)), dtype, device) for _ in range(2))
    do = nan_padded(rng.normal(size=(2, H, T_q, 32)), dtype, device)
    for t in (q, k, v):
        t.requires_grad_(True)
    o = flash_attention(q, k, v, causal=causal)
    got = (o, *torch.autograd.grad(o, (q, k, v), do))
    ref = _gqa_reference(q, k, v, do, causal)
    for name, g, r in zip(("o", "dq", "dk", "dv"), got, ref):
        assert tuple(g.shape) == r.shape
        # dk, dv sum over a group of query heads: the same per-head sums, added; gate 1's tolerance applies.
        err = rel_error(to64(g), r)
        assert err <= TOL[dtype], f"{name} ({dtype}): {err:.2e}"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")      # the interpreter's NumPy reports the overflow it computes
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("case", ["nan_in_q", "scores_overflow_to_inf", "scores_overflow_to_minus_inf"])
def test_flash_attention_propagates_nan_and_overflow_like_torch(case, causal, device, rng):
    # One float32 query row i0 of head 1 goes bad; issue 16: it must come out NaN (as PyTorch and the reference
    # forward give), never a made-up finite number, and nothing outside what depends on it may change.
    T_q, T_k, i0 = 40, 40, 23
    q, k, v, do = (torch.from_numpy(rng.normal(size=(1, 2, T, 16))).float() for T in (T_q, T_k, T_k, T_q))
    if case == "nan_in_q":
        q[0, 1, i0, 3] = float("nan")
    else:                    # |q . k| ~ 1e40 > float32's 3.4e38: every score of row i0 overflows, to +inf or -inf
        q[0, 1, i0] = 1e20
        k[0, 1] = k[0, 1].abs() * (1e20 if case == "scores_overflow_to_inf" else -1e20)
    q, k, v, do = (t.to(device) for t in (q, k, v, do))
    for t in (q, k, v):
        t.requires_grad_(True)
    o = flash_attention(q, k, v, causal=causal)
    got = (o, *torch.autograd.grad(o, (q, k, v), do))

    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    ot = _torch_attention(*leaves, causal, 0.25)
    torch_got = (ot, *torch.autograd.grad(ot, leaves, do))
    sees = ref_attn.causal_mask(T_q, T_k)[i0] if causal else np.ones(T_k, bool)  # the keys row i0 depends on
    for name, g, t in zip(("o", "dq"), got[:2], torch_got[:2]):
        # O and dq: exactly torch's NaN pattern (row i0 of head 1) and torch's values elsewhere
        assert torch.equal(g.isnan(), t.isnan()), name
        assert g[0, 1, i0].isnan().all(), name
    for name, g in zip(("dk", "dv"), got[2:]):
        # dK, dV: NaN at every key row i0 sees. (A masked key may turn NaN too, through 0 * NaN inside a block's
        # product, as in PyTorch's dense products; which ones depends on the block size, so it is not asserted.)
        assert g[0, 1, torch.from_numpy(sees).to(device)].isnan().all(), name
    # head 0 never saw row i0: its outputs and gradients equal the clean computation
    clean = [t.detach()[:, :1].clone().requires_grad_(True) for t in (q, k, v)]
    oc = flash_attention(*clean, causal=causal)
    clean_got = (oc, *torch.autograd.grad(oc, clean, do[:, :1]))
    for name, g, c in zip(("o", "dq", "dk", "dv"), got, clean_got):
        assert torch.equal(g[:, :1], c), name


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
        (lambda dev: [_qkv(dev, H=3)[0], *_qkv(dev)[1:]], {}, ValueError, "H a multiple of H_kv"),
        (lambda dev: [_qkv(dev, d=32)[0], *_qkv(dev)[1:]], {}, ValueError, "same B and d"),
        (lambda dev: [_qkv(dev, B=2)[0], *_qkv(dev)[1:]], {}, ValueError, "same B and d"),
        (lambda dev: _qkv(dev, d=48), {}, ValueError, r"head dim d: expected one of \(16, 32, 64, 128\), got 48"),
        (lambda dev: _qkv(dev, T=0), {}, ValueError, "T_q >= 1"),
        (lambda dev: _qkv(dev), {"causal": 1}, TypeError, "causal: expected a bool"),
        (lambda dev: _qkv(dev), {"sm_scale": -1.0}, ValueError, "sm_scale"),
        (lambda dev: _qkv(dev), {"sm_scale": "0.1"}, TypeError, "sm_scale"),
        (lambda dev: _qkv(dev), {"fp32_precision": "tf32"}, ValueError, "fp32_precision: expected one of"),
    ],
)
def test_flash_attention_rejects_bad_inputs_before_launch(make, kwargs, error, match, device):
    with pytest.raises(error, match=match):
        flash_attention(*make(device), **kwargs)
