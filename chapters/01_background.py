# %% [markdown]
# # 1. Background: what makes a model large
#
# The material's §1 (背景介绍, "background") says that a large model is one "with a large number of parameters and a
# complex structure", and gives one number:
#
# > 例如，GPT-3 是一款基于Transformer架构的大型自然语言处理模型，具有1750亿个参数，可以生成高质量的文本。
# >
# > "For example, GPT-3 is a large Transformer-based NLP model with 175 billion parameters that can generate
# > high-quality text."
#
# The same sentence of §1 says large models have had "显著的成果" (notable results) in "自然语言处理、计算机视觉、推荐系统"
# (language, vision and recommender systems). The architecture this book builds carries over: a vision Transformer
# (ViT, Dosovitskiy et al. 2020) cuts an image into 16 × 16 patches and treats each patch as a token; sequential
# recommenders (SASRec, Kang & McAuley 2018; BERT4Rec, Sun et al. 2019) treat a user's history of items as a
# sequence of tokens, and large recommendation models spend most of their parameters on embedding tables, one row
# per item (the $Vd$ term of 1.1 with $V$ in the millions). This book measures text only.
#
# This chapter turns "large" into arithmetic. From a model's published shape we count its parameters exactly,
# estimate the compute that training it costs (about 6 FLOPs per parameter per token), and the memory that its
# weights, gradients and optimizer state take in each precision. The counting is checked against the reference's own
# GPT, whose parameters we can count one array at a time.
#
# | what | code |
# |---|---|
# | parameter, FLOP and memory formulas | `reference/studies/counting.py` |
# | the decoder whose parameters we count for real | `reference/models/gpt.py` |
# | checks | `tests/studies/test_counting.py` |

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

from book import QUICK, glue, savefig
from reference.models import gpt
from reference.studies import counting

print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 1.1 Counting the parameters of a decoder block
#
# A GPT-style block (chapter 6 derives each piece) holds, for model width $d$ and FFN width $4d$:
#
# $$
# \underbrace{4d^2 + 4d}_{W_Q,W_K,W_V,W_O\ \text{and biases}}
# \;+\; \underbrace{8d^2 + 5d}_{W_1\ (d\times 4d),\ b_1,\ W_2\ (4d\times d),\ b_2}
# \;+\; \underbrace{4d}_{\text{two LayerNorms}}
# \;=\; 12d^2 + 13d .
# $$
#
# With $L$ blocks, a token embedding $V \times d$, a learned position table $T \times d$ and a final LayerNorm, and
# the output layer tied to the token embedding:
#
# $$ N = L\,(12d^2 + 13d) + Vd + Td + 2d \;\approx\; 12\,L\,d^2 . $$
#
# A formula is only as good as its check. We build small GPTs with `reference/models/gpt.py` and count their arrays.

# %%
rows = []
for L, d, H, T, V in [(1, 8, 2, 4, 11), (2, 64, 4, 32, 65), (4, 256, 8, 256, 65)]:
    config = gpt.GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, d_model=d)
    counted = gpt.n_params(gpt.init_params(config, np.random.default_rng(0)))
    predicted = counting.param_count(counting.DecoderShape(n_layer=L, d_model=d, n_head=H, n_ctx=T, vocab_size=V))["total"]
    rows.append((L, d, V, T, counted, predicted))
    assert counted == predicted
print(f"{'L':>3} {'d':>5} {'V':>4} {'T':>4} {'counted':>12} {'formula':>12}")
for L, d, V, T, counted, predicted in rows:
    print(f"{L:>3} {d:>5} {V:>4} {T:>4} {counted:>12,} {predicted:>12,}")

# %% [markdown]
# ## 1.2 GPT-3's 175 billion, reproduced
#
# GPT-3's largest model (Brown et al. 2020, table 2.1): 96 layers, $d_{model} = 12288$, 96 heads, context 2048,
# vocabulary 50257 (GPT-2's byte-level BPE).

# %%
counts = counting.param_count(counting.GPT3_175B)
for part in ("embedding", "blocks", "final_ln", "total", "approx_12Ld2"):
    print(f"{part:>13}: {counts[part]:>19,}  ({counts[part] / 1e9:7.2f} B)")
print(f"the blocks are {counts['blocks'] / counts['total']:.2%} of the model")
assert round(counts["total"] / 1e9, 1) == 174.6
glue("gpt3_total", f"{counts['total'] / 1e9:.1f}")
glue("gpt3_12Ld2", f"{counts['approx_12Ld2'] / 1e9:.1f}")
glue("gpt3_embedding", f"{counts['embedding'] / 1e9:.2f}")

# %% [markdown]
# The exact count is **{{gpt3_total}} B**, which the paper rounds to 175 B. The $12Ld^2$ rule alone gives
# {{gpt3_12Ld2}} B: at this width, the embeddings ({{gpt3_embedding}} B) and all the biases and LayerNorm gains are
# less than half a percent of the model.
# For small models the opposite holds. In the 4-layer, $d = 256$ model above, the token and position tables are a
# visible share; in GPT-2 small ({{gpt2_total}} M), the {{gpt2_wte}} M-parameter token embedding is almost a third.

