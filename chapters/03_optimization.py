# %% [markdown]
# # 3. Model optimization: pruning, quantization and distillation, measured
#
# The material's §2.2 (模型优化, "model optimization") names three methods, one line each:
#
# > 1. 剪枝（Pruning）：消除模型中不重要的参数，减少模型复杂度。
# > 2. 量化（Quantization）：将模型参数从浮点数转换为有限位数整数，减少模型大小和计算成本。
# > 3. 知识蒸馏（Knowledge Distillation）：将大模型训练好的知识传递给小模型，使小模型在性能和计算成本上达到平衡。
# >
# > 1. "Pruning: remove the unimportant parameters of the model, reducing its complexity."
# > 2. "Quantization: convert the model's parameters from floating point to integers of a few bits, reducing the
# >    model's size and compute cost."
# > 3. "Knowledge distillation: pass what a large trained model knows to a small model, balancing the small model's
# >    quality against its compute cost."
#
# Each line is a promise (less complexity, smaller, cheaper, a good balance). This chapter implements each method
# for real on two real models, and measures what it costs and what it saves: the character-level GPT that chapter 2
# trains on the King James Bible, and the sentence encoder all-MiniLM-L6-v2 (a 6-layer BERT, run in NumPy). It ends
# with one table that puts size, validation loss and speed side by side.
#
# | method | what it does here | code |
# |---|---|---|
# | unstructured magnitude pruning, one-shot and gradual (with fine-tuning) | zero the smallest weights; masks held fixed in AdamW | `reference/compression/prune.py` |
# | structured pruning of attention heads | zero a head's $W^Q, W^K, W^V$ columns and $W^O$ rows | `reference/compression/prune.py` |
# | weight-only int8 / int4 quantization | integer codes + scales per channel or per group | `reference/compression/quantize.py` |
# | quantization-aware fine-tuning | fake quantization forward, straight-through backward | `reference/compression/qat.py` |
# | knowledge distillation | $T^2\,\mathrm{KL} + \alpha\,\mathrm{CE}$, hand-written backward | `reference/compression/distill.py` |
# | the models | GPT (chapter 2), MiniLM (chapter 8) | `reference/models/gpt.py`, `reference/train.py`, `reference/models/bert.py` |
# | checks | | `tests/compression/test_prune.py`, `tests/compression/test_quantize.py`, `tests/compression/test_qat.py`, `tests/compression/test_distill.py` |

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

from book import QUICK, glue, machine_load, savefig, trained_gpt
from reference import tokenizers, train, tree
from reference.compression import distill, prune, qat, quantize
from reference.models import bert, gpt

print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 3.0 The model and how we measure it
#
# In `make book`, chapter 2 trains the "small" configuration of `reference/train.py` (characters, $d_{model} = 128$,
# 4 layers, 4 heads, a context of 128, 800 AdamW steps) into `runs/small/checkpoint.npz`, and this chapter loads it.
# In quick mode (the test suite) it trains the "tiny" configuration for a few seconds instead, so the quick-mode
# numbers come from a much weaker model; the cell says which one it used.
#
# Every model below is scored the same way: the mean next-character cross-entropy (nats) on the same fixed windows of
# the validation split (`prune.validation_loss` with one seed), so two numbers differ only because the models do.

# %%
ckpt, origin = trained_gpt("ch03_", quick_flags=["--config", "tiny"], full_flags=["--config", "small"])
tok = tokenizers.from_json(ckpt["tokenizer"])
config = train.model_config(ckpt["run"], tok.vocab_size)
dense = ckpt["params"]
_, train_ids, val_ids = train.build_data(ckpt["run"], tok)

EVAL = dict(batch_size=8, n_batches=4 if QUICK else 8)   # 8 x 8 windows of 128 characters = 8,192 in full mode


def val_loss(params, cfg=config):
    return prune.validation_loss(params, cfg, val_ids, **EVAL)


def tokens_per_s(models, rounds=3 if QUICK else 7):
    """Forward tokens/s of each ``name: (params, config)``: the best of ``rounds`` passes, the models interleaved
    round by round, so that a burst of load from other processes on this shared machine hits them all alike."""
    best = {name: 0.0 for name in models}
    for _ in range(rounds):
        for name, (p, cfg) in models.items():
            best[name] = max(best[name], distill.forward_tokens_per_second(p, cfg, batch_size=8, repeats=1))
    return best


dense_loss = val_loss(dense)
print(f"model: {origin}, step {ckpt['step']}")
print(f"  {config}")
print(f"  {gpt.n_params(dense):,} parameters, {dense['wte'].dtype}; validation loss {dense_loss:.4f} nats/char "
      f"on {EVAL['n_batches'] * EVAL['batch_size']} windows of {config.block_size}")

# %% [markdown]
# ## 3.1 Pruning
#
# **Unstructured magnitude pruning.** Keep the weights of largest magnitude. For a target sparsity $s$ over the $N$
# prunable weights (the matrices $W^Q, W^K, W^V, W^O, W_1, W_2$ of every block; not the embeddings, biases or
# LayerNorm parameters), with $\tau$ the $k$-th smallest $|w|$ and $k = \mathrm{round}(sN)$:
#
# $$ m_i = \mathbb 1\big[\,|w_i| > \tau\,\big] \ \ (\text{ties at } \tau \text{ broken by position, so exactly } k
# \text{ zeros}), \qquad w \leftarrow m \odot w . $$
#
# One threshold for all matrices together (`scope="global"`) lets a matrix of small weights lose more than others.
#
# **Gradual pruning** (Zhu & Gupta 2017) fine-tunes while the sparsity rises along a cubic schedule,
#
# $$ s_t = s_f + (s_i - s_f)\Big(1 - \frac{t - t_0}{t_1 - t_0}\Big)^3 , $$
#
# recomputing the masks every few steps. Between recomputations the masks are held fixed *inside* AdamW: the
# gradient and both moments are masked ($g, m, v \leftarrow$ mask $\odot\,\cdot$), so a pruned weight gets the update
# $0 \cdot (1 - \eta\lambda) - \eta \cdot 0 / (0 + \epsilon) = 0$ exactly and stays zero.
#
# First a live check on the trained model: exact counts, and zeros that survive fine-tuning.

