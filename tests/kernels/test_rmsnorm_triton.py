"""kernels.rms_norm (Triton) against reference/ops/rmsnorm.py (NumPy, float64) and against torch in the same dtype.

Tolerances and the two gates are explained in tests/kernels/triton_checks.py; natively on a GPU:
``TRITON_INTERPRET=0 pytest -m gpu tests/kernels/test_rmsnorm_triton.py``. Budget: a few seconds in the interpreter.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from triton_checks import DEVICES, DTYPES, TOL, assert_close, nan_padded, to64

from kernels import rms_norm
from reference.gradcheck import rel_error
from reference.ops import rmsnorm as ref_rms

# (shape of x, whether x's last axis is strided): one row and several, odd row lengths (a ragged block).
CASES = [((1, 3), False), ((2, 3, 17), False), ((5, 100), True), ((3, 257), False), ((4, 64), True)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,transposed", CASES)
def test_rms_norm_matches_reference(shape, transposed, dtype, device, rng):
    n = shape[-1]
    x = nan_padded(rng.normal(1.0, 2.0, shape), dtype, device, transposed=transposed)
    gamma = nan_padded(rng.normal(1.0, 0.5, (n,)), dtype, device)
    dy = nan_padded(rng.normal(size=shape), dtype, device)
    x.requires_grad_(True)
    gamma.requires_grad_(True)

    y = rms_norm(x, gamma, eps=1e-6)
    got = (y, *torch.autograd.grad(y, (x, gamma), dy))

    y_ref, cache = ref_rms.forward(to64(x), to64(gamma), eps=1e-6)
    ref = (y_ref, *ref_rms.backward(to64(dy), cache))

    xt, gt = (t.detach().clone().requires_grad_(True) for t in (x, gamma))
    yt = F.rms_norm(xt, (n,), gt, eps=1e-6)
    torch_got = (yt, *torch.autograd.grad(yt, (xt, gt), dy))

    for name, g, r, t in zip(("y", "dx", "dgamma"), got, ref, torch_got):
        assert g.dtype == dtype and g.shape == x.shape[-g.ndim:]
        assert_close(name, g, r, t, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scale", [1e30, 3e38])
def test_rms_norm_huge_rows_do_not_overflow(scale, dtype, device, rng):
    # sum(x^2) overflows float32 from |x| ~ 2e19 (fp32 and bf16 share the exponent range); the row scaling keeps
    # y, dx and dgamma right: gate 1 against the float64 reference of the same (rounded) inputs.
    x = torch.from_numpy(rng.uniform(-1, 1, (3, 40)) * scale).to(dtype).to(device)
    x[:, 0] = scale
    gamma = torch.from_numpy(rng.normal(1.0, 0.5, 40)).to(dtype).to(device)
    dy = torch.from_numpy(rng.normal(size=(3, 40))).to(dtype).to(device)
    x.requires_grad_(True)
    gamma.requires_grad_(True)
    y = rms_norm(x, gamma)
    dx, dgamma = torch.autograd.grad(y, (x, gamma), dy)
    y_ref, cache = ref_rms.forward(to64(x), to64(gamma))
    dx_ref, dgamma_ref = ref_rms.backward(to64(dy), cache)
    for g, r in ((y, y_ref), (dx, dx_ref), (dgamma, dgamma_ref)):
        assert torch.isfinite(g).all()
        assert rel_error(to64(g), r) <= TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
def test_rms_norm_zero_and_nan_rows(device):
    x = torch.zeros(3, 8, device=device)
    x[1, 2] = float("nan")
    x[2, 0] = float("inf")
    with np.errstate(invalid="ignore"):                     # inf * 0 = NaN is the point here (the interpreter is NumPy)
        y = rms_norm(x, torch.ones(8, device=device))
        y_ref, _ = ref_rms.forward(to64(x), np.ones(8))
    assert not y[0].any()                                    # a zero row gives 0 (r = 1/sqrt(eps), not NaN)
    np.testing.assert_array_equal(np.isnan(to64(y)), np.isnan(y_ref))   # NaN where NumPy (and torch) put it


def _inputs(device, n=8, dtype=torch.float32):
    return [torch.zeros(3, n, dtype=dtype, device=device), torch.ones(n, dtype=dtype, device=device)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda dev: [_inputs(dev)[0].double(), _inputs(dev)[1]], TypeError, "float32, float16 or bfloat16"),
        (lambda dev: [_inputs(dev)[0].half(), _inputs(dev)[1]], TypeError, "one dtype"),
        (lambda dev: [np.zeros((3, 8), np.float32), _inputs(dev)[1]], TypeError, "torch.Tensor"),
        (lambda dev: [_inputs(dev)[0], torch.ones(7, device=dev)], ValueError, r"weight: expected shape \(8,"),
        (lambda dev: [_inputs(dev)[0], torch.ones(8, device="meta")], ValueError, "one device"),
        (lambda dev: _inputs(dev, n=16385), ValueError, "N <= 16384"),
    ],
)
def test_rms_norm_rejects_bad_inputs_before_launch(make, error, match, device):
    with pytest.raises(error, match=match):
        rms_norm(*make(device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("eps,error", [(0.0, ValueError), (1e-50, ValueError), (True, TypeError), ("1", TypeError)])
def test_rms_norm_rejects_bad_eps(eps, error, device):
    with pytest.raises(error, match="eps: expected a positive"):
        rms_norm(*_inputs(device), eps=eps)
