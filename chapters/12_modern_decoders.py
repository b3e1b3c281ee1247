# %% [markdown]
# # 12. From the 2017 Transformer to today's LLMs
#
# The material's §5.1 (未来发展趋势, "future trends") names scale first:
#
# > 1. 模型规模的扩大：随着计算能力和存储技术的提升，大模型的规模将继续扩大，从而提高模型性能。
# >
# > "Growing scale: as compute and storage improve, large models will keep growing, and so perform better."
#
# and §5.2 (挑战, "challenges") the cost of it: 计算资源 ("compute: training and inference need a lot of it").
# Scale did grow. But the models a learner meets today (Llama 3, Mistral, Qwen 2.5, Mixtral, DeepSeek) did not only
# grow: they keep the skeleton of the 2017 block that the material teaches in its §3 (chapter 6), and change five of
# its parts, two of them precisely to spend less compute and memory at a given scale:
#
# | change | replaces | what it buys | code |
# |---|---|---|---|
# | RMSNorm | LayerNorm | one reduction instead of two, no $\beta$ | `reference/ops/rmsnorm.py` |
# | rotary position embedding (RoPE) | positions added to the input | attention scores that depend on relative position only | `reference/ops/rope.py` |
# | SwiGLU feed-forward | ReLU/GELU MLP | a gated MLP, at the same parameter count | `reference/ops/swiglu.py` |
# | grouped-query attention (GQA) | one K/V head per query head | a KV cache $H / H_{kv}$ times smaller | `reference/ops/gqa.py` |
# | mixture of experts (MoE) | one FFN | more parameters at the same compute per token | `reference/ops/moe.py` |
#
# Each section below gives one change as an equation, its code, and a live check. Then 12.7 trains the GPT-2 block,
# each change alone, all four together (the Llama block) and a mixture of experts at equal *active* parameters on the
# book's corpus, several seeds each, and reports what changed beyond the noise; 12.8 takes RoPE and the sinusoids past
# the context length they were trained on. All of it runs through one model, `reference/models/gpt.py`, whose
# configuration switches each change on (`norm`, `positional`, `ffn`, `n_kv_head`, `n_expert`); its defaults are
# GPT-2, and with the Llama switches its logits equal Hugging Face's `LlamaForCausalLM` and `MixtralForCausalLM`
# (12.6).
#
# | what | code |
# |---|---|
# | the five ops, forward and backward (readable, and fast where the model needs it) | `reference/ops/{rmsnorm,rope,swiglu,gqa,moe}.py` |
# | one decoder for GPT-2 and the Llama family; `from_hf_llama`, `from_hf_mixtral`, `to_hf_llama` | `reference/models/gpt.py` |
# | decoding with a KV cache of $H_{kv}$ heads (RoPE keys stored rotated) | `reference/inference/decoding.py` |
# | training: `python -m reference.train --config llama-small` (also `llama-tiny`, `mixtral-tiny`) | `reference/train.py` |
# | export to `transformers` (`LlamaForCausalLM`, `MixtralForCausalLM`) | `reference/export.py` |
# | the Triton kernels (RMSNorm, RoPE, SwiGLU gate; GQA in flash attention) and their GPU benchmark | `kernels/`, `bench/kernels_modern.py` |
# | checks | `tests/ops/test_{rmsnorm,rope,swiglu,gqa,moe}.py`, `tests/models/test_gpt_modern.py`, `tests/kernels/` |
# | the block diagrams | `book/block_diagrams.py` |

# %%
import os

# One BLAS thread: step times in 12.7 measure the model, not how busy the other core is.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dataclasses  # noqa: E402
import time  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from book import QUICK, block_diagrams, glue, machine_load, savefig  # noqa: E402
from reference import tokenizers, tree  # noqa: E402
from reference.gradcheck import rel_error  # noqa: E402
from reference.inference import decoding  # noqa: E402
from reference.models import gpt  # noqa: E402
from reference.ops import attention, cross_entropy, gqa, layernorm, rmsnorm, rope, swiglu  # noqa: E402
from reference.studies import scaling_law  # noqa: E402
from reference.training import data  # noqa: E402

print("quick mode" if QUICK else "full mode")
rng = np.random.default_rng(0)

# %% [markdown]
# ## 12.1 The two blocks
#
# Left, the decoder of the 2017 paper as a decoder-only language model (the material's §3.3 without the encoder): the
# sinusoidal positions added to the token embeddings once, LayerNorm *after* each residual sum (post-LN), a ReLU
# FFN four times as wide as the model, a head tied to the embedding. Right, the Llama block; thick outlines mark what
# changed. Two changes are not among the five above: the norm moved *before* each branch (pre-norm, GPT-2 in 2019;
# chapter 9 measured why: the gradient reaches the first layer unchanged), and the output head got its own matrix.
# The model of this book has been pre-norm from the start, so the comparisons below start from the GPT-2 block.

# %%
fig = block_diagrams.draw_pair(block_diagrams.transformer_2017(), block_diagrams.llama())
savefig(fig, "modern_blocks.png")

