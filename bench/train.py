"""Tokens per second of one training step: the NumPy GPT (hand-written backward) against the same model in PyTorch.

One step = forward, cross-entropy, backward, AdamW update, in float32 on the CPU, same shapes, same initial
parameters, same machine. The PyTorch model is Hugging Face's ``GPT2LMHeadModel`` loaded with our parameters
(``gpt.to_hf_gpt2``); tests/models/test_gpt.py checks that it computes the same logits, gradients and updates. It runs in
eager mode twice: with the "eager" attention (matmul, mask, softmax, matmul: the same arithmetic as ours) and with
``scaled_dot_product_attention`` ("sdpa", PyTorch's fused kernel), which is what a PyTorch user gets by default.

Each measurement runs in its own process with a pinned thread count (OpenBLAS threads for NumPy, intra-op threads
for torch): 1 thread, and all the machine's cores. (``reference/ops/attention.py`` also spreads its (batch, head)
slices over 2 Python threads in both cases.) On a machine shared with other jobs, multi-threaded BLAS can slow
down by 10x while its threads wait for each other; the 1-thread numbers are the stable comparison there.

Config (the issue's): d_model=256, n_layer=4, n_head=8, T=256, B=16, and a byte-sized vocabulary V=256 (between
the char tokenizer's 318 ids and a small BPE). The reported time is the fastest of a few steps after one warm-up
step. The headline ratio (``ratio_numpy_over_torch_eager``) is the all-cores one.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from reference.models import gpt
from reference.training import optim

ROOT = Path(__file__).resolve().parent.parent
FULL = dict(vocab_size=256, d_model=256, n_layer=4, n_head=8, T=256, B=16, repeats=5)
QUICK = dict(vocab_size=64, d_model=64, n_layer=2, n_head=4, T=64, B=4, repeats=2)
ADAMW = dict(betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def _best_seconds(step, repeats):
    """The fastest of ``repeats`` timed steps after one warm-up step: on a shared machine other jobs only ever add
    time, so the minimum is the least disturbed measurement (as ``timeit`` advises)."""
    step()                                           # warm-up: first-touch allocations, lazy inits
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(min(times))


def numpy_step_seconds(params, config, ids, targets, repeats, lr=1e-4):
    state = optim.adamw_init(params)

    def step():
        loss, grads = gpt.loss_and_grads(params, config, ids, targets)
        optim.adamw_step(params, grads, state, lr, **ADAMW, decay_mask=optim.decay_matrices)

    return _best_seconds(step, repeats)


def torch_step_seconds(params, config, ids, targets, repeats, attn_implementation, lr=1e-4):
    import torch
    import transformers

    cfg = transformers.GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.d_model,
                                  n_layer=config.n_layer, n_head=config.n_head, activation_function="gelu_new",
                                  layer_norm_epsilon=config.ln_eps, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0, attn_implementation=attn_implementation)
    model = transformers.GPT2LMHeadModel(cfg)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in gpt.to_hf_gpt2(params).items()}, strict=False)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "wte" not in n and "wpe" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "wte" not in n and "wpe" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": ADAMW["weight_decay"]},
                             {"params": rest, "weight_decay": 0.0}], lr=lr, betas=ADAMW["betas"], eps=ADAMW["eps"])
    x, y = torch.from_numpy(ids), torch.from_numpy(targets)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()

    return _best_seconds(step, repeats)


def profile_numpy_step(params, config, ids, targets, top=12):
    """The top functions of one NumPy step by their own time (cProfile 'tottime')."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    loss, grads = gpt.loss_and_grads(params, config, ids, targets)
    prof.disable()
    stats = pstats.Stats(prof).sort_stats("tottime")
    rows = []
    for (file, line, func), (_, ncalls, tottime, _, _) in sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]:
        rows.append({"function": f"{file.rsplit('/', 1)[-1]}:{line}({func})", "calls": ncalls,
                     "seconds": round(tottime, 4)})
    return rows


