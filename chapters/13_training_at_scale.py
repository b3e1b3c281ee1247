# %% [markdown]
# # 13. Training at scale
#
# The material names the size of a large model in §1 and the cost of it in §5, and stops there:
#
# > 例如，GPT-3 是一款基于Transformer架构的大型自然语言处理模型，具有1750亿个参数，可以生成高质量的文本。
# >
# > "For example, GPT-3 is a large Transformer-based language model with 175 billion parameters that generates
# > high-quality text." (§1)
#
# > 1. 计算资源：大模型的训练和推理需要大量的计算资源，这将限制其应用范围。
# >
# > "Compute: training and running large models needs a lot of computing resources, which limits where they can be
# > used." (§5.2)
#
# Both statements are true, and chapter 1 put numbers on them (174.6 B parameters, $3.14 \times 10^{23}$ training
# FLOPs). A reader then asks what the material never says: how is such a model trained at all, when no single device
# holds its weights, let alone its optimizer state? This chapter answers with the techniques that large runs combine,
# each one run here on the book's NumPy GPT over a real distributed engine (`torch.distributed`, two processes on
# this machine), and each one shown to train *exactly as one process does*:
#
# - 13.1 the memory bill of GPT-3 with Adam, in float32 and in mixed precision (and why the float32 master copy);
# - 13.2 what ZeRO's three stages, tensor and pipeline parallelism divide it into, and how many devices it needs;
# - 13.3 data parallelism, ZeRO-1, gradient accumulation, tensor parallelism and recomputation, live, against one
#   process;
# - 13.4 the all-reduce: its volume per step, $2(N-1)/N$ times the gradient bytes, measured on gloo;
# - 13.5 tensor parallelism: the two conjugate operators $f$ and $g$, and what they send;
# - 13.6 activation recomputation: the memory it saves and the time it costs;
# - 13.7 pipeline parallelism: GPipe and 1F1B, the bubble and the activations each stage keeps;
# - 13.8 mixed precision: the same run in float32, float16 and bfloat16.
#
# Two kinds of numbers appear. **Computed** ones follow from formulas and published shapes (13.1, 13.2, 13.7, and
# the GPT-3 columns of 13.4 and 13.5). **Measured** ones come from this machine: the losses of the live runs (which
# are deterministic and the same on every build), and the bytes, seconds and memory peaks of the cells marked
# *measurement*, which print the machine's load beside them and change from build to build. 13.9 lists which is which.
#
# | what | code |
# |---|---|
# | the engine: collectives on NumPy arrays, data-parallel × tensor-parallel groups | `reference/training/distributed.py`, `tests/training/test_distributed.py` |
# | data parallelism, gradient accumulation; ZeRO-1 | `reference/training/data_parallel.py`, `reference/training/zero.py`, `tests/training/test_data_parallel.py`, `tests/training/test_zero.py` |
# | tensor parallelism ($f$, $g$, column- and row-parallel blocks) | `reference/training/tensor_parallel.py`, `tests/training/test_tensor_parallel.py` |
# | recomputation; the GPT with its blocks as functions | `reference/training/recompute.py`, `reference/training/blockwise.py`, `tests/training/test_recompute.py` |
# | mixed precision (fp16 with loss scaling, bf16 emulated) | `reference/training/precision.py`, `tests/training/test_precision.py`, `bench/precision.py` |
# | memory and traffic arithmetic; pipeline schedules | `reference/studies/sharding.py`, `reference/studies/counting.py`, `reference/studies/pipeline.py` |
# | the command that runs all of it | `python -m reference.train` (`--precision`, `--grad-accum`, `--zero 1`, `--tp N`, `--recompute`, under `torchrun`) |
# | measured overheads | `bench/comm.py`, `bench/recompute.py` |

# %%
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# One BLAS thread per process: two ranks on two cores, and timings that measure one core each.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from book import QUICK, ROOT, glue, machine_load, savefig  # noqa: E402
from reference import tree  # noqa: E402
from reference.models import gpt  # noqa: E402
from reference.ops import attention  # noqa: E402
from reference.studies import counting, pipeline, sharding  # noqa: E402
from reference.training import precision, recompute, tensor_parallel  # noqa: E402

GB = 1e9
print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 13.1 The bill: 16 bytes per parameter, in float32 and in mixed precision
#
# Training with Adam keeps four numbers per parameter: the weight, its gradient, and Adam's two moments $m$ and $v$.
# In float32 that is $4 + 4 + 4 + 4 = 16$ bytes. **Mixed precision** (Micikevicius et al. 2018) computes the forward
# and backward passes with 16-bit weights (bfloat16 or float16, 2 bytes) and 16-bit gradients, but keeps a float32
# **master copy** of every weight for the optimizer, beside float32 moments: $2 + 2 + 4 + 4 + 4 = 16$ bytes again.
# Mixed precision saves activation memory, memory bandwidth and time on the matrix units; it does not save state.
# (`counting.training_memory`, chapter 1.)

# %%
N = counting.param_count(counting.GPT3_175B)["total"]
recipes = {"float32 + Adam": counting.training_memory(N),
           "mixed precision + Adam": counting.training_memory(N, weights="bfloat16", grads="bfloat16",
                                                              master_weights="float32")}
print(f"GPT-3 175B: {N:,} parameters (chapter 1)\n")
print(f"{'':24} {'weights':>9} {'grads':>9} {'master':>9} {'Adam m':>9} {'Adam v':>9} {'total':>9}")
for name, parts in recipes.items():
    cells = [parts.get(k, 0) / GB for k in ("weights", "grads", "master_weights", "adam_m", "adam_v", "total")]
    print(f"{name:24} " + " ".join(f"{c:8.0f}G" for c in cells))
state_tb = recipes["mixed precision + Adam"]["total"] / 1e12
glue("gpt3_n", f"{N / 1e9:.1f} B")
glue("gpt3_state_tb", f"{state_tb:.2f} TB")
glue("gpt3_devices", f"{recipes['mixed precision + Adam']['total'] / 80e9:.0f}")

# %% [markdown]
# {{gpt3_state_tb}} of state for {{gpt3_n}} parameters, before a single activation: the memory of
# {{gpt3_devices}} devices of 80 GB, filled to the last byte.
#
# Why keep the master copy at all, when the model computes with the 16-bit weights? Because an update is often
# smaller than half the spacing of 16-bit numbers around the weight, and then rounds away. A bfloat16 number has 8
# significant bits: between 0.0156 and 0.03125 its values are $2^{-13} \approx 1.2 \times 10^{-4}$ apart. GPT-3's
# peak learning rate was $6 \times 10^{-5}$, and Adam's step is about the learning rate:

# %%
w = np.array([0.02], dtype=np.float32)
step = np.float32(6e-5)
w16 = precision.to_bf16(w)                      # bfloat16 rounding, as torch does it (tested bit for bit)
w32 = w.copy()
for _ in range(100):
    w16 = precision.to_bf16(w16 - step)         # a bfloat16 weight, updated in bfloat16
    w32 -= step                                 # the float32 master copy
print(f"bfloat16 spacing at 0.02: {2.0 ** -13:.3g}; an update of {step:.0e} is below half of it")
print(f"after 100 updates of -{step:.0e}: bfloat16 weight {w16[0]:.6f}, float32 master {w32[0]:.6f} "
      f"(rounded to bfloat16 for the next forward pass: {precision.to_bf16(w32)[0]:.6f})")
glue("bf16_stuck", f"{w16[0]:.5f}")
glue("master_moved", f"{w32[0]:.4f}")

# %% [markdown]
# The bfloat16 weight stays at {{bf16_stuck}} (the bfloat16 number nearest 0.02) forever; the master copy reaches
# {{master_moved}}, and the 16-bit copy the model computes with follows it. (Chapter 1 showed the same with torch's
# own bfloat16; 13.8 trains with both formats.)
#
# ## 13.2 Dividing the bill: ZeRO, tensor and pipeline parallelism
#
# **Data parallelism** gives every device a whole copy of the model and a slice of each batch; it divides the
# activations, not the states. **ZeRO** (Rajbhandari et al. 2020) shards the states over the $N_d$ data-parallel
# devices instead of repeating them: stage 1 the optimizer states (here, the master copy and $m$, $v$: $K = 12$
# bytes per parameter), stage 2 also the gradients, stage 3 also the 16-bit weights, which are then gathered layer by
# layer just before use. **Tensor parallelism** (13.5) splits every layer's matrices over $t$ devices, and
# **pipeline parallelism** (13.7) gives each of $p$ devices a run of consecutive layers: both divide everything by
# $t \cdot p$. With $\Psi$ parameters, per device:
#
# | | weights | gradients | optimizer states | |
# |---|---|---|---|---|
# | data parallel | $2\Psi$ | $2\Psi$ | $12\Psi$ | |
# | ZeRO-1 | $2\Psi$ | $2\Psi$ | $12\Psi / N_d$ | |
# | ZeRO-2 | $2\Psi$ | $2\Psi / N_d$ | $12\Psi / N_d$ | |
# | ZeRO-3 | $2\Psi / N_d$ | $2\Psi / N_d$ | $12\Psi / N_d$ | |
# | tensor $t$ × pipeline $p$ | $2\Psi / tp$ | $2\Psi / tp$ | $12\Psi / tp$ | then ZeRO over the $N_d$ replicas |
#
# `reference/studies/sharding.py` computes it; its test reproduces the ZeRO paper's own example (7.5 B parameters on
# 64 devices: 120, 31.4, 16.6 and 1.9 GB). For GPT-3:

# %%
schemes = {  # name: keyword arguments of sharding.state_bytes
    "data parallel": dict(zero=0, dp=64),
    "ZeRO-1, 64 dev.": dict(zero=1, dp=64),
    "ZeRO-2, 64 dev.": dict(zero=2, dp=64),
    "ZeRO-3, 64 dev.": dict(zero=3, dp=64),
    "TP 8": dict(tp=8),
    "TP 8 x PP 8": dict(tp=8, pp=8),
    "TP 8 x PP 8\n+ ZeRO-1 x 8": dict(tp=8, pp=8, zero=1, dp=8),
}
per_device = {name: sharding.state_bytes(N, "mixed", **kw) for name, kw in schemes.items()}
for name, parts in per_device.items():
    print(f"{name.replace(chr(10), ' '):28} {parts['total'] / GB:8.1f} GB per device  "
          f"(weights {parts['weights'] / GB:6.1f}, grads {parts['grads'] / GB:6.1f}, "
          f"optimizer {parts['optimizer'] / GB:6.1f})")

device = 80e9
print(f"\nfewest devices of {device / GB:.0f} GB that hold GPT-3's states (activations aside):")
needs = {}
for label, kw in [("data parallel, ZeRO-0", dict(zero=0)), ("ZeRO-1", dict(zero=1)), ("ZeRO-2", dict(zero=2)),
                  ("ZeRO-3", dict(zero=3)), ("TP 8, ZeRO-1", dict(tp=8, zero=1)), ("TP 8 x PP 8", dict(tp=8, pp=8)),
                  ("TP 8 x PP 4, ZeRO-1", dict(tp=8, pp=4, zero=1))]:
    needs[label] = sharding.devices_needed(N, device, "mixed", **kw)
    print(f"  {label:22} {needs[label] if needs[label] else 'none: what it does not shard exceeds one device'}")
glue("zero3_devices", str(needs["ZeRO-3"]))
glue("zero1_fixed_gb", f"{4 * N / GB:.0f} GB")
glue("zero2_fixed_gb", f"{2 * N / GB:.0f} GB")
glue("tp8pp8_gb", f"{per_device['TP 8 x PP 8']['total'] / GB:.1f} GB")

fig, ax = plt.subplots(figsize=(10, 4.2))
names = list(per_device)
bottom = np.zeros(len(names))
for part, color in (("weights", "tab:blue"), ("grads", "tab:orange"), ("optimizer", "tab:green")):
    vals = np.array([per_device[n][part] / GB for n in names])
    ax.bar(names, vals, bottom=bottom, color=color, label={"optimizer": "optimizer (master, m, v)"}.get(part, part))
    bottom += vals
ax.axhline(device / GB, color="black", ls="--", lw=1)
ax.text(len(names) - 0.5, device / GB * 1.15, "one 80 GB device", ha="right", fontsize=9)
ax.set_yscale("log")
ax.set_ylabel("model states per device (GB, log scale)")
ax.set_title("GPT-3 175B in mixed precision with Adam: what each scheme leaves on one device (computed)")
ax.legend(loc="upper right", fontsize=9)
ax.tick_params(axis="x", labelsize=8)
ax.grid(alpha=0.3, axis="y")
savefig(fig, "scale_gpt3_memory.png")

