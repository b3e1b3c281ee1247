"""The NumPy reference against PyTorch CPU eager: float32 forward + backward, same data, same machine, same threads.

    python -m bench.run ops            # attention B=4, H=8, T=512, d=64; LayerNorm 4096x1024; FFN 4096x512->2048->512
    python -m bench.run ops --quick    # small sizes, a smoke run

Each result is a ratio ``torch_time / numpy_time``: above 1 the NumPy reference is faster. Times are medians of
several repeats after a warm-up (torch's first calls are slow), measured with ``time.perf_counter``. NumPy and
torch are timed in alternation inside one loop, so a neighbour's load on the shared cores slows both sides of a
ratio. Not equally, though: load hurts most the side whose threads meet at a barrier most often (torch at every op,
NumPy's BLAS at every small matmul), since each barrier waits for a thread that another process took off a core.
The result records the load average: a ratio measured under a load above the core count says more about the load
than about the code. Targets (issue 2): attention and the FFN at least 1.0x torch eager, LayerNorm at least 0.5x.

Attention is measured twice: in this process (NumPy's BLAS with one thread per core, under the reference's own two
worker threads over (batch, head) slices), and in a child process whose BLAS runs one thread per call, so that the
two workers are the only parallelism (see ``_attention_times_single_blas``). Torch has the same thread count in both.

A second measurement is memory, not time: the ``tracemalloc`` peak of ``reference.ops.attention.forward`` (which builds
the (T, T) score matrix) against ``forward_blocked`` (the online softmax, one key block at a time), which grows as
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
TARGETS = {"attention_vs_eager": 1.0, "attention_vs_sdpa": None, "attention_vs_eager_blas1": 1.0,
           "layernorm": 0.5, "ffn": 1.0}

FULL = {"attention": dict(B=4, H=8, T=512, d=64), "layernorm": dict(M=4096, N=1024),
        "ffn": dict(M=4096, d_model=512, d_ff=2048), "repeats": 9, "warmup": 3,
        "memory_T": [512, 1024, 2048, 4096], "memory_d": 64}
QUICK = {"attention": dict(B=2, H=2, T=64, d=16), "layernorm": dict(M=256, N=128),
         "ffn": dict(M=256, d_model=64, d_ff=256), "repeats": 5, "warmup": 3,
         "memory_T": [128, 256, 512], "memory_d": 16}


def _blas_threads():
    """How many threads NumPy's BLAS uses: its environment variable if set, else one per core (OpenBLAS's default)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            return int(os.environ[var])
    return os.cpu_count()


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _compare(numpy_fn, torch_fns, repeats, warmup):
    """Median seconds of ``numpy_fn`` and of each torch function, timed in alternation after ``warmup`` calls each."""
    for _ in range(warmup):
        numpy_fn()
        for fn in torch_fns.values():
            fn()
    times = {"numpy": [], **{name: [] for name in torch_fns}}
    for _ in range(repeats):
        times["numpy"].append(_time(numpy_fn))
        for name, fn in torch_fns.items():
            times[name].append(_time(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


def _attention_case(torch, F, B, H, T, d, repeats, warmup, rng):
    q, k, v, dout = (rng.standard_normal((B, H, T, d), dtype=np.float32) for _ in range(4))  # (B, H, T, d) each
    tq, tk, tv = (torch.from_numpy(a).requires_grad_(True) for a in (q, k, v))
    tdout = torch.from_numpy(dout)
    scale = 1.0 / np.sqrt(d)

    def numpy_step():
        out, cache = attention.forward(q, k, v)
        attention.backward(dout, cache)

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
        y, cache = layernorm.forward(x, gamma, beta)
        layernorm.backward(dy, cache)

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
        y, cache = ffn.forward(x, W1, b1, W2, b2, activation="relu")
        ffn.backward(dy, cache)

    def torch_step():
        torch.autograd.grad(torch.relu(tx @ tW1 + tb1) @ tW2 + tb2, tensors, tdy)

    return _compare(numpy_step, {"torch_eager": torch_step}, repeats, warmup)


def _memory(Ts, d, rng):
    """Peak memory of the naive and the blocked attention forward (B = H = 1, float32) for each T."""
    rows = []
    for T in Ts:
        q, k, v = (rng.standard_normal((1, 1, T, d), dtype=np.float32) for _ in range(3))  # (1, 1, T, d) each
        rows.append({"T": T, "d": d,
                     "naive_forward_bytes": attention.peak_memory(attention.forward, q, k, v)[1],
                     "blocked_forward_bytes": attention.peak_memory(attention.forward_blocked, q, k, v)[1],
                     "TxT_float32_bytes": T * T * 4, "Txd_float32_bytes": T * d * 4})
    return rows


def _figure(ratios, memory, quick, note):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1.2, 1]})
    names = list(ratios)[::-1]                                  # barh draws bottom-up: first entry on top
    labels = {"attention_vs_eager": "attention vs torch eager",
              "attention_vs_eager_blas1": "attention vs torch eager\n(NumPy BLAS 1 thread, 2 head workers)",
              "attention_vs_sdpa": "attention vs fused SDPA", "layernorm": "LayerNorm vs F.layer_norm",
              "ffn": "FFN (relu) vs torch eager"}
    colors = ["tab:gray" if TARGETS[n] is None else "tab:green" if ratios[n] >= TARGETS[n] else "tab:red"
              for n in names]
    bars = ax.barh([labels[n] for n in names], [ratios[n] for n in names], color=colors)
    for bar, n in zip(bars, names):
        ax.annotate(f" {ratios[n]:.2f}x", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                    ha="left", va="center", fontsize=9)
    ax.axvline(1.0, color="k", ls="--", lw=1, label="target 1.0x (attention, FFN)")
    ax.axvline(0.5, color="k", ls=":", lw=1, label="target 0.5x (LayerNorm)")
    ax.set_xlim(0, 1.25 * max(1.0, *ratios.values()))
    ax.set_xlabel("torch time / NumPy time  (>1: NumPy faster)")
    ax.set_title("float32 forward + backward, CPU" + (" (quick sizes)" if quick else "") + f"\n{note}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")

    Ts = [r["T"] for r in memory]
    mib = 2.0 ** 20
    bx.loglog(Ts, [r["naive_forward_bytes"] / mib for r in memory], "o-", label="forward (materialises T x T)")
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