# %%
masks = prune.magnitude_masks(dense, 0.5)
pruned_once = prune.apply_masks(dense, masks)
n_prunable = sum(W.size for n, W in tree.flatten(dense).items() if prune.prunable(n, W))
n_zero = sum(int((~m).sum()) for m in tree.flatten(masks).values() if m is not None)
print(f"{n_prunable:,} prunable weights of {gpt.n_params(dense):,}; 50% asks for {round(0.5 * n_prunable):,} zeros, "
      f"the masks have {n_zero:,}")
assert n_zero == round(0.5 * n_prunable) and prune.sparsity_of(pruned_once) == n_zero / n_prunable

FT_STEPS = 10 if QUICK else 60
FT_LR = 3e-4                   # a little above the 2e-4 that ends chapter 2's cosine schedule
tuned, tuned_masks, hist = prune.gradual_prune(dense, config, train_ids, FT_STEPS, 0.5, lr=FT_LR)
zeros_kept = all(np.all(W[~m] == 0) for W, m in zip(tree.flatten(tuned).values(), tree.flatten(tuned_masks).values())
                 if m is not None)
print(f"gradual pruning to 50% in {FT_STEPS} steps: sparsity along the way "
      + ", ".join(f"{s:.2f}" for _, _, s in hist[::max(1, FT_STEPS // 6)])
      + f"; final {prune.sparsity_of(tuned):.4f}; every masked weight exactly 0: {zeros_kept}")
assert zeros_kept and prune.sparsity_of(tuned) == n_zero / n_prunable

# %% [markdown]
# Now the sweep: validation loss against sparsity, pruned once (no training at all), and pruned gradually with
# the same number of fine-tuning steps at each sparsity. The 0 % row of the fine-tuned curve is the dense model
# fine-tuned for those steps: it separates what the fine-tuning does by itself from what it repairs.

# %%
sparsities = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
ft_sparsities = [0.0, 0.5, 0.9] if QUICK else [0.0, 0.3, 0.5, 0.7, 0.8, 0.9]
oneshot = prune.sparsity_sweep(dense, config, val_ids, sparsities, batch_size=EVAL["batch_size"],
                               eval_batches=EVAL["n_batches"])
finetuned = {}
for s in ft_sparsities:
    p_s = tuned if s == 0.5 else prune.gradual_prune(dense, config, train_ids, FT_STEPS, s, lr=FT_LR)[0]
    finetuned[s] = val_loss(p_s)
print(f"{'sparsity':>8} {'one-shot':>9} {f'+{FT_STEPS} steps':>10}")
for row in oneshot:
    ft = finetuned.get(row["sparsity"])
    print(f"{row['sparsity']:>8.0%} {row['loss_oneshot']:>9.4f} {'' if ft is None else f'{ft:10.4f}'}")
assert oneshot[0]["loss_oneshot"] == dense_loss                        # 0 % pruned is the dense model, bit for bit

fig, ax = plt.subplots(figsize=(6.5, 4))
ax.plot([100 * r["sparsity"] for r in oneshot], [r["loss_oneshot"] for r in oneshot], "o-", label="one-shot")
ax.plot([100 * s for s in finetuned], list(finetuned.values()), "s-",
        label=f"gradual, {FT_STEPS} fine-tuning steps")
ax.axhline(dense_loss, color="gray", ls="--", lw=1, label="dense")
ax.set_xlabel("sparsity of the block matrices (%)")
ax.set_ylabel("validation loss (nats/char)")
ax.set_title("GPT: magnitude pruning" + (" (quick)" if QUICK else ""))
ax.grid(alpha=0.3)
ax.legend()
savefig(fig, "optimization_pruning.png")


def tolerated(losses, reference, tol=0.01):
    """The largest sparsity whose loss is within ``tol`` nats of ``reference``."""
    return max(s for s, loss in losses.items() if loss <= reference + tol)


oneshot_losses = {r["sparsity"]: r["loss_oneshot"] for r in oneshot}
print(f"within 0.01 nats of the dense model: one-shot up to {tolerated(oneshot_losses, dense_loss):.0%}; "
      f"fine-tuned, within 0.01 of the dense model fine-tuned alike ({finetuned[0.0]:.4f}): up to "
      f"{tolerated(finetuned, finetuned[0.0]):.0%}")

# %% [markdown]
# Read the fine-tuned curve against its own 0 % point, not against the dense line: part of its change (up or down)
# is what the extra training steps do to any model, pruned or not. What pruning costs is the gap between a
# fine-tuned point and that 0 % point, and it grows fast at high sparsity, where the remaining weights must carry
# everything.
#
# **Structured pruning: attention heads of MiniLM.** Zeroing scattered weights leaves every matrix as large as it
# was; removing a whole head removes whole columns of $W^Q, W^K, W^V$ and rows of $W^O$, which a smaller matrix
# multiplication could skip. A head $h$ of a layer contributes $\mathrm{softmax}(Q_h K_h^\top/\sqrt{d_k})\,V_h\,
# W^O_{[h]}$ to its output; with $W^O_{[h]} = 0$ that term is gone. Which heads go first? Each head's importance is
# measured by ablation: remove it alone and measure $1 - \overline{\cos}$ between the sentence embeddings and the
# dense model's (one pass per head, 72 heads). The data-free alternative scores a head by
# $\|W^V_{[h]}\|_F\,\|W^O_{[h]}\|_F$, a bound on the size of its output. Then heads are removed in order, lowest
# score first, and the cosine to the dense embeddings is measured on a set of sentences.

# %%
SENTENCES = [
    "In the beginning God created the heaven and the earth.",
    "The cat sat quietly on the warm mat by the door.",
    "Stock markets fell sharply on Monday after the report.",
    "How do I reset the password of my email account?",
    "A light rain is expected tomorrow morning in the north.",
    "The committee approved the new budget after a long debate.",
    "She plays the violin in the city orchestra every weekend.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "The train to the airport leaves every fifteen minutes.",
    "He forgot his keys and had to wait outside for an hour.",
    "Neural networks are trained by gradient descent on a loss.",
    "The old bridge was closed for repairs during the winter.",
    "Add two cups of flour and stir until the batter is smooth.",
    "The museum opens a new exhibition of modern sculpture.",
    "Our team won the final match by a single goal.",
    "Blessed are the meek: for they shall inherit the earth.",
]
if QUICK:
    SENTENCES = SENTENCES[:4]
head_counts = [0, 12, 36, 60] if QUICK else [0, 6, 12, 18, 24, 36, 48, 60, 72]
minilm, minilm_cfg = bert.from_pretrained()
rows_ablation, ablation_scores = prune.heads_pruned_vs_cosine(SENTENCES, head_counts, minilm, minilm_cfg,
                                                              method="ablation")
rows_weight, _ = prune.heads_pruned_vs_cosine(SENTENCES, head_counts, minilm, minilm_cfg, method="weight")
print(f"MiniLM: {minilm_cfg.n_layer} layers x {minilm_cfg.n_head} heads; "
      f"{len(SENTENCES)} sentences")
print(f"{'heads removed':>13} {'ablation order: mean / min cos':>31} {'weight order: mean / min cos':>29}")
for ra, rw in zip(rows_ablation, rows_weight):
    print(f"{ra['heads_pruned']:>6} ({ra['fraction']:4.0%}) {ra['mean_cosine']:>16.4f} / {ra['min_cosine']:.4f}"
          f" {rw['mean_cosine']:>19.4f} / {rw['min_cosine']:.4f}")
assert abs(rows_ablation[0]["mean_cosine"] - 1.0) < 1e-5              # nothing removed: the same float32 vectors

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.2, 1]})
for rows, name in ((rows_ablation, "ablation order"), (rows_weight, "weight-norm order")):
    axes[0].plot([r["heads_pruned"] for r in rows], [r["mean_cosine"] for r in rows], "o-", label=f"{name}, mean")
    axes[0].plot([r["heads_pruned"] for r in rows], [r["min_cosine"] for r in rows], ":",
                 color=axes[0].lines[-1].get_color(),
                 label=f"{name}, min")