def measure(kind, sizes, profile=False):
    """Median step time of one implementation ("numpy", "eager" or "sdpa") on the benchmark's model and batch."""
    config = gpt.GPTConfig(vocab_size=sizes["vocab_size"], block_size=sizes["T"], n_layer=sizes["n_layer"],
                           n_head=sizes["n_head"], d_model=sizes["d_model"])
    rng = np.random.default_rng(0)
    params = gpt.init_params(config, rng, dtype=np.float32)
    ids = rng.integers(0, config.vocab_size, size=(sizes["B"], sizes["T"]))
    targets = rng.integers(0, config.vocab_size, size=(sizes["B"], sizes["T"]))
    if kind == "numpy":
        out = {"seconds": numpy_step_seconds(params, config, ids, targets, sizes["repeats"])}
        if profile:
            out["profile_top_costs"] = profile_numpy_step(params, config, ids, targets)
        return out
    return {"seconds": torch_step_seconds(params, config, ids, targets, sizes["repeats"], kind)}


def _measure_in_subprocess(kind, threads, quick, profile):
    """Run :func:`measure` in a fresh interpreter whose BLAS / torch thread count is ``threads``.

    OpenBLAS reads its thread count when NumPy is first imported, so the only clean way to pin it is a new process.
    """
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "bench.train", "--child", kind, "--threads", str(threads)]
    cmd += ["--quick"] * quick + ["--profile"] * profile
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.train child {kind} (threads={threads}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick=False):
    s = QUICK if quick else FULL
    tokens = s["B"] * s["T"]
    thread_counts = sorted({1, os.cpu_count() or 1})
    result = {"config": {k: v for k, v in s.items() if k != "repeats"}, "dtype": "float32", "by_threads": {}}
    for threads in thread_counts:
        times = {kind: _measure_in_subprocess(kind, threads, quick, profile=(kind == "numpy" and threads == 1))
                 for kind in ("numpy", "eager", "sdpa")}
        row = {"step_seconds": {k: round(v["seconds"], 4) for k, v in times.items()},
               "tokens_per_second": {k: round(tokens / v["seconds"], 1) for k, v in times.items()},
               "ratio_numpy_over_torch_eager": round(times["eager"]["seconds"] / times["numpy"]["seconds"], 3),
               "ratio_numpy_over_torch_sdpa": round(times["sdpa"]["seconds"] / times["numpy"]["seconds"], 3)}
        if "profile_top_costs" in times["numpy"]:
            result["profile_top_costs_numpy_1_thread"] = times["numpy"]["profile_top_costs"]
        result["by_threads"][str(threads)] = row
        print(f"threads={threads}: " + ", ".join(f"{k} {v:,.0f} tok/s" for k, v in row["tokens_per_second"].items())
              + f"; numpy/torch eager {row['ratio_numpy_over_torch_eager']:.2f}, "
                f"numpy/torch sdpa {row['ratio_numpy_over_torch_sdpa']:.2f}", flush=True)
    top = result["by_threads"][str(thread_counts[-1])]
    result["ratio_numpy_over_torch_eager"] = top["ratio_numpy_over_torch_eager"]
    result["ratio_numpy_over_torch_sdpa"] = top["ratio_numpy_over_torch_sdpa"]
    _figure(result)
    return result


def _figure(result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"numpy": "NumPy (hand-written backward)", "eager": "PyTorch eager, matmul attention",
              "sdpa": "PyTorch eager, SDPA attention"}
    colors = {"numpy": "tab:blue", "eager": "tab:orange", "sdpa": "tab:red"}
    threads = list(result["by_threads"])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.27
    for i, kind in enumerate(labels):
        xs = np.arange(len(threads)) + (i - 1) * width
        values = [result["by_threads"][t]["tokens_per_second"][kind] for t in threads]
        bars = ax.bar(xs, values, width, label=labels[kind], color=colors[kind])
        ax.bar_label(bars, fmt="{:,.0f}", fontsize=8)
    ax.set_xticks(np.arange(len(threads)), [f"{t} thread{'s' * (t != '1')}" for t in threads])
    ax.set_ylabel("training tokens / s (float32, CPU)")
    c = result["config"]
    ax.set_title(f"One training step (fwd + bwd + AdamW): d_model={c['d_model']}, n_layer={c['n_layer']}, "
                 f"n_head={c['n_head']}, T={c['T']}, B={c['B']}", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    path = ROOT / "figures" / "bench_train.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _child(argv=None):
    ap = argparse.ArgumentParser(description="one measurement of bench.train, in its own process")
    ap.add_argument("--child", required=True, choices=("numpy", "eager", "sdpa"))
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    if args.child != "numpy":
        import torch

        torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.child, QUICK if args.quick else FULL, args.profile)))


if __name__ == "__main__":
    _child()