# %% [markdown]
# Read the bars from left to right. Data parallelism repeats the whole bill on every device. ZeRO-1 and ZeRO-2 shard
# the optimizer states and gradients but leave the 16-bit weights (and, for ZeRO-1, the gradients) whole: the
# {{zero1_fixed_gb}} that ZeRO-1 keeps on every device, or the {{zero2_fixed_gb}} of ZeRO-2, already exceeds any
# device, so neither fits at any $N_d$.
# ZeRO-3 fits from {{zero3_devices}} devices on. Tensor parallelism alone divides by 8; with pipeline parallelism
# over 8 stages each device holds {{tp8pp8_gb}}, and ZeRO-1 over the replicas of that grid divides the optimizer
# states further. Large runs combine all three ("3D parallelism", Narayanan et al. 2021): tensor parallelism inside
# a machine, where the links are fastest (13.5 shows why), pipeline stages across machines, data parallelism over
# the copies of the whole grid.
#
# The states are not all. The activations that the backward pass needs grow with the batch and the context.
# Korthikanti et al. (2022) count them for a 16-bit Transformer layer with dropout: $sbh(34 + 5as/h)$ bytes for $b$
# sequences of $s$ tokens, hidden size $h$ and $a$ heads; tensor parallelism divides all but $10\,sbh$ of it by $t$;
# recomputing each layer from its input (13.6) keeps only $2sbh$:

# %%
s_, b_, h_, a_, L_ = 2048, 1, 12288, 96, 96
act = {"stored": sharding.activation_bytes_per_layer(s_, b_, h_, a_),
       "stored, TP 8": sharding.activation_bytes_per_layer(s_, b_, h_, a_, tp=8),
       "recomputed": sharding.activation_bytes_per_layer(s_, b_, h_, a_, recompute=True)}
for name, per_layer in act.items():
    print(f"{name:13} {per_layer / GB:6.3f} GB per layer, {per_layer * L_ / GB:7.1f} GB for 96 layers "
          f"(one sequence of 2048 tokens)")
glue("act_stored_gb", f"{act['stored'] * L_ / GB:.0f} GB")
glue("act_recomputed_gb", f"{act['recomputed'] * L_ / GB:.1f} GB")

# %% [markdown]
# One sequence of 2048 tokens leaves {{act_stored_gb}} of activations through GPT-3's 96 layers, more than its
# 16-bit weights; recomputation brings it to {{act_recomputed_gb}} (plus one layer's worth during its backward pass).
#
# ## 13.3 Five ways to train that equal one process, run live
#
# Every technique above changes *where* numbers are computed and stored, never *what* is computed. The test of an
# implementation is therefore an equality: the same run, with the same seed and flags, must give the same losses
# and gradient norms as one process, to float32 round-off (or bit for bit, where the arithmetic is the same). The
# next cell trains the tiny configuration (2 layers, $d = 32$) with the training command of chapter 2 six times:
#
# - one process, the reference;
# - **data parallel**, two processes: each rank takes half of the batch's rows, one all-reduce averages the
#   gradients (`data_parallel.py`);
# - **ZeRO-1**, two processes: each rank keeps half of Adam's moments and updates half of the parameters, then they
#   all-gather (`zero.py`);
# - **gradient accumulation**, one process: 2 micro-batches of 4 rows per update instead of one batch of 8;
# - **tensor parallel**, two processes: each rank computes 2 of the 4 heads and half of the FFN (`tensor_parallel.py`);
# - **recomputation**, one process: each block keeps only its input (`recompute.py`).
#
# The two-process runs are launched exactly as a reader would launch them:
# `torchrun --standalone --nproc_per_node=2 -m reference.train --config tiny ...` (gloo over loopback).

# %%
STEPS = 8 if QUICK else 30
BASE = ["--config", "tiny", "--steps", str(STEPS), "--eval-interval", str(STEPS), "--no-progress"]
RUN_DIR = Path(tempfile.mkdtemp(prefix="lm_primer_ch13_"))
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")


def train_run(name, *flags, ranks=1):
    """Run the training command (under torchrun when ranks > 1) into RUN_DIR/name; return its log.json."""
    out = RUN_DIR / name
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
                if ranks > 1 else [sys.executable])
    cmd = [*launcher, "-m", "reference.train", *BASE, *flags, "--out", str(out), "--figure", str(out / "loss.png")]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "log.json").read_text(encoding="utf-8"))


runs = {"one process": train_run("one"),
        "data parallel (2)": train_run("dp", ranks=2),
        "ZeRO-1 (2)": train_run("zero", "--zero", "1", ranks=2),
        "grad accumulation": train_run("accum", "--batch-size", "4", "--grad-accum", "2"),
        "tensor parallel (2)": train_run("tp", "--tp", "2", ranks=2),
        "recomputation": train_run("recompute", "--recompute")}
ref = runs["one process"]


def column(log, i):
    return np.array([row[i] for row in log["train"]])


print(f"{STEPS} steps of the tiny config (batch 8 x 32 characters); difference from one process, largest over the "
      f"steps:\n")
print(f"{'run':22} {'ranks':>5} {'loss (rel.)':>12} {'grad norm (rel.)':>17} {'bit-identical':>14} "
      f"{'final val':>10} {'Adam bytes/rank':>16}")
equal = {}
for name, log in runs.items():
    dl = np.abs(column(log, 1) / column(ref, 1) - 1).max()
    dn = np.abs(column(log, 3) / column(ref, 3) - 1).max()
    exact = log["train"] == ref["train"]
    equal[name] = (dl, dn, exact)
    print(f"{name:22} {log['world_size']:>5} {dl:>12.1e} {dn:>17.1e} {str(exact):>14} {log['val'][-1][1]:>10.5f} "
          f"{log['optimizer_bytes_per_rank']:>16,}")
worst = max(max(dl, dn) for dl, dn, _ in equal.values())
glue("eq_worst", f"{worst:.1e}")
glue("eq_steps", str(STEPS))
glue("zero_bytes", f"{runs['ZeRO-1 (2)']['optimizer_bytes_per_rank']:,}")
glue("one_bytes", f"{ref['optimizer_bytes_per_rank']:,}")
glue("tp_bytes", f"{runs['tensor parallel (2)']['optimizer_bytes_per_rank']:,}")
tiny = gpt.init_params(gpt.GPTConfig(vocab_size=ref["vocab_size"], block_size=32, n_layer=2, n_head=4, d_model=32),
                       np.random.default_rng(0))
whole = sum(a.size for k, a in tree.flatten(tiny).items() if tensor_parallel.split_axis(k) is None)
glue("tp_whole_share", f"{whole / gpt.n_params(tiny):.0%}")
assert worst < 1e-5 and equal["recomputation"][2]

