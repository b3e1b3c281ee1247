"""The Triton kernels against PyTorch on a CUDA GPU (issue 3 §4, issue 15). Without CUDA there is nothing to measure.

    TRITON_INTERPRET=0 python -m bench.run kernels        # the full sweep (the Makefile exports TRITON_INTERPRET=1
    TRITON_INTERPRET=0 python -m bench.run kernels --quick  # for the tests); make gpu-check runs the "check" subset

Without CUDA, ``run`` returns ``{"skipped": ...}``: the Triton interpreter is a correctness path (the tests), not a
performance path. With CUDA, in bfloat16 unless said otherwise, forward and backward:

- attention, B = 4, H = 32, d in {64, 128}, N from 1k to 16k, causal and not: ``kernels.flash_attention`` against
  ``F.scaled_dot_product_attention`` with the flash and the cuDNN backends, in TFLOP/s, counting 4 B H N^2 d
  (x 0.5 causal) forward and 2.5x that backward;
- LayerNorm, M = 4096, N from 1k to 16k: ``kernels.layer_norm`` against ``F.layer_norm`` in GB/s (2 M N elements
  moved forward, 3 M N backward), each beside a device-to-device copy of the same M x N tensor, timed the same way:
  the forward's share of that copy's bandwidth is the memory-bound ceiling it is held to;
- FFN (GELU-tanh), M in {2k, 8k}, d in {1024, 4096}, d_ff = 4 d: ``kernels.fused_ffn`` against ``F.linear`` +
  ``F.gelu`` + ``F.linear`` in TFLOP/s (4 M d d_ff forward, twice that backward), the peak memory of one forward +
  backward of each, and a bare GEMM (the same kernel, no epilogue) against ``torch.matmul`` (cuBLAS) at the FFN's
  first-layer shape;
- float32: attention and the FFN with exact fp32 dots (``fp32_precision="ieee"``) and with ``"tf32x3"``, beside
  torch in float32 (TF32 off, its default);
- the NumPy reference on the host (float32, forward, the smallest shape of each op), for scale.

Each time is the median of many samples (``triton.testing.do_bench`` with ``return_mode="all"``, at least
``MIN_SAMPLES`` of them, L2 flushed before each), with the 20th and 80th percentiles and the sample count. Backward is
timed as ``torch.autograd.grad`` of a kept graph (no ``.grad`` accumulation). A provider that cannot run a shape is
recorded with its error, not fatal. ``run`` may be given a file to rewrite after every row (so a time-out keeps what
was measured) and a deadline (rows not started by then are skipped and listed). Targets (issue 15 §3) are in
``TARGETS``; ``ratios`` compares the results with them. ``figure`` draws ``figures/bench_kernels.png``.
"""
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIGURE = ROOT / "figures" / "bench_kernels.png"
SKIPPED = "no CUDA device: the Triton interpreter is a correctness path, not a performance path"
MIN_SAMPLES = 30
TARGETS = {"attention_fwd_vs_flash": 0.9, "attention_bwd_vs_flash": 0.8, "layernorm_fwd_pct_of_copy": 85.0,
           "layernorm_bwd_vs_torch": 1.0, "ffn_fwd_vs_torch": 0.9, "ffn_bwd_vs_torch": 0.9,
           "ffn_peak_vs_torch": 1.0}

