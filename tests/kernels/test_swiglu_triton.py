"""kernels.swiglu_gate (Triton) against reference/ops/swiglu.py's gate (NumPy, float64) and against torch in the same
dtype.

Tolerances and the two gates are explained in tests/kernels/triton_checks.py; natively on a GPU:
``TRITON_INTERPRET=0 pytest -m gpu tests/kernels/test_swiglu_triton.py``. Budget: a few seconds in the interpreter.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from triton_checks import DEVICES, DTYPES, assert_close, nan_padded, to64

from kernels import swiglu_gate
from reference.ops import swiglu as ref_swiglu

# (shape, whether a's last axis is strided): one element, odd widths, and F = 2500 > BLOCK_F = 1024, so a row spans
# three column blocks, the last one ragged.
CASES = [((1, 1), False), ((2, 3, 17), False), ((5, 100), True), ((3, 2500), False)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,transposed", CASES)
def test_swiglu_gate_matches_reference(shape, transposed, dtype, device, rng):
    a = nan_padded(rng.normal(0.0, 3.0, shape), dtype, device, transposed=transposed).requires_grad_(True)
    b = nan_padded(rng.normal(size=shape), dtype, device).requires_grad_(True)
    dh = nan_padded(rng.normal(size=shape), dtype, device)

    h = swiglu_gate(a, b)
    got = (h, *torch.autograd.grad(h, (a, b), dh))

    h_ref, cache = ref_swiglu.gate_forward(to64(a), to64(b))
    ref = (h_ref, *ref_swiglu.gate_backward(to64(dh), cache))

    at, bt = (t.detach().clone().requires_grad_(True) for t in (a, b))
    ht = F.silu(at) * bt
    torch_got = (ht, *torch.autograd.grad(ht, (at, bt), dh))

    for name, g, r, t in zip(("h", "da", "db"), got, ref, torch_got):
        assert g.dtype == dtype and tuple(g.shape) == r.shape
        assert_close(name, g, r, t, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_swiglu_gate_tails_match_torch(device):
    # Far in the negative tail sigma underflows to 0 (silu -> -0, da -> 0); far in the positive tail silu(a) = a.
    a = torch.tensor([[-1e4, -200.0, -90.0, -20.0, 0.0, 20.0, 90.0, 1e4]], device=device, requires_grad=True)
    b = torch.full_like(a, 2.0).requires_grad_(True)
    with np.errstate(over="ignore"):                        # exp(1e4) = inf in the interpreter's NumPy: sigma = 0
        h = swiglu_gate(a, b)
        da, db = torch.autograd.grad(h, (a, b), torch.ones_like(h))
    at, bt = (t.detach().clone().requires_grad_(True) for t in (a, b))
    ht = F.silu(at) * bt
    dat, dbt = torch.autograd.grad(ht, (at, bt), torch.ones_like(ht))
    for ours, theirs in ((h, ht), (da, dat), (db, dbt)):
        assert torch.isfinite(ours).all()
        # float32 exp and sigmoid: a few ulps of values up to 2e4
        np.testing.assert_allclose(to64(ours), to64(theirs), rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda d: (torch.zeros(2, 3, device=d).double(), torch.zeros(2, 3, device=d).double()), TypeError,
         "float32, float16 or bfloat16"),
        (lambda d: (torch.zeros(2, 3, device=d), torch.zeros(2, 3, device=d).half()), TypeError, "one dtype"),
        (lambda d: (torch.zeros(2, 3, device=d), torch.zeros(3, 2, device=d)), ValueError,
         r"a, b: expected one shape \(\.\.\., F\) with at least one axis, got \(2, 3\) and \(3, 2\)"),
        (lambda d: (torch.zeros((), device=d), torch.zeros((), device=d)), ValueError, "at least one axis"),
    ],
)
def test_swiglu_gate_rejects_bad_inputs_before_launch(make, error, match, device):
    with pytest.raises(error, match=match):
        swiglu_gate(*make(device))
