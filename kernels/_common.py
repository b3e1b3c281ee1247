"""Shared by the Triton kernels: host-side checks, autotuning, fp32 dot precision, and small device helpers.

Every check runs before a launch and raises ``TypeError`` (wrong kind of value or dtype) or ``ValueError``
(wrong shape, device or value) with a message that names what was expected and what came.

The same kernel source runs in two places: natively on a CUDA GPU, and in Triton's interpreter on the CPU
(``TRITON_INTERPRET=1``, set before any ``@triton.jit`` is imported). Two differences matter to the kernels:

- the interpreter's bfloat16 arithmetic is broken (a bf16 ``tl.dot`` returns garbage), so the kernels upcast
  every load to float32 at once, and only hand ``tl.dot`` the input dtype on a GPU (``dot_dtype``);
- multi-config ``triton.autotune`` benchmarks configs with the GPU timer, which the interpreter lacks, so the
  interpreter gets one fixed config (``autotune``).

Autotuning on a GPU is steered by the environment variable ``LM_PRIMER_AUTOTUNE`` (read when ``kernels`` is imported):

- unset or ``all``: every configuration that the kernel's pruning keeps is compiled and timed, once per key;
- an integer ``i``: only the ``i``-th kept configuration (modulo their number), never timed. ``0`` is what the
  native tests use (one compile per kernel variant instead of one per configuration); ``make gpu-check`` also
  warms the compile cache with one process per ``i``, in parallel.

Autotune keys hold sizes that vary from call to call (sequence lengths, token counts) as power-of-two buckets
(``bucket``), so a new length re-tunes only when it enters a new bucket.
"""
import functools
import os

import torch
import triton
import triton.language as tl

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}
# How fp32 operands enter tl.dot. "ieee": exact fp32 products (CUDA cores; what the tests check). "tf32x3": three
# TF32 tensor-core products per dot (a*b ~ a_hi*b_hi + a_hi*b_lo + a_lo*b_hi), close to fp32 and much faster.
FP32_PRECISIONS = ("ieee", "tf32x3")
AUTOTUNE_ENV = "LM_PRIMER_AUTOTUNE"


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


def dot_precision(dtype, fp32_precision):
    """``input_precision`` for ``tl.dot``: ``fp32_precision`` for float32 inputs, "ieee" otherwise (unused there).

    bf16/fp16 operands go to the tensor cores whatever this says; in the interpreter they are exact float32 values,
    which "ieee" keeps exact.
    """
    return fp32_precision if dtype == torch.float32 else "ieee"


def check_fp32_precision(fp32_precision):
    if fp32_precision not in FP32_PRECISIONS:
        raise ValueError(f"fp32_precision: expected one of {FP32_PRECISIONS}, got {fp32_precision!r}")


def bucket(n):
    """The autotune bucket of a size that varies between calls: the next power of two, at least 16."""
    return max(16, triton.next_power_of_2(int(n)))


def autotune_choice():
    """``None`` (time every kept configuration) or the index ``i`` set by ``LM_PRIMER_AUTOTUNE``."""
    value = os.environ.get(AUTOTUNE_ENV, "all").strip().lower()
    if value in ("", "all"):
        return None
    try:
        i = int(value)
    except ValueError:
        raise ValueError(f"{AUTOTUNE_ENV}: expected 'all' or a configuration index >= 0, got {value!r}") from None
    if i < 0:
        raise ValueError(f"{AUTOTUNE_ENV}: expected 'all' or a configuration index >= 0, got {value!r}")
    return i


def _no_timing(fn, quantiles=None, **kwargs):
    """The autotuner's timer when a single configuration is pinned: nothing to compare, so nothing is run."""
    return [0.0, 0.0, 0.0]


def autotune(configs, key, interpreter_config, prune=None):
    """``triton.autotune`` over ``configs`` on a GPU; the interpreter gets ``interpreter_config`` alone.

    ``prune(configs, named_args, **kwargs) -> list`` drops configurations that cannot fit or cannot win for a call
    (Triton's ``early_config_prune``); it must keep at least one. ``LM_PRIMER_AUTOTUNE`` (module docstring) may pin
    one of the kept configurations.
    """
    if interpreting():
        return triton.autotune(configs=[interpreter_config], key=key)
    choice = autotune_choice()

    def early_prune(cfgs, named_args, **kwargs):
        kept = prune(cfgs, named_args, **kwargs) if prune is not None else list(cfgs)
        if not kept:
            raise RuntimeError(f"autotune: pruning kept no configuration for {kwargs}")
        return kept if choice is None else [kept[choice % len(kept)]]

    return triton.autotune(configs=configs, key=key, prune_configs_by={"early_config_prune": early_prune},
                           do_bench=None if choice is None else _no_timing)