_ATTN = [dict(B=4, H=32, N=n, d=d, causal=c) for d in (64, 128) for n in (1024, 4096, 16384) for c in (False, True)]
PROFILES = {
    "full": {
        "attention": _ATTN,
        "layernorm": [dict(M=4096, N=n) for n in (1024, 2048, 4096, 8192, 16384)],
        "ffn": [dict(M=m, d=d) for m in (2048, 8192) for d in (1024, 4096)],
        "fp32": dict(attention=dict(B=4, H=16, N=2048, d=64, causal=True), ffn=dict(M=4096, d=1024)),
        "numpy": dict(attention=dict(B=1, H=4, N=1024, d=64), layernorm=dict(M=4096, N=1024), ffn=dict(M=2048, d=1024)),
    },
    # make gpu-check: every target's shape family once, in order of importance, inside its minutes
    "check": {
        "attention": [r for r in _ATTN if (r["N"], r["causal"]) in ((1024, False), (1024, True), (4096, False),
                                                                    (4096, True), (16384, True))],
        "layernorm": [dict(M=4096, N=n) for n in (1024, 4096, 8192)],
        "ffn": [dict(M=8192, d=1024), dict(M=8192, d=4096)],
        "fp32": dict(attention=dict(B=4, H=16, N=2048, d=64, causal=True), ffn=dict(M=4096, d=1024)),
        "numpy": dict(attention=dict(B=1, H=1, N=256, d=64), layernorm=dict(M=512, N=1024), ffn=dict(M=256, d=256)),
    },
    "quick": {
        "attention": [dict(B=4, H=32, N=1024, d=d, causal=c) for d in (64, 128) for c in (False, True)],
        "layernorm": [dict(M=4096, N=n) for n in (1024, 8192)],
        "ffn": [dict(M=2048, d=1024)],
        "fp32": dict(attention=dict(B=2, H=8, N=1024, d=64, causal=True), ffn=dict(M=1024, d=512)),
        "numpy": dict(attention=dict(B=1, H=1, N=256, d=64), layernorm=dict(M=512, N=1024), ffn=dict(M=256, d=256)),
    },
}


def _import_native_kernels():
    """Import ``kernels`` with the interpreter off: the Makefile exports TRITON_INTERPRET=1 for the tests."""
    if os.environ.get("TRITON_INTERPRET") == "1" and "kernels.attention" in sys.modules:
        raise RuntimeError("kernels was imported under TRITON_INTERPRET=1; run `TRITON_INTERPRET=0 python -m bench.run "
                           "kernels` for native timings")
    os.environ["TRITON_INTERPRET"] = "0"
    import kernels

    return kernels


def _error(e):
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def _timed(fn):
    """{"ms", "ms_p20", "ms_p80", "samples"}: the median of at least MIN_SAMPLES timings of ``fn``, or {"error"}."""
    import triton.testing

    try:
        times = list(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="all"))
        if len(times) < MIN_SAMPLES:        # slow calls: top up to MIN_SAMPLES
            more = math.ceil(float(np.median(times)) * (MIN_SAMPLES - len(times)) * 1.2)
            times += list(triton.testing.do_bench(fn, warmup=0, rep=more, return_mode="all"))
    except Exception as e:  # noqa: BLE001 -- a provider missing for a shape is a result, not a crash
        return {"error": _error(e)}
    p20, med, p80 = np.percentile(times, [20, 50, 80])
    return {"ms": float(med), "ms_p20": float(p20), "ms_p80": float(p80), "samples": len(times)}


def _rate(entry, amount, unit):
    """Add amount / time in ``unit`` (1e12 for TFLOP/s, 1e9 for GB/s) at the median and both percentiles."""
    if "ms" in entry:
        entry["rate"] = amount / (entry["ms"] * 1e-3) / unit
        entry["rate_p20"] = amount / (entry["ms_p80"] * 1e-3) / unit     # slower time, lower rate
        entry["rate_p80"] = amount / (entry["ms_p20"] * 1e-3) / unit
    return entry


def _fwd_bwd(forward, inputs, amount_fwd, amount_bwd, unit):
    """Time ``forward(*inputs)`` and the gradient of its output with respect to ``inputs``; rates per direction."""
    import torch

    res = {"fwd": _rate(_timed(lambda: forward(*inputs)), amount_fwd, unit)}
    try:
        out = forward(*inputs)
        dout = torch.randn_like(out)
        res["bwd"] = _rate(_timed(lambda: torch.autograd.grad(out, inputs, dout, retain_graph=True)), amount_bwd, unit)
    except Exception as e:  # noqa: BLE001
        res["bwd"] = {"error": _error(e)}
    return res


def _ratio(row, key, ours, theirs, direction):
    """row[key] = their time / our time (above 1: ours is faster) when both ran."""
    a, b = ours.get(direction, {}), theirs.get(direction, {})
    if "ms" in a and "ms" in b:
        row[key] = b["ms"] / a["ms"]


