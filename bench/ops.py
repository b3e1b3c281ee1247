"""The fast NumPy ops against PyTorch CPU eager: float32 forward + backward, same data, same machine, same threads.

    python -m bench.run ops            # attention B=4, H=8, T=512, d=64; LayerNorm 4096x1024; FFN 4096x512->2048->512
    python -m bench.run ops --quick    # small sizes, a smoke run

Each result is a ratio ``torch_time / numpy_time``: above 1 the NumPy reference is faster. NumPy runs the fast
variants (``forward_fast``/``backward_fast``), torch the equation written out in eager ops (attention: matmul,
mask-free softmax, matmul, and also ``scaled_dot_product_attention``, its fused kernel; LayerNorm:
``F.layer_norm``; the FFN: two ``addmm`` and a ReLU).

Threads, the same budget on both sides, as in ``bench/train.py``: each thread count (1, and one per core) runs in
its own process, with NumPy's BLAS on one thread per call (``OPENBLAS_NUM_THREADS=1``) and the fast ops on ``n``
threads of their own (``reference/_threads.py``), torch on ``torch.set_num_threads(n)``. Inside a process NumPy and
torch take turns, one call each, ``repeats`` rounds after a warm-up, and each side's median is reported; the 1-minute
load average before and after each process stands beside its ratios (a load above the core count distorts them).
Targets: attention and the FFN at least 1.0x torch eager, LayerNorm at least 0.7x.

A second measurement is memory, not time: the ``tracemalloc`` peak of ``reference.ops.attention.forward_fast`` (which
builds the (T, T) score matrix, in place) against ``forward_blocked`` (the online softmax, one key block at a time), which grows as
O(T^2) against O(T d) (``attention.peak_memory``: NumPy reports its array buffers to ``tracemalloc``).

Writes ``figures/bench_ops.png``: the ratios with their targets, and peak memory against T.
"""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from reference.ops import attention, ffn, layernorm

ROOT = Path(__file__).resolve().parent.parent
FIGURE = ROOT / "figures" / "bench_ops.png"
TARGETS = {"attention_vs_eager": 1.0, "attention_vs_sdpa": None, "layernorm": 0.7, "ffn": 1.0}

FULL = {"attention": dict(B=4, H=8, T=512, d=64), "layernorm": dict(M=4096, N=1024),
        "ffn": dict(M=4096, d_model=512, d_ff=2048), "repeats": 11, "warmup": 3,
        "memory_T": [512, 1024, 2048, 4096], "memory_d": 64}
QUICK = {"attention": dict(B=2, H=2, T=64, d=16), "layernorm": dict(M=256, N=128),
         "ffn": dict(M=256, d_model=64, d_ff=256), "repeats": 5, "warmup": 3,
         "memory_T": [128, 256, 512], "memory_d": 16}


def _compare(numpy_fn, torch_fns, repeats, warmup):
    """Median seconds of ``numpy_fn`` and of each torch function, called in turn after ``warmup`` calls each."""
    fns = {"numpy": numpy_fn, **torch_fns}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _attention_case(torch, F, B, H, T, d, repeats, warmup, rng):
    q, k, v, dout = (rng.standard_normal((B, H, T, d), dtype=np.float32) for _ in range(4))  # (B, H, T, d) each
    tq, tk, tv = (torch.from_numpy(a).requires_grad_(True) for a in (q, k, v))
    tdout = torch.from_numpy(dout)
    scale = 1.0 / np.sqrt(d)

    def numpy_step():
        out, cache = attention.forward_fast(q, k, v)
        attention.backward_fast(dout, cache)

    def eager_step():
        # the equation written out, as a learner would in torch: softmax(Q K^T / sqrt(d)) V
        p = torch.softmax((tq @ tk.transpose(-2, -1)) * scale, dim=-1)  # (B, H, T, T)
        torch.autograd.grad(p @ tv, (tq, tk, tv), tdout)

    def sdpa_step():
        torch.autograd.grad(F.scaled_dot_product_attention(tq, tk, tv), (tq, tk, tv), tdout)

    return _compare(numpy_step, {"torch_eager": eager_step, "torch_sdpa": sdpa_step}, repeats, warmup)