axes[0].set_xlabel(f"heads removed (of {ablation_scores.size})")
axes[0].set_ylabel("cosine to the dense embedding")
axes[0].set_title("MiniLM: structured head pruning" + (" (quick)" if QUICK else ""))
axes[0].grid(alpha=0.3)
axes[0].legend(fontsize=8)
im = axes[1].imshow(ablation_scores, cmap="viridis", aspect="auto")
axes[1].set_xlabel("head")
axes[1].set_ylabel("layer")
axes[1].set_title("1 - mean cosine with that head alone removed")
fig.colorbar(im, ax=axes[1])
fig.tight_layout()
savefig(fig, "optimization_heads.png")
order = prune.lowest(ablation_scores, ablation_scores.size)
print(f"the {len(order) // 6} least important heads by ablation sit in layers "
      f"{sorted({l for l, _ in order[:len(order) // 6]})}; the most important 12 in layers "
      f"{sorted({l for l, _ in order[-12:]})}")

# %% [markdown]
# Two lessons. The importance of a head is measured, not guessed: ordering by ablation keeps the embeddings closer
# to the dense ones than ordering by weight norms at every count between none and all, because a head with large
# weights can still be redundant. And the heads are far from equally important: for a mean-pooled sentence embedding the
# last layer, whose output *is* the embedding, carries the heads whose removal costs most (the bright row of the
# heat map). Zeroing a head still leaves its matrices in place; to save compute, the pruned columns and rows would
# be cut out, giving layers with different head counts.

# %% [markdown]
# ## 3.2 Quantization
#
# A weight matrix is stored as integer codes $q$ and a float scale $s$ per block of weights (the whole tensor, one
# output channel, or a group of $g$ consecutive weights). Symmetric $b$-bit quantization, with
# $q_{\max} = 2^{b-1} - 1$:
#
# $$ s = \frac{\max_{\text{block}} |W|}{q_{\max}}, \qquad q = \mathrm{clamp}\big(\mathrm{rint}(W / s),\,
# -q_{\max},\, q_{\max}\big), \qquad \hat W = s\,q, \qquad |W - \hat W| \le s/2 . $$
#
# int8 keeps one code per byte; int4 packs two codes per byte. The model computes with $\hat W$ ("weight-only"
# quantization: activations stay float). A live check of the bound, the packing and the integer matmul:

# %%
rng = np.random.default_rng(0)
W = dense["blocks"][0]["ffn"]["W1"]                                             # (C, 4C)
for bits, opts in ((8, dict(axis=1)), (4, dict(group_size=32))):
    q = quantize.quantize(W, bits=bits, **opts)
    err = np.abs(W - q.dequantize())
    print(f"int{bits} {opts}: max |W - W_hat| / (s/2) = {(err / (q.elementwise_scale() / 2)).max():.4f}, "
          f"{q.nbytes:,} bytes vs {q.float_nbytes:,} in float32 ({q.float_nbytes / q.nbytes:.2f}x smaller)")
    assert np.all(err <= q.elementwise_scale() / 2 * (1 + 1e-6))               # float rounding of W / s only