@functools.lru_cache(maxsize=None)
def device_limits(index):
    """(multiprocessor count, shared memory per block in bytes) of CUDA device ``index``."""
    props = triton.runtime.driver.active.utils.get_device_properties(index)
    return props["multiprocessor_count"], props["max_shared_mem"]


def max_shared_mem():
    """Shared memory one program may use on the current CUDA device (227 KiB on an H100/H200)."""
    return device_limits(torch.cuda.current_device())[1]


def sm_count(device):
    """Multiprocessors of ``device`` (a torch device); 4 in the interpreter, where programs run one by one."""
    if interpreting():
        return 4
    return device_limits(device.index if device.index is not None else torch.cuda.current_device())[0]


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


# ---------------------------------------------------------------------------------------------------------------
# Device helpers. Offsets are int64: a (batch, head) offset or a row times its stride can pass 2**31 elements.

@triton.jit
def tile_offsets(rows, cols, stride_row, stride_col):
    """Element offsets of the tile ``rows x cols`` of a 2-D view with the given strides: (len(rows), len(cols))."""
    return rows.to(tl.int64)[:, None] * stride_row + cols.to(tl.int64)[None, :] * stride_col


@triton.jit
def load_tile(base, rows, cols, stride_row, stride_col, n_rows, n_cols, MASK_ROWS: tl.constexpr,
              MASK_COLS: tl.constexpr):
    """Load the tile ``rows x cols`` (in the tensor's dtype); rows >= n_rows / cols >= n_cols read 0 if masked.

    The masks are compile-time choices, so that tiles known to lie inside the tensor load without predicates.
    Callers upcast at once (``.to(tl.float32)`` or ``.to(DOT_DTYPE)``): the interpreter's bf16 arithmetic is broken.
    """
    ptrs = base + tile_offsets(rows, cols, stride_row, stride_col)
    if MASK_ROWS:
        if MASK_COLS:
            t = tl.load(ptrs, mask=(rows[:, None] < n_rows) & (cols[None, :] < n_cols), other=0.0)
        else:
            t = tl.load(ptrs, mask=rows[:, None] < n_rows, other=0.0)
    else:
        if MASK_COLS:
            t = tl.load(ptrs, mask=cols[None, :] < n_cols, other=0.0)
        else:
            t = tl.load(ptrs)
    return t


@triton.jit
def _column_sum_kernel(
    X,                     # (R, N) input at any strides
    OUT,                   # (N,) output, contiguous
    R, N, stride_r, stride_n,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_R, BLOCK_N), dtype=tl.float32)       # element-wise partial sums, reduced once at the end
    for r0 in range(0, R, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        acc += load_tile(X, rows, cols, stride_r, stride_n, R, N, True, True).to(tl.float32)
    tl.store(OUT + cols, tl.sum(acc, axis=0).to(OUT.dtype.element_ty), mask=cols < N)


def column_sum(x, out):
    """``out[j] = sum_i x[i, j]`` for a 2-D tensor ``x`` (R, N) at any strides, summed in float32.

    One program per strip of columns, each reading every row: the strip is as narrow as it takes (down to 8
    columns, one 32-byte sector of fp32) for the programs to cover the GPU's multiprocessors at least once.
    """
    R, N = x.shape
    if R == 0:
        return out.zero_()
    block_n = min(128, max(8, triton.next_power_of_2(triton.cdiv(N, sm_count(x.device)))))
    block_r = min(4096 // block_n, triton.next_power_of_2(R))     # about 32 float32 partial sums per thread
    _column_sum_kernel[(triton.cdiv(N, block_n),)](
        x, out, R, N, x.stride(0), x.stride(1), BLOCK_R=block_r, BLOCK_N=block_n,
    )
    return out
