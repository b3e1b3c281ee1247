"""One GPT training step, NumPy (hand-written backward, fast ops) against PyTorch eager, side by side.

    python -m bench.run train            # d_model=256, n_layer=4, n_head=8, T=256, B=16, V=256, float32
    python -m bench.run train --quick    # a small model, a smoke run

One step = forward, cross-entropy, backward, AdamW update (``optim.adamw_step_fast``), in float32 on the CPU, same
shapes, same initial parameters, same machine. The PyTorch model is Hugging Face's ``GPT2LMHeadModel`` loaded with
our parameters (``gpt.to_hf_gpt2``); tests/models/test_gpt.py checks that it computes the same logits, gradients and
updates. It runs in eager mode twice: with the "eager" attention (matmul, mask, softmax, matmul: the same arithmetic
as ours) and with ``scaled_dot_product_attention`` ("sdpa", PyTorch's fused kernel), what a PyTorch user gets by
default. Its AdamW is ``torch.optim.AdamW`` (the foreach implementation, its default on the CPU).

Threads, the same budget on both sides: each thread count runs in its own process (OpenBLAS reads its thread count
once, when NumPy is imported). NumPy's BLAS runs one thread per call there (``OPENBLAS_NUM_THREADS=1``) and the
fast ops split their work over ``n`` threads of their own (``reference/_threads.py``); torch gets
``torch.set_num_threads(n)``. On 1 thread, both sides are strictly serial.

Timing: inside a process the three implementations take turns, one step each, ``repeats`` rounds after warm-up
steps, so a neighbour's load falls on all of them alike; the reported time is each one's median step and the ratio
is torch's median over NumPy's (above 1: NumPy faster). The machine's 1-minute load average is recorded before and
after every process, beside its ratios: with a load above the core count, the ratios describe the load as much as
the code.

Where the time goes: a profile of one NumPy step and one torch eager step on 1 thread, in CPU seconds by operation
(``cProfile`` on our ops' fast functions, ``torch.profiler`` on torch's aten ops).
"""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from reference import tree
from reference.models import gpt
from reference.training import optim

ROOT = Path(__file__).resolve().parent.parent
FULL = dict(vocab_size=256, d_model=256, n_layer=4, n_head=8, T=256, B=16, repeats=7, warmup=2)
QUICK = dict(vocab_size=64, d_model=64, n_layer=2, n_head=4, T=64, B=4, repeats=3, warmup=1)
ADAMW = dict(lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
KINDS = ("numpy", "eager", "sdpa")
# the fast functions whose CPU time the NumPy profile reports, by the name of the op they belong to
PROFILED_OPS = {"linear": ("linear.py", ("forward_fast", "backward_fast")),
                "attention": ("attention.py", ("forward_fast", "backward_fast")),
                "GELU": ("activations.py", ("gelu_forward_fast", "gelu_backward_fast")),
                "LayerNorm": ("layernorm.py", ("forward_fast", "backward_fast")),
                "cross-entropy": ("cross_entropy.py", ("forward", "backward")),
                "embedding": ("embedding.py", ("forward", "backward")),
                "AdamW": ("optim.py", ("adamw_step_fast",))}


def _setup(sizes):
    config = gpt.GPTConfig(vocab_size=sizes["vocab_size"], block_size=sizes["T"], n_layer=sizes["n_layer"],
                           n_head=sizes["n_head"], d_model=sizes["d_model"])
    rng = np.random.default_rng(0)
    params = gpt.init_params(config, rng, dtype=np.float32)
    ids = rng.integers(0, config.vocab_size, size=(sizes["B"], sizes["T"]))
    targets = rng.integers(0, config.vocab_size, size=(sizes["B"], sizes["T"]))
    return config, params, ids, targets


def numpy_step(params, config, ids, targets):
    """A closure running one NumPy training step (its own copy of the parameters and AdamW state)."""
    params = tree.unflatten({k: v.copy() for k, v in tree.flatten(params).items()})    # its own copy
    state = optim.adamw_init(params)

    def step():
        _, grads = gpt.loss_and_grads(params, config, ids, targets)
        optim.adamw_step_fast(params, grads, state, **ADAMW, decay_mask=optim.decay_matrices)

    return step


def torch_step(params, config, ids, targets, attn_implementation):
    """A closure running one torch eager training step of the same model (Hugging Face GPT-2)."""
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
                             {"params": rest, "weight_decay": 0.0}], lr=ADAMW["lr"], betas=ADAMW["betas"],
                            eps=ADAMW["eps"])
    x, y = torch.from_numpy(ids), torch.from_numpy(targets)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()

    return step