# %% [markdown]
# ## 12.2 RMSNorm
#
# LayerNorm (chapter 6.6) centres each row and divides by its standard deviation. RMSNorm (Zhang & Sennrich 2019)
# only divides by the root mean square, and has a gain but no shift:
#
# $$ \mathrm{RMSNorm}(x) = \gamma \odot \frac{x}{\sqrt{\tfrac1C \sum_i x_i^2 + \epsilon}}, \qquad
# dx = r\,\big(g - \hat x\, \overline{g \odot \hat x}\big),\
#    g = dy \odot \gamma,\ r = \big(\overline{x^2} + \epsilon\big)^{-1/2}, $$
#
# LayerNorm's backward without its $-\bar g$ term (`reference/ops/rmsnorm.py`, which also rescales the row by a power of
# two first, so that $\sum x_i^2$ cannot overflow float32). On a row whose mean is 0 the two norms agree exactly;
# otherwise they differ by the mean that RMSNorm leaves in. The check: our forward and backward against
# `torch.nn.functional.rms_norm` and autograd, in float64.

# %%
x = rng.standard_normal((4, 6, 32))
gamma = rng.standard_normal(32)
dy = rng.standard_normal(x.shape)
y, cache = rmsnorm.forward(x, gamma, eps=1e-6)
dx, dgamma = rmsnorm.backward(dy, cache)
xt, gt = torch.tensor(x, requires_grad=True), torch.tensor(gamma, requires_grad=True)
yt = F.rms_norm(xt, (32,), gt, eps=1e-6)
yt.backward(torch.tensor(dy))
print(f"RMSNorm vs torch (float64): y {rel_error(y, yt.detach().numpy()):.1e}, "
      f"dx {rel_error(dx, xt.grad.numpy()):.1e}, dgamma {rel_error(dgamma, gt.grad.numpy()):.1e}")
centred = x - x.mean(axis=-1, keepdims=True)

ln_y, _ = layernorm.forward(centred, gamma, np.zeros(32), eps=1e-6)
rms_y, _ = rmsnorm.forward(centred, gamma, 1e-6)
print(f"on rows of mean 0, RMSNorm = LayerNorm: max difference {np.abs(rms_y - ln_y).max():.1e}")

# %% [markdown]
# ## 12.3 Rotary position embedding
#
# The 2017 model adds a position vector to each token's embedding, once, at the bottom (chapter 6.4; the material's
# printed formula for it is wrong, chapter 11.3). RoPE (Su et al. 2021) adds nothing to the stream: inside every
# attention layer it *rotates* each query and key by an angle proportional to its position. Channel pair $i$ of a
# vector at position $m$ turns by $m\theta_i$, $\theta_i = \Theta^{-2i/d}$ ($\Theta$ = 10 000, Llama 3 uses 500 000):
#
# $$ \begin{pmatrix} y_a \\ y_b \end{pmatrix} = \begin{pmatrix} \cos m\theta_i & -\sin m\theta_i \\
#    \sin m\theta_i & \cos m\theta_i \end{pmatrix} \begin{pmatrix} x_a \\ x_b \end{pmatrix}, \qquad
#    \langle R_m q, R_n k \rangle = \langle q, R_m^\top R_n k\rangle = \langle q, R_{n-m} k \rangle. $$
#
# Rotations compose, so a score depends on $n - m$ alone, and the backward pass is the inverse rotation
# $dx = R_{-m}\,dy$. Which channels form a pair is a layout: neighbours $(2i, 2i+1)$ in the paper, the two halves
# $(i, i + d/2)$ in Hugging Face (`rotate_half`); they are the same map up to a fixed permutation of the channels
# (`rope.interleave_permutation`). The check, live: the score of one query and one key placed at positions $m$ and
# $m + \Delta$, for several $m$: the curves over $\Delta$ coincide.

# %%
d = 32
q1, k1 = rng.standard_normal(d), rng.standard_normal(d)
deltas = np.arange(0, 65)
starts = (0, 100, 1000, 5000)
scores = {}
for m in starts:
    qm, _ = rope.forward(q1[None], np.array([m]))
    kn, _ = rope.forward(np.repeat(k1[None], len(deltas), 0), m + deltas)
    scores[m] = kn @ qm[0]
spread = max(np.abs(scores[m] - scores[0]).max() for m in starts)
print(f"score(m, m + delta) for m in {starts}: largest difference from m = 0 is {spread:.1e} (float64)")
p = rope.interleave_permutation(d)
pos = np.arange(7)
xs = rng.standard_normal((7, d))
same = np.array_equal(rope.forward(xs[:, p], pos, layout="interleaved")[0], rope.forward(xs, pos)[0][:, p])
print(f"interleaved layout on permuted channels == rotate-half layout, permuted: {same}")
glue("rope_spread", f"{spread:.0e}")

fig, ax = plt.subplots(figsize=(7, 3.6))
for m, style in zip(starts, ("-", "--", ":", "-.")):
    ax.plot(deltas, scores[m], style, lw=1.6, label=f"query at m = {m}")
ax.set(xlabel="relative position of the key, n - m", ylabel="score <R_m q, R_n k>",
       title="RoPE: the same q, k at four absolute positions give one curve")
ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4)
ax.grid(alpha=0.3)
savefig(fig, "modern_rope_relative.png")

# %% [markdown]
# The four curves lie on each other to {{rope_spread}}: where the pair sits does not matter, only how far apart.
# With positions added to the input instead, the query and key vectors themselves change with $m$, and relative
# position is something the model must learn to compute from them; 12.8 shows what each scheme does past the longest
# context it was trained on.
#
# ## 12.4 SwiGLU
#
# The 2017 FFN is $\mathrm{act}(x W_1 + b_1) W_2 + b_2$. SwiGLU (Shazeer 2020) multiplies the activation by a second,
# linear projection of the same input, a *gate*, and drops the biases:
#
# $$ \mathrm{SwiGLU}(x) = \big(\mathrm{silu}(x W_{gate}) \odot x W_{up}\big) W_{down}, \qquad
# \mathrm{silu}(a) = a\,\sigma(a), \quad \mathrm{silu}'(a) = \sigma(a)\big(1 + a(1 - \sigma(a))\big). $$
#
# Three matrices of $C \times F$ instead of two of $C \times 4C$: at $F = \tfrac83 C$ the parameter count is the
# same, which is why Llama's widths look odd (Llama 3 8B: $C$ = 4096, $F$ = 14 336 = 3.5 C, rounded to a multiple of
# 1024). The model calls `swiglu.forward_fast`, which runs $x\,[W_{gate} \mid W_{up}]$ as one product. The check:
# ours against the same three products with torch's `silu`, forward and backward.