# %% [markdown]
# Over {{eq_steps}} steps, no loss or gradient norm of any run is further than {{eq_worst}} (relative) from the
# one-process run, and the recomputed run is identical to it bit for bit. Why not all bit for bit? Each parallel
# run adds the same numbers in another order: two ranks' means of 4 rows averaged instead of one mean of 8, two
# micro-batches' gradients summed, two ranks' partial products of a row-parallel matmul summed by an all-reduce.
# Float32 addition is not associative, so the last bits differ, and AdamW carries them along from step to step;
# float32's round-off is about $10^{-7}$, and a wrong shard, a missing sum or a doubly counted norm would show up at
# $10^{-2}$ or more. The tests (`tests/training/`) check the same equalities on 2 and 4 ranks, in float64 too, where
# tensor parallelism agrees with one process to $10^{-15}$.
#
# (The accumulation run's validation loss differs for another reason: the command draws its validation windows in
# batches of `--batch-size`, 4 there against 8, so it averages other windows.) The last column is what each rank
# keeps of Adam's moments: {{one_bytes}} bytes in one process, {{zero_bytes}} per
# rank with ZeRO-1 (half), {{tp_bytes}} with tensor parallelism (half of each block's split matrices; the embeddings,
# the LayerNorms and the output biases, {{tp_whole_share}} of this tiny model, are whole on both ranks). Every run
# wrote one checkpoint in the full format, whatever the split: a tensor-parallel checkpoint resumes in one process,
# or on any number of ranks (tested).
#
# ## 13.4 The all-reduce: $2(N-1)/N$ times the gradient bytes
#
# Data parallelism pays for its equality with one all-reduce of the gradients per step. The ring algorithm (Patarasuk
# and Yuan 2009, used by NCCL and gloo) splits the array into $N$ chunks and passes them around the ring of ranks
# twice: $N - 1$ steps of reduce-scatter, after which each rank holds the sum of one chunk, and $N - 1$ steps of
# all-gather. Each step every rank sends one chunk of $n/N$ bytes, so each rank sends
#
# $$\frac{2(N-1)}{N}\, n \text{ bytes},$$
#
# almost $2n$ whatever the number of ranks: the time of an all-reduce does not grow with $N$ on a ring whose links
# all run at once. ZeRO-1 sends the same: its reduce-scatter and all-gather are the two halves of the ring.
#
# The data-parallel run above did one all-reduce of the whole gradient per step; `distributed.traffic()` counted
# what it handed to the collectives:

# %%
n_params = ref["n_params"]
comm = runs["data parallel (2)"]["communication"]
per_step = comm["all_reduce"]["bytes"] / STEPS
print(f"{n_params:,} parameters x 4 bytes = {4 * n_params:,} bytes of float32 gradient per step")
print(f"all-reduce input per step, counted: {per_step:,.0f} bytes ({comm['all_reduce']['calls'] // STEPS} calls: the "
      f"gradient, the loss, the stop flag)")
print(f"ring formula, 2 ranks: each rank sends {sharding.ring_bytes(4 * n_params, 2):,.0f} bytes of gradient per step")
glue("grad_bytes", f"{4 * n_params:,}")

# %% [markdown]
# The bytes on the wire can be counted too: gloo's TCP transport passes every byte it sends through the `write`
# system call, and `/proc/self/io` counts them (`bench/comm.py`). The next cell launches two processes that
# all-reduce float32 arrays of several sizes and reads each rank's count before and after (a measurement: the bytes
# are exact, the times depend on the machine and its load).

# %% tags=["measurement"]
sizes = [2 ** 10, 2 ** 16, 2 ** 20] if QUICK else [2 ** 10, 2 ** 14, 2 ** 18, 2 ** 20, 2 ** 22]
cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "bench.comm",
       "--child", "--sizes", *map(str, sizes), "--repeats", "3"]
live = json.loads(subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, check=True)
                  .stdout.strip().splitlines()[-1])
recorded = json.loads((ROOT / "bench" / "results" / "comm.json").read_text(encoding="utf-8"))
print(f"{'array bytes':>12} {'sent per rank':>14} {'/ formula':>10} {'ms':>8}")
for r in live:
    print(f"{r['bytes']:>12,} {r['sent_per_rank']:>14,.0f} {r['sent_over_formula']:>10.5f} {r['seconds'] * 1e3:>8.2f}")
print(machine_load())
rec4 = recorded["results"]["by_world"]["4"]
print(f"recorded by `python -m bench.run comm` on {recorded['date']} (load {recorded['results']['load_before'][0]}), "
      f"4 ranks: sent / formula = " + ", ".join(f"{r['sent_over_formula']:.4f}" for r in rec4))

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
n = np.array([r["bytes"] for r in live])
ax1.loglog(n, [r["sent_per_rank"] for r in live], "o", color="C0", label="measured now, 2 ranks")
ax1.loglog(n, [r["formula"] for r in live], "-", color="C0", alpha=0.5, label="2(N-1)/N n, N = 2")
n4 = np.array([r["bytes"] for r in rec4])
ax1.loglog(n4, [r["sent_per_rank"] for r in rec4], "s", color="C1", label="recorded (bench), 4 ranks")
ax1.loglog(n4, [r["formula"] for r in rec4], "-", color="C1", alpha=0.5, label="2(N-1)/N n, N = 4")
ax1.set(xlabel="array size n (bytes)", ylabel="bytes sent per rank",
        title="All-reduce volume on gloo vs the ring formula")
ax2.semilogx(n, [r["sent_over_formula"] for r in live], "o-", color="C0", label="2 ranks, now")
ax2.semilogx(n4, [r["sent_over_formula"] for r in rec4], "s-", color="C1", label="4 ranks, recorded")
ax2.axhline(1.0, color="black", lw=0.8)
ax2.set(xlabel="array size n (bytes)", ylabel="measured / formula",
        title="Headers and the barrier: a few hundred bytes per call")
for ax in (ax1, ax2):
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
savefig(fig, "scale_allreduce.png")
big = live[-1]
glue("comm_ratio", f"{big['sent_over_formula']:.4f}")
glue("comm_big", f"{big['bytes'] / 2**20:.0f} MiB")

dp_log = runs["data parallel (2)"]
share = dp_log["communication"]["all_reduce"]["seconds"] / dp_log["train_seconds"]
print(f"data-parallel run: {dp_log['communication']['all_reduce']['seconds']:.3f} s of {dp_log['train_seconds']:.2f} s "
      f"of training steps inside all-reduce ({share:.0%}, waiting for the other rank included); "
      f"tokens/s: one process {ref['tokens_per_second']:,.0f}, two ranks {dp_log['tokens_per_second']:,.0f}")
glue("dp_comm_share", f"{share:.0%}")