# %%
published = {
    "GPT-2 small": counting.GPT2_SMALL,
    "GPT-2 medium": counting.DecoderShape(n_layer=24, d_model=1024, n_head=16, n_ctx=1024, vocab_size=50257),
    "GPT-2 large": counting.DecoderShape(n_layer=36, d_model=1280, n_head=20, n_ctx=1024, vocab_size=50257),
    "GPT-2 XL": counting.DecoderShape(n_layer=48, d_model=1600, n_head=25, n_ctx=1024, vocab_size=50257),
    "GPT-3 2.7B": counting.DecoderShape(n_layer=32, d_model=2560, n_head=32, n_ctx=2048, vocab_size=50257),
    "GPT-3 6.7B": counting.DecoderShape(n_layer=32, d_model=4096, n_head=32, n_ctx=2048, vocab_size=50257),
    "GPT-3 175B": counting.GPT3_175B,
}
table = {name: counting.param_count(shape) for name, shape in published.items()}
glue("gpt2_total", f"{table['GPT-2 small']['total'] / 1e6:.0f}")
glue("gpt2_wte", f"{counting.GPT2_SMALL.vocab_size * counting.GPT2_SMALL.d_model / 1e6:.1f}")
for name, c in table.items():
    print(f"{name:>13}: {c['total'] / 1e9:8.3f} B   embeddings {c['embedding'] / c['total']:6.1%}")

fig, ax = plt.subplots(1, 2, figsize=(11, 4))
names = list(table)
emb = np.array([table[n]["embedding"] for n in names], dtype=float)
blk = np.array([table[n]["blocks"] for n in names], dtype=float)
share = 100 * blk / (blk + emb)
ax[0].barh(names, share, label="blocks (12 L d² + 13 L d)")
ax[0].barh(names, 100 - share, left=share, label="embeddings (V d + T d)")
ax[0].set_xlabel("share of the parameters (%)")
ax[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8)
ax[0].set_title("Where the parameters are")
Ld2 = np.array([published[n].n_layer * published[n].d_model ** 2 for n in names], dtype=float)
ax[1].plot(Ld2, blk + emb, "o", label="exact count N")
ax[1].plot(Ld2, 12 * Ld2, "k--", lw=1, label="12 L d²")
for n in names:
    ax[1].annotate(n, (published[n].n_layer * published[n].d_model ** 2, table[n]["total"]), fontsize=8,
                   xytext=(5, -10), textcoords="offset points")
ax[1].set_xscale("log")
ax[1].set_yscale("log")
ax[1].set_xlabel("L · d_model²  (layers × width²)")
ax[1].set_ylabel("parameters N")
ax[1].legend(loc="upper left", fontsize=8)
ax[1].set_title("N follows 12 L d²; small models sit above it (embeddings)")
fig.tight_layout()
savefig(fig, "background_params.png")

# %% [markdown]
# ## 1.3 Compute: about 6 FLOPs per parameter per token
#
# In a forward pass every weight takes part in one multiply and one add per token: $2N$ FLOPs per token. The backward
# pass costs twice that (one matmul for the input gradient, one for the weight gradient), so training costs
#
# $$ C \approx 6\,N\,D \quad \text{FLOPs for } D \text{ training tokens} $$
#
# (Kaplan et al. 2020). Attention scores add $4LTd$ per token, halved under a causal mask; at $T = 2048$ that is a
# few percent for GPT-3. GPT-3 was trained on 300 B tokens:

# %%
N = counts["blocks"]  # non-embedding parameters, the convention of Kaplan et al.
C = counting.training_flops(N, 300e9)
print(f"forward FLOPs per token: {counting.flops_per_token(counting.GPT3_175B):.3e} (2N = {2 * N:.3e})")
print(f"training compute 6ND: {C:.3e} FLOPs")
glue("gpt3_flops", f"{C / 1e23:.1f}")
a100_bf16 = 312e12  # peak dense bf16 FLOP/s of one A100
for mfu in (0.3, 0.5):
    gpu_years = C / (a100_bf16 * mfu) / (3600 * 24 * 365)
    print(f"  at {mfu:.0%} of an A100's peak: {gpu_years:,.0f} GPU-years")