def _layernorm_case(torch, F, M, N, repeats, warmup, rng):
    x, dy = (rng.standard_normal((M, N), dtype=np.float32) for _ in range(2))  # (M, N)
    gamma = (1.0 + 0.1 * rng.standard_normal(N)).astype(np.float32)            # (N,)
    beta = (0.1 * rng.standard_normal(N)).astype(np.float32)                    # (N,)
    tx, tg, tb = (torch.from_numpy(a).requires_grad_(True) for a in (x, gamma, beta))
    tdy = torch.from_numpy(dy)

    def numpy_step():
        y, cache = layernorm.forward_fast(x, gamma, beta)
        layernorm.backward_fast(dy, cache)

    def torch_step():
        torch.autograd.grad(F.layer_norm(tx, (N,), tg, tb, eps=1e-5), (tx, tg, tb), tdy)

    return _compare(numpy_step, {"torch_eager": torch_step}, repeats, warmup)


def _ffn_case(torch, M, d_model, d_ff, repeats, warmup, rng):
    x, dy = rng.standard_normal((M, d_model), dtype=np.float32), rng.standard_normal((M, d_model), dtype=np.float32)
    W1 = (rng.standard_normal((d_model, d_ff)) / np.sqrt(d_model)).astype(np.float32)  # (d_model, d_ff)
    W2 = (rng.standard_normal((d_ff, d_model)) / np.sqrt(d_ff)).astype(np.float32)     # (d_ff, d_model)
    b1, b2 = np.zeros(d_ff, np.float32), np.zeros(d_model, np.float32)
    tensors = [torch.from_numpy(a).requires_grad_(True) for a in (x, W1, b1, W2, b2)]
    tx, tW1, tb1, tW2, tb2 = tensors
    tdy = torch.from_numpy(dy)

    def numpy_step():
        y, cache = ffn.forward_fast(x, W1, b1, W2, b2, activation="relu")
        ffn.backward_fast(dy, cache)

    def torch_step():
        torch.autograd.grad(torch.relu(tx @ tW1 + tb1) @ tW2 + tb2, tensors, tdy)

    return _compare(numpy_step, {"torch_eager": torch_step}, repeats, warmup)


