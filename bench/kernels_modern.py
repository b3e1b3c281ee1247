"""The Triton kernels of today's decoder (RMSNorm, RoPE, the SwiGLU gate, grouped-query attention) against PyTorch and
Liger-Kernel on a GPU.

    TRITON_INTERPRET=0 python -m bench.run kernels_modern          # the Makefile exports TRITON_INTERPRET=1 for tests
    TRITON_INTERPRET=0 python -m bench.run kernels_modern --quick

Without CUDA, ``run`` returns ``{"skipped": ...}``. With CUDA, all in bfloat16, forward and backward, in GB/s (the
three ops are memory-bound: the rate is the bytes each pass must move, over its time) and as a percentage of a
measured device-to-device copy:

- RMSNorm, M = 4096 rows, N in {1k, 4k, 8k, 16k}: ``kernels.rms_norm`` against ``F.rms_norm`` and Liger-Kernel's
  ``liger_rms_norm``; 2 M N bytes forward (read x, write y), 3 M N backward (read x and dy, write dx);
- RoPE on q and k, B = 4, H = 32, H_kv = 8, d = 128, T in {1k, 4k}: the kernel of ``kernels.rope`` against Hugging
  Face's ``apply_rotary_pos_emb`` (eager torch) and Liger-Kernel's ``liger_rope``, each given its cos/sin tables
  made beforehand; 2 (H + H_kv) B T d elements each way;
- the SwiGLU gate silu(a) * b, M in {4096, 16384}, F = 14336 (Llama 3 8B): ``kernels.swiglu_gate`` against
  ``F.silu(a) * b`` and Liger-Kernel's ``liger_swiglu``; 3 M F elements forward, 5 M F backward.

- grouped-query attention, B = 4, H = 32, H_kv = 8 (Llama 3 8B's heads), d = 128, causal, N in {1k, 4k}:
  ``kernels.flash_attention`` with k and v of H_kv heads against ``F.scaled_dot_product_attention(enable_gqa=True)``
  and against our own kernel on K/V repeated to H heads (what GQA saves), in TFLOP/s counting 4 B H N^2 d x 0.5
  forward and 2.5x that backward (the same count as ``bench/kernels.py``).

Liger-Kernel (``pip install liger-kernel``) is the reference point for the first three (it has no attention); where
it is not installed its rows say so. Times are ``triton.testing.do_bench`` medians with 20th and 80th percentiles;
backward is timed as ``torch.autograd.grad`` of a kept graph. A provider that cannot run a shape is recorded with its
error, not fatal. Writes ``figures/bench_kernels_modern.png``. (Separate from ``bench/kernels.py``, which times
attention with H_kv = H, LayerNorm and the FFN against issue 15's targets.)
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURE = ROOT / "figures" / "bench_kernels_modern.png"
SKIPPED = "no CUDA device: the Triton interpreter is a correctness path, not a performance path"

FULL = {
    "rmsnorm": [dict(M=4096, N=n) for n in (1024, 4096, 8192, 16384)],
    "rope": [dict(B=4, H=32, H_kv=8, T=t, d=128) for t in (1024, 4096)],
    "swiglu": [dict(M=m, F=14336) for m in (4096, 16384)],
    "gqa": [dict(B=4, H=32, H_kv=8, N=n, d=128, causal=True) for n in (1024, 4096)],
}
QUICK = {
    "rmsnorm": [dict(M=4096, N=4096)],
    "rope": [dict(B=4, H=32, H_kv=8, T=1024, d=128)],
    "swiglu": [dict(M=4096, F=14336)],
    "gqa": [dict(B=4, H=32, H_kv=8, N=1024, d=128, causal=True)],
}


def _import_native_kernels():
    """Import ``kernels`` with the interpreter off: the Makefile exports TRITON_INTERPRET=1 for the tests."""
    if os.environ.get("TRITON_INTERPRET") == "1" and "kernels.rmsnorm" in sys.modules:
        raise RuntimeError("kernels was imported under TRITON_INTERPRET=1; run `TRITON_INTERPRET=0 python -m bench.run "
                           "kernels_modern` for native timings")
    os.environ["TRITON_INTERPRET"] = "0"
    import kernels

    return kernels


def _liger():
    """Liger-Kernel's functional API, or the reason it cannot be used."""
    try:
        from liger_kernel.transformers import functional
    except Exception as e:  # noqa: BLE001 -- not installed is a result
        return None, f"{type(e).__name__}: {e}"
    return functional, None