# %% [markdown] tags=["measurement"]
# The bytes each rank sent match the formula to within a few hundred bytes per call (the message headers and the
# barrier before each repeat), a ratio of {{comm_ratio}} at {{comm_big}}. The data-parallel run spent
# {{dp_comm_share}} of its training time inside all-reduce in this build; on two processes that share two cores with
# whatever else the machine runs, that share measures the load as much as the network. On real clusters
# the gradient all-reduce of one step is large (GPT-3's, in 16 bits over the 8 replicas of an 8 × 8 grid: computed
# in 13.5), and frameworks hide it by starting the all-reduce of each layer's gradients while the backward pass is
# still computing the layers below.
#
# ## 13.5 Tensor parallelism: two operators, $f$ and $g$
#
# Megatron-LM (Shoeybi et al. 2019) splits each block over $t$ ranks using two facts about a matrix product. Split
# $W$ by columns and each rank computes its own columns of $XW$ from the whole $X$ (**column-parallel**); split $W$ by
# rows and $A$ by the matching columns, and each rank computes a partial product that a sum completes
# (**row-parallel**):
#
# $$X [W_1 \mid W_2] = [X W_1 \mid X W_2], \qquad [A_1 \mid A_2] \begin{bmatrix} W_1 \\ W_2 \end{bmatrix} = A_1 W_1 + A_2 W_2.$$
#
# Attention heads are independent, so rank $r$ keeps its heads' columns of $W_Q, W_K, W_V$ (column-parallel) and the
# same rows of $W_O$ (row-parallel); the FFN's activation acts element by element, so rank $r$ keeps a block of
# columns of $W_1$ and the same rows of $W_2$. Inside a block nothing is sent. At its edges sit two operators, each
# written in `tensor_parallel.py` as a forward/backward pair:
#
# | | forward | backward |
# |---|---|---|
# | $f$ (before the column-parallel matmul) | $y = x$ (every rank uses its own copy) | $dx = \sum_r dy_r$: an all-reduce, since $x$ fed every rank's heads |
# | $g$ (after the row-parallel matmul) | $y = \sum_r x_r$: an all-reduce | $dx_r = dy$, since each partial sum enters $y$ with coefficient 1 |
#
# $f$ and $g$ are *conjugate*: each one's backward is the other's forward. The backward of $f$ is the adjoint of its
# forward (the tests check $\langle f(x), dy\rangle = \langle x, f^\top(dy)\rangle$ across ranks, to float64
# round-off). Rank
# 1 of 2 holds these shards of the tiny model's first block:

# %%
config = gpt.GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, d_model=32)
params = gpt.init_params(config, np.random.default_rng(0))
shard = tensor_parallel.shard(params, 1, 2)
for part in ("attn", "ffn"):
    print(part + ": " + ", ".join(f"{k} {params['blocks'][0][part][k].shape} -> {v.shape}"
                                  for k, v in shard["blocks"][0][part].items()))
print("whole on every rank: wte, wpe, the LayerNorms, bo and b2 (added once, after g's sum)")

tp_log = runs["tensor parallel (2)"]
calls = tp_log["communication"]["all_reduce"]["calls"] // STEPS
print(f"\ntensor-parallel run: {calls} all-reduces per step = 4 x {config.n_layer} layers (2 g forward, 2 f backward) "
      f"+ 2 small ones (the clipping norm's sum, the stop flag)")
tp_bytes = tp_log["communication"]["all_reduce"]["bytes"] / STEPS
print(f"each of the 4L carries one (B, T, C) = (8, 32, 32) float32 activation, {8 * 32 * 32 * 4:,} bytes: "
      f"{tp_bytes:,.0f} bytes per step counted, against data parallelism's {4 * n_params:,} bytes of gradients")
glue("tp_calls", str(calls))

# %% [markdown]
# So a block costs two all-reduces of the $(B, T, C)$ activations forward and two backward, {{tp_calls}} per step
# here with the two small ones. Tensor parallelism sends activations, every layer, every micro-batch; data
# parallelism sends the gradients, once per step. For GPT-3 (computed, 16-bit values, one micro-batch of one
# sequence of 2048 tokens):

# %%
per_layer = sharding.tp_bytes_per_layer(2048, 1, 12288, 8)
dp_step = sharding.dp_bytes_per_step(N, 8, tp=8, pp=8)
micro = round(3.2e6 / 2048 / 8)            # GPT-3's batch: 3.2 M tokens (Brown et al. 2020), over 8 replicas
print(f"tensor parallel over 8: {per_layer / GB:.2f} GB per layer and micro-batch sent by each rank, "
      f"{per_layer * 12 / GB:.1f} GB for the 12 layers of one of 8 pipeline stages; x {micro} micro-batches of one "
      f"sequence per replica and step = {per_layer * 12 * micro / GB:,.0f} GB per step")
print(f"data parallel over 8 replicas of an 8 x 8 grid: {dp_step / GB:.2f} GB per rank per step (the gradients of "
      f"its {N / 64 / 1e9:.2f} B parameters)")
glue("tp_gpt3_gb", f"{per_layer * 12 / GB:.1f} GB")
glue("tp_gpt3_step", f"{per_layer * 12 * micro / GB:,.0f} GB")
glue("gpt3_micro", str(micro))
glue("dp_gpt3_gb", f"{dp_step / GB:.1f} GB")

# %% [markdown]
# Tensor parallelism sends {{tp_gpt3_gb}} per micro-batch from each rank of a stage, and a step of GPT-3's batch
# runs {{gpt3_micro}} micro-batches per replica: {{tp_gpt3_step}} per step, against {{dp_gpt3_gb}} for the data-parallel
# gradients. It is the heaviest traffic of the three, and it sits on the critical path of every layer (the next
# layer waits for $g$'s sum), which is why it stays inside one machine, whose links (NVLink) are an order of
# magnitude faster than the network between machines.
#
# ## 13.6 Activation recomputation: memory for time
#
# The backward pass of a block needs its forward pass's intermediates: the LayerNorm statistics, $Q$, $K$, $V$, the
# attention probabilities ($T \times T$ per head), the FFN's hidden layer before and after the GELU. Kept for every
# block until the backward pass reaches it, these are most of training's memory beyond the weights.
# **Recomputation** (Chen et al. 2016; `--recompute`) keeps only each block's input $x_l$; when the backward pass
# reaches block $l$, it runs block $l$'s forward again from $x_l$, uses the cache, and drops it. The block's forward is
# a deterministic function of its input and weights, so the rebuilt cache holds the same bits, and the gradients do
# not change at all (13.3's recomputed run was identical bit for bit). The cost is one more forward pass of the
# blocks: with the backward about twice the forward, 4 passes instead of 3, a third more compute.
#
# Memory, traced by `tracemalloc` (deterministic: the same bytes on every build) for one step's loss and gradients,
# stored vs recomputed:

# %%
shapes = ([("2 layers", 4, 32, 32, 2, 2, 64), ("8 layers", 4, 64, 32, 8, 2, 64)] if QUICK else
          [("small config", 16, 128, 128, 4, 4, 320), ("12 layers, T=256", 8, 256, 128, 12, 4, 320)])