q4 = quantize.quantize(W, bits=4, group_size=32)
assert np.array_equal(quantize.unpack(q4.packed(), q4.codes.size, signed=True), q4.codes.ravel())
a = quantize.quantize(rng.standard_normal((8, W.shape[0])).astype(np.float32), bits=8, axis=0)
b = quantize.quantize(W, bits=8, axis=1)
assert np.array_equal(quantize.int_matmul(a.codes, b.codes), a.codes.astype(np.int64) @ b.codes.astype(np.int64))
print("int4 pack/unpack round-trips; the int32-accumulated int8 matmul equals the int64 one exactly")

# %% [markdown]
# **On the trained GPT.** Weight-only quantization of the block matrices (the embedding table, which is also the
# output layer, stays float32, as do biases and LayerNorm): int8 with one scale per output channel, int4 with one
# scale per output channel, int4 with one scale per group of 32, and, as a stress test, 2 bits per channel (the
# symmetric 2-bit grid is ternary: codes $-1, 0, 1$ times the scale).

# %%
SCHEMES = {"int8 per-channel": dict(bits=8, axis=1), "int4 per-channel": dict(bits=4, axis=1),
           "int4 group 32": dict(bits=4, group_size=32), "int2 per-channel": dict(bits=2, axis=1)}
quantized = {}
print(f"{'model':>18} {'bytes':>10} {'vs float':>8} {'block matrices':>14} {'val loss':>9} {'change':>8}")
print(f"{'float32':>18} {gpt.n_params(dense) * 4:>10,} {'1.00x':>8} {'':>14} {dense_loss:>9.4f}")
for name, opts in SCHEMES.items():
    p_q, report = quantize.quantize_params(dense, **opts)
    mats = report["tensors"].values()
    ratio = sum(t["bytes_before"] for t in mats) / sum(t["bytes_after"] for t in mats)
    quantized[name] = {"params": p_q, "bytes": report["bytes_after"], "loss": val_loss(p_q), "report": report}
    print(f"{name:>18} {report['bytes_after']:>10,} {report['bytes_before'] / report['bytes_after']:>7.2f}x "
          f"{ratio:>13.2f}x {quantized[name]['loss']:>9.4f} {quantized[name]['loss'] - dense_loss:>+8.4f}")
    assert report["bytes_before"] == gpt.n_params(dense) * 4

# %% [markdown]
# The whole model shrinks less than its matrices: the embedding table ($V \times C$), the position table and the
# vectors stay float32. The matrices' cost per weight is the code's bits plus a float32 scale shared by a block:
# $8 + 32/K$ bits per channel of $K$ weights (int8: $K = 128$ or $512$ here, so just under 4x smaller),
# $4 + 32/32 = 5$ bits for int4 in groups of 32 (6.4x). Codes of 2 and 3 bits are stored in a nibble here
# (`reference/compression/quantize.py` packs only 4-bit pairs), so the 2-bit row takes the bytes of int4 and shows only what
# the accuracy does.
#
# **Which layers hurt most.** Quantize one matrix at a time, and measure the validation loss with only that matrix
# quantized, at int4 per channel and at the 2-bit stress setting:

# %%
LAYER_SCHEMES = ("int4 per-channel", "int2 per-channel")
per_layer = {k: quantize.layer_errors(dense, val_loss, **SCHEMES[k]) for k in LAYER_SCHEMES}
rel = {k: {n: t["rel_error"] for n, t in quantized[k]["report"]["tensors"].items()} for k in LAYER_SCHEMES}
names = list(per_layer["int2 per-channel"])
worst = sorted(names, key=per_layer["int2 per-channel"].get, reverse=True)
print(f"{'one matrix at a time':>20} {'int4: loss change':>18} {'rel. error':>10} {'int2: loss change':>18} "
      f"{'rel. error':>10}")
for n in worst:
    print(f"{n:>20} " + " ".join(f"{per_layer[k][n] - dense_loss:>+18.4f} {rel[k][n]:>10.3f}" for k in LAYER_SCHEMES))

fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
for ax, k, color in zip(axes, LAYER_SCHEMES, ("tab:orange", "tab:red")):
    ax.barh(names, [per_layer[k][n] - dense_loss for n in names], color=color)
    ax.set_xlabel("validation loss change (nats/char)")
    ax.set_title(f"{k}, one matrix at a time")
    ax.grid(alpha=0.3, axis="x")
axes[0].invert_yaxis()
fig.tight_layout()
savefig(fig, "optimization_layers.png")

# %% [markdown]
# The rounding error is spread evenly, its effect is not: every matrix loses about the same fraction of its norm
# (the relative error columns), but the loss cares far more about some matrices than others. In the full-mode run
# printed above, the matrices of the first block, on which every later layer builds, cost the most, its attention
# keys $W^K$ above all. Mixed-precision schemes spend their bits accordingly: more for the sensitive matrices.

# %% [markdown]
# **On MiniLM.** The same weight-only schemes on the sentence encoder's block matrices (word embeddings stay
# float32), measured by the cosine of each sentence's embedding to its float32 embedding.

# %%
emb_float = bert.embed_sentences(SENTENCES, minilm, minilm_cfg)                  # (N, 384) unit rows
print(f"{'MiniLM':>18} {'bytes':>11} {'block matrices':>14} {'mean cos':>9} {'min cos':>8}")
for name, opts in SCHEMES.items():
    p_q, report = quantize.quantize_params(minilm, **opts)
    cos = (bert.embed_sentences(SENTENCES, p_q, minilm_cfg) * emb_float).sum(axis=1)   # (N,)
    mats = report["tensors"].values()
    ratio = sum(t["bytes_before"] for t in mats) / sum(t["bytes_after"] for t in mats)
    print(f"{name:>18} {report['bytes_after']:>11,} {ratio:>13.2f}x {cos.mean():>9.5f} {cos.min():>8.5f}")
