"""kernels.fused_ffn (Triton) against reference/ops/ffn.py (NumPy, float64) and against torch in the same dtype.

Tolerances and the two gates are explained in tests/kernels/triton_checks.py. In bfloat16 the interpreter truncates Z, H
and dZ when it stores them, and truncation is biased (always toward zero), so its error adds up over the M rows that
dW1 = X^T dZ sums: our bf16 errors run at about 0.8 of gate 2's bound here, where on a GPU (round to nearest) they
would not. Natively on a GPU: ``TRITON_INTERPRET=0 pytest -m gpu tests/kernels/test_ffn_triton.py``. Budget: about 25 s
in the interpreter.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from triton_checks import DEVICES, DTYPES, TOL, assert_close, nan_padded, to64

from kernels import fused_ffn
from reference.gradcheck import rel_error
from reference.ops import ffn as ref_ffn

TORCH_ACT = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
}
# (shape of x, d_ff): one token; odd token counts and widths that leave ragged tiles in M, N and K.
SHAPES = [((1, 1, 16), 32), ((2, 17, 48), 80), ((100, 32), 64)]
NAMES = ("y", "dx", "dW1", "db1", "dW2", "db2")


def _inputs(shape, d_ff, dtype, device, rng):
    """x, W1, b1, W2, b2 as NaN-padded views; W1 stored transposed, so its last axis is strided."""
    d_model = shape[-1]
    x = nan_padded(rng.normal(size=shape), dtype, device)
    W1 = nan_padded(rng.normal(size=(d_model, d_ff)) / np.sqrt(d_model), dtype, device, transposed=True)
    b1 = nan_padded(rng.normal(0.0, 0.5, (d_ff,)), dtype, device)
    W2 = nan_padded(rng.normal(size=(d_ff, d_model)) / np.sqrt(d_ff), dtype, device)
    b2 = nan_padded(rng.normal(0.0, 0.5, (d_model,)), dtype, device)
    return [x, W1, b1, W2, b2]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("shape,d_ff", SHAPES)
def test_fused_ffn_matches_reference(shape, d_ff, activation, dtype, device, rng):
    inputs = _inputs(shape, d_ff, dtype, device, rng)
    dy = nan_padded(rng.normal(size=shape), dtype, device)
    for t in inputs:
        t.requires_grad_(True)

    y = fused_ffn(*inputs, activation=activation)
    got = (y, *torch.autograd.grad(y, inputs, dy))

    y_ref, cache = ref_ffn.forward(*(to64(t) for t in inputs), activation=activation)
    ref = (y_ref, *ref_ffn.backward(to64(dy), cache))

    xt, W1t, b1t, W2t, b2t = leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    yt = F.linear(TORCH_ACT[activation](F.linear(xt, W1t.t(), b1t)), W2t.t(), b2t)
    torch_got = (yt, *torch.autograd.grad(yt, leaves, dy))

    for name, g, r, t in zip(NAMES, got, ref, torch_got):
        assert g.dtype == dtype and tuple(g.shape) == r.shape
        assert_close(name, g, r, t, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_fused_ffn_activations_and_derivatives_match_torch_from_minus_4_to_4(device):
    # Pre-activations straddling 0 and reaching |z| = 4, where the GELUs' derivative passes through its minimum
    # (below 0) and tends to 1: an identity W1 and b1 = 0 make Z = x, W2 = I makes dZ = dy * act'(x) reach dx.
    z = torch.linspace(-4.0, 4.0, 16, dtype=torch.float64).reshape(1, 16)
    eye = torch.eye(16, dtype=torch.float32, device=device)
    zero = torch.zeros(16, dtype=torch.float32, device=device)
    for activation in ("relu", "gelu", "gelu_tanh"):
        x = z.float().to(device).requires_grad_(True)
        y = fused_ffn(x, eye, zero, eye, zero, activation=activation)
        (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
        zt = z.clone().requires_grad_(True)
        yt = TORCH_ACT[activation](zt)
        (dzt,) = torch.autograd.grad(yt, zt, torch.ones_like(yt))
        # float32 evaluation of erf / exp / sigmoid on |z| <= 4, outputs up to 4: a handful of float32 roundings,
        # and on a GPU exp goes through the approximate exp2 (|u| log2(e) 2^-24 relative for its arguments |u| <= 11).
        # Scale-free, that stays below 1e-6 (8 ulps of the largest value); a wrong derivative term is off by > 1e-2.
        assert rel_error(to64(y), to64(yt)) < 1e-6, activation
        assert rel_error(to64(dx), to64(dzt)) < 1e-6, activation


@pytest.mark.parametrize("device", DEVICES)
def test_fused_ffn_saves_only_z_of_the_d_ff_wide_tensors(device, rng):
    # The autograd graph keeps x, W1, W2 and Z: one (M, d_ff) tensor, not two (H is recomputed in the backward).
    inputs = [t.requires_grad_(True) for t in _inputs((24, 16), 64, torch.float32, device, rng)]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        fused_ffn(*inputs, activation="gelu")
    assert sorted(saved) == sorted([(24, 16), (16, 64), (64, 16), (24, 64)])


@pytest.mark.parametrize("device", DEVICES)
def test_fused_ffn_tf32x3_is_close_to_exact_float32(device, rng):
    # tf32x3 drops ~2^-22 relative per product (see test_attention_triton); gate 1's float32 tolerance applies.
    inputs = [t.requires_grad_(True) for t in _inputs((33, 32), 48, torch.float32, device, rng)]
    dy = nan_padded(rng.normal(size=(33, 32)), torch.float32, device)
    got = []
    for precision in ("ieee", "tf32x3"):
        y = fused_ffn(*inputs, activation="gelu_tanh", fp32_precision=precision)
        got.append((y, *torch.autograd.grad(y, inputs, dy)))
    for name, exact, fast in zip(NAMES, *got):
        assert rel_error(to64(fast), to64(exact)) < TOL[torch.float32], name


def _good(device, d_model=16, d_ff=32):
    return dict(
        x=torch.zeros(2, d_model, device=device), W1=torch.zeros(d_model, d_ff, device=device),
        b1=torch.zeros(d_ff, device=device), W2=torch.zeros(d_ff, d_model, device=device),
        b2=torch.zeros(d_model, device=device),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda dev: dict(x=torch.zeros(2, 16, dtype=torch.float64, device=dev)), TypeError, "float32, float16 or"),
        (lambda dev: dict(W2=torch.zeros(32, 16, dtype=torch.float16, device=dev)), TypeError, "one dtype"),
        (lambda dev: dict(b1=np.zeros(32, np.float32)), TypeError, "torch.Tensor"),
        (lambda dev: dict(W1=torch.zeros(15, 32, device=dev)), ValueError, r"W1: expected shape \(16, \*\)"),
        (lambda dev: dict(b1=torch.zeros(31, device=dev)), ValueError, r"b1: expected shape \(32,\)"),
        (lambda dev: dict(W2=torch.zeros(32, 15, device=dev)), ValueError, r"W2: expected shape \(32, 16\)"),
        (lambda dev: dict(b2=torch.zeros(1, 16, device=dev)), ValueError, r"b2: expected shape \(16,\)"),
        (lambda dev: dict(b2=torch.zeros(16, device="meta")), ValueError, "one device"),
        (lambda dev: dict(activation="swish"), ValueError, "activation: expected one of"),
        (lambda dev: dict(activation=["relu"]), ValueError, "activation: expected one of"),
        (lambda dev: dict(fp32_precision="tf32"), ValueError, "fp32_precision: expected one of"),
    ],
)
def test_fused_ffn_rejects_bad_inputs_before_launch(change, error, match, device):
    kwargs = {**_good(device), **change(device)}
    with pytest.raises(error, match=match):
        fused_ffn(**kwargs)