def measure(threads, sizes):
    """Median step time of each implementation, taking turns, in this process (``threads`` for both sides)."""
    import torch

    from reference import _threads

    torch.set_num_threads(threads)
    config, params, ids, targets = _setup(sizes)
    steps = {"numpy": numpy_step(params, config, ids, targets),
             "eager": torch_step(params, config, ids, targets, "eager"),
             "sdpa": torch_step(params, config, ids, targets, "sdpa")}
    times = {k: [] for k in steps}
    load_before = os.getloadavg()[0]
    with _threads.using(threads):
        for _ in range(sizes["warmup"]):
            for step in steps.values():
                step()
        for r in range(sizes["repeats"]):
            order = KINDS[r % 3:] + KINDS[:r % 3]                  # rotate who goes first
            for kind in order:
                t0 = time.perf_counter()
                steps[kind]()
                times[kind].append(time.perf_counter() - t0)
    return {"seconds": {k: statistics.median(v) for k, v in times.items()},
            "seconds_all": {k: [round(t, 4) for t in v] for k, v in times.items()},
            "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}}


def profile(sizes):
    """CPU seconds of one NumPy step and one torch eager step (1 thread), by operation."""
    import cProfile
    import pstats

    import torch

    from reference import _threads

    torch.set_num_threads(1)
    config, params, ids, targets = _setup(sizes)
    np_step, t_step = numpy_step(params, config, ids, targets), torch_step(params, config, ids, targets, "eager")
    with _threads.using(1):
        np_step()
        prof = cProfile.Profile(time.process_time)
        t0 = time.process_time()
        prof.runcall(np_step)
        total = time.process_time() - t0
    stats = pstats.Stats(prof).stats
    ours = {}
    for op, (file, funcs) in PROFILED_OPS.items():
        ours[op] = round(sum(v[3] for (f, _, name), v in stats.items() if f.endswith(file) and name in funcs), 4)
    ours["rest (reshapes, residual adds, Python)"] = round(total - sum(ours.values()), 4)
    t_step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as tprof:
        t_step()
    events = sorted((e for e in tprof.key_averages() if e.key.startswith("aten::")),
                    key=lambda e: -e.self_cpu_time_total)
    theirs = {e.key: round(e.self_cpu_time_total / 1e6, 4) for e in events[:12]}
    return {"numpy_cpu_seconds_by_op": ours, "numpy_cpu_seconds_total": round(total, 4),
            "torch_eager_self_cpu_seconds_top_ops": theirs,
            "torch_eager_aten_cpu_seconds_total": round(sum(e.self_cpu_time_total for e in events) / 1e6, 4)}


def _in_subprocess(what, threads, quick):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "bench.train", what, str(threads)] + ["--quick"] * quick
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.train {what} (threads={threads}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick=False):
    s = QUICK if quick else FULL
    tokens = s["B"] * s["T"]
    result = {"config": {k: v for k, v in s.items() if k not in ("repeats", "warmup")}, "dtype": "float32",
              "repeats": s["repeats"], "cores": os.cpu_count(), "by_threads": {}}
    for threads in sorted({1, os.cpu_count() or 1}):
        m = _in_subprocess("measure", threads, quick)
        sec = m["seconds"]
        row = {"step_seconds_median": {k: round(v, 4) for k, v in sec.items()},
               "tokens_per_second": {k: round(tokens / v, 1) for k, v in sec.items()},
               "ratio_torch_eager_over_numpy": round(sec["eager"] / sec["numpy"], 3),
               "ratio_torch_sdpa_over_numpy": round(sec["sdpa"] / sec["numpy"], 3),
               "load_average_1min": m["load_average_1min"], "step_seconds_all": m["seconds_all"]}
        result["by_threads"][str(threads)] = row
        print(f"threads={threads}: " + ", ".join(f"{k} {v:.3f} s" for k, v in row["step_seconds_median"].items())
              + f"; torch eager / numpy {row['ratio_torch_eager_over_numpy']:.2f}, "
                f"sdpa / numpy {row['ratio_torch_sdpa_over_numpy']:.2f} (load {m['load_average_1min']['before']}"
                f" -> {m['load_average_1min']['after']} on {os.cpu_count()} cores)", flush=True)
    result["profile_1_thread"] = _in_subprocess("profile", 1, quick)
    print("where the time goes (1 thread, CPU s): numpy " + ", ".join(
        f"{k} {v:.3f}" for k, v in result["profile_1_thread"]["numpy_cpu_seconds_by_op"].items()), flush=True)
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
    loads = ", ".join(f"{t}: {result['by_threads'][t]['load_average_1min']['before']}" for t in threads)
    ax.set_xticks(np.arange(len(threads)), [f"{t} thread{'s' * (t != '1')}" for t in threads])
    ax.set_ylabel("training tokens / s (float32, CPU)")
    c = result["config"]
    ax.set_title(f"One training step (fwd + bwd + AdamW): d_model={c['d_model']}, n_layer={c['n_layer']}, "
                 f"n_head={c['n_head']}, T={c['T']}, B={c['B']}\nmedians of {result['repeats']} interleaved steps; "
                 f"load average {loads} on {result['cores']} cores", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    path = ROOT / "figures" / "bench_train.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _child(argv):
    what, threads, quick = argv[0], int(argv[1]), "--quick" in argv
    sizes = QUICK if quick else FULL
    print(json.dumps(measure(threads, sizes) if what == "measure" else profile(sizes)))


if __name__ == "__main__":
    _child(sys.argv[1:])
