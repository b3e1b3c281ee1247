"""The Triton kernels against PyTorch on a CUDA GPU (issue 3, section 4). Without CUDA there is nothing to measure.

    TRITON_INTERPRET=0 python -m bench.run kernels        # the Makefile exports TRITON_INTERPRET=1 for the tests
    TRITON_INTERPRET=0 python -m bench.run kernels --quick

Without CUDA, ``run`` returns ``{"skipped": ...}``: the Triton interpreter is a correctness path (the tests), not a
performance path. With CUDA, all in bfloat16, forward and backward:

- attention, B = 4, H = 32, d in {64, 128}, N in {1k, 4k, 16k}, causal and not: ``kernels.flash_attention`` against
  ``F.scaled_dot_product_attention`` with the flash and the cuDNN backends, in TFLOP/s, counting 4 B H N^2 d
  (x 0.5 causal) forward and 2.5x that backward;
- LayerNorm, M = 4096, N in {1k, 4k, 8k, 16k}: ``kernels.layer_norm`` against ``F.layer_norm`` in GB/s (2 M N bytes
  forward, 3 M N bytes backward), also as a percentage of a measured device-to-device copy;
- FFN (GELU-tanh), M in {2k, 8k}, d in {1024, 4096}, d_ff = 4 d: ``kernels.fused_ffn`` against ``F.linear`` +
  ``F.gelu`` + ``F.linear`` in TFLOP/s (4 M d d_ff forward, twice that backward), and the peak memory of one
  forward + backward of each;
- the NumPy reference on the host (float32, forward, the smallest shape of each op), for scale.

Times are ``triton.testing.do_bench`` medians with 20th and 80th percentiles. Backward is timed as
``torch.autograd.grad`` of a kept graph (no ``.grad`` accumulation). A provider that cannot run a shape (a backend
missing for it) is recorded with its error, not fatal. Targets (issue 3): attention forward >= 0.9x SDPA-flash and
backward >= 0.8x; LayerNorm forward >= 85 % of copy bandwidth and backward faster than torch; FFN >= 0.9x torch eager
with less peak memory. Writes ``figures/bench_kernels.png``.
"""
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIGURE = ROOT / "figures" / "bench_kernels.png"
SKIPPED = "no CUDA device: the Triton interpreter is a correctness path, not a performance path"
TARGETS = {"attention_fwd_vs_flash": 0.9, "attention_bwd_vs_flash": 0.8, "layernorm_fwd_pct_of_copy": 85.0,
           "layernorm_bwd_vs_torch": 1.0, "ffn_vs_torch": 0.9}

FULL = {
    "attention": [dict(B=4, H=32, N=n, d=d, causal=c) for d in (64, 128) for n in (1024, 4096, 16384)
                  for c in (False, True)],
    "layernorm": [dict(M=4096, N=n) for n in (1024, 4096, 8192, 16384)],
    "ffn": [dict(M=m, d=d) for m in (2048, 8192) for d in (1024, 4096)],
    "numpy": dict(attention=dict(B=1, H=4, N=1024, d=64), layernorm=dict(M=4096, N=1024), ffn=dict(M=2048, d=1024)),
}
QUICK = {
    "attention": [dict(B=4, H=32, N=1024, d=d, causal=c) for d in (64, 128) for c in (False, True)],
    "layernorm": [dict(M=4096, N=n) for n in (1024, 8192)],
    "ffn": [dict(M=2048, d=1024)],
    "numpy": dict(attention=dict(B=1, H=1, N=256, d=64), layernorm=dict(M=512, N=1024), ffn=dict(M=256, d=256)),
}


def _import_native_kernels():
    """Import ``kernels`` with the interpreter off: the Makefile exports TRITON_INTERPRET=1 for the tests."""
    if os.environ.get("TRITON_INTERPRET") == "1" and "kernels.attention" in sys.modules:
        raise RuntimeError("kernels was imported under TRITON_INTERPRET=1; run `TRITON_INTERPRET=0 python -m bench.run "
                           "kernels` for native timings")
    os.environ["TRITON_INTERPRET"] = "0"
    import kernels

    return kernels


def _timed(bench, fn):
    """{"ms", "ms_p20", "ms_p80"} of ``fn`` by ``bench`` (triton.testing.do_bench), or {"error"} if it cannot run."""
    try:
        med, p20, p80 = bench(fn, quantiles=[0.5, 0.2, 0.8])
    except Exception as e:  # noqa: BLE001 -- a provider missing for a shape is a result, not a crash
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    return {"ms": med, "ms_p20": p20, "ms_p80": p80}