# %%
C, Fw = 24, 64
xs = rng.standard_normal((3, 5, C))
Wg, Wu, Wd = (rng.standard_normal(s) / np.sqrt(s[0]) for s in ((C, Fw), (C, Fw), (Fw, C)))
dy = rng.standard_normal(xs.shape)
y, cache = swiglu.forward_fast(xs, Wg, Wu, Wd)
ours = (y,) + swiglu.backward_fast(dy, cache)
ts = [torch.tensor(a, requires_grad=True) for a in (xs, Wg, Wu, Wd)]
yt = (F.silu(ts[0] @ ts[1]) * (ts[0] @ ts[2])) @ ts[3]
yt.backward(torch.tensor(dy))
theirs = (yt.detach().numpy(),) + tuple(t.grad.numpy() for t in ts)
print("SwiGLU vs torch (float64): " + ", ".join(f"{n} {rel_error(a, b):.1e}" for n, a, b in
                                                 zip(("y", "dx", "dW_gate", "dW_up", "dW_down"), ours, theirs)))

# %% [markdown]
# ## 12.5 Grouped-query attention, and the KV cache
#
# Decoding keeps the keys and values of every past token (chapter 4.5): per token, $2 L H d_k$ numbers. Grouped-query
# attention (Ainslie et al. 2023) gives the $H$ query heads only $H_{kv}$ key/value heads, each shared by a group of
# $G = H / H_{kv}$ consecutive query heads:
#
# $$ O_h = \mathrm{softmax}\!\Big(\frac{Q_h K_{\lfloor h/G \rfloor}^\top}{\sqrt{d_k}} + M\Big) V_{\lfloor h/G \rfloor},
# \qquad dK_g = \sum_{j<G} dK^{\mathrm{rep}}_{gG+j}, $$
#
# the backward pass summing over the query heads that read a K/V head ($H_{kv} = 1$ is multi-query attention). The
# cache shrinks by $G$; the query heads and $W^Q$, $W^O$ stay. `gqa.forward_fast` stacks each group's queries
# against their one K/V head instead of copying K and V $G$ times. The checks: against torch's
# `scaled_dot_product_attention(enable_gqa=True)`, and the bytes of our decoder's KV cache, measured on the arrays
# it holds after a prefill, against full multi-head attention.

# %%
B, H, H_kv, T, dk = 2, 8, 2, 9, 16
q = rng.standard_normal((B, H, T, dk))
k, v = rng.standard_normal((2, B, H_kv, T, dk))
mask = attention.causal_mask(T, T)
out, _ = gqa.forward_fast(q, k, v, mask)
ref = F.scaled_dot_product_attention(*(torch.tensor(a) for a in (q, k, v)), attn_mask=torch.tensor(mask),
                                     enable_gqa=True).numpy()
print(f"GQA vs torch SDPA (enable_gqa, float64): {rel_error(out, ref):.1e}")

kv_rows = []
for name, n_kv in (("multi-head (H_kv = H = 8)", 8), ("grouped-query (H_kv = 2)", 2), ("multi-query (H_kv = 1)", 1)):
    cfg = gpt.GPTConfig(vocab_size=50, block_size=64, n_layer=4, n_head=8, d_model=128, n_kv_head=n_kv)
    params = gpt.init_params(cfg, np.random.default_rng(0))
    _, kv_cache = decoding.forward_cached(params, cfg, rng.integers(0, 50, size=(1, 40)))
    measured = sum(a.nbytes for a in kv_cache.k + kv_cache.v) / 40
    assert measured == gpt.kv_bytes_per_token(cfg)
    kv_rows.append((name, measured, gpt.n_params(params)))
    print(f"{name:<28} KV cache {measured:>6,.0f} bytes per token (float32)   parameters {gpt.n_params(params):,}")
llama3 = gpt.GPTConfig(vocab_size=128256, block_size=8192, n_layer=32, n_head=32, d_model=4096, n_kv_head=8)
gib = gpt.kv_bytes_per_token(llama3, itemsize=2) * 8192 / 2**30
gib_mha = gpt.kv_bytes_per_token(dataclasses.replace(llama3, n_kv_head=32), itemsize=2) * 8192 / 2**30
print(f"Llama 3 8B shape (L = 32, H = 32, H_kv = 8, d_k = 128), bf16, one sequence of 8192 tokens: "
      f"{gib:.1f} GiB of KV cache; with H_kv = 32 it would be {gib_mha:.1f} GiB")
glue("llama3_kv", f"{gib:.1f}")
glue("llama3_kv_mha", f"{gib_mha:.1f}")