def measure(threads, quick):
    """Median seconds of every case on ``threads`` threads a side (run in a child process by :func:`run`)."""
    import torch
    import torch.nn.functional as F

    from reference import _threads

    cfg = QUICK if quick else FULL
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()[0]
    reps, warm = cfg["repeats"], cfg["warmup"]
    with _threads.using(threads):
        times = {"attention": _attention_case(torch, F, **cfg["attention"], repeats=reps, warmup=warm, rng=rng),
                 "layernorm": _layernorm_case(torch, F, **cfg["layernorm"], repeats=reps, warmup=warm, rng=rng),
                 "ffn": _ffn_case(torch, **cfg["ffn"], repeats=reps, warmup=warm, rng=rng)}
    return {"seconds_median": times,
            "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}}


def _ratios(times):
    att, ln, mlp = times["attention"], times["layernorm"], times["ffn"]
    return {"attention_vs_eager": att["torch_eager"] / att["numpy"],
            "attention_vs_sdpa": att["torch_sdpa"] / att["numpy"],
            "layernorm": ln["torch_eager"] / ln["numpy"], "ffn": mlp["torch_eager"] / mlp["numpy"]}


def _memory(Ts, d, rng):
    """Peak memory of the naive and the blocked attention forward (B = H = 1, float32) for each T."""
    rows = []
    for T in Ts:
        q, k, v = (rng.standard_normal((1, 1, T, d), dtype=np.float32) for _ in range(3))  # (1, 1, T, d) each
        rows.append({"T": T, "d": d,
                     "naive_forward_bytes": attention.peak_memory(attention.forward_fast, q, k, v)[1],
                     "blocked_forward_bytes": attention.peak_memory(attention.forward_blocked, q, k, v)[1],
                     "TxT_float32_bytes": T * T * 4, "Txd_float32_bytes": T * d * 4})
    return rows


def _figure(by_threads, memory, quick):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.2, 1]})
    labels = {"attention_vs_eager": "attention vs torch eager", "attention_vs_sdpa": "attention vs fused SDPA",
              "layernorm": "LayerNorm vs F.layer_norm", "ffn": "FFN (relu) vs torch eager"}
    names = list(labels)[::-1]                                  # barh draws bottom-up: first entry on top
    height = 0.8 / len(by_threads)
    for i, (threads, row) in enumerate(by_threads.items()):
        ratios = row["ratios_torch_over_numpy"]
        ys = np.arange(len(names)) + (i - (len(by_threads) - 1) / 2) * height
        bars = ax.barh(ys, [ratios[n] for n in names], height,
                       label=f"{threads} thread{'s' * (threads != '1')} (load {row['load_average_1min']['before']})")
        for bar, n in zip(bars, names):
            ax.annotate(f" {ratios[n]:.2f}x", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                        ha="left", va="center", fontsize=8)
    ax.set_yticks(np.arange(len(names)), [labels[n] for n in names])
    ax.axvline(1.0, color="k", ls="--", lw=1, label="target 1.0x (attention, FFN)")
    ax.axvline(0.7, color="k", ls=":", lw=1, label="target 0.7x (LayerNorm)")
    top = max(r for row in by_threads.values() for r in row["ratios_torch_over_numpy"].values())
    ax.set_xlim(0, 1.3 * max(1.0, top))
    ax.set_xlabel("torch time / NumPy time  (>1: NumPy faster)")
    ax.set_title("float32 forward + backward, CPU, same threads each side" + (" (quick sizes)" if quick else ""),
                 fontsize=10)
    ax.legend(fontsize=8, loc="lower right")

    Ts = [r["T"] for r in memory]
    mib = 2.0 ** 20
    bx.loglog(Ts, [r["naive_forward_bytes"] / mib for r in memory], "o-", label="forward_fast (materialises T x T)")
    bx.loglog(Ts, [r["blocked_forward_bytes"] / mib for r in memory], "s-", label="forward_blocked (online softmax)")
    bx.loglog(Ts, [r["TxT_float32_bytes"] / mib for r in memory], "k:", lw=1, label="one T x T float32 matrix")
    bx.loglog(Ts, [r["Txd_float32_bytes"] / mib for r in memory], "k--", lw=1, label="one T x d float32 matrix")
    bx.set_xticks(Ts, [str(t) for t in Ts])
    bx.minorticks_off()
    bx.set_xlabel("sequence length T  (B = H = 1, d = %d)" % memory[0]["d"])
    bx.set_ylabel("tracemalloc peak (MiB)")
    bx.set_title("attention forward: peak memory")
    bx.legend(fontsize=8)
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _in_subprocess(threads, quick):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = f"import json; from bench import ops; print(json.dumps(ops.measure({threads}, {quick!r})))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.ops (threads={threads}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick=False):
    """Time the fast ops against torch on 1 thread and on every core; measure attention's peak memory."""
    cfg = QUICK if quick else FULL
    by_threads = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        m = _in_subprocess(threads, quick)
        ratios = _ratios(m["seconds_median"])
        by_threads[str(threads)] = {"ratios_torch_over_numpy": {k: round(v, 3) for k, v in ratios.items()},
                                    "load_average_1min": m["load_average_1min"],
                                    "seconds_median": m["seconds_median"]}
        for name, r in ratios.items():
            target = TARGETS[name]
            verdict = "" if target is None else ("  meets" if r >= target else "  MISSES") + f" target {target:.1f}x"
            print(f"threads={threads} {name:>20}: {r:5.2f}x{verdict}", flush=True)
        print(f"threads={threads} load average {m['load_average_1min']['before']} -> "
              f"{m['load_average_1min']['after']} on {os.cpu_count()} cores", flush=True)
    memory = _memory(cfg["memory_T"], cfg["memory_d"], np.random.default_rng(0))
    _figure(by_threads, memory, quick)
    for row in memory:
        print(f"  T={row['T']:>5}: peak forward {row['naive_forward_bytes'] / 2**20:8.1f} MiB, "
              f"forward_blocked {row['blocked_forward_bytes'] / 2**20:6.2f} MiB")
    return {"sizes": {k: cfg[k] for k in ("attention", "layernorm", "ffn")}, "repeats": cfg["repeats"],
            "warmup": cfg["warmup"], "cores": os.cpu_count(), "by_threads": by_threads,
            "targets": {k: v for k, v in TARGETS.items() if v is not None},
            "attention_peak_memory": memory, "figure": str(FIGURE.relative_to(ROOT))}