def attention_times(quick, torch_threads):
    """Median seconds of the attention case alone (run in a child process by :func:`run`, see there)."""
    import torch
    import torch.nn.functional as F

    cfg = QUICK if quick else FULL
    torch.set_num_threads(torch_threads)
    return _attention_case(torch, F, **cfg["attention"], repeats=cfg["repeats"], warmup=cfg["warmup"],
                           rng=np.random.default_rng(0))


def _attention_times_single_blas(quick, torch_threads):
    """The attention case in a child process whose NumPy BLAS runs one thread per call.

    ``reference.ops.attention`` already runs the (batch, head) slices on two worker threads; with a two-thread BLAS
    under them, four threads share two cores, and every small matmul waits at BLAS's barrier for a thread that
    is not running. That waiting grows with the machine's load. A one-thread BLAS (it must be set before NumPy
    is imported, hence the child process) leaves the parallelism to the workers: still two cores, as torch has.
    """
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_NUM_THREADS="1")
    code = ("import json; from bench import ops; "
            f"print(json.dumps(ops.attention_times({quick!r}, {torch_threads})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick=False):
    """Time the reference against torch and measure attention's peak memory; write the figure; return the numbers."""
    import torch
    import torch.nn.functional as F

    cfg = QUICK if quick else FULL
    threads = _blas_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()[0]
    reps, warm = cfg["repeats"], cfg["warmup"]
    att = _attention_case(torch, F, **cfg["attention"], repeats=reps, warmup=warm, rng=rng)
    att1 = _attention_times_single_blas(quick, threads)
    ln = _layernorm_case(torch, F, **cfg["layernorm"], repeats=reps, warmup=warm, rng=rng)
    mlp = _ffn_case(torch, **cfg["ffn"], repeats=reps, warmup=warm, rng=rng)
    ratios = {"attention_vs_eager": att["torch_eager"] / att["numpy"],
              "attention_vs_eager_blas1": att1["torch_eager"] / att1["numpy"],
              "attention_vs_sdpa": att["torch_sdpa"] / att["numpy"],
              "layernorm": ln["torch_eager"] / ln["numpy"],
              "ffn": mlp["torch_eager"] / mlp["numpy"]}
    load_after = os.getloadavg()[0]
    memory = _memory(cfg["memory_T"], cfg["memory_d"], rng)
    note = (f"{threads} NumPy BLAS / {torch.get_num_threads()} torch threads; "
            f"load avg {load_before:.1f} on {os.cpu_count()} cores")
    _figure(ratios, memory, quick, note)
    for name, r in ratios.items():
        target = TARGETS[name]
        verdict = "" if target is None else ("  meets" if r >= target else "  MISSES") + f" target {target:.1f}x"
        print(f"{name:>24}: {r:5.2f}x{verdict}")
    for row in memory:
        print(f"  T={row['T']:>5}: peak forward {row['naive_forward_bytes'] / 2**20:8.1f} MiB, "
              f"forward_blocked {row['blocked_forward_bytes'] / 2**20:6.2f} MiB")
    return {"sizes": {k: cfg[k] for k in ("attention", "layernorm", "ffn")},
            "repeats": reps, "warmup": warm, "numpy_blas_threads": threads,
            "torch_num_threads": torch.get_num_threads(),
            # a 1-minute load average above the core count distorts every ratio: each side's threads wait at barriers
            # for threads that other processes have taken off the cores
            "load_average_1min": {"before": round(load_before, 2), "after": round(load_after, 2),
                                  "cores": os.cpu_count()},
            "seconds_median": {"attention": att, "attention_numpy_blas_1_thread": att1, "layernorm": ln, "ffn": mlp},
            "ratios_torch_over_numpy": {k: round(v, 3) for k, v in ratios.items()},
            "targets": {k: v for k, v in TARGETS.items() if v is not None},
            "attention_peak_memory": memory,
            "figure": str(FIGURE.relative_to(ROOT))}