# %% [markdown]
# The cache follows $2 L H_{kv} d_k$ exactly, and the parameters barely move (only $W^K$, $W^V$ shrink). For the
# shape of Llama 3 8B one sequence of 8192 tokens holds {{llama3_kv}} GiB of keys and values instead of
# {{llama3_kv_mha}} GiB: on an accelerator, the batch that fits grows by that factor, and decoding, which reads the
# whole cache for every new token, reads four times fewer bytes.
#
# ## 12.6 Mixture of experts, and the whole model against Hugging Face
#
# Mixtral replaces each FFN by $E$ SwiGLU experts and a router $W_r$; each token goes to its top $k$ experts, mixed by
# the router's probabilities renormalised over the chosen ones:
#
# $$ p = \mathrm{softmax}(x W_r), \quad S = \mathrm{top}_k(p), \quad y = \sum_{e \in S}
# \frac{p_e}{\sum_{j\in S} p_j}\,\mathrm{SwiGLU}_e(x), \qquad
# L_{aux} = E \sum_e f_e P_e, $$
#
# with $f_e$ the fraction of the token choices that went to expert $e$ and $P_e$ its mean router probability (the
# Switch Transformer's load-balancing loss, added to the language-model loss with a small weight; $L_{aux} = k$ when
# the load is even). Only $k$ experts run per token: the model holds $E/k$ times the FFN parameters of a dense model
# at the same compute per token. The choice $S$ is a step function of the router logits: it has no gradient, and the
# router learns only through the weights of the chosen experts and through $L_{aux}$ (`reference/ops/moe.py`; its
# tests show finite differences blowing up as $1/h$ across a change of expert).
#
# The whole decoder with these switches is Llama or Mixtral. The check: random-initialised `LlamaForCausalLM` and
# `MixtralForCausalLM` from `transformers` (8 query heads, 2 K/V heads, untied head), loaded with
# `gpt.from_hf_llama` / `gpt.from_hf_mixtral`, give our logits, Mixtral's auxiliary loss, and, through
# `gpt.loss_and_grads`, the gradients that torch's autograd computes for the same loss
# ($\text{cross-entropy} + 0.02\,L_{aux}$ for Mixtral).

# %%
import transformers  # noqa: E402

transformers.logging.set_verbosity_error()
hf_sizes = dict(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8,
                num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=False,
                attn_implementation="eager")
torch.manual_seed(0)
hf_models = {"Llama": transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_sizes)),
             "Mixtral": transformers.MixtralForCausalLM(transformers.MixtralConfig(
                 **hf_sizes, num_local_experts=4, num_experts_per_tok=2, router_aux_loss_coef=0.02))}
ids = rng.integers(0, 64, size=(2, 20))
targets = rng.integers(0, 64, size=(2, 20))
for name, model in hf_models.items():
    model.eval()
    sd = {k_: t.detach().numpy() for k_, t in model.state_dict().items()}
    params, config = (gpt.from_hf_llama if name == "Llama" else gpt.from_hf_mixtral)(sd, model.config.to_dict())
    logits, cache = gpt.forward(params, config, ids)
    out = model(torch.from_numpy(ids), output_router_logits=name == "Mixtral")
    loss_t = F.cross_entropy(out.logits.reshape(-1, 64), torch.from_numpy(targets).reshape(-1))
    line = f"{name}: logits {rel_error(logits, out.logits.detach().numpy()):.1e}"
    if name == "Mixtral":
        loss_t = loss_t + 0.02 * out.aux_loss
        line += f", L_aux ours {float(gpt.aux_loss(cache)):.6f} theirs {out.aux_loss.item():.6f}"
        counts = cache.blocks[0].ffn.routing.counts
        line += f", tokens per expert in layer 0 {counts.tolist()} (of {2 * ids.size})"
    loss_t.backward()
    loss, grads = gpt.loss_and_grads(params, config, ids, targets)
    ours_g = gpt.to_hf_llama(grads, config)
    worst = max(rel_error(ours_g[n], p_.grad.numpy()) for n, p_ in model.named_parameters())
    print(line + f", loss {float(loss):.6f} vs {loss_t.item():.6f}, worst gradient {worst:.1e} (float32)")

# %% [markdown]
# In float32 on both sides the logits and every parameter's gradient agree to about $10^{-6}$ of their largest entry
# (`tests/models/test_gpt_modern.py` holds them to $10^{-5}$ and checks every parameter against float64 finite
# differences as well).
#
# ## 12.7 The ablation: one change at a time, on the corpus
#
# Which of these changes helps a small model? The experiment: the book's corpus (the King James Bible, characters),
# the GPT-2 block as the baseline, then each change alone, the four together (the Llama block, without biases), and a
# mixture of 4 SwiGLU experts with 2 active per token. Every variant trains for the same steps on the same batch size
# and context, with the same optimizer (AdamW, warm-up then cosine, clipping; `scaling_law.train_run`, the loop of
# `reference/train.py`), and has the GPT-2 block's parameter count: each variant's FFN width $d_{ff}$ is chosen so that
# its parameters come closest to the baseline's (RoPE frees the position table, GQA part of $W^K, W^V$; the FFN gets
# them back). The mixture of experts matches the baseline's *active* parameters, and holds more in total. Each variant
# runs with several seeds; all are evaluated on the same validation windows.

# %%
text = data.load_corpus()
train_text, val_text = data.train_val_split(text)
tok = tokenizers.CharTokenizer.train(train_text)
train_ids = np.array(tok.encode(train_text), dtype=np.int32)
val_ids = np.array(tok.encode(val_text), dtype=np.int32)
if QUICK:
    D, L, H, T, BATCH, STEPS, SEEDS, N_VAL = 16, 2, 4, 16, 4, 4, (0,), 4
else:
    D, L, H, T, BATCH, STEPS, SEEDS, N_VAL = 64, 2, 4, 64, 16, 300, (0, 1, 2), 64
