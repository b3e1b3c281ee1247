"""Host-side checks and settings shared by the Triton kernels.

Every check runs before a launch and raises ``TypeError`` (wrong kind of value or dtype) or ``ValueError``
(wrong shape, device or value) with a message that names what was expected and what came.

The same kernel source runs in two places: natively on a CUDA GPU, and in Triton's interpreter on the CPU
(``TRITON_INTERPRET=1``, set before any ``@triton.jit`` is imported). Two differences matter to the kernels:

- the interpreter's bfloat16 arithmetic is broken (a bf16 ``tl.dot`` returns garbage), so the kernels upcast
  every load to float32 at once, and only hand ``tl.dot`` the input dtype on a GPU (``dot_dtype``);
- multi-config ``triton.autotune`` benchmarks configs with the GPU timer, which the interpreter lacks, so the
  interpreter gets one fixed config (``autotune``).
"""
import os

import torch
import triton
import triton.language as tl

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def interpreting():
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def tl_dtype(dtype):
    """The ``triton.language`` dtype of a torch float dtype."""
    return _TL_DTYPES[dtype]


def dot_dtype(dtype):
    """The dtype the kernels give ``tl.dot`` operands: the input's on a GPU (tensor cores), float32 when interpreted.

    Rounding a bf16/fp16 value up to float32 is exact and the products of two of them are exact in float32, so the
    interpreter's float32 ``tl.dot`` computes what the GPU's bf16/fp16 tensor-core dot with float32 accumulation does.
    """
    return tl.float32 if interpreting() else tl_dtype(dtype)


def autotune(configs, key, interpreter_config):
    """``triton.autotune`` over ``configs`` on a GPU; the interpreter gets ``interpreter_config`` alone."""
    return triton.autotune(configs=[interpreter_config] if interpreting() else configs, key=key)


def check_tensors(**tensors):
    """Require torch float tensors of one dtype on one device that the kernels can run on; return (dtype, device).

    fp32, fp16 and bf16 are accepted. On a GPU the device must be CUDA; in the interpreter any one device will do.
    """
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}: expected dtype float32, float16 or bfloat16, got {t.dtype}")
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) > 1:
        desc = ", ".join(f"{k}: {t.dtype}" for k, t in tensors.items())
        raise TypeError(f"expected one dtype for all inputs, got {desc}")
    devices = {t.device for t in tensors.values()}
    if len(devices) > 1:
        desc = ", ".join(f"{k}: {t.device}" for k, t in tensors.items())
        raise ValueError(f"expected all inputs on one device, got {desc}")
    device = devices.pop()
    if device.type != "cuda" and not interpreting():
        raise ValueError(
            f"expected CUDA tensors (or TRITON_INTERPRET=1 set before importing kernels, for the CPU interpreter), "
            f"got device {device}"
        )
    return dtypes.pop(), device


def check_shape(name, t, expected):
    """Require ``t.shape == expected``; ``None`` in ``expected`` matches any size on that axis."""
    ok = t.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, t.shape))
    if not ok:
        axes = ", ".join("*" if e is None else str(e) for e in expected)
        want = f"({axes},)" if len(expected) == 1 else f"({axes})"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