# %% [markdown]
# ${{gpt3_flops}} \times 10^{23}$ FLOPs is the figure the GPT-3 paper reports (3.14e23). The same formula, applied to this
# book's own training run in chapter 2, predicts its time on two CPU cores; chapter 9 compares prediction and
# measurement.
#
# ## 1.4 Memory: weights, gradients and optimizer state
#
# Storing a parameter takes 4 bytes in float32, 2 in bfloat16, 1 in int8. Training with Adam keeps, per parameter,
# the weight, its gradient and two moments: $4 + 4 + 4 + 4 = 16$ bytes in float32. Mixed precision stores the
# weights and gradients in bfloat16 but keeps the two moments in float32 and adds a float32 *master copy* of the
# weights: $2 + 2 + 4 + 4 + 4 = 16$ bytes, the same total (the table below prints both). Mixed precision does not
# shrink the model's state; what it saves is the activations (2 bytes per stored value instead of 4, and at long
# contexts and large batches they outgrow the state) and time (an A100 multiplies bfloat16 matrices at 312 TFLOP/s,
# float32 at 19.5). Why the master copy costs its 4 bytes is shown after the figure.

# %%
regimes = {
    "inference fp32": {"weights": 4},
    "inference bf16": {"weights": 2},
    "inference int8": {"weights": 1},
    "inference int4": {"weights": 0.5},
    "training fp32 + Adam": counting.training_memory(1),
    "training mixed + Adam": counting.training_memory(1, weights="bfloat16", master_weights="float32"),
}
total = counts["total"]
bytes_per_param = {k: (v["total"] if "total" in v else v["weights"]) for k, v in regimes.items()}
for k, b in bytes_per_param.items():
    print(f"{k:>22}: {b:>4} bytes/param -> {b * total / 2**30:>9,.0f} GiB for GPT-3, "
          f"at least {math.ceil(b * total / (80 * 2**30)):>3} x 80 GiB GPUs")

glue("gpt3_mixed_tib", f"{bytes_per_param['training mixed + Adam'] * total / 2**40:.1f}")

fig, ax = plt.subplots(figsize=(7, 3.2))
ax.barh(list(bytes_per_param), [b * total / 2**40 for b in bytes_per_param.values()], color="tab:purple")
ax.set_xlabel("TiB for GPT-3 175B (activations not included)")
ax.set_title("Memory of the model state, by precision")
fig.tight_layout()
savefig(fig, "background_memory.png")

# %% [markdown]
# **Why mixed precision keeps a float32 copy.** bfloat16 keeps 8 significant bits: between 0.015625 and 0.03125
# its neighbouring values are $2^{-13} \approx 1.2 \times 10^{-4}$ apart. A weight of 0.02 (GPT-2's initial scale)
# updated by an Adam step of $6 \times 10^{-5}$ (GPT-3's peak learning rate) rounds back to itself, step after step.
# The float32 master copy accumulates the small steps exactly enough, and the bfloat16 weights are re-rounded from
# it after each step. PyTorch's bfloat16 does the rounding here:

# %%
import torch  # noqa: E402

step_size, n_steps = 6e-5, 1000
w_bf16 = torch.tensor(0.02, dtype=torch.bfloat16)
w_fp32 = np.float32(0.02)
for _ in range(n_steps):
    w_bf16 = (w_bf16.float() - step_size).to(torch.bfloat16)          # update a bfloat16 weight in place
    w_fp32 = np.float32(w_fp32 - np.float32(step_size))               # update the float32 master copy
print(f"after {n_steps} steps of {step_size:g}: bfloat16 weight {w_bf16.item():.6f}, "
      f"float32 master {float(w_fp32):.6f} (exact: {0.02 - n_steps * step_size:.6f})")
weights = torch.randn(100_000, generator=torch.Generator().manual_seed(0)) * 0.02
as_bf16 = weights.to(torch.bfloat16)
unchanged = ((as_bf16.float() - step_size).to(torch.bfloat16) == as_bf16).float().mean().item()
print(f"of 100,000 weights ~ N(0, 0.02^2) in bfloat16, {unchanged:.0%} do not move at all under one such step")
assert abs(w_bf16.item() - 0.02) < 1e-3 and abs(float(w_fp32) - (0.02 - n_steps * step_size)) < 1e-5

# %% [markdown]
# Even stored in int4, GPT-3 does not fit on one 80 GiB accelerator; trained with Adam in mixed precision it needs
# about {{gpt3_mixed_tib}} TiB for its state before a single activation is stored. This is what "large" means in practice: the
# model has to be split over many devices, and every byte per parameter saved (chapter 3: pruning, quantization,
# distillation) counts 175 billion times.
#
# ## Exercises
#
# 1. Derive the count for the post-LN *encoder-decoder* Transformer of chapter 6: how many parameters does the
#    base model of Vaswani et al. (N = 6, d = 512, d_ff = 2048, 8 heads, one 37000-token embedding shared by the
#    encoder, the decoder and the output layer) have? Compare with the 65 M of the paper's table 3.
# 2. With $C = 6ND$ and the Chinchilla rule $D \approx 20N$, what model size is compute-optimal for a budget of
#    $10^{21}$ FLOPs?
# 3. Decoding with a KV cache (chapter 4) stores every layer's keys and values for every token seen. How many GiB
#    does GPT-3's cache take for one sequence of 2048 tokens in bfloat16?
#
# Worked solutions: `chapters/solutions/01_background.py` (checked by `tests/book/test_solutions_01.py`).