def _error(e):
    return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}


def _timed(bench, fn, nbytes, copy_gbps):
    """{"ms", "ms_p20", "ms_p80", "gbps", "pct_of_copy"} of ``fn``, or {"error"} if it cannot run."""
    try:
        med, p20, p80 = bench(fn, quantiles=[0.5, 0.2, 0.8])
    except Exception as e:  # noqa: BLE001
        return _error(e)
    gbps = nbytes / (med * 1e-3) / 1e9
    entry = {"ms": med, "ms_p20": p20, "ms_p80": p80, "gbps": gbps}
    if copy_gbps:
        entry["pct_of_copy"] = 100.0 * gbps / copy_gbps
    return entry


def _fwd_bwd(bench, forward, inputs, bytes_fwd, bytes_bwd, copy_gbps):
    """Time ``forward(*inputs)`` and the gradient of its output(s) with respect to ``inputs``."""
    import torch

    res = {"fwd": _timed(bench, lambda: forward(*inputs), bytes_fwd, copy_gbps)}
    try:
        out = forward(*inputs)
        outs = tuple(o for o in (out if isinstance(out, tuple) else (out,)) if o.requires_grad)
        douts = tuple(torch.randn_like(o) for o in outs)
        res["bwd"] = _timed(bench, lambda: torch.autograd.grad(outs, inputs, douts, retain_graph=True),
                            bytes_bwd, copy_gbps)
    except Exception as e:  # noqa: BLE001
        res["bwd"] = _error(e)
    return res


