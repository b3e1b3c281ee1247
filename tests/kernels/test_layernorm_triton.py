"""kernels.layer_norm (Triton) against reference/ops/layernorm.py (NumPy, float64) and against torch in the same dtype.

Tolerances and the two gates are explained in tests/kernels/triton_checks.py; natively on a GPU:
``TRITON_INTERPRET=0 pytest -m gpu tests/kernels/test_layernorm_triton.py``. Budget: about 5 s in the interpreter.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from triton_checks import DEVICES, DTYPES, assert_close, nan_padded, to64

from kernels import layer_norm
from reference.ops import layernorm as ref_ln

# (shape of x, whether x's last axis is strided): one row and several, odd row lengths (a ragged block).
CASES = [((1, 3), False), ((2, 3, 17), False), ((5, 100), True), ((3, 257), False), ((4, 64), True)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,transposed", CASES)
def test_layer_norm_matches_reference(shape, transposed, dtype, device, rng):
    n = shape[-1]
    x = nan_padded(rng.normal(1.0, 2.0, shape), dtype, device, transposed=transposed)
    gamma = nan_padded(rng.normal(1.0, 0.5, (n,)), dtype, device)
    beta = nan_padded(rng.normal(0.0, 0.5, (n,)), dtype, device)
    dy = nan_padded(rng.normal(size=shape), dtype, device)
    x.requires_grad_(True)
    gamma.requires_grad_(True)
    beta.requires_grad_(True)

    y = layer_norm(x, gamma, beta, eps=1e-5)
    got = (y, *torch.autograd.grad(y, (x, gamma, beta), dy))

    y_ref, cache = ref_ln.forward(to64(x), to64(gamma), to64(beta), eps=1e-5)
    ref = (y_ref, *ref_ln.backward(to64(dy), cache))

    xt, gt, bt = (t.detach().clone().requires_grad_(True) for t in (x, gamma, beta))
    yt = F.layer_norm(xt, (n,), gt, bt, eps=1e-5)
    torch_got = (yt, *torch.autograd.grad(yt, (xt, gt, bt), dy))

    for name, g, r, t in zip(("y", "dx", "dgamma", "dbeta"), got, ref, torch_got):
        assert g.dtype == dtype and g.shape == x.shape[-g.ndim:]
        assert_close(name, g, r, t, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_layer_norm_saves_float32_statistics(device, rng):
    from kernels.layernorm import layer_norm_fwd

    x = torch.from_numpy(rng.normal(3.0, 2.0, (6, 40))).to(torch.bfloat16).to(device)
    w = torch.ones(40, dtype=torch.bfloat16, device=device)
    b = torch.zeros(40, dtype=torch.bfloat16, device=device)
    _, mean, rstd = layer_norm_fwd(x, w, b, eps=1e-5)
    x64 = to64(x)
    assert mean.dtype == torch.float32 and rstd.dtype == torch.float32
    # float32 statistics of 40 exact bf16 values of mean 3: the sum's roundings (about log2(40) ulps of sum |x|, 1.3x
    # the sum here) and, on a GPU, an approximate division (2 ulp) and square root: below 1e-6 relative for the mean,
    # a few e-6 for rstd (a variance, then 1/sqrt). 2e-6 and 1e-5 leave margins; both are far below bf16's 3.9e-3.
    np.testing.assert_allclose(to64(mean), x64.mean(axis=1), rtol=2e-6)
    np.testing.assert_allclose(to64(rstd), 1.0 / np.sqrt(x64.var(axis=1) + 1e-5), rtol=1e-5)


def _inputs(device, n=8, dtype=torch.float32):
    return [torch.zeros(3, n, dtype=dtype, device=device), torch.ones(n, dtype=dtype, device=device),
            torch.zeros(n, dtype=dtype, device=device)]


def _replace(inputs, i, value):
    return [value if j == i else t for j, t in enumerate(inputs)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda dev: _replace(_inputs(dev), 0, _inputs(dev)[0].double()), TypeError, "float32, float16 or bfloat16"),
        (lambda dev: _replace(_inputs(dev), 0, _inputs(dev)[0].half()), TypeError, "one dtype"),
        (lambda dev: _replace(_inputs(dev), 0, np.zeros((3, 8), np.float32)), TypeError, "torch.Tensor"),
        (lambda dev: _replace(_inputs(dev), 1, torch.ones(7, device=dev)), ValueError, r"weight: expected shape \(8,"),
        (lambda dev: _replace(_inputs(dev), 2, torch.zeros(1, 8, device=dev)), ValueError, "bias: expected shape"),
        (lambda dev: _replace(_inputs(dev), 1, torch.ones(8, device="meta")), ValueError, "one device"),
        (lambda dev: _inputs(dev, n=16385), ValueError, "N <= 16384"),
    ],
)
def test_layer_norm_rejects_bad_inputs_before_launch(make, error, match, device):
    with pytest.raises(error, match=match):
        layer_norm(*make(device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "eps,error", [(0.0, ValueError), (float("inf"), ValueError), (True, TypeError), ("1e-5", TypeError)]
)
def test_layer_norm_rejects_bad_eps(eps, error, device):
    with pytest.raises(error, match="eps: expected a positive"):
        layer_norm(*_inputs(device), eps=eps)