print(f"{'float32':>18} {report['bytes_before']:>11,}")

# %% [markdown]
# The two models do not respond alike: compare the GPT's loss changes with MiniLM's cosines. One scale per channel
# must cover a channel's largest weight, so a few large weights stretch the grid for the whole channel (of 384 or
# 1536 weights in MiniLM); groups of 32 give each run of weights its own scale, for one extra bit per weight.

# %% [markdown]
# **Quantization-aware fine-tuning (QAT) against post-training quantization (PTQ).** PTQ rounds the trained weights
# once. QAT keeps float master weights $W$ and trains the model that computes with $\hat W$: the forward uses
# $\hat W = \mathrm{deq}(\mathrm{q}(W))$, and the backward passes the gradient straight through the rounding (whose
# true derivative is 0 almost everywhere), $\partial L / \partial W \approx \partial L / \partial \hat W$ inside the
# clipping range (`quantize.fake_quant_backward`, `reference/compression/qat.py`). For a fair comparison both get the same
# budget: the same number of steps on the same batches, the PTQ side as a float fine-tune followed by rounding.

# %%
QAT_STEPS = 10 if QUICK else 60
ft_float, _ = qat.finetune(dense, config, train_ids, QAT_STEPS, quantized=False, lr=FT_LR)
ft_float_loss = val_loss(ft_float)
qat_table, deployed_qat = {}, {}
for k in LAYER_SCHEMES:
    ft_qat, _ = qat.finetune(dense, config, train_ids, QAT_STEPS, quantized=True, lr=FT_LR, **SCHEMES[k])
    deployed_qat[k] = quantize.quantize_params(ft_qat, **SCHEMES[k])[0]
    qat_table[k] = {"PTQ": quantized[k]["loss"],
                    "float fine-tune, then PTQ": val_loss(quantize.quantize_params(ft_float, **SCHEMES[k])[0]),
                    "QAT, then quantize": val_loss(deployed_qat[k])}
print(f"dense float32: {dense_loss:.4f}; dense after the same {QAT_STEPS} float fine-tuning steps: {ft_float_loss:.4f}")
print(f"{'':>18} {'PTQ':>8} {f'float FT {QAT_STEPS} + PTQ':>17} {f'QAT {QAT_STEPS}':>8}")
for k, r in qat_table.items():
    print(f"{k:>18} {r['PTQ']:>8.4f} {r['float fine-tune, then PTQ']:>17.4f} {r['QAT, then quantize']:>8.4f}")
for k, r in qat_table.items():
    print(f"{k}: rounding costs {r['float fine-tune, then PTQ'] - ft_float_loss:+.4f} nats after the float "
          f"fine-tune and {r['QAT, then quantize'] - ft_float_loss:+.4f} after QAT (both against the float fine-tune)")

# %% [markdown]
# The fair reference for both fine-tuned columns is the float fine-tune itself (the second number of the first
# line): it separates what rounding costs from what the extra steps gain. QAT can only recover what rounding costs,
# so it matters where PTQ hurts; where PTQ is already within a few thousandths of a nat, the two columns agree to
# about that.

# %% [markdown]
# ## 3.3 Knowledge distillation
#
# A student learns from the teacher's whole output distribution, softened by a temperature $T$, as well as from the
# true next character (Hinton, Vinyals & Dean 2015). With $p^t = \mathrm{softmax}(z^t/T)$,
# $p^s = \mathrm{softmax}(z^s/T)$ over $N$ positions:
#
# $$ L = T^2\,\frac1N\sum_n \mathrm{KL}\big(p^t_n \,\Vert\, p^s_n\big) + \alpha\,\frac1N\sum_n
# \mathrm{CE}(z^s_n, y_n), \qquad \frac{\partial L}{\partial z^s_n} = \frac{T\,(p^s_n - p^t_n) +
# \alpha\,(\mathrm{softmax}(z^s_n) - \mathrm{onehot}(y_n))}{N} . $$
#
# The $T^2$ keeps the soft term's gradient from shrinking like $1/T^2$ as $T$ grows. A live check of the gradient
# against central differences in float64:

# %%
zs, zt = rng.standard_normal((2, 3, 7)), rng.standard_normal((2, 3, 7))         # (B, T, V) student, teacher
y = rng.integers(0, 7, size=(2, 3))
loss, cache = distill.forward(zs, zt, y, T=2.0, alpha=0.5)
dz = distill.backward(1.0, cache)
h, num = 1e-6, np.zeros_like(zs)
for i in np.ndindex(zs.shape):
    e = np.zeros_like(zs)
    e[i] = h
    num[i] = (distill.forward(zs + e, zt, y, 2.0, 0.5)[0] - distill.forward(zs - e, zt, y, 2.0, 0.5)[0]) / (2 * h)
print(f"distillation loss {float(loss):.4f}; max |analytic - numerical| gradient = {np.abs(dz - num).max():.1e}")
assert np.abs(dz - num).max() < 1e-8                     # central differences: O(h^2) + eps/h ~ 1e-10

# %% [markdown]
# The teacher is the trained GPT. The student has the same depth and half the width ($d_{model}$ 64 instead of 128),
# so its block matrices are 4x smaller. Two students start from the same initialisation and see the same batches
# for the same number of steps: one learns from the teacher ($T = 2$, $\alpha = 0.5$), the other from the text
# alone (cross-entropy).