def _copy_gbps(bench, device):
    """Device-to-device copy bandwidth (read + write) on 1 GiB, the ceiling for a memory-bound kernel."""
    import torch

    src = torch.empty(2**28, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    entry = _timed(bench, lambda: dst.copy_(src), 2.0 * src.numel() * 4, None)
    del src, dst
    return entry


def _rmsnorm(kernels, liger, bench, cases, device, dtype, copy_gbps):
    import torch
    import torch.nn.functional as F

    rows = []
    for c in cases:
        M, N = c["M"], c["N"]
        nbytes = M * N * torch.finfo(dtype).bits // 8
        x = torch.randn(M, N, device=device, dtype=dtype, requires_grad=True)
        w = torch.randn(N, device=device, dtype=dtype, requires_grad=True)
        providers = {"triton": lambda x, w: kernels.rms_norm(x, w, 1e-6),
                     "torch": lambda x, w, N=N: F.rms_norm(x, (N,), w, 1e-6)}
        if liger:
            providers["liger"] = lambda x, w: liger.liger_rms_norm(x, w, 1e-6, in_place=False)
        row = dict(c)
        for name, fn in providers.items():
            row[name] = _fwd_bwd(bench, fn, (x, w), 2.0 * nbytes, 3.0 * nbytes, copy_gbps)
        rows.append(row)
        print(f"rmsnorm {c}: {_summary(row, providers)}", flush=True)
    return rows


def _rope(kernels, liger, bench, cases, device, dtype, copy_gbps):
    import torch
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from kernels.rope import RoPEFunction, rope_tables

    rows = []
    for c in cases:
        B, H, H_kv, T, d = c["B"], c["H"], c["H_kv"], c["T"], c["d"]
        nbytes = 2.0 * (H + H_kv) * B * T * d * torch.finfo(dtype).bits // 8
        # the layout after the projections: (B, T, H, d) in memory, viewed as (B, H, T, d)
        q = torch.randn(B, T, H, d, device=device, dtype=dtype).transpose(1, 2).requires_grad_(True)
        k = torch.randn(B, T, H_kv, d, device=device, dtype=dtype).transpose(1, 2).requires_grad_(True)
        # every provider gets its cos/sin tables made beforehand: ours (1, T, d/2) float32, Hugging Face's and
        # Liger's (1, T, d) in the input dtype
        half_cos, half_sin = rope_tables(torch.arange(T, device=device)[None], d, 500000.0)
        cos, sin = (torch.cat([t, t], dim=-1).to(dtype) for t in (half_cos, half_sin))
        providers = {"triton": lambda q, k: RoPEFunction.apply(q, k, half_cos, half_sin),
                     "torch": lambda q, k: apply_rotary_pos_emb(q, k, cos, sin)}
        if liger:
            providers["liger"] = lambda q, k: liger.liger_rope(q, k, cos, sin)
        row = dict(c)
        for name, fn in providers.items():
            row[name] = _fwd_bwd(bench, fn, (q, k), nbytes, nbytes, copy_gbps)
        rows.append(row)
        print(f"rope {c}: {_summary(row, providers)}", flush=True)
        torch.cuda.empty_cache()
    return rows


def _swiglu(kernels, liger, bench, cases, device, dtype, copy_gbps):
    import torch
    import torch.nn.functional as F

    rows = []
    for c in cases:
        M, Fd = c["M"], c["F"]
        elem = M * Fd * torch.finfo(dtype).bits // 8
        a = torch.randn(M, Fd, device=device, dtype=dtype, requires_grad=True)
        b = torch.randn(M, Fd, device=device, dtype=dtype, requires_grad=True)
        providers = {"triton": kernels.swiglu_gate, "torch": lambda a, b: F.silu(a) * b}
        if liger:
            providers["liger"] = liger.liger_swiglu
        row = dict(c)
        for name, fn in providers.items():
            row[name] = _fwd_bwd(bench, fn, (a, b), 3.0 * elem, 5.0 * elem, copy_gbps)
        rows.append(row)
        print(f"swiglu {c}: {_summary(row, providers)}", flush=True)
        torch.cuda.empty_cache()
    return rows


def _gqa(kernels, liger, bench, cases, device, dtype, copy_gbps):
    """Grouped-query attention in TFLOP/s: our kernel on H_kv K/V heads, torch's SDPA with ``enable_gqa``, and our
    kernel on K/V repeated to H heads (multi-head attention on the same problem)."""
    import torch
    import torch.nn.functional as F

    rows = []
    for c in cases:
        B, H, H_kv, N, d, causal = c["B"], c["H"], c["H_kv"], c["N"], c["d"], c["causal"]
        flops = 4.0 * B * H * N * N * d * (0.5 if causal else 1.0)
        q = torch.randn(B, H, N, d, device=device, dtype=dtype, requires_grad=True)
        k, v = (torch.randn(B, H_kv, N, d, device=device, dtype=dtype, requires_grad=True) for _ in range(2))
        k_rep, v_rep = (t.detach().repeat_interleave(H // H_kv, dim=1).requires_grad_(True) for t in (k, v))
        providers = {"triton": (lambda q, k, v: kernels.flash_attention(q, k, v, causal=causal), (q, k, v)),
                     "torch": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                                              enable_gqa=True), (q, k, v)),
                     "triton_repeated_kv": (lambda q, k, v: kernels.flash_attention(q, k, v, causal=causal),
                                            (q, k_rep, v_rep))}
        row = dict(c)
        for name, (fn, inputs) in providers.items():
            # _fwd_bwd's rate with the FLOP count as the "bytes": GFLOP/s, kept as TFLOP/s
            res = _fwd_bwd(bench, fn, inputs, flops, 2.5 * flops, None)
            for entry in res.values():
                if "gbps" in entry:
                    entry["tflops"] = entry.pop("gbps") / 1e3
            row[name] = res
        rows.append(row)
        print(f"gqa {c}: " + ", ".join(f"{n} fwd {row[n]['fwd'].get('tflops', float('nan')):.0f} bwd "
                                       f"{row[n]['bwd'].get('tflops', float('nan')):.0f} TFLOP/s" for n in providers),
              flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def _summary(row, providers):
    def f(e):
        return f"{e['gbps']:.0f}" if "gbps" in e else "n/a"
    return ", ".join(f"{n} fwd {f(row[n]['fwd'])} bwd {f(row[n]['bwd'])} GB/s" for n in providers)


def _figure(res, path=FIGURE):
    """Per op, per case: % of copy bandwidth forward (solid) and backward (hatched) for each provider."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = {"rmsnorm": lambda r: f"N={r['N']}", "rope": lambda r: f"T={r['T']}", "swiglu": lambda r: f"M={r['M']}",
              "gqa": lambda r: f"N={r['N']}"}
    titles = {"rmsnorm": "RMSNorm (M = 4096)", "rope": "RoPE on q, k (B=4, H=32, H_kv=8, d=128)",
              "swiglu": "SwiGLU gate (F = 14336)", "gqa": "GQA attention (B=4, H=32, H_kv=8, d=128, causal)"}
    ops = [op for op in ("rmsnorm", "rope", "swiglu", "gqa") if res.get(op)]
    fig, axes = plt.subplots(1, len(ops), figsize=(5.7 * len(ops), 4.5), squeeze=False)
    for ax, op in zip(axes[0], ops):
        cases = res[op]
        if op == "gqa":      # compute-bound: TFLOP/s, our kernel on repeated K/V beside it
            providers, key, ylabel = [("triton", "C0"), ("torch", "C1"), ("triton_repeated_kv", "C4")], "tflops", \
                "TFLOP/s"
        else:                # memory-bound: the share of a measured copy's bandwidth
            providers, key, ylabel = [("triton", "C0"), ("torch", "C1"), ("liger", "C2")], "pct_of_copy", \
                "% of measured copy bandwidth"
        xs = np.arange(len(cases))
        width = 0.8 / (2 * len(providers))
        i = 0
        top = 0.0
        for direction, hatch in (("fwd", None), ("bwd", "//")):
            for name, color in providers:
                vals = [r.get(name, {}).get(direction, {}).get(key, 0.0) for r in cases]
                top = max([top, *vals])
                ax.bar(xs + (i - len(providers) + 0.5) * width, vals, width, color=color, hatch=hatch,
                       alpha=1.0 if direction == "fwd" else 0.6, label=f"{name} {direction}")
                i += 1
        ax.set_xticks(xs, [labels[op](r) for r in cases])
        ax.set(ylabel=ylabel, title=titles[op], ylim=(0, 140 if op != "gqa" else 1.4 * max(top, 1.0)))
        ax.legend(fontsize=7, ncol=2, loc="upper left")      # the y range leaves the top 30 % to the legend
    fig.suptitle(f"Today's decoder kernels in Triton vs PyTorch and Liger-Kernel, bfloat16, on {res['device']} "
                 f"(0 = not run)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def run(quick=False):
    """The GPU sweep (about a minute on an H200, untimed since the GQA rows were added; ``quick``: one shape per op),
    or ``{"skipped": ...}`` without CUDA."""
    import torch

    if not torch.cuda.is_available():
        print(SKIPPED, flush=True)
        return {"skipped": SKIPPED}
    kernels = _import_native_kernels()
    import triton.testing

    def bench(fn, quantiles):
        return triton.testing.do_bench(fn, warmup=10, rep=50, quantiles=quantiles)

    cfg = QUICK if quick else FULL
    device, dtype = torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    liger, liger_error = _liger()
    res = {"device": torch.cuda.get_device_name(0), "dtype": "bfloat16",
           "liger": getattr(sys.modules.get("liger_kernel"), "__version__", "installed") if liger else liger_error,
           "timing": "triton.testing.do_bench median, 20th and 80th percentiles (ms); GB/s at the median"}
    copy = _copy_gbps(bench, device)
    res["copy"] = copy
    for op, fn in (("rmsnorm", _rmsnorm), ("rope", _rope), ("swiglu", _swiglu), ("gqa", _gqa)):
        res[op] = fn(kernels, liger, bench, cfg[op], device, dtype, copy.get("gbps"))
    _figure(res)
    res["figure"] = str(FIGURE.relative_to(ROOT))
    return res