mem = []
for name, B, T, C, L, H, V in shapes:
    cfg = gpt.GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, d_model=C)
    p = gpt.init_params(cfg, np.random.default_rng(0))
    ids, tgt = (np.random.default_rng(s).integers(0, V, (B, T)) for s in (1, 2))
    (l0, g0), stored = attention.peak_memory(gpt.loss_and_grads, p, cfg, ids, tgt)
    (l1, g1), recomputed = attention.peak_memory(recompute.loss_and_grads, p, cfg, ids, tgt)
    same = l0 == l1 and all(np.array_equal(a, b) for a, b in zip(tree.flatten(g0).values(), tree.flatten(g1).values()))
    mem.append(dict(name=name, cfg=cfg, ids=ids, tgt=tgt, p=p, stored=stored, recomputed=recomputed))
    print(f"{name:18} B={B} T={T} C={C} L={L}: peak {stored / 2**20:6.1f} MiB stored, {recomputed / 2**20:6.1f} MiB "
          f"recomputed ({recomputed / stored:.2f}x); block inputs kept: {L * B * T * C * 4 / 2**20:.2f} MiB; "
          f"gradients bit-identical: {same}")
glue("rc_ratio_small", f"{mem[0]['recomputed'] / mem[0]['stored']:.2f}")
glue("rc_ratio_deep", f"{mem[-1]['recomputed'] / mem[-1]['stored']:.2f}")

# %% [markdown]
# The peak falls to {{rc_ratio_small}} of the stored run's for the first shape and to {{rc_ratio_deep}} for the deeper
# one: what is left is the block inputs, one block's cache at a time, the logits and the gradients. The more layers,
# the larger the saving. The time it costs, measured in turns on one thread (the forward pass alone is timed too,
# since recomputation adds about one forward of the blocks):

# %% tags=["measurement"]
from threadpoolctl import threadpool_limits  # noqa: E402

from reference import _threads  # noqa: E402

repeats = 3 if QUICK else 5
timing = []
with threadpool_limits(1), _threads.using(1):
    for m in mem:
        fns = {"stored": lambda m=m: gpt.loss_and_grads(m["p"], m["cfg"], m["ids"], m["tgt"]),
               "recomputed": lambda m=m: recompute.loss_and_grads(m["p"], m["cfg"], m["ids"], m["tgt"]),
               "forward": lambda m=m: gpt.forward(m["p"], m["cfg"], m["ids"])}
        times = {k: [] for k in fns}
        for r in range(repeats):
            for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                t0 = time.perf_counter()
                fns[k]()
                times[k].append(time.perf_counter() - t0)
        med = {k: float(np.median(v)) for k, v in times.items()}
        timing.append(med)
        print(f"{m['name']:18} stored {med['stored']:.3f} s, recomputed {med['recomputed']:.3f} s: "
              f"{med['recomputed'] / med['stored']:.2f}x (at most 1 + forward/step = "
              f"{1 + med['forward'] / med['stored']:.2f}x)")
print(machine_load())
bench_rc = json.loads((ROOT / "bench" / "results" / "recompute.json").read_text(encoding="utf-8"))
for r in bench_rc["results"]["shapes"]:
    print(f"recorded by `python -m bench.run recompute` on {bench_rc['date']}: {r['name']}: "
          f"{r['time_ratio']:.2f}x time, {r['peak_ratio']:.2f}x memory (load {r['load_average_1min']['before']})")
glue("rc_time", f"{timing[0]['recomputed'] / timing[0]['stored']:.2f}x")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
x = np.arange(len(mem))
labels = [f"{m['name']}\nB={m['ids'].shape[0]} T={m['ids'].shape[1]} L={m['cfg'].n_layer}" for m in mem]
for i, (kind, color) in enumerate((("stored", "tab:blue"), ("recomputed", "tab:orange"))):
    ax1.bar(x + (i - 0.5) * 0.35, [m[kind] / 2**20 for m in mem], 0.35, color=color, label=kind)
    ax2.bar(x + (i - 0.5) * 0.35, [t[kind] for t in timing], 0.35, color=color, label=kind)