# %%
student_cfg = gpt.GPTConfig(vocab_size=config.vocab_size, block_size=config.block_size, n_layer=config.n_layer,
                            n_head=config.n_head, d_model=config.d_model // 2, positional=config.positional)
KD_STEPS = 20 if QUICK else 300
kd = distill.distill(dense, config, student_cfg, train_ids, KD_STEPS, val_data=val_ids, T=2.0, alpha=0.5, lr=3e-3,
                     batch_size=8, eval_every=max(1, KD_STEPS // 10), eval_batches=EVAL["n_batches"])
student = kd["students"]["distilled"]
print(f"{'model':>10} {'params':>9} {'val loss':>9}   (speed: the table of 3.4, measured with the other models)")
for row in kd["table"]:
    print(f"{row['model']:>10} {row['params']:>9,} {row['val_loss']:>9.4f}")
final = {row["model"]: row["val_loss"] for row in kd["table"]}
gap = final["scratch"] - final["distilled"]
print(f"after {KD_STEPS} steps the distilled student is {abs(gap):.4f} nats/char "
      f"{'better' if gap > 0 else 'worse'} than the one trained from scratch")

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, start in zip(axes, (0, KD_STEPS // 3)):
    for name, curve in kd["curves"].items():
        ax.plot(*zip(*[(s, v) for s, v in curve if s >= start]), "o-", ms=3, label=f"student, {name}")
    ax.axhline(final["teacher"], color="gray", ls="--", lw=1, label="teacher")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation loss (nats/char)")
    ax.grid(alpha=0.3)
axes[0].set_ylim(top=min(axes[0].get_ylim()[1], math.log(config.vocab_size) + 0.2))
axes[0].set_title(f"Distillation: d_model {config.d_model} -> {student_cfg.d_model}" + (" (quick)" if QUICK else ""))
axes[1].set_title(f"the same from step {KD_STEPS // 3}")
axes[0].legend()
fig.tight_layout()
savefig(fig, "optimization_distill.png")

# %% [markdown]
# A teacher's soft targets give the student, at every position, a whole distribution to match instead of one
# character, which is more signal per example; whether that wins at a given budget depends on the teacher, $T$,
# $\alpha$ and the number of steps. One run of one seed cannot say: the gap above is a few hundredths of a nat, and
# the curves cross. So the next cells ask the question so that an effect, if there is one, can show.
#
# ### Is there an effect? Seeds, temperatures, and a student with less data
#
# Smaller students ($d_{model}$ {{kd_d_model}}, {{kd_layers}} layers, about {{kd_ratio}} times fewer parameters than
# the teacher) on windows of {{kd_window}} characters, so that many runs fit in the chapter's time. Each run trains
# a distilled student and a student from scratch from the same initialisation on the same batches; their difference
# in validation loss is one paired measurement, and the seed changes the initialisation and the batches. Three
# settings:
#
# - **the whole training text**, $T = 2$, {{kd_seeds}} seeds;
# - **{{kd_small_text}} characters of it** (the teacher still knows the whole corpus), $T = 2$, {{kd_seeds}} seeds:
#   here the student from scratch sees each window many times, and the teacher's distributions are information it
#   cannot get from its few examples; `distill(..., window_stride=64)` cuts the small text into fixed windows and
#   computes the teacher's logits once per window;
# - **the temperature**, $T \in \{1, 2, 4\}$ on the small text, one seed.

# %%
kd_cfg = gpt.GPTConfig(vocab_size=config.vocab_size, block_size=min(64, config.block_size), n_layer=config.n_layer,
                       n_head=config.n_head, d_model=16 if QUICK else 32)
KD_FULL, KD_SMALL, SMALL_TEXT = (8, 8, 2000) if QUICK else (200, 300, 10_000)
SEEDS = (0, 1) if QUICK else (0, 1, 2)


def kd_gap(train_tokens, steps, T, seed, stride=None):
    """Validation loss of the student from scratch minus the distilled one's (> 0: distillation helped)."""
    out = distill.distill(dense, config, kd_cfg, train_tokens, steps, val_data=val_ids, T=T, alpha=0.5, lr=3e-3,
                          batch_size=8, eval_every=steps, eval_batches=EVAL["n_batches"], seed=seed,
                          window_stride=stride)
    final_kd = {row["model"]: row["val_loss"] for row in out["table"]}
    return final_kd["scratch"] - final_kd["distilled"], final_kd["distilled"], final_kd["scratch"]


kd_runs = {}
for seed in SEEDS:
    kd_runs["whole text, T = 2", seed] = kd_gap(train_ids, KD_FULL, 2.0, seed)
    kd_runs[f"{SMALL_TEXT:,} characters, T = 2", seed] = kd_gap(train_ids[:SMALL_TEXT], KD_SMALL, 2.0, seed, 64)
for T_kd in (1.0, 4.0):
    kd_runs[f"{SMALL_TEXT:,} characters, T = {T_kd:g}", 0] = kd_gap(train_ids[:SMALL_TEXT], KD_SMALL, T_kd, 0, 64)
print(f"student: d_model {kd_cfg.d_model}, {gpt.n_params(gpt.init_params(kd_cfg, np.random.default_rng(0))):,} "
      f"parameters (teacher {gpt.n_params(dense):,})")
print(f"{'setting':>26} {'seed':>4} {'distilled':>9} {'scratch':>8} {'scratch - distilled':>20}")
for (setting, seed), (gap_kd, d_loss, s_loss) in kd_runs.items():
    print(f"{setting:>26} {seed:>4} {d_loss:>9.3f} {s_loss:>8.3f} {gap_kd:>+20.3f}")
settings = list(dict.fromkeys(k for k, _ in kd_runs))                          # in the order they ran
summary_kd = {k: np.array([g for (kk, _), (g, *_) in kd_runs.items() if kk == k]) for k in settings}
for k, g in summary_kd.items():
    print(f"{k:>26}: mean gap {g.mean():+.3f}" + (f" ± {g.std(ddof=1):.3f} (sd over {len(g)} seeds)" if len(g) > 1 else
                                                     " (one seed)"))

fig, ax = plt.subplots(figsize=(7, 3.6))
for i, k in enumerate(settings):
    g = summary_kd[k]
    ax.plot(np.full(len(g), i), g, "o", color="tab:blue", alpha=0.7)
    ax.plot([i - 0.2, i + 0.2], [g.mean()] * 2, color="k", lw=2)
ax.axhline(0, color="gray", lw=1)
ax.set_xticks(range(len(settings)), settings, fontsize=8, rotation=15)
ax.set_ylabel("val loss: scratch - distilled (nats)")
ax.set_title("Distillation's gain, per seed (dots) and on average (bars)" + (" (quick)" if QUICK else ""),
             fontsize=10)
ax.grid(alpha=0.3, axis="y")
fig.tight_layout()
savefig(fig, "optimization_distill_seeds.png")

whole, small = summary_kd[settings[0]], summary_kd[settings[1]]
by_T = {T_kd: kd_runs[f"{SMALL_TEXT:,} characters, T = {T_kd:g}", 0][0] for T_kd in (1.0, 4.0)}
by_T[2.0] = kd_runs[settings[1], 0][0]
n_student = gpt.n_params(gpt.init_params(kd_cfg, np.random.default_rng(0)))
glue("kd_d_model", str(kd_cfg.d_model))
glue("kd_layers", str(kd_cfg.n_layer))
glue("kd_ratio", f"{gpt.n_params(dense) / n_student:.0f}")
glue("kd_window", str(kd_cfg.block_size))
glue("kd_small_text", f"{SMALL_TEXT:,}".replace(",", " "))
glue("kd_seeds", str(len(SEEDS)))
glue("kd_train_chars", f"{train_ids.size / 1e6:.1f} M")
glue("kd_full_steps", str(KD_FULL))
glue("kd_whole_mean", f"{whole.mean():+.2f}")
glue("kd_whole_sd", f"{whole.std(ddof=1):.2f}")
glue("kd_whole_min", f"{whole.min():+.2f}")
glue("kd_small_mean", f"{small.mean():+.2f}")
glue("kd_small_sd", f"{small.std(ddof=1):.2f}")
for T_kd, gain in by_T.items():
    glue(f"kd_T{T_kd:g}", f"{gain:+.2f}")
if not QUICK:   # the claims the text below reads off the full run
    assert abs(whole.mean()) < whole.std(ddof=1)                   # no effect on the whole text: within the spread
    assert np.all(small > 0)                                       # a gain on every seed on the small text
    assert by_T[1.0] > by_T[2.0] > by_T[4.0]                       # the flatter the teacher, the less it gives

# %% [markdown]
# What it shows, in the full run: on the whole training text there is no effect to report, the mean gain being
# smaller than its spread over the seeds ({{kd_whole_mean}} ± {{kd_whole_sd}} nats, one seed at {{kd_whole_min}}):
# with {{kd_train_chars}} characters to learn from, in {{kd_full_steps}} steps the student's budget, not its
# information, is the limit, and the teacher's distributions add little. On {{kd_small_text}} characters the gain is
# positive on every seed, {{kd_small_mean}} ± {{kd_small_sd}} nats: a student that sees the same few windows again
# and again gets from the teacher what the small text cannot give it. The temperature matters too: on this seed
# $T = 1$ gained {{kd_T1}} nats, $T = 2$ {{kd_T2}}, and $T = 4$, which flattens the teacher's distributions towards
# uniform, {{kd_T4}}.
# These are small students and short runs; the direction, not the size, is what carries over: distillation pays
# where the student's own data is the bottleneck.
#
# ## 3.4 Side by side
#
# One table for the GPT. *Bytes* counts what each model needs to store: float32 arrays, and for the quantized ones
# the codes (int4 packed two per byte), the scales and the float32 tensors left unquantized. The losses
# are on the chapter's common validation windows (3.0); the table of 3.3 used `distill`'s own windows, so its
# numbers differ a little from these.

# %%
csr_bytes = sum(int(m.sum()) * 8 + (m.shape[0] + 1) * 4 for m in tree.flatten(tuned_masks).values() if m is not None)
mat_bytes = sum(m.size * 4 for m in tree.flatten(tuned_masks).values() if m is not None)
models = {
    "dense float32": (dense, config, gpt.n_params(dense) * 4, dense_loss),
    f"pruned 50% (+{FT_STEPS} steps)": (tuned, config, gpt.n_params(tuned) * 4, finetuned[0.5]),
    "int8 per-channel": (quantized["int8 per-channel"]["params"], config, quantized["int8 per-channel"]["bytes"],
                         quantized["int8 per-channel"]["loss"]),
    "int4 group 32": (quantized["int4 group 32"]["params"], config, quantized["int4 group 32"]["bytes"],
                      quantized["int4 group 32"]["loss"]),
    f"int4 per-channel, QAT {QAT_STEPS}": (deployed_qat["int4 per-channel"], config,
                                           quantized["int4 per-channel"]["bytes"],
                                           qat_table["int4 per-channel"]["QAT, then quantize"]),
    f"distilled (d_model {student_cfg.d_model})": (student, student_cfg, gpt.n_params(student) * 4,
                                                   val_loss(student, student_cfg)),
}
summary = [(name, nbytes, loss) for name, (_, _, nbytes, loss) in models.items()]
print(f"{'model':>28} {'bytes':>10} {'size':>6} {'val loss':>9}")
for name, nbytes, loss in summary:
    print(f"{name:>28} {nbytes:>10,} {summary[0][1] / nbytes:>5.2f}x {loss:>9.4f}")
print(f"\n(the dense model after the same {FT_STEPS} fine-tuning steps, the reference for the pruned and QAT rows: "
      f"{finetuned[0.0]:.4f})")
print(f"the pruned matrices stored as CSR (float32 value + int32 column index per nonzero, int32 row pointers): "
      f"{csr_bytes:,} bytes vs {mat_bytes:,} dense")

names = [name for name, _, _ in summary][::-1]                 # top to bottom in the table's order
mb = np.array([nbytes / 1e6 for _, nbytes, _ in summary])[::-1]
losses = np.array([loss for _, _, loss in summary])[::-1]
fig, (ax_b, ax_l) = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True, layout="constrained")
ax_b.barh(names, mb, color="tab:blue")
for y, v in enumerate(mb):
    ax_b.annotate(f"{v:.2f}", (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
ax_b.set_xlim(0, mb.max() * 1.18)
ax_b.set_xlabel("bytes stored (MB)")
ax_b.set_title("size")
# The loss axis covers the compressed models of the dense size; a model far outside (the distilled student) is
# drawn at the edge with its value written beside it, so the others are not squeezed onto one line.
inside = np.sort(losses)[:-1] if len(losses) > 2 else losses
lo, hi = inside.min(), inside.max()
pad = max(hi - lo, 0.01) * 0.25
right = hi + 3 * pad
for y, v in enumerate(losses):
    if v <= right:
        ax_l.plot(v, y, "o", color="tab:orange")
        ax_l.annotate(f"{v:.3f}", (v, y), xytext=(6, -3), textcoords="offset points", fontsize=8)
    else:
        ax_l.annotate(f"{v:.3f} →", (right, y), ha="right", va="center", fontsize=8, color="tab:orange")
ax_l.axvline(finetuned[0.0], color="gray", ls=":", lw=1, label=f"dense + {FT_STEPS} fine-tuning steps")
ax_l.set_xlim(lo - pad, right)
ax_l.set_xlabel("validation loss (nats per character; lower is better)")
ax_l.set_title("quality")
ax_l.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2))
for ax in (ax_b, ax_l):
    ax.grid(alpha=0.3, axis="x")
fig.suptitle("Compressing the trained GPT: bytes saved against loss lost" + (" (quick mode)" if QUICK else ""))
savefig(fig, "optimization_summary.png")

# %% [markdown]
# *Speed*, measured: the forward pass in tokens per second (batch 8 of 128 characters, the best of 7 passes, the
# models interleaved) on the NumPy of the machine that built this book, with its load. This cell is a measurement
# of that machine: its numbers change from one build to the next, unlike every other number in this chapter.

# %% tags=["measurement"]
speed = tokens_per_s({name: (p, cfg) for name, (p, cfg, _, _) in models.items()})
print(machine_load())
print(f"{'model':>28} {'forward tokens/s':>17}")
for name in models:
    print(f"{name:>28} {speed[name]:>17,.0f}")

# %% [markdown]
# What the table says, method by method:
#
# - **Pruning** as done here saves nothing, in bytes or in time: the zeros are stored, and a dense matrix
#   multiplication multiplies by them at full cost (the forward speeds of the dense and pruned rows differ only by
#   timing noise). It pays only with a sparse format and a sparse kernel, and at 50 % the CSR form above is no
#   smaller than the dense one: each kept float32 value drags a 4-byte index along (exercise 2). Structured pruning
#   (whole heads, whole neurons) is the kind that can shrink the matrices themselves.
# - **Weight-only quantization** cuts the bytes the weights take, which is what limits decoding speed on real
#   hardware (chapter 4: each generated token reads every weight once). Here the forward pass dequantizes to float32
#   and runs the same matrix multiplications, so its speed is the dense one; an integer kernel would be needed to
#   turn the bytes into time (`quantize.int_matmul` is the arithmetic, not a fast kernel).
# - **Distillation** is the only one of the three that makes the forward pass itself cheaper here, because the
#   student is a smaller dense model.
#
# The material's one-line summaries hold, with these qualifications: pruning "reduces complexity" only in a format
# that skips the zeros, and quantization "reduces compute cost" only with integer kernels.

# %% [markdown]
# ## Exercises
#
# Worked solutions: `chapters/solutions/03_optimization.py` (run by `tests/book/test_solutions_03.py`).
#
# 1. **Bits per weight.** A $K \times N$ matrix is quantized to $b$ bits with one float32 scale per group of $g$
#    weights along a row. Count its bytes as `QuantizedTensor.nbytes` does, and show that the cost is
#    $b + 32/g$ bits per weight. How many bits per weight do int4 with $g = 32$ and $g = 128$ cost for a
#    $128 \times 512$ matrix, and int8 with one scale per output column?
# 2. **When does sparse storage pay?** A matrix stored in CSR format takes one value and one column index per
#    nonzero, plus $K + 1$ row pointers. With float32 values and int32 indices, above which sparsity is it smaller
#    than the dense float32 array? With int16 indices? And with a bitmask (one bit per position) instead of indices?
# 3. **Distillation at high temperature.** Show that as $T \to \infty$, the gradient of the soft term
#    $T^2\,\mathrm{KL}(p^t \Vert p^s)$ with respect to the student's logits tends to
#    $\frac{1}{V}\big((z^s - \bar z^s) - (z^t - \bar z^t)\big)$ per position, where $\bar z$ is the mean logit:
#    distillation becomes matching the centred logits (Hinton et al. 2015, §2.1). Check it with `distill.backward`.
