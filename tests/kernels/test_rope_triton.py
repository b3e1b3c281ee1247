"""kernels.rope (Triton) against reference/ops/rope.py (NumPy, float64) and against Hugging Face's
apply_rotary_pos_emb in the same dtype.

Tolerances and the two gates are explained in tests/kernels/triton_checks.py; natively on a GPU:
``TRITON_INTERPRET=0 pytest -m gpu tests/kernels/test_rope_triton.py``. Budget: a few seconds in the interpreter.
"""
import numpy as np
import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
from triton_checks import DEVICES, DTYPES, assert_close, nan_padded, to64

from kernels import rope
from kernels.rope import rope_tables
from reference.ops import rope as ref_rope

# (B, H, H_kv, T, d, first position, positions per batch row): multi-head and grouped-query, d not a power of two,
# an offset as after a KV cache, and one position row per batch element (Hugging Face's position_ids).
CASES = [(1, 1, 1, 1, 2, 0, False), (2, 4, 2, 5, 8, 0, False), (2, 3, 1, 7, 12, 9, False), (3, 2, 2, 4, 64, 100, True)]


def _positions(B, T, t0, per_batch, rng):
    if per_batch:
        return torch.from_numpy(t0 + np.sort(rng.integers(0, 50, (B, T)), axis=1))
    return t0 + torch.arange(T)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,H,H_kv,T,d,t0,per_batch", CASES)
def test_rope_matches_reference(B, H, H_kv, T, d, t0, per_batch, dtype, device, rng):
    # q's last axis strided (stored transposed), k's rows NaN-padded: a read past a row turns the result NaN.
    q = nan_padded(rng.normal(size=(B, H, T, d)), dtype, device, transposed=True).requires_grad_(True)
    k = nan_padded(rng.normal(size=(B, H_kv, T, d)), dtype, device).requires_grad_(True)
    dq = nan_padded(rng.normal(size=(B, H, T, d)), dtype, device)
    dk = nan_padded(rng.normal(size=(B, H_kv, T, d)), dtype, device)
    pos = _positions(B, T, t0, per_batch, rng)
    theta = 500000.0

    qo, ko = rope(q, k, pos.to(device), theta=theta)
    got = (qo, ko, *torch.autograd.grad((qo, ko), (q, k), (dq, dk)))

    pos_np = pos.numpy()[:, None, :] if per_batch else pos.numpy()             # (B, 1, T) broadcasts over heads
    yq, cq = ref_rope.forward(to64(q), pos_np, theta=theta)
    yk, ck = ref_rope.forward(to64(k), pos_np, theta=theta)
    ref = (yq, yk, ref_rope.backward(to64(dq), cq), ref_rope.backward(to64(dk), ck))

    # torch in the test dtype, as Hugging Face runs it: cos/sin rounded to the dtype, each half of the angles twice
    cos, sin = rope_tables(pos.reshape(-1, T), d, theta)
    cos, sin = (torch.cat([c, c], dim=-1).to(dtype).to(device) for c in (cos, sin))
    qt, kt = (t.detach().clone().requires_grad_(True) for t in (q, k))
    yqt, ykt = apply_rotary_pos_emb(qt, kt, cos, sin)
    torch_got = (yqt, ykt, *torch.autograd.grad((yqt, ykt), (qt, kt), (dq, dk)))

    for name, g, r, t in zip(("q_rot", "k_rot", "dq", "dk"), got, ref, torch_got):
        assert g.dtype == dtype and tuple(g.shape) == r.shape
        assert_close(name, g, r, t, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_rope_kernel_offset_equals_the_tail_of_the_full_sequence(device, rng):
    # Decoding with a KV cache: the last 2 of 6 positions, rotated alone, get what they get in the full sequence.
    q = torch.from_numpy(rng.normal(size=(1, 2, 6, 8))).float().to(device)
    k = torch.from_numpy(rng.normal(size=(1, 1, 6, 8))).float().to(device)
    qf, kf = rope(q, k, torch.arange(6, device=device))
    qt, kt = rope(q[:, :, 4:], k[:, :, 4:], 4 + torch.arange(2, device=device))
    assert torch.equal(qt, qf[:, :, 4:]) and torch.equal(kt, kf[:, :, 4:])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda d: (torch.zeros(1, 2, 3, 4, device=d).double(), torch.zeros(1, 2, 3, 4, device=d).double(),
                    torch.arange(3)), TypeError, "float32, float16 or bfloat16"),
        (lambda d: (torch.zeros(2, 3, 4, device=d), torch.zeros(2, 3, 4, device=d), torch.arange(2)),
         ValueError, r"expected 4 dimensions \(B, H, T, d\)"),
        (lambda d: (torch.zeros(1, 2, 3, 4, device=d), torch.zeros(1, 1, 3, 6, device=d), torch.arange(3)),
         ValueError, r"k: expected shape \(1, \*, 3, 4\)"),
        (lambda d: (torch.zeros(1, 2, 3, 5, device=d), torch.zeros(1, 1, 3, 5, device=d), torch.arange(3)),
         ValueError, "even head size"),
        (lambda d: (torch.zeros(1, 2, 3, 4, device=d), torch.zeros(1, 1, 3, 4, device=d), torch.arange(3.0)),
         TypeError, "positions: expected an integer torch.Tensor, got torch.float32"),
        (lambda d: (torch.zeros(1, 2, 3, 4, device=d), torch.zeros(1, 1, 3, 4, device=d), torch.arange(4)),
         ValueError, r"positions: expected shape \(3,\) or \(1, 3\), got \(4,\)"),
    ],
)
def test_rope_rejects_bad_inputs_before_launch(make, error, match, device):
    with pytest.raises(error, match=match):
        rope(*make(device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("theta,error", [(0.0, ValueError), (float("inf"), ValueError), (True, TypeError)])
def test_rope_rejects_bad_theta(theta, error, device):
    with pytest.raises(error, match="theta: expected a positive"):
        rope(torch.zeros(1, 1, 2, 4, device=device), torch.zeros(1, 1, 2, 4, device=device), torch.arange(2), theta)