ax1.set(ylabel="peak memory of one step (MiB, tracemalloc)", title="Recomputation: memory")
ax2.set(ylabel="seconds per step (median, 1 thread)",
        title=f"... and time (load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
for ax in (ax1, ax2):
    ax.set_xticks(x, labels)
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
savefig(fig, "scale_recompute.png")

# %% [markdown] tags=["measurement"]
# Recomputation cost {{rc_time}} of the stored step's time for the first shape in this build; the recorded benchmark
# beside it shows the same order. The bound $1 + t_\text{forward} / t_\text{step}$ is loose, because the forward
# pass timed here includes the embedding and the output head, which are not recomputed. Large runs often recompute
# only part of a block: Korthikanti et al. (2022) recompute just the attention's $5as^2b$ term (the probabilities,
# cheap to recompute and the largest part at long contexts) and keep the rest.
#
# ## 13.7 Pipeline parallelism: the bubble and the memory
#
# Cut the model's layers into $p$ stages on $p$ devices, and the batch into $m$ micro-batches. Stage $s$ runs the
# forward pass of micro-batch $j$ once stage $s-1$ has, and its backward pass once stage $s+1$ has. **GPipe** (Huang
# et al. 2019) runs all $m$ forwards, then all $m$ backwards; **1F1B** (Narayanan et al. 2021) starts the backward
# passes as soon as it can and then alternates. Both leave the same idle "bubble" at the start and the end of a step,
#
# $$\text{bubble} = \frac{(p-1)(t_f + t_b)}{(m+p-1)(t_f + t_b)} = \frac{p-1}{m+p-1},$$
#
# so many micro-batches per step hide it. They differ in memory: a stage keeps the activations of every micro-batch
# whose forward it ran and whose backward it has not, $m$ at GPipe's turn, at most $p - s$ on stage $s$ with 1F1B.
# `reference/studies/pipeline.py` simulates both schedules step by step (computed, not measured: communication
# taken as free, $t_b = 2 t_f$):

# %%
p_, m_ = 4, 8
timelines = {name: pipeline.simulate(fn(p_, m_), t_f=1.0, t_b=2.0)
             for name, fn in (("GPipe", pipeline.gpipe), ("1F1B", pipeline.one_f_one_b))}
fig, axes = plt.subplots(3, 1, figsize=(11, 7.5), gridspec_kw=dict(height_ratios=[1, 1, 1.1]))
cmap = plt.get_cmap("tab10")
for ax, (name, tl) in zip(axes[:2], timelines.items()):
    for op in tl.ops:
        ax.barh(op.stage, op.end - op.start, left=op.start, color=cmap(op.micro % 10),
                alpha=1.0 if op.kind == "F" else 0.55, edgecolor="black", lw=0.5)
        ax.text((op.start + op.end) / 2, op.stage, f"{op.kind}{op.micro}", ha="center", va="center", fontsize=7)
    ax.set_yticks(range(p_), [f"stage {s}" for s in range(p_)])
    ax.invert_yaxis()
    ax.set_xlim(0, tl.makespan)
    ax.set_title(f"{name}: p = {p_} stages, m = {m_} micro-batches; bubble {tl.bubble:.3f} "
                 f"(formula (p-1)/(m+p-1) = {pipeline.bubble_formula(p_, m_):.3f}); F dark, B light")
axes[1].set_xlabel("time (units of one forward pass)")
for i, (name, tl) in enumerate(timelines.items()):
    axes[2].bar(np.arange(p_) + (i - 0.5) * 0.35, tl.peak_activations, 0.35, label=name)
axes[2].set(xticks=range(p_), xticklabels=[f"stage {s}" for s in range(p_)],
            ylabel="micro-batches held at once", title="Activations each stage keeps at its peak")
axes[2].legend()
axes[2].grid(alpha=0.3, axis="y")
fig.tight_layout()
savefig(fig, "scale_pipeline.png")

print(f"{'p':>2} {'m':>3} {'GPipe':>7} {'1F1B':>7} {'formula':>8}   peak activations per stage (GPipe | 1F1B)")
for p, m in [(2, 4), (4, 4), (4, 8), (4, 32), (8, 8), (8, 64)]:
    g, o = pipeline.simulate(pipeline.gpipe(p, m)), pipeline.simulate(pipeline.one_f_one_b(p, m))
    print(f"{p:>2} {m:>3} {g.bubble:>7.3f} {o.bubble:>7.3f} {pipeline.bubble_formula(p, m):>8.3f}   "
          f"{g.peak_activations.tolist()} | {o.peak_activations.tolist()}")
glue("pp_bubble", f"{timelines['GPipe'].bubble:.3f}")
glue("pp_bubble32", f"{pipeline.simulate(pipeline.one_f_one_b(4, 32)).bubble:.1%}")

# %% [markdown]
# Both schedules take the same time, with a bubble of {{pp_bubble}} for $p = 4$, $m = 8$, exactly the formula; with
# $m = 32$ the bubble falls to {{pp_bubble32}}. GPipe's stages each hold all $m$ micro-batches' activations at the turn,
# 1F1B's first stage holds $p$, its last one: 1F1B lets $m$ grow (a smaller bubble) without growing the memory. The
# stages send only the activations at the cut between them, one $(b, s, h)$ array per micro-batch each way, point
# to point: the lightest traffic of the three parallelisms, and the one that crosses machines.
#
# ## 13.8 Mixed precision: the same run in three formats
#
# `--precision fp16|bf16` trains on float32 masters with 16-bit forward and backward passes
# (`reference/training/precision.py` tabulates what is rounded where). float16 has 5 exponent bits: gradients of
# order $10^{-6}$ and below lose bits or vanish, so the loss is multiplied by a scale $S$ before the backward pass and
# the gradients divided by it after; an overflow skips the step and halves $S$, a run of good steps doubles it.
# bfloat16 has float32's 8 exponent bits and needs no scaling; NumPy has no bfloat16, so it is emulated by rounding
# to bfloat16 at the points a bfloat16 model stores values (bit for bit as torch rounds). The curves were recorded by
# `python -m bench.run precision` (400 steps of the tiny config; the losses are deterministic, the same on every
# run of the same code):

# %%
prec = json.loads((ROOT / "bench" / "results" / "precision.json").read_text(encoding="utf-8"))
rr = prec["results"]["runs"]
loss32 = np.array(rr["fp32"]["train_loss"])
steps = np.arange(1, loss32.size + 1)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
for name, color in (("fp32", "black"), ("bf16", "tab:green"), ("fp16", "tab:red")):
    ax1.plot(steps, rr[name]["train_loss"], lw=0.8, color=color, label=name)
    if name != "fp32":
        ax2.plot(steps, np.array(rr[name]["train_loss"]) - loss32, lw=0.8, color=color, label=f"{name} - fp32")
for step_, event in rr["fp16"]["loss_scale_events"]:
    if event.startswith("overflow"):
        ax2.axvline(step_, color="tab:red", alpha=0.25, lw=3)
ax1.set(xlabel="step", ylabel="training loss (nats per character)", title="The tiny config in three formats")
ax2.set(xlabel="step", ylabel="loss difference (nats)", ylim=(-0.3, 0.6),
        title="Difference from fp32 (shaded: fp16 overflows)")
for ax in (ax1, ax2):
    ax.grid(alpha=0.3)
    ax.legend()
savefig(fig, "scale_precision.png")

norm32, norm16 = np.array(rr["fp32"]["grad_norm"]), np.array(rr["fp16"]["grad_norm"])
loss16 = np.array(rr["fp16"]["train_loss"])
agree = int(np.argmax(np.abs(loss16 - loss32) > 1e-3))        # the first step where the runs visibly part
spike = int(np.argmax(loss16 - loss32))
for name in ("fp32", "bf16", "fp16"):
    print(f"{name}: final validation loss {rr[name]['val'][-1][1]:.4f}")
print(f"fp16 and fp32 agree to 1e-3 until step {agree}: losses {loss16[agree - 1]:.4f} vs {loss32[agree - 1]:.4f}, "
      f"gradient norms {norm16[agree - 1]:.3f} vs {norm32[agree - 1]:.3f}")
print(f"at step {agree + 1}: gradient norm {norm16[agree]:.3f} vs {norm32[agree]:.3f}; at step {spike + 1} the fp16 "
      f"loss is {loss16[spike]:.2f} against {loss32[spike]:.2f}")
print("fp16 loss scale events:", rr["fp16"]["loss_scale_events"])
glue("p_val32", f"{rr['fp32']['val'][-1][1]:.3f}")
glue("p_val16", f"{rr['fp16']['val'][-1][1]:.3f}")
glue("p_valbf", f"{rr['bf16']['val'][-1][1]:.3f}")
glue("p_agree", str(agree))
glue("p_norms", f"{norm16[agree]:.2f} against {norm32[agree]:.2f}")
glue("p_spike", f"{loss16[spike]:.1f} at step {spike + 1}")
glue("p_overflows", str(sum(e.startswith("overflow") for _, e in rr["fp16"]["loss_scale_events"])))
glue("p_diff16", f"{rr['fp16']['val'][-1][1] - rr['fp32']['val'][-1][1]:.3f}")

# %% [markdown]
# bfloat16 follows float32 within the noise of the run and ends at a validation loss of {{p_valbf}} against
# {{p_val32}}. float16 follows it closely for {{p_agree}} steps; then, on one batch, its gradient norm is {{p_norms}},
# and the loss jumps, to {{p_spike}}. The spike's large gradients overflow float16 at the scale of $2^{16}$:
# {{p_overflows}} steps are skipped while the scale halves, the run recovers within a few steps and ends
# {{p_diff16}} nats above float32, at {{p_val16}}.
#
# Is float16's arithmetic at fault at that step? The next cell trains both runs of the benchmark again to step
# {{p_agree}} (the same command with `--stop-at`), draws the next step's batch from each checkpoint's saved random
# state, and computes its gradient on each run's parameters, in float32 arithmetic and in float16:

# %%
from reference.training import checkpoint, data, trained  # noqa: E402

at = 4 if QUICK else agree                    # quick mode: the same check at step 4, for the tests' sake
bench_flags = ["--steps", "400", "--eval-interval", "100", "--stop-at", str(at)]
for name in ("fp16", "fp32"):
    train_run(f"prec_{name}", "--precision", name, *bench_flags)
saved = {name: trained.load(RUN_DIR / f"prec_{name}" / "checkpoint.npz") for name in ("fp16", "fp32")}
train_text, _ = data.train_val_split(data.load_corpus())
train_ids = np.array(saved["fp32"].tokenizer.encode(train_text), dtype=np.int32)
check = {}
for name, t in saved.items():
    x_, y_ = data.get_batch(train_ids, t.run["batch_size"], t.run["block_size"],
                            checkpoint.rng_from_json(t.payload["rng"]))
    modes = [("fp32", 1.0)] + ([("fp16", t.payload["loss_scale"]["scale"])] if name == "fp16" else [])
    for arithmetic, scale in modes:
        _, g = precision.loss_and_grads(t.params, t.config, x_, y_, arithmetic, scale)
        flat = tree.flatten(g)
        check[name, arithmetic] = float(np.sqrt(sum(float(np.vdot(v, v)) for v in flat.values())))
        check[name, arithmetic, "bk"] = max(float(np.abs(v).max()) for k, v in flat.items() if k.endswith("bk"))
        print(f"parameters of the {name} run after step {at}, {arithmetic} arithmetic: gradient norm on step "
              f"{at + 1}'s batch {check[name, arithmetic]:.4f}")
a16, a32 = tree.flatten(saved["fp16"].params), tree.flatten(saved["fp32"].params)
diffs = sorted(((float(np.abs(a16[k] - a32[k]).max()), k) for k in a16), reverse=True)
print("largest parameter differences between the runs: " +
      ", ".join(f"{k} {d:.4f} (the fp32 run's largest |value| {np.abs(a32[k]).max():.2g})" for d, k in diffs[:3]))
glue("chk_16_32", f"{check['fp16', 'fp32']:.4f}")
glue("chk_16_16", f"{check['fp16', 'fp16']:.4f}")
glue("chk_32", f"{check['fp32', 'fp32']:.4f}")
glue("chk_param", diffs[0][1])
glue("chk_param_diff", f"{diffs[0][0]:.3f}")
glue("chk_param_size", f"{np.abs(a32[diffs[0][1]]).max():.0e}")
other = next((d, k) for d, k in diffs if not k.endswith("bk"))
glue("chk_other", f"{other[0]:.4f}, in {other[1]}")
print(f"largest key-bias gradient on the fp16 run's parameters: {check['fp16', 'fp32', 'bk']:.1e} in float32 "
      f"arithmetic, {check['fp16', 'fp16', 'bk']:.1e} in float16")
glue("bk_32", f"{check['fp16', 'fp32', 'bk']:.0e}")
glue("bk_16", f"{check['fp16', 'fp16', 'bk']:.0e}")

# %% [markdown]
# The float16 run's parameters give the same gradient norm in float32 arithmetic ({{chk_16_32}}) as in float16
# ({{chk_16_16}}), against {{chk_32}} for the float32 run's parameters on the same batch: the arithmetic of that step
# is not at fault; the two runs stand at different points. They differ most in {{chk_param}} ({{chk_param_diff}},
# where the float32 run's values stay below {{chk_param_size}}). The key bias gets a gradient of zero in exact
# arithmetic (the softmax ignores a shift of all of a query's scores): float32 computes round-off of {{bk_32}},
# which Adam's $\epsilon = 10^{-8}$ damps, float16 round-off of {{bk_16}}, which Adam, dividing each gradient by
# its own running size, turns into full-size steps. That bias cannot change the loss. The other parameters differ
# by less (at most {{chk_other}}): rounding differences that every update carries into the next. After {{p_agree}}
# steps they had put the float16 run where the next batch's loss is steep, and the float32 run's parameters are
# not. A spike like this is a property of the trajectory, which rounding perturbs; it is why large runs log the loss
# scale's events and keep checkpoints to go back to (PaLM's training was restarted before its spikes, skipping the
# batches that preceded them: Chowdhery et al. 2022).
#
# ## 13.9 What was measured here, and what was computed
#
# | number | source |
# |---|---|
# | GPT-3's state bytes, ZeRO stages, devices needed, activation bytes (13.1, 13.2) | computed: `counting.py`, `sharding.py` |
# | the equalities of five techniques (13.3) | measured here, deterministic: live runs of `reference.train` on 1 and 2 processes |
# | bytes handed to the collectives per step (13.3, 13.4, 13.5) | counted here by `distributed.traffic()`, deterministic |
# | bytes on the wire and seconds per all-reduce (13.4) | measured here (`/proc/self/io`, clocks), change with the load |
# | GPT-3's tensor- and data-parallel traffic (13.5) | computed: `sharding.py` |
# | recomputation's memory (13.6) | measured here by `tracemalloc`, deterministic |
# | recomputation's time (13.6) | measured here, changes with the load; recorded in `bench/results/recompute.json` |
# | pipeline bubbles and activations (13.7) | computed by simulation: `pipeline.py` |
# | mixed-precision curves (13.8) | measured on this machine by `bench/precision.py`, deterministic |
#
# ## Exercises
#
# 1. ZeRO-3 gathers every layer's weights before its forward pass and again before its backward pass, and
#    reduce-scatters the gradients. Count the bytes each rank sends per step in units of $\Psi$ and show that it is
#    1.5 times data parallelism's all-reduce.
# 2. With $p = 8$ pipeline stages, how many micro-batches keep the bubble below 5 %? Check your answer with
#    `pipeline.simulate`, and say how much activation memory the first stage then needs with GPipe and with 1F1B.
# 3. Simulate tensor parallelism of the FFN in one process: split $W_1$, $b_1$ by columns and $W_2$ by rows into $t$
#    shards, compute each shard's partial output with `ffn.forward` (no $b_2$), add them and $b_2$, and compare with
#    the unsplit FFN in float64. Then do the backward pass: each shard's `ffn.backward` gives a partial $dx$; which
#    operator ($f$ or $g$) adds them, and does the sum equal the unsplit $dx$?
