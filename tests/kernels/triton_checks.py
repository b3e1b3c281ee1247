"""Shared by the Triton kernel tests: where they run, NaN-padded inputs, and the two accuracy gates.

Where: in the interpreter (``TRITON_INTERPRET=1``, the default in conftest and the Makefile) on CPU tensors; with
``TRITON_INTERPRET=0`` on a CUDA machine the same tests run natively on ``cuda`` (marker ``gpu``). One set of checks.

Gate 1, against the float64 NumPy reference computed from the inputs *rounded to the test dtype* (so input
rounding, which no kernel can undo, is not counted), on the scale-free ``rel_error`` = max|a - b| / max|b|:
- float32 1e-5: unit roundoff 6e-8; float32 sums over a few hundred terms in any order stay below ~1e-6, so 1e-5
  leaves a 10x margin, while a wrong term or mask gives 1e-2 or worse.
- float16 2e-3: the result is rounded to fp16 (unit roundoff 4.9e-4) and attention's P is rounded to fp16 before
  P @ V, as on the GPU; two or three such roundings stay below 2e-3.
- bfloat16 1.6e-2: unit roundoff 3.9e-3, and the interpreter converts float32 -> bf16 by truncation (one ulp,
  7.8e-3, not half); 1.6e-2 is two bf16 ulps.
Gate 2, in the style of FlashAttention's tests: the kernel's error is at most twice PyTorch's own error when it
computes in the same dtype (against the same float64 reference), plus a small floor ``FLOOR[dtype]``:
- fp16/bf16: one machine epsilon. torch's CPU kernels often accumulate fp16/bf16 in float32 and round once, so
  its error can be as small as half an ulp of the largest element, while ours may be a truncation (one ulp, in
  the interpreter) of an equally exact float32 result; the floor covers that one rounding and nothing more.
- fp32: 1e-6. Here both errors are float32 accumulation (~1e-7), not a final rounding, and the kernels sum in
  other orders than torch (online-softmax rescaling; delta = rowsum(dO * O) instead of rowsum(dP * P)), so the
  ratio of the two errors is noise around 1; 1e-6 is ten times tighter than gate 1.
A real bug (a missing term, a wrong mask, a ragged-edge read) fails both gates by orders of magnitude.
"""
import numpy as np
import pytest
import torch

from kernels._common import interpreting
from reference.gradcheck import rel_error

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
FLOOR = {torch.float32: 1e-6, torch.float16: torch.finfo(torch.float16).eps,
         torch.bfloat16: torch.finfo(torch.bfloat16).eps}

DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(not interpreting(), reason="CPU tensors need TRITON_INTERPRET=1")),
    pytest.param("cuda", marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(interpreting() or not torch.cuda.is_available(),
                           reason="native run: needs CUDA and TRITON_INTERPRET=0"),
    ]),
]


def nan_padded(a, dtype, device, transposed=False):
    """A non-contiguous torch view holding ``a`` (rounded to ``dtype``) inside a NaN-filled buffer.

    Default: each last-axis row sits between NaN columns (row stride n + 3), so a read past either end of a row
    turns the result NaN, which the interpreter would not flag otherwise. ``transposed``: the last two axes are
    stored swapped (last-axis stride != 1), with NaN rows around them.
    """
    t = torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
    if transposed:
        *lead, m, n = t.shape
        buf = torch.full((*lead, n + 2, m), float("nan"), dtype=dtype)
        buf[..., 1:n + 1, :] = t.transpose(-1, -2)
        view = buf[..., 1:n + 1, :].transpose(-1, -2)
    else:
        n = t.shape[-1]
        buf = torch.full((*t.shape[:-1], n + 3), float("nan"), dtype=dtype)
        buf[..., 1:n + 1] = t
        view = buf[..., 1:n + 1]
    buf_dev = buf.to(device)
    return torch.as_strided(buf_dev, view.shape, view.stride(), view.storage_offset())


def to64(t):
    """A torch tensor as a float64 NumPy array (the reference's input: the test-dtype value, exactly)."""
    return t.detach().to("cpu", torch.float64).numpy()


def assert_close(name, got, ref, torch_got, dtype):
    """Gate 1 (per-dtype tolerance) and gate 2 (at most 2x torch's own error + a floor) against ``ref`` (float64)."""
    err = rel_error(to64(got), ref)
    assert err <= TOL[dtype], f"{name} ({dtype}): error {err:.2e} > tolerance {TOL[dtype]:.1e}"
    torch_err = rel_error(to64(torch_got), ref)
    bound = 2 * torch_err + FLOOR[dtype]
    assert err <= bound, f"{name} ({dtype}): error {err:.2e} > 2 x torch's {torch_err:.2e} + floor"