def _rate(entry, amount, unit):
    """Add amount / time in ``unit`` (1e12 for TFLOP/s, 1e9 for GB/s) at the median and both percentiles."""
    if "ms" in entry:
        entry["rate"] = amount / (entry["ms"] * 1e-3) / unit
        entry["rate_p20"] = amount / (entry["ms_p80"] * 1e-3) / unit     # slower time, lower rate
        entry["rate_p80"] = amount / (entry["ms_p20"] * 1e-3) / unit
    return entry


def _fwd_bwd(bench, forward, inputs, amount_fwd, amount_bwd, unit):
    """Time ``forward(*inputs)`` and the gradient of its output with respect to ``inputs``; rates per direction."""
    import torch

    res = {"fwd": _rate(_timed(bench, lambda: forward(*inputs)), amount_fwd, unit)}
    try:
        out = forward(*inputs)
        dout = torch.randn_like(out)
        res["bwd"] = _rate(_timed(bench, lambda: torch.autograd.grad(out, inputs, dout, retain_graph=True)),
                           amount_bwd, unit)
    except Exception as e:  # noqa: BLE001
        res["bwd"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    return res


def _attention(kernels, bench, cases, device, dtype):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def sdpa(backend, causal):
        def f(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return f

    rows = []
    for c in cases:
        B, H, N, d, causal = c["B"], c["H"], c["N"], c["d"], c["causal"]
        flops = 4.0 * B * H * N * N * d * (0.5 if causal else 1.0)
        q, k, v = (torch.randn(B, H, N, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        providers = {"triton": lambda q, k, v, causal=causal: kernels.flash_attention(q, k, v, causal=causal),
                     "sdpa_flash": sdpa(SDPBackend.FLASH_ATTENTION, causal),
                     "sdpa_cudnn": sdpa(SDPBackend.CUDNN_ATTENTION, causal)}
        row = dict(c)
        for name, fn in providers.items():
            row[name] = _fwd_bwd(bench, fn, (q, k, v), flops, 2.5 * flops, 1e12)
        for direction in ("fwd", "bwd"):
            ours, theirs = row["triton"][direction], row["sdpa_flash"][direction]
            if "ms" in ours and "ms" in theirs:
                row[f"{direction}_vs_flash"] = theirs["ms"] / ours["ms"]
        print(f"attention {c}: " + ", ".join(f"{n} fwd {_fmt(row[n]['fwd'])} bwd {_fmt(row[n]['bwd'])} TFLOP/s"
                                             for n in providers), flush=True)
        rows.append(row)
        del q, k, v
        torch.cuda.empty_cache()
    return rows


def _copy_gbps(bench, device):
    """Device-to-device copy bandwidth (read + write) on 1 GiB, the ceiling for a memory-bound kernel."""
    import torch

    src = torch.empty(2**28, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    entry = _rate(_timed(bench, lambda: dst.copy_(src)), 2.0 * src.numel() * 4, 1e9)
    del src, dst
    return entry


def _layernorm(kernels, bench, cases, device, dtype, copy_gbps):
    import torch
    import torch.nn.functional as F

    rows = []
    for c in cases:
        M, N = c["M"], c["N"]
        nbytes = M * N * torch.finfo(dtype).bits // 8
        x = torch.randn(M, N, device=device, dtype=dtype, requires_grad=True)
        w = torch.randn(N, device=device, dtype=dtype, requires_grad=True)
        b = torch.randn(N, device=device, dtype=dtype, requires_grad=True)
        providers = {"triton": lambda x, w, b: kernels.layer_norm(x, w, b),
                     "torch": lambda x, w, b, N=N: F.layer_norm(x, (N,), w, b)}
        row = dict(c)
        for name, fn in providers.items():
            row[name] = _fwd_bwd(bench, fn, (x, w, b), 2.0 * nbytes, 3.0 * nbytes, 1e9)
            for direction in ("fwd", "bwd"):
                entry = row[name][direction]
                if "rate" in entry and copy_gbps:
                    entry["pct_of_copy"] = 100.0 * entry["rate"] / copy_gbps
        ours, theirs = row["triton"]["bwd"], row["torch"]["bwd"]
        if "ms" in ours and "ms" in theirs:
            row["bwd_vs_torch"] = theirs["ms"] / ours["ms"]
        print(f"layernorm {c}: " + ", ".join(f"{n} fwd {_fmt(row[n]['fwd'])} bwd {_fmt(row[n]['bwd'])} GB/s"
                                             for n in providers), flush=True)
        rows.append(row)
    return rows


def _peak_bytes(fn):
    """Peak CUDA memory allocated during ``fn()`` above what was allocated before it."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def _ffn(kernels, bench, cases, device, dtype):
    import torch
    import torch.nn.functional as F

    rows = []
    for c in cases:
        M, d = c["M"], c["d"]
        d_ff = 4 * d
        flops = 4.0 * M * d * d_ff
        x = torch.randn(M, d, device=device, dtype=dtype, requires_grad=True)
        W1 = (torch.randn(d, d_ff, device=device, dtype=dtype) / d**0.5).requires_grad_(True)
        b1 = torch.zeros(d_ff, device=device, dtype=dtype, requires_grad=True)
        W2 = (torch.randn(d_ff, d, device=device, dtype=dtype) / d_ff**0.5).requires_grad_(True)
        b2 = torch.zeros(d, device=device, dtype=dtype, requires_grad=True)
        # torch gets its own (out, in) weight layout, so F.linear has no transpose to pay for.
        W1t = W1.detach().t().contiguous().requires_grad_(True)
        W2t = W2.detach().t().contiguous().requires_grad_(True)

        def ours(x, W1, b1, W2, b2):
            return kernels.fused_ffn(x, W1, b1, W2, b2, activation="gelu_tanh")

        def theirs(x, W1t, b1, W2t, b2):
            return F.linear(F.gelu(F.linear(x, W1t, b1), approximate="tanh"), W2t, b2)

        row = dict(c, d_ff=d_ff)
        for name, fn, inputs in (("triton", ours, (x, W1, b1, W2, b2)), ("torch", theirs, (x, W1t, b1, W2t, b2))):
            row[name] = _fwd_bwd(bench, fn, inputs, flops, 2.0 * flops, 1e12)

            def step(fn=fn, inputs=inputs):
                out = fn(*inputs)
                torch.autograd.grad(out, inputs, torch.ones_like(out))

            try:
                row[name]["peak_MiB"] = _peak_bytes(step) / 2**20
            except Exception as e:  # noqa: BLE001
                row[name]["peak_MiB"] = None
                row[name]["peak_error"] = f"{type(e).__name__}"
        ours_f, theirs_f = row["triton"]["fwd"], row["torch"]["fwd"]
        if "ms" in ours_f and "ms" in theirs_f:
            row["fwd_vs_torch"] = theirs_f["ms"] / ours_f["ms"]
        print(f"ffn {c}: " + ", ".join(f"{n} fwd {_fmt(row[n]['fwd'])} bwd {_fmt(row[n]['bwd'])} TFLOP/s, "
                                       f"peak {row[n]['peak_MiB']} MiB" for n in ("triton", "torch")), flush=True)
        rows.append(row)
        torch.cuda.empty_cache()
    return rows


def _numpy_host(shapes):
    """The float32 NumPy reference's forward on the host, median of 3, with the same rate units as the GPU rows."""
    from reference.ops import attention, ffn, layernorm

    rng = np.random.default_rng(0)

    def median_s(fn):
        fn()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    a = shapes["attention"]
    q, k, v = (rng.standard_normal((a["B"], a["H"], a["N"], a["d"]), dtype=np.float32) for _ in range(3))
    s_attn = median_s(lambda: attention.forward(q, k, v))
    ln = shapes["layernorm"]
    x = rng.standard_normal((ln["M"], ln["N"]), dtype=np.float32)
    g, b = np.ones(ln["N"], np.float32), np.zeros(ln["N"], np.float32)
    s_ln = median_s(lambda: layernorm.forward(x, g, b))
    f = shapes["ffn"]
    d_ff = 4 * f["d"]
    xf = rng.standard_normal((f["M"], f["d"]), dtype=np.float32)
    W1 = rng.standard_normal((f["d"], d_ff), dtype=np.float32)
    W2 = rng.standard_normal((d_ff, f["d"]), dtype=np.float32)
    b1, b2 = np.zeros(d_ff, np.float32), np.zeros(f["d"], np.float32)
    s_ffn = median_s(lambda: ffn.forward(xf, W1, b1, W2, b2, activation="gelu_tanh"))
    return {
        "attention": dict(a, s=s_attn, tflops=4.0 * a["B"] * a["H"] * a["N"] ** 2 * a["d"] / s_attn / 1e12),
        "layernorm": dict(ln, s=s_ln, gbps=2.0 * ln["M"] * ln["N"] * 4 / s_ln / 1e9),
        "ffn": dict(f, s=s_ffn, tflops=4.0 * f["M"] * f["d"] * d_ff / s_ffn / 1e12),
    }


def _fmt(entry):
    return f"{entry['rate']:.1f}" if "rate" in entry else "n/a"


def _figure(res):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    colors = {"triton": "C0", "sdpa_flash": "C1", "sdpa_cudnn": "C2", "torch": "C1"}
    head_dims = sorted({r["d"] for r in res["attention"]})
    first = res["attention"][0]
    for ax, direction in zip(axes[:2], ("fwd", "bwd")):
        for name in ("triton", "sdpa_flash", "sdpa_cudnn"):
            for d, marker in zip(head_dims, "os^v"):
                for causal, style in ((False, "-"), (True, "--")):
                    pts = [(r["N"], r[name][direction]["rate"]) for r in res["attention"]
                           if r["d"] == d and r["causal"] == causal and "rate" in r[name][direction]]
                    if pts:
                        ax.plot(*zip(*pts), style, marker=marker, color=colors[name],
                                label=f"{name} d={d}{' causal' if causal else ''}")
        ax.set(xscale="log", xlabel="sequence length N", ylabel="TFLOP/s",
               title=f"attention {direction} (B={first['B']}, H={first['H']})")
        ax.legend(fontsize=6, ncol=2)
    ax = axes[2]
    for name in ("triton", "torch"):
        for direction, style in (("fwd", "-"), ("bwd", "--")):
            pts = [(r["N"], r[name][direction]["pct_of_copy"]) for r in res["layernorm"]
                   if "pct_of_copy" in r[name][direction]]
            if pts:
                ax.plot(*zip(*pts), style, marker="o", color=colors[name], label=f"{name} {direction}")
    ax.axhline(TARGETS["layernorm_fwd_pct_of_copy"], color="grey", lw=0.8, ls=":", label="target fwd 85 %")
    ax.set(xscale="log", xlabel=f"N (M = {res['layernorm'][0]['M']})", ylabel="% of measured copy bandwidth",
           title="LayerNorm")
    ax.legend(fontsize=7)
    ax = axes[3]
    labels = [f"M={r['M']}\nd={r['d']}" for r in res["ffn"]]
    xs = np.arange(len(labels))
    for i, (name, direction) in enumerate((("triton", "fwd"), ("torch", "fwd"), ("triton", "bwd"), ("torch", "bwd"))):
        vals = [r[name][direction].get("rate", 0.0) for r in res["ffn"]]
        ax.bar(xs + (i - 1.5) * 0.2, vals, 0.2, color=colors[name], alpha=1.0 if direction == "fwd" else 0.5,
               label=f"{name} {direction}")
    ax.set_xticks(xs, labels)
    ax.set(ylabel="TFLOP/s", title="FFN (GELU-tanh, d_ff = 4d)")
    ax.legend(fontsize=7)
    fig.suptitle(f"Triton kernels vs PyTorch, bfloat16, on {res['device']}")
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def run(quick=False):
    """The GPU sweep (about 5 minutes on an H200; ``quick``: a few shapes), or ``{"skipped": ...}`` without CUDA."""
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
    res = {"device": torch.cuda.get_device_name(0), "dtype": "bfloat16", "targets": TARGETS,
           "timing": "triton.testing.do_bench median, 20th and 80th percentiles (ms); rates at each"}
    res["attention"] = _attention(kernels, bench, cfg["attention"], device, dtype)
    copy = _copy_gbps(bench, device)
    res["copy"] = copy
    res["layernorm"] = _layernorm(kernels, bench, cfg["layernorm"], device, dtype, copy.get("rate"))
    res["ffn"] = _ffn(kernels, bench, cfg["ffn"], device, dtype)
    res["numpy_host_float32_forward"] = _numpy_host(cfg["numpy"])
    _figure(res)
    res["figure"] = str(FIGURE.relative_to(ROOT))
    return res