def _attention(kernels, case, device, dtype):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def sdpa(backend, causal):
        def f(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return f

    B, H, N, d, causal = case["B"], case["H"], case["N"], case["d"], case["causal"]
    flops = 4.0 * B * H * N * N * d * (0.5 if causal else 1.0)
    q, k, v = (torch.randn(B, H, N, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    providers = {"triton": lambda q, k, v: kernels.flash_attention(q, k, v, causal=causal),
                 "sdpa_flash": sdpa(SDPBackend.FLASH_ATTENTION, causal),
                 "sdpa_cudnn": sdpa(SDPBackend.CUDNN_ATTENTION, causal)}
    row = dict(case)
    for name, fn in providers.items():
        row[name] = _fwd_bwd(fn, (q, k, v), flops, 2.5 * flops, 1e12)
    for direction in ("fwd", "bwd"):
        _ratio(row, f"{direction}_vs_flash", row["triton"], row["sdpa_flash"], direction)
        _ratio(row, f"{direction}_vs_cudnn", row["triton"], row["sdpa_cudnn"], direction)
    print(f"attention {case}: " + ", ".join(f"{n} fwd {_fmt(row[n]['fwd'])} bwd {_fmt(row[n]['bwd'])} TFLOP/s"
                                         for n in providers), flush=True)
    return row


def _layernorm(kernels, case, device, dtype):
    import torch
    import torch.nn.functional as F

    M, N = case["M"], case["N"]
    nbytes = M * N * torch.finfo(dtype).bits // 8
    x = torch.randn(M, N, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(N, device=device, dtype=dtype, requires_grad=True)
    b = torch.randn(N, device=device, dtype=dtype, requires_grad=True)
    dst = torch.empty_like(x, requires_grad=False)
    # the same-size copy: reads and writes M x N elements, the bytes LayerNorm's forward moves
    copy = _rate(_timed(lambda: dst.copy_(x.detach())), 2.0 * nbytes, 1e9)
    providers = {"triton": lambda x, w, b: kernels.layer_norm(x, w, b),
                 "torch": lambda x, w, b: F.layer_norm(x, (N,), w, b)}
    row = dict(case, copy=copy)
    for name, fn in providers.items():
        row[name] = _fwd_bwd(fn, (x, w, b), 2.0 * nbytes, 3.0 * nbytes, 1e9)
        for direction in ("fwd", "bwd"):
            entry = row[name][direction]
            if "rate" in entry and "rate" in copy:
                entry["pct_of_copy"] = 100.0 * entry["rate"] / copy["rate"]
    _ratio(row, "fwd_vs_torch", row["triton"], row["torch"], "fwd")
    _ratio(row, "bwd_vs_torch", row["triton"], row["torch"], "bwd")
    print(f"layernorm {case}: copy {_fmt(copy)} GB/s, " + ", ".join(
        f"{n} fwd {_fmt(row[n]['fwd'])} bwd {_fmt(row[n]['bwd'])} GB/s" for n in providers), flush=True)
    return row


def _peak_bytes(fn):
    """Peak CUDA memory allocated during ``fn()`` above what was allocated before it."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def _ffn_inputs(M, d, device, dtype):
    import torch

    d_ff = 4 * d
    x = torch.randn(M, d, device=device, dtype=dtype, requires_grad=True)
    W1 = (torch.randn(d, d_ff, device=device, dtype=dtype) / d**0.5).requires_grad_(True)
    b1 = torch.zeros(d_ff, device=device, dtype=dtype, requires_grad=True)
    W2 = (torch.randn(d_ff, d, device=device, dtype=dtype) / d_ff**0.5).requires_grad_(True)
    b2 = torch.zeros(d, device=device, dtype=dtype, requires_grad=True)
    # torch gets its own (out, in) weight layout, so F.linear has no transpose to pay for.
    W1t = W1.detach().t().contiguous().requires_grad_(True)
    W2t = W2.detach().t().contiguous().requires_grad_(True)
    return (x, W1, b1, W2, b2), (x, W1t, b1, W2t, b2)


def _ffn(kernels, case, device, dtype):
    import torch
    import torch.nn.functional as F

    from kernels.ffn import _gemm

    M, d = case["M"], case["d"]
    d_ff = 4 * d
    flops = 4.0 * M * d * d_ff
    ours_in, theirs_in = _ffn_inputs(M, d, device, dtype)

    def ours(x, W1, b1, W2, b2):
        return kernels.fused_ffn(x, W1, b1, W2, b2, activation="gelu_tanh")

    def theirs(x, W1t, b1, W2t, b2):
        return F.linear(F.gelu(F.linear(x, W1t, b1), approximate="tanh"), W2t, b2)

    row = dict(case, d_ff=d_ff)
    for name, fn, inputs in (("triton", ours, ours_in), ("torch", theirs, theirs_in)):
        row[name] = _fwd_bwd(fn, inputs, flops, 2.0 * flops, 1e12)

        def step(fn=fn, inputs=inputs):
            out = fn(*inputs)
            torch.autograd.grad(out, inputs, torch.ones_like(out))

        try:
            row[name]["peak_MiB"] = _peak_bytes(step) / 2**20
        except Exception as e:  # noqa: BLE001
            row[name]["peak_MiB"] = None
            row[name]["peak_error"] = _error(e)
    _ratio(row, "fwd_vs_torch", row["triton"], row["torch"], "fwd")
    _ratio(row, "bwd_vs_torch", row["triton"], row["torch"], "bwd")
    if row["triton"].get("peak_MiB") and row["torch"].get("peak_MiB"):
        row["peak_vs_torch"] = row["triton"]["peak_MiB"] / row["torch"]["peak_MiB"]
    # bare GEMM, X (M, d) @ W1 (d, d_ff): our kernel with no epilogue against cuBLAS
    x, W1 = ours_in[0].detach(), ours_in[1].detach()
    gemm_flops = 2.0 * M * d * d_ff
    row["gemm"] = {"triton": _rate(_timed(lambda: _gemm(x, W1, "ieee")), gemm_flops, 1e12),
                   "cublas": _rate(_timed(lambda: torch.matmul(x, W1)), gemm_flops, 1e12)}
    _ratio(row["gemm"], "vs_cublas", {"t": row["gemm"]["triton"]}, {"t": row["gemm"]["cublas"]}, "t")
    print(f"ffn {case}: " + ", ".join(f"{n} fwd {_fmt(row[n]['fwd'])} bwd {_fmt(row[n]['bwd'])} TFLOP/s, "
                                      f"peak {row[n]['peak_MiB']} MiB" for n in ("triton", "torch"))
          + f"; GEMM {_fmt(row['gemm']['triton'])} vs cuBLAS {_fmt(row['gemm']['cublas'])} TFLOP/s", flush=True)
    return row


def _fp32(kernels, shapes, device):
    """float32: exact dots, tf32x3 dots, and torch float32 (TF32 off), forward and backward."""
    import torch
    import torch.nn.functional as F

    a = shapes["attention"]
    flops = 4.0 * a["B"] * a["H"] * a["N"] ** 2 * a["d"] * (0.5 if a["causal"] else 1.0)
    q, k, v = (torch.randn(a["B"], a["H"], a["N"], a["d"], device=device, requires_grad=True) for _ in range(3))
    attn = dict(a)
    for precision in ("ieee", "tf32x3"):
        attn[f"triton_{precision}"] = _fwd_bwd(
            lambda q, k, v, p=precision: kernels.flash_attention(q, k, v, causal=a["causal"], fp32_precision=p),
            (q, k, v), flops, 2.5 * flops, 1e12)
    attn["torch"] = _fwd_bwd(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=a["causal"]),
                             (q, k, v), flops, 2.5 * flops, 1e12)
    f = shapes["ffn"]
    ours_in, theirs_in = _ffn_inputs(f["M"], f["d"], device, torch.float32)
    fflops = 4.0 * f["M"] * f["d"] * 4 * f["d"]
    ffn = dict(f)
    for precision in ("ieee", "tf32x3"):
        ffn[f"triton_{precision}"] = _fwd_bwd(
            lambda *t, p=precision: kernels.fused_ffn(*t, activation="gelu_tanh", fp32_precision=p),
            ours_in, fflops, 2.0 * fflops, 1e12)
    ffn["torch"] = _fwd_bwd(lambda x, W1t, b1, W2t, b2: F.linear(F.gelu(F.linear(x, W1t, b1), approximate="tanh"),
                                                                 W2t, b2), theirs_in, fflops, 2.0 * fflops, 1e12)
    for name, r in (("attention", attn), ("ffn", ffn)):
        print(f"fp32 {name}: " + ", ".join(f"{p} fwd {_fmt(r[p]['fwd'])} bwd {_fmt(r[p]['bwd'])} TFLOP/s"
                                           for p in ("triton_ieee", "triton_tf32x3", "torch")), flush=True)
    return {"attention": attn, "ffn": ffn}


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


def _rows(res, section):
    """The rows of a section that ran (a row whose case raised holds only the case and its error)."""
    return [r for r in res.get(section, []) if "error" not in r]


def ratios(res):
    """Each target with the measured ratios it applies to: {name: {"target", "values", "worst", "met"}}."""
    attention, layernorm, ffn = _rows(res, "attention"), _rows(res, "layernorm"), _rows(res, "ffn")
    picks = {
        "attention_fwd_vs_flash": [(_label(r), r.get("fwd_vs_flash")) for r in attention],
        "attention_bwd_vs_flash": [(_label(r), r.get("bwd_vs_flash")) for r in attention],
        "layernorm_fwd_pct_of_copy": [(_label(r), r["triton"]["fwd"].get("pct_of_copy")) for r in layernorm],
        "layernorm_bwd_vs_torch": [(_label(r), r.get("bwd_vs_torch")) for r in layernorm],
        "ffn_fwd_vs_torch": [(_label(r), r.get("fwd_vs_torch")) for r in ffn],
        "ffn_bwd_vs_torch": [(_label(r), r.get("bwd_vs_torch")) for r in ffn],
        # peak memory: ours / torch's, so the target is "below 1"
        "ffn_peak_vs_torch": [(_label(r), r.get("peak_vs_torch")) for r in ffn],
    }
    out = {}
    for name, values in picks.items():
        values = [(label, v) for label, v in values if v is not None]
        if not values:
            continue
        lower_is_better = name == "ffn_peak_vs_torch"
        worst = max(v for _, v in values) if lower_is_better else min(v for _, v in values)
        met = worst < TARGETS[name] if lower_is_better else worst >= TARGETS[name]
        out[name] = {"target": TARGETS[name], "values": dict(values), "worst": worst, "met": bool(met)}
    return out


def _label(row):
    return ",".join(f"{k}={row[k]}" for k in ("B", "H", "N", "d", "causal", "M") if k in row)


def figure(res, path=FIGURE):
    """Four panels: attention forward and backward TFLOP/s, LayerNorm % of a same-size copy, FFN TFLOP/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(21, 4.8))
    colors = {"triton": "C0", "sdpa_flash": "C1", "sdpa_cudnn": "C2", "torch": "C1"}
    rows = _rows(res, "attention")
    head_dims = sorted({r["d"] for r in rows})
    for ax, direction in zip(axes[:2], ("fwd", "bwd")):
        for name in ("triton", "sdpa_flash", "sdpa_cudnn"):
            for d, marker in zip(head_dims, "os^v"):
                for causal, style in ((False, "-"), (True, "--")):
                    pts = [(r["N"], r[name][direction]["rate"]) for r in rows
                           if r["d"] == d and r["causal"] == causal and "rate" in r[name][direction]]
                    if pts:
                        ax.plot(*zip(*pts), style, marker=marker, color=colors[name],
                                label=f"{name} d={d}{' causal' if causal else ''}")
        title = f"attention {direction}" + (f" (B={rows[0]['B']}, H={rows[0]['H']})" if rows else "")
        ax.set(xscale="log", xlabel="sequence length N", ylabel="TFLOP/s", title=title)
        ax.legend(fontsize=6, ncol=2)
    ax = axes[2]
    for name in ("triton", "torch"):
        for direction, style in (("fwd", "-"), ("bwd", "--")):
            pts = [(r["N"], r[name][direction]["pct_of_copy"]) for r in _rows(res, "layernorm")
                   if "pct_of_copy" in r[name][direction]]
            if pts:
                ax.plot(*zip(*pts), style, marker="o", color=colors[name], label=f"{name} {direction}")
    ax.axhline(TARGETS["layernorm_fwd_pct_of_copy"], color="grey", lw=0.8, ls=":", label="target fwd 85 %")
    m = res["layernorm"][0]["M"] if res.get("layernorm") else "?"
    ffn_rows = _rows(res, "ffn")
    ax.set(xscale="log", xlabel=f"N (M = {m})", ylabel="% of a same-size copy's bandwidth", title="LayerNorm")
    ax.legend(fontsize=7)
    ax = axes[3]
    labels = [f"M={r['M']}\nd={r['d']}" for r in ffn_rows]
    xs = np.arange(len(labels))
    for i, (name, direction) in enumerate((("triton", "fwd"), ("torch", "fwd"), ("triton", "bwd"), ("torch", "bwd"))):
        vals = [r[name][direction].get("rate", 0.0) for r in ffn_rows]
        ax.bar(xs + (i - 1.5) * 0.2, vals, 0.2, color=colors[name], alpha=1.0 if direction == "fwd" else 0.5,
               label=f"{name} {direction}")
    ax.set_xticks(xs, labels)
    ax.set(ylabel="TFLOP/s", title="FFN (GELU-tanh, d_ff = 4d)")
    ax.legend(fontsize=7)
    fig.suptitle(f"Triton kernels vs PyTorch, bfloat16, on {res.get('device', '?')} (medians of >= {MIN_SAMPLES} "
                 "timings)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def run(quick=False, profile=None, save=None, deadline=None, draw=True):
    """The GPU sweep, or ``{"skipped": ...}`` without CUDA.

    ``profile``: "full" (default; about 10 minutes on an H200), "quick" (``quick=True``) or "check" (make gpu-check).
    ``save``: called with the results so far after every row (make gpu-check writes them to disk). ``deadline``: a
    ``time.monotonic()`` after which no new row starts. ``draw``: write the figure at the end (make gpu-check draws it
    itself, last).
    """
    import torch

    if not torch.cuda.is_available():
        print(SKIPPED, flush=True)
        return {"skipped": SKIPPED}
    kernels = _import_native_kernels()
    import triton

    cfg = PROFILES[profile or ("quick" if quick else "full")]
    device, dtype = torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    res = {"device": torch.cuda.get_device_name(0), "dtype": "bfloat16", "profile": profile or
           ("quick" if quick else "full"), "torch": torch.__version__, "triton": triton.__version__,
           "cuda": torch.version.cuda, "targets": TARGETS,
           "timing": f"triton.testing.do_bench, L2 flushed; median, 20th and 80th percentiles (ms) of >= "
                     f"{MIN_SAMPLES} samples; rates at each", "not_run": []}
    jobs = [("attention", c, _attention) for c in cfg["attention"]] + \
           [("layernorm", c, _layernorm) for c in cfg["layernorm"]] + [("ffn", c, _ffn) for c in cfg["ffn"]]
    for section, case, fn in jobs:
        if deadline is not None and time.monotonic() > deadline:
            res["not_run"].append({section: case})
            continue
        try:
            row = fn(kernels, case, device, dtype)
        except Exception as e:  # noqa: BLE001 -- one broken row must not lose the others
            row = dict(case, error=_error(e))
            print(f"{section} {case}: {row['error']}", flush=True)
        res.setdefault(section, []).append(row)
        torch.cuda.empty_cache()
        res["ratios"] = ratios(res)
        if save is not None:
            save(res)
    if deadline is None or time.monotonic() < deadline:
        try:
            res["fp32"] = _fp32(kernels, cfg["fp32"], device)
        except Exception as e:  # noqa: BLE001
            res["fp32"] = {"error": _error(e)}
        res["numpy_host_float32_forward"] = _numpy_host(cfg["numpy"])
    else:
        res["not_run"] += ["fp32", "numpy_host_float32_forward"]
    if save is not None:
        save(res)
    if draw:
        figure(res)
        res["figure"] = str(FIGURE.relative_to(ROOT))
    return res