LR, WARMUP = 3e-3, max(1, STEPS // 10)
base = gpt.GPTConfig(vocab_size=tok.vocab_size, block_size=T, n_layer=L, n_head=H, d_model=D)
target = gpt.n_active_params(base)


def matched(config):
    """The config with the d_ff whose (active) parameter count comes closest to the GPT-2 block's."""
    best = min(range(4, 8 * D + 1), key=lambda f: abs(gpt.n_active_params(dataclasses.replace(config, d_ff=f))
                                                     - target))
    return dataclasses.replace(config, d_ff=best)


LLAMA = dict(norm="rmsnorm", positional="rope", ffn="swiglu", n_kv_head=H // 2, bias=False)
VARIANTS = {
    "GPT-2 block": base,
    "+ RMSNorm": matched(dataclasses.replace(base, norm="rmsnorm")),
    "+ RoPE": matched(dataclasses.replace(base, positional="rope")),
    "+ SwiGLU": matched(dataclasses.replace(base, ffn="swiglu")),
    "+ GQA": matched(dataclasses.replace(base, n_kv_head=H // 2)),
    "Llama block (all four)": matched(dataclasses.replace(base, **LLAMA)),
    "MoE, 4 experts, top 2": matched(dataclasses.replace(base, **LLAMA, n_expert=4, top_k=2, aux_loss_coef=0.01)),
    "sinusoidal (2017)": dataclasses.replace(base, positional="sinusoidal", embed_scale=float(np.sqrt(D))),
}
print(f"{len(train_ids):,} training characters, vocabulary {tok.vocab_size}; d_model {D}, {L} layers, {H} heads, "
      f"context {T}, batch {BATCH}, {STEPS} steps, seeds {SEEDS}")
for name, cfg in VARIANTS.items():
    total = sum(int(np.prod(s)) for s in gpt.param_shapes(cfg).values())
    print(f"  {name:<24} d_ff {cfg.d_ff:>4}   parameters {total:>8,} (active {gpt.n_active_params(cfg):,})")

# %% [markdown]
# The last row is the 2017 scheme on the GPT-2 block: fixed sinusoids added to the token embeddings, which the paper
# multiplies by $\sqrt{d_{model}}$ first (its section 3.4; `embed_scale` here). It is not part of the comparison at
# equal parameters (it has no table to give back to the FFN); it is there for 12.8. The runs (a few minutes in all):

# %%
val_rng = np.random.default_rng(1234)
val_x, val_y = data.get_batch(val_ids, N_VAL, T, val_rng)       # the same validation windows for every model


def val_loss(params, config):
    return float(cross_entropy.forward(gpt.forward(params, config, val_x)[0], val_y)[0])


runs = {}
for name, cfg in VARIANTS.items():
    for seed in SEEDS:
        out = scaling_law.train_run(cfg, train_ids, val_ids, STEPS, BATCH, LR, warmup=WARMUP, eval_batches=1,
                                    seed=seed)
        runs[name, seed] = {"val": val_loss(out["params"], cfg), "params": out["params"],
                            "train_tail": float(np.mean(out["train_loss"][-20:]))}
    print(f"{name:<24} validation loss " + "  ".join(f"{runs[name, s]['val']:.3f}" for s in SEEDS))
print(f"{len(runs)} runs")

# %% [markdown]
# Step time. The time of one training step (forward and backward, the batch above) is measured
# apart from the runs, all variants interleaved and the best of several kept, so that the other jobs on this machine
# disturb them alike. It measures this NumPy code, not the architectures' FLOPs: the GPT-2 block's ops have tuned fast
# twins, RoPE and RMSNorm do not, and the MoE loops over its experts.

# %% tags=["measurement"]
step_ms = {name: np.inf for name in VARIANTS}
bx, by = data.get_batch(train_ids, BATCH, T, np.random.default_rng(7))
for _ in range(2 if QUICK else 7):
    for name, cfg in VARIANTS.items():
        p_ = runs[name, SEEDS[0]]["params"]
        t0 = time.perf_counter()
        gpt.loss_and_grads(p_, cfg, bx, by)
        step_ms[name] = min(step_ms[name], 1e3 * (time.perf_counter() - t0))
print("  ".join(f"{n}: {ms:.0f} ms" for n, ms in step_ms.items()))
print(machine_load())

# %% [markdown]
# The table: validation loss (mean and standard deviation over the seeds), its difference from the GPT-2 block
# paired by seed (the same seed: the same validation windows and, where the shapes agree, the same initial draws),
# a verdict, and the KV cache in bytes per token. A difference counts only if every seed moves the same way and the
# mean difference is more than twice the spread of the paired differences; otherwise it is within the noise of this
# experiment.

# %%
base_name = "GPT-2 block"
rows = []
for name, cfg in VARIANTS.items():
    vals = np.array([runs[name, s]["val"] for s in SEEDS])
    delta = vals - np.array([runs[base_name, s]["val"] for s in SEEDS])
    spread = delta.std(ddof=1) if len(SEEDS) > 1 else np.nan
    if name == base_name:
        verdict = "baseline"
    elif len(SEEDS) < 3:
        verdict = "(too few seeds)"
    elif (np.all(delta < 0) or np.all(delta > 0)) and abs(delta.mean()) > 2 * spread:
        verdict = "better" if delta.mean() < 0 else "worse"
    else:
        verdict = "within the noise"
    total = sum(int(np.prod(s)) for s in gpt.param_shapes(cfg).values())
    rows.append((name, total, gpt.n_active_params(cfg), vals.mean(), vals.std(ddof=1) if len(vals) > 1 else np.nan,
                 delta.mean(), spread, verdict, gpt.kv_bytes_per_token(cfg)))
print(f"{'variant':<24} {'params':>8} {'active':>8} {'val loss':>15} {'vs GPT-2':>16}  {'verdict':<17} "
      f"{'KV B/token':>10}")
for name, total, active, mean, sd, dmean, dsd, verdict, kvb in rows:       # step times: the measurement above
    print(f"{name:<24} {total:>8,} {active:>8,} {mean:>8.3f} ± {sd:.3f} {dmean:>+8.3f} ± {dsd:.3f}  {verdict:<17} "
          f"{kvb:>10,}")
verdicts = {r[0]: r[7] for r in rows}
deltas = {r[0]: r[5] for r in rows}
for key, name in (("rms", "+ RMSNorm"), ("rope", "+ RoPE"), ("swiglu", "+ SwiGLU"), ("gqa", "+ GQA"),
                  ("llama", "Llama block (all four)"), ("moe", "MoE, 4 experts, top 2"),
                  ("sin", "sinusoidal (2017)")):
    glue(f"d_{key}", f"{deltas[name]:+.3f}")
    glue(f"v_{key}", verdicts[name])
moe_vs_llama = np.array([runs["MoE, 4 experts, top 2", s]["val"] - runs["Llama block (all four)", s]["val"]
                         for s in SEEDS])
print(f"MoE against its dense twin, the Llama block (same active parameters), paired by seed: "
      f"{moe_vs_llama.mean():+.3f} ({', '.join(f'{d_:+.3f}' for d_ in moe_vs_llama)})")
glue("d_moe_llama", f"{moe_vs_llama.mean():+.3f}")
glue("base_val", f"{rows[0][3]:.3f}")
glue("base_sd", f"{rows[0][4]:.3f}")
glue("n_seeds", str(len(SEEDS)))
glue("steps", str(STEPS))
glue("T", str(T))
glue("T_last", str(T - 1))

fig, ax = plt.subplots(figsize=(9, 4))
names = list(VARIANTS)
for i, name in enumerate(names):
    vals = [runs[name, s]["val"] for s in SEEDS]
    ax.plot([i] * len(vals), vals, "o", color="0.5", ms=4, label="one seed" if i == 0 else None)
    ax.errorbar(i + 0.15, np.mean(vals), yerr=np.std(vals, ddof=1) if len(vals) > 1 else 0, fmt="s",
                color="tab:blue", capsize=3, label="mean ± std over seeds" if i == 0 else None)
ax.axhline(np.mean([runs[base_name, s]["val"] for s in SEEDS]), color="tab:blue", lw=0.8, ls="--")
ax.set_xticks(range(len(names)), [n.replace(", ", ",\n").replace(" (", "\n(") for n in names], fontsize=8)
ax.set(ylabel="validation loss (nats per character)",
       title=f"Equal parameters, {STEPS} steps, {len(SEEDS)} seed(s): which change moves the loss?")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
ax.grid(axis="y", alpha=0.3)
savefig(fig, "modern_ablation.png")

# %% [markdown]
# What the runs say, at this size (two layers of width 64, {{steps}} steps; the GPT-2 block ends at {{base_val}}
# nats per character, ± {{base_sd}} over {{n_seeds}} seeds):
#
# - **RoPE** moves the loss by {{d_rope}} ({{v_rope}}), by far the largest change. A character model leans on "how far
#   back" (the letters of the current word, the end of the last verse); RoPE gives every layer that directly, while a
#   learned table must learn each of its {{T}} rows from data.
# - **RMSNorm**: {{d_rms}} ({{v_rms}}): small next to RoPE, and RMSNorm was adopted for its cost (one reduction, no
#   $\beta$), not for its loss.
# - **SwiGLU**: {{d_swiglu}} ({{v_swiglu}}) after {{steps}} steps. At initialisation its branch is a product of two
#   small projections, $\mathrm{silu}(a) \odot b \approx a b / 2$ with $a, b$ of order $0.02 \sqrt{C}$, so it starts
#   an order of magnitude weaker than the MLP's and learns more slowly at first; whether it overtakes the MLP in a
#   longer run, as Shazeer (2020) measured over far longer training, this experiment does not say.
# - **GQA** with half the K/V heads: {{d_gqa}} ({{v_gqa}}), for a KV cache half the size: the trade that the large
#   models make, at no measurable cost here.
# - **All four (the Llama block)**: {{d_llama}} ({{v_llama}}): RoPE's gain, less part of SwiGLU's early cost.
# - **MoE** at equal active parameters: {{d_moe}} against the GPT-2 block ({{v_moe}}), and {{d_moe_llama}} against its
#   dense twin, the Llama block. Each expert sees about half the tokens, so in a run this short it is trained on less
#   data than the dense FFN, and the router must first learn to spread the load: what MoE buys (more parameters for the
#   same compute per token) pays after long training at scale, not in {{steps}} steps.
# - **Sinusoidal positions** (2017, with the paper's $\sqrt{d}$ scale): {{d_sin}} against the learned table
#   ({{v_sin}}). A fixed code that the model must learn to read, against a table that learns itself; 12.8 shows what
#   the sinusoids do give: a position for every index, not only the first {{T}}.
#
# These are measurements of a tiny model after a short run. They say which differences this experiment can resolve,
# not how a model of billions of parameters trained on trillions of tokens behaves, where each change was adopted
# because it helped, or cost less, at that scale.
#
# Why the paper scales the embeddings: without the $\sqrt{d_{model}}$ factor, the token embeddings (initialised with
# std 0.02) are fifty times smaller than the sinusoids (amplitude 1) they are added to. One run of that, seed 0:

# %%
no_scale = dataclasses.replace(VARIANTS["sinusoidal (2017)"], embed_scale=1.0)
out = scaling_law.train_run(no_scale, train_ids, val_ids, STEPS, BATCH, LR, warmup=WARMUP, eval_batches=1,
                            eval_every=max(1, STEPS // 6), seed=0)
print("validation loss every", max(1, STEPS // 6), "steps without the scale:",
      "  ".join(f"{v:.2f}" for _, v in out["val"][:-1]), f"  final {val_loss(out['params'], no_scale):.3f}")
print(f"with the scale (seed 0): {runs['sinusoidal (2017)', 0]['val']:.3f}; learned positions: "
      f"{runs[base_name, 0]['val']:.3f}")
glue("noscale_val", f"{val_loss(out['params'], no_scale):.2f}")
freq = np.bincount(train_ids, minlength=tok.vocab_size) + 1.0          # add-one: every id gets some probability
unigram = float(-np.log(freq / freq.sum())[val_ids].mean())
print(f"the unigram model (each character's training frequency, no context): {unigram:.3f}")
glue("unigram", f"{unigram:.2f}")

# %% [markdown]
# Without the scale the model ends at {{noscale_val}} nats per character, next to the unigram model's {{unigram}}:
# it has learned the characters' frequencies and little of their context. The sinusoids drown the tokens, and
# {{steps}} steps are not enough to grow the embeddings past them. (The book's GPT adds its learned table, initialised
# like the embeddings, without a scale.)
#
# ## 12.8 Past the trained context length
#
# A model trained on windows of $T$ tokens has never seen a position $\ge T$. What happens there depends on how it
# encodes position:
#
# - **learned** positions ($P$ is a table of $T$ rows) cannot run at all: there is no row for position $T$;
# - **sinusoidal** positions can be computed for any position, but the model has never seen those vectors added to
#   its input;
# - **RoPE** only ever sees relative positions up to $T - 1$ inside attention; past $T$, queries meet keys farther
#   back than any seen in training.
#
# First, what relative position means in a trained model: the same validation windows, evaluated at positions
# $0 \dots T-1$ and shifted to $T/2 \dots 3T/2 - 1$. Then windows of $2T$ tokens, the loss at every position.

# %%
ext = {name: dataclasses.replace(VARIANTS[name], block_size=2 * T) for name in ("+ RoPE", "sinusoidal (2017)")}
shift = np.arange(T) + T // 2
for name, cfg in ext.items():
    p_ = runs[name, SEEDS[0]]["params"]
    a, _ = gpt.forward(p_, cfg, val_x)
    b, _ = gpt.forward(p_, cfg, val_x, positions=shift)
    la, lb = (float(cross_entropy.forward(z, val_y)[0]) for z in (a, b))
    print(f"{name:<22} loss at positions 0..{T - 1}: {la:.4f}; shifted by {T // 2}: {lb:.4f}; "
          f"largest logit change {np.abs(a - b).max():.1e}")
    key = "rope" if "RoPE" in name else "sin"
    glue(f"shift_{key}", f"{np.abs(a - b).max():.0e}")
    glue(f"shift_loss_{key}", f"{la:.2f} to {lb:.2f}")
learned_cfg = VARIANTS[base_name]
try:
    gpt.forward(runs[base_name, SEEDS[0]]["params"], learned_cfg, np.zeros((1, 2 * T), dtype=np.int64))
except ValueError as err:
    print(f"learned positions, {2 * T} tokens: ValueError: {err}")

long_x, long_y = data.get_batch(val_ids, N_VAL, 2 * T, np.random.default_rng(99))
per_position = {}
for name, cfg in ext.items():
    curves = []
    for seed in SEEDS:
        logits, _ = gpt.forward(runs[name, seed]["params"], cfg, long_x)
        z = logits - logits.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        curves.append(-np.take_along_axis(logp, long_y[..., None], axis=-1)[..., 0].mean(axis=0))   # (2T,)
    per_position[name] = np.mean(curves, axis=0)
for name, curve in per_position.items():
    inside, outside = curve[T // 2:T].mean(), curve[T:].mean()
    print(f"{name:<22} mean loss at positions {T // 2}..{T - 1}: {inside:.3f}; at {T}..{2 * T - 1}: {outside:.3f} "
          f"({outside - inside:+.3f})")
    key = "rope" if "RoPE" in name else "sin"
    glue(f"in_{key}", f"{inside:.2f}")
    glue(f"out_{key}", f"{outside:.2f}")

# where the RoPE model looks: the attention probability that queries past T put on keys more than T-1 back
rope_cache = gpt.forward(runs["+ RoPE", SEEDS[0]]["params"], ext["+ RoPE"], long_x)[1]
offset = np.arange(2 * T)[:, None] - np.arange(2 * T)[None, :]          # m - n for query m, key n
for layer, c in enumerate(rope_cache.blocks):
    P = attention.probabilities(c.attn.attn)[:, :, T:]                 # (B, H, T, 2T): queries at T .. 2T-1
    far = float((P * (offset[T:] >= T)).sum(axis=-1).mean())
    mean_dist = float((P * offset[T:].clip(min=0)).sum(axis=-1).mean())
    print(f"RoPE model, layer {layer}: queries past {T - 1} put {far:.1%} of their attention on keys more than "
          f"{T - 1} back; mean distance {mean_dist:.1f} characters")
    glue(f"far_{layer}", f"{far:.1%}")
    glue(f"dist_{layer}", f"{mean_dist:.0f}")

learned_curve = []                         # the learned table: positions 0 .. T-1 and no further
for seed in SEEDS:
    logits, _ = gpt.forward(runs[base_name, seed]["params"], learned_cfg, long_x[:, :T])
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    learned_curve.append(-np.take_along_axis(logp, long_y[:, :T, None], axis=-1)[..., 0].mean(axis=0))
per_position["learned positions (GPT-2 block)"] = np.mean(learned_curve, axis=0)

fig, ax = plt.subplots(figsize=(8, 4))
window = max(1, T // 16)
shown = []
for (name, curve), color in zip(per_position.items(), ("tab:blue", "tab:orange", "tab:green")):
    smooth = np.convolve(curve, np.ones(window) / window, mode="valid")
    xs_ = np.arange(len(smooth)) + window - 1
    ax.plot(xs_, smooth, color=color, label=name)
    shown.append(smooth[T // 8:])
    if len(curve) == T:                     # the learned table ends here: mark it
        ax.plot(xs_[-1], smooth[-1], "x", color=color, ms=9, mew=2)
# the first few positions have almost no context (loss ~4 nats): the y range is set by the rest
lo, hi = min(c.min() for c in shown), max(c.max() for c in shown)
ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.15 * (hi - lo))
ax.axvline(T - 0.5, color="0.3", ls="--", lw=1)
ax.text(T + 0.5, ax.get_ylim()[1], " trained context ends", va="top", fontsize=8, color="0.3")
ax.set(xlabel="position in the window", ylabel="loss (nats per character)",
       title=f"Trained on {T} characters, evaluated on {2 * T} (mean of {len(SEEDS)} seed(s), "
             f"{window}-position mean)")
ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)
ax.grid(alpha=0.3)
savefig(fig, "modern_extrapolation.png")

# %% [markdown]
# Shifting every position leaves the RoPE model's logits unchanged to float32 round-off ({{shift_rope}}): the trained
# model sees only relative positions, as 12.3 derived. The sinusoidal model's logits change by up to {{shift_sin}}
# and its loss goes from {{shift_loss_sin}}: it has learned absolute positions.
#
# Past the trained length the two part ways. The sinusoidal model's loss rises from {{in_sin}} (positions $T/2$ to
# $T-1$) to {{out_sin}} beyond $T$: every token there carries a position vector the model never saw. The RoPE model's
# does not rise ({{in_rope}}, then {{out_rope}}), although its queries past $T$ do reach beyond what training showed
# them: layer 0 puts {{far_0}} of its attention on keys more than $T - 1$ back (its mean distance is {{dist_0}}
# characters), layer 1 {{far_1}} (mean distance {{dist_1}}). Whatever the second layer gathers from far back, taking it
# from farther still did not hurt this model's next-character predictions. The learned table (green) stops at its
# last row, position {{T_last}}.
#
# That is this model, not a rule. A language model asked about a long document needs its far keys, and RoPE models
# evaluated well past their training length do degrade (Chen et al. 2023, who then introduced position
# interpolation). Long-context models therefore rescale RoPE's angles (position interpolation, NTK-aware scaling,
# YaRN, Llama 3.1's `rope_type: "llama3"`, which `gpt.llama_config` refuses rather than computes wrongly) and train
# further at the longer length.
#
# ## Summary
#
# - The 2017 block survives in today's decoders; five parts changed: RMSNorm, RoPE, SwiGLU, grouped-query attention,
#   and in the largest models a mixture of experts. Each is one op in `reference/ops/`, forward and backward checked,
#   and one switch of `gpt.GPTConfig`; with the switches on, `reference/models/gpt.py` computes Hugging Face's Llama
#   and Mixtral, logits and gradients.
# - Two of the changes are about cost rather than quality, which is the answer the field gave to the material's §5.2
#   on compute: GQA divides the KV cache by $H/H_{kv}$ at no measurable loss here, and a mixture of experts grows the
#   parameters without growing the compute per token.
# - On a tiny character model at equal parameters and steps, RoPE made by far the largest difference ({{d_rope}}),
#   RMSNorm a small one ({{d_rms}}), GQA none beyond the noise; SwiGLU and the mixture of experts cost loss in a run
#   this short. Each verdict is against the spread of {{n_seeds}} seeds, and none is a claim about large models.
# - RoPE sees relative positions only: shifting all positions changes nothing, and this model's loss did not rise at
#   twice its trained length, while the sinusoidal model's did and the learned table cannot run there at all.
#
# ## Exercises
#
# 1. Meta's original Llama checkpoints use the interleaved RoPE layout. Show that permuting the output columns of
#    each head of $W^Q$ and $W^K$ by `rope.interleave_permutation` makes a model in the rotate-half layout compute the
#    same attention scores, and write that conversion for a (C, H d) matrix.
# 2. Count the KV cache of Llama 3 70B (80 layers, 64 query heads, 8 K/V heads, $d_k$ = 128) in bf16 for a batch of
#    16 sequences of 8192 tokens, and what the same model would need with multi-head attention.
# 3. Mixtral 8x7B: 32 layers, $C$ = 4096, 32 query heads and 8 K/V heads, 8 SwiGLU experts of width 14 336 with 2
#    per token, a vocabulary of 32 000, untied head. Use `gpt.param_shapes` and `gpt.n_active_params` to count its
#    parameters and the active ones, without making any array.
#
# Worked solutions: `chapters/solutions/12_modern_decoders.py` (checked by `tests/book/test_solutions_12.py`).
