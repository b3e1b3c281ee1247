# %% [markdown]
# # 11. Errata: where the material is wrong, and how we know
#
# The primer this book follows (`shared/material/`, in Chinese) gets several formulas, one algorithm, its code
# example and two references wrong, and a handful of sentences wrong or loose. The chapters never fix it silently:
# each shows the text as written beside the correct statement. This appendix gathers every erratum in one place,
# each weighed (an error, or an imprecision that a careful reader would misread) and each with the number, test or
# figure that shows it, computed here, live, where that takes seconds (11.1 trains four small models: a few minutes).
#
# | # | where | as written | correct | weighed | shown by |
# |---|---|---|---|---|---|
# | 1 | §3.1 item 4 | "层ORMAL化" | 层归一化 (layer normalisation) | error (a garbled word) | the text |
# | 2 | §3.1 item 4, §3.2.5 | LayerNorm "regularises the model, reduces overfitting" | it normalises each token's features, for stable and fast training; the regularisers are dropout and label smoothing | error | 11.1: train/validation gap with and without LN and dropout; LN identical in training and evaluation |
# | 3 | §3.2.2 | an unindexed $W^O$ listed among "each head's parameter matrices" | one $W^O$ after the concatenation; its row blocks $W^O_i$ give $\mathrm{Concat}(\mathrm{head}_i) W^O = \sum_i \mathrm{head}_i W^O_i$ exactly | imprecision (notation) | 11.2, chapter 6.3 |
# | 4 | §3.2.3 | $P(pos) = \sin(pos / 10000^{2/d_p})^{2048}$, "sine or log-sine form" | $PE_{(pos,2i)} = \sin(pos/10000^{2i/d})$, $PE_{(pos,2i+1)} = \cos(\cdot)$ | error, in three places | 11.3 (each one alone), chapter 6.4, `transformer_pe_errors_alone.png` |
# | 5 | §3.2.4 | $F(x) = \mathrm{ReLU}(W_2\,\sigma(W_1x+b_1)+b_2)$ | $\mathrm{FFN}(x) = \max(0, xW_1+b_1)W_2+b_2$ | error | 11.4, `tests/ops/test_as_written.py` |
# | 6 | §3.2.5 | $\gamma\,(x+\beta)/\sqrt{d}$ | $\gamma \odot (x-\mu)/\sqrt{\sigma^2+\epsilon} + \beta$ | error: no statistics, and $\beta$ inside | 11.5 (with a non-zero $\beta$), chapter 6.6 |
# | 7 | §3.3 | five steps with no residual connection, one LayerNorm at the very end, no decoder | $x + \mathrm{Sublayer}(x)$ then LayerNorm around *every* sublayer; encoder and decoder stacks | error | 11.6, chapter 6.7, `reference/models/layers.py` |
# | 8 | §4 | `BertModel` + `outputs.logits` + `torch.argmax(..., dim=1)` "generates a summary" | `BertModel` has no logits, `torch` is never imported, `dim=1` is the position axis, and an encoder does not generate | error | chapter 8, `tests/inference/test_summarizer.py` |
# | 9 | §4 | `pip install transformers` | the code also needs PyTorch (`torch`) | error | chapter 8 |
# | 10 | references [3] | Radford, Vaswani, Salimans, Sutskever (2018), "Imagenet classication with transformers", arXiv:1811.08107 | Radford, Narasimhan, Salimans, Sutskever (2018), "Improving Language Understanding by Generative Pre-Training", an OpenAI report (GPT-1) | error | 11.7 |
# | 11 | references [4] | Brown, Ko, Lloret, Liu, Radford, Salimans, Zhang (2020), "Language models are unsupervised multitask learners", NeurIPS pp. 10239–10249 | two papers merged: Radford et al. (2019), "Language Models are Unsupervised Multitask Learners" (GPT-2, an OpenAI report); Brown et al. (2020), "Language Models are Few-Shot Learners" (GPT-3, NeurIPS 33) | error | 11.7 |
# | 12 | §2.1 | 递归神经网络 for Recurrent Neural Networks | 循环神经网络 (递归神经网络 is the *recursive* network, a different model) | error (a wrong name) | 11.9 |
# | 13 | §2.1 | training learns from "样本和标签" (samples and labels) | a language model is pre-trained on text alone: each label is the next token of the same text | imprecision | 11.9, `training/data.py` (`get_batch`) |
# | 14 | §2.1 step 4 | "重复上述步骤" (repeat the above steps) | repeat step 3, the gradient step; steps 1 and 2 run once | imprecision | 11.9: re-initialising at every iteration learns nothing |
# | 15 | §2.3 step 3 | post-processing "如词汇标记化" (such as tokenisation) | tokenisation is pre-processing (step 1); post-processing turns ids back into text (detokenisation) | error | 11.9, chapter 4.6 |
# | 16 | §3.1 item 1 | PE lets the model learn relations "序列之间" (between sequences) | between positions within one sequence; nothing relates two sequences | error | 11.9 |
# | 17 | §5.2 item 4 | gradients explode or vanish "在训练和推理过程中" (during training and inference) | during training: inference computes no gradient | error | 11.9, chapter 9 |
#
# The code of every as-written formula is `reference/ops/as_written.py`; nothing in the models uses it.

# %%
import matplotlib.pyplot as plt
import numpy as np

from book import QUICK, glue, savefig
from reference import train
from reference.models import gpt
from reference.ops import as_written, as_written_parts, attention, ffn, layernorm, multihead, positional
from reference.studies import regularisation
from reference.training import data, optim

rng = np.random.default_rng(0)
print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 11.1 "层ORMAL化" and "regularisation" (errata 1 and 2)
#
# > 4. 层ORMAL化（Layer Normalization）：用于正则化模型，减少过拟合。
# >
# > "4. Layer ORMAL-isation (Layer Normalization): used to regularise the model and reduce overfitting."
#
# "层ORMAL化" is a garbled 层归一化, with half of the English word "NORMAL" left in. The claim in the same line is
# wrong too: Ba, Kiros and Hinton (2016) introduced layer normalisation to make training faster and more stable by
# fixing each layer's input statistics, not as a regulariser. The Transformer's regularisers are dropout and label
# smoothing (Vaswani et al., §5.4; `reference/ops/dropout.py`, `reference/ops/label_smoothing.py`).
#
# A regulariser is judged by the gap it leaves between the loss on the training data and the loss on held-out
# data, so that is what we measure. `reference/studies/regularisation.py` trains the same small GPT (2 blocks,
# $d = 64$) on a slice of the King James Bible small enough to overfit, four ways: with LayerNorm (the book's
# pre-LN GPT), with every LayerNorm removed, and each of the two with dropout ($p = 0.2$, where the paper puts it:
# on every sublayer's output and on the embeddings). Same initial weights, same batches; both losses are measured
# in evaluation mode on fixed windows of the training slice and of the validation text.

# %%
tok_char, train_ids, val_ids = train.build_data(dict(train.DEFAULTS, **train.CONFIGS["small"]), progress=False)
n_chars, T_reg, steps_reg, d_reg = (2000, 16, 30, 32) if QUICK else (6000, 32, 600, 64)
reg_cfg = gpt.GPTConfig(vocab_size=tok_char.vocab_size, block_size=T_reg, n_layer=2, n_head=4, d_model=d_reg)
reg = {v: regularisation.train_variant(v, reg_cfg, train_ids[:n_chars], val_ids, steps_reg)
       for v in regularisation.VARIANTS}
print(f"{n_chars} training characters, {steps_reg} steps of 16 x {T_reg} = "
      f"{steps_reg * 16 * T_reg / n_chars:.0f} passes over them; d = {d_reg}, 2 blocks")
print(f"{'variant':>13} {'train loss':>10} {'val loss':>9} {'gap':>6}")
for v, r in reg.items():
    print(f"{v:>13} {r['train']:>10.3f} {r['val']:>9.3f} {r['gap']:>6.3f}")

ids_probe = np.arange(T_reg)[None] % tok_char.vocab_size                  # any input: the point is the mode
mode_diff = {}
for v in ("ln", "ln+dropout"):
    mode_diff[v] = regularisation.mode_difference(reg[v]["params"], reg_cfg, ids_probe, 0.2 if "dropout" in v else 0.0)
    print(f"{v:>13}: |logits in training mode - in evaluation mode| / |logits| = {mode_diff[v]:.3f}")
assert mode_diff["ln"] == 0.0
if not QUICK:   # the measurement the text below reads
    assert reg["ln"]["train"] < reg["none"]["train"] - 0.5 and reg["ln"]["gap"] > reg["none"]["gap"]
    assert reg["ln"]["val"] < reg["none"]["val"]
    assert all(reg[v + "+dropout"]["gap"] < reg[v]["gap"] and reg[v + "+dropout"]["val"] < reg[v]["val"]
               and reg[v + "+dropout"]["train"] > reg[v]["train"] for v in ("ln", "none"))
glue("reg_chars", str(n_chars))
for v, key in (("ln", "ln"), ("none", "none"), ("ln+dropout", "lnd"), ("none+dropout", "noned")):
    for stat in ("train", "val", "gap"):
        glue(f"reg_{key}_{stat}", f"{reg[v][stat]:.2f}")
glue("reg_drop_diff", f"{100 * mode_diff['ln+dropout']:.0f} %")

fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4))
colors = {"ln": "tab:blue", "none": "tab:red", "ln+dropout": "tab:cyan", "none+dropout": "tab:orange"}
for v, r in reg.items():
    steps_, tr, va = zip(*r["curve"])
    ax.plot(steps_, tr, "--", color=colors[v], lw=1)
    ax.plot(steps_, va, "-", color=colors[v], lw=1.5, label=v)
ax.set_xlabel("step")
ax.set_ylabel("loss (nats per character)")
ax.set_title("validation (solid) and training (dashed) loss")
ax.set_ylim(0, 4.5)
ax.legend(fontsize=8)
names = list(reg)
bx.bar(names, [reg[v]["train"] for v in names], color="lightgray", label="training loss")
bx.bar(names, [reg[v]["gap"] for v in names], bottom=[reg[v]["train"] for v in names],
       color=[colors[v] for v in names], label="gap to the validation loss")
bx.set_ylabel("loss (nats per character)")
bx.set_ylim(0, 1.3 * max(r["val"] for r in reg.values()))          # room above the bars for the legend
bx.set_title("the gap a regulariser should shrink")
bx.legend(fontsize=8, loc="upper left")
fig.tight_layout()
savefig(fig, "errata_layernorm_regularisation.png")

# %% [markdown]
# In the full run (the committed notebook): with LayerNorm the model fits its {{reg_chars}} training characters far
# better (training loss {{reg_ln_train}} against {{reg_none_train}} nats without) *and* generalises better
# (validation {{reg_ln_val}} against {{reg_none_val}}), and its gap is the largest of the four ({{reg_ln_gap}}
# against {{reg_none_gap}}). That is the signature of an aid to optimisation: LayerNorm lets the same steps reach
# lower losses everywhere, and the lower training loss is reached by fitting the training text more closely, not
# less. Dropout has the regulariser's signature: on both models it raises the training loss and lowers the
# validation loss, shrinking the gap ({{reg_ln_gap}} to {{reg_lnd_gap}} with LayerNorm, {{reg_none_gap}} to
# {{reg_noned_gap}} without). And LayerNorm computes the same function in training and in evaluation (the difference
# above is exactly 0), while dropout changes the logits of the same input by {{reg_drop_diff}}; a regulariser in the
# usual sense either adds a penalty to the loss (weight decay) or noise in training that evaluation removes, and
# LayerNorm does neither.
#
# ## 11.2 $W^O$: one matrix, or one per head summed (erratum 3)
#
# > $W^Q_i, W^K_i, W^V_i, W^O$ 是各自注意力头的参数矩阵。 ("... are each attention head's parameter matrices.")
#
# The formula above this sentence, $\mathrm{MultiHead} = \mathrm{Concat}(\mathrm{head}_1, \dots,
# \mathrm{head}_h) W^O$, is right, and "one output matrix per head, the results summed" is not wrong either: with
# $W^O_i$ the $i$-th block of $d_v$ rows of $W^O$, $\mathrm{Concat}(\mathrm{head}_i) W^O = \sum_i \mathrm{head}_i
# W^O_i$ exactly. What the sentence gets wrong is narrower: it lists an unindexed $W^O$ among the matrices that
# belong to each head $i$. A shared $W^O$ is no head's own, and per-head $W^O_i$ need the sum, which the sentence
# never mentions. The reading it invites, each head with its own $d_v \times d_v$ output matrix writing into its own
# slice of the output (a block-diagonal $W^O$), is a different and weaker model: its heads never mix. Weighed: an
# imprecision of notation, not a wrong formula. The identity, and the difference from the block-diagonal reading:

# %%
Bw, Tw, Cw, Hw = 2, 5, 8, 2
dw = Cw // Hw
g_w = np.random.default_rng(3)
xw = g_w.standard_normal((Bw, Tw, Cw))
pw = {n: g_w.standard_normal((Cw, Cw)) / np.sqrt(Cw) for n in ("Wq", "Wk", "Wv", "Wo")}
yw, _ = multihead.forward(xw, xw, pw, Hw)                                    # (B, T, C) the op
cols = [slice(i * dw, (i + 1) * dw) for i in range(Hw)]                   # head i's columns of Wq, Wk, Wv
heads_w = [attention.forward(*(np.ascontiguousarray((xw @ pw[n])[..., c]) for n in ("Wq", "Wk", "Wv")))[0]
           for c in cols]                                                    # h arrays (B, T, d_v)
summed_w = sum(h_i @ pw["Wo"][c] for c, h_i in zip(cols, heads_w))     # W^O_i: head i's block of rows
print(f"max |MultiHead - sum_i head_i W^O_i| = {np.abs(yw - summed_w).max():.1e}")
assert np.abs(yw - summed_w).max() < 1e-12                                   # float64: the same products, regrouped
blockdiag_w = np.concatenate([h_i @ pw["Wo"][c, c] for c, h_i in zip(cols, heads_w)], axis=-1)
print(f"block-diagonal reading: {Hw * dw * dw} output parameters instead of {Cw * Cw}; "
      f"max |difference from the op| = {np.abs(yw - blockdiag_w).max():.2f}")

# %% [markdown]
# Chapter 6.3 adds the other side: changing one head's query projection moves all $C$ output coordinates under
# the real $W^O$, and only that head's $C/h$ under the block-diagonal one.
#
# ## 11.3 The positional encoding (erratum 4)
#
# > $$P(pos) = \sin\left(\frac{pos}{10000^{2/d_p}}\right)^{2048}$$
# >
# > 通常，位置编码采用正弦函数或对数正弦函数形式 ("usually the positional encoding takes a sine or log-sine form")
#
# The printed formula has no dimension index, so every dimension gets the same number; its exponent turns the sine
# into a spike that is almost always 0; and it has no cosine. There is no "log-sine" (对数正弦) form in the paper
# or, as far as we know, anywhere else. First the printed formula whole:

# %%
n_pos, d = (64, 16) if QUICK else (256, 64)
diag = as_written.positional_diagnostics(n_pos, d)
print(f"{n_pos} positions, d = {d}")
for key in ("min", "max", "fraction_near_zero", "all_dimensions_identical", "positions_sharing_a_code"):
    wrong, right = diag["as_written_" + key], diag["correct_" + key]
    fmt = (lambda v: f"{v:>8}") if isinstance(wrong, (bool, int)) else (lambda v: f"{v:>8.3f}")
    print(f"  {key:>26}: as written {fmt(wrong)}   correct {fmt(right)}")
assert diag["as_written_all_dimensions_identical"] and not diag["correct_all_dimensions_identical"]
assert diag["as_written_positions_sharing_a_code"] > n_pos // 2 and diag["correct_positions_sharing_a_code"] == 0

# %% [markdown]
# More than half of the positions share their code with another position under the printed formula (they are all
# ~0), and all dimensions are identical. The paper's encoding gives every position a distinct code in $[-1, 1]$.
#
# Then each of the three errors alone, put back into the paper's formula (`reference/ops/as_written_parts.py`;
# chapter 6.4 draws the four tables in `transformer_pe_errors_alone.png`). "Closer to 0 than 1" counts positions
# $j \ge 2$ whose code is nearer to position 0's than position 1's is; "relative residual" is how far the code of
# $pos + 1$ is from the best linear map of the code of $pos$ (0 up to round-off means relative positions are a fixed
# linear map, the paper's reason for sines and cosines).

# %%
pe_stats = {k: as_written_parts.positional_stats(t) for k, t in as_written_parts.positional_variants(n_pos, d).items()}
keys = ("distinct_columns", "min", "fraction_near_zero", "positions_sharing_a_code", "closer_to_0_than_1",
        "relative_residual")
print(f"{'':>11}" + "".join(f"{k:>26}" for k in keys))
for name, st in pe_stats.items():
    print(f"{name:>11}" + "".join(f"{st[k]:>26.3g}" for k in keys))
assert pe_stats["no_index_i"]["distinct_columns"] == 2 and pe_stats["no_index_i"]["closer_to_0_than_1"] > 0
assert pe_stats["no_cos"]["relative_residual"] > 0.1 and pe_stats["power_2048"]["min"] >= 0

# %% [markdown]
# Each error alone: **without the index $i$**, two distinct columns out of $d$ (every pair turns at one frequency),
# and the code comes back round every $2\pi\cdot 10000^{2/d}$ positions, so many positions sit closer to position
# 0 than position 1 does; **without the cosine**, half the columns are copies and the code of $pos + 1$ is no longer
# a linear function of the code of $pos$; **the power 2048** alone folds all values into $[0, 1]$, most of them ~0,
# and also breaks the linear relation. Only together do they collapse the table to one number per position.
#
# ## 11.4 The feed-forward network (erratum 5)
#
# > $$F(x) = \text{ReLU}(W_2\sigma(W_1x + b_1) + b_2)$$
#
# With a ReLU as the outermost function, the sublayer's output can never be negative: added to the residual stream,
# it could only ever push features up. The paper's FFN has the ReLU *inside*, between the two linear maps.

# %%
d_model, d_ff, n = 16, 64, (64 if QUICK else 1024)
x = rng.standard_normal((n, d_model))
W1 = rng.standard_normal((d_model, d_ff)) / np.sqrt(d_model)
W2 = rng.standard_normal((d_ff, d_model)) / np.sqrt(d_ff)
b1, b2 = np.zeros(d_ff), np.zeros(d_model)
fd = as_written.ffn_diagnostics(x, W1, b1, W2, b2)
print(f"as written: min output {fd['as_written_min']:+.3f}, negative outputs {fd['as_written_fraction_negative']:.1%}")
print(f"correct:    min output {fd['correct_min']:+.3f}, negative outputs {fd['correct_fraction_negative']:.1%}")
assert fd["as_written_min"] >= 0 and fd["correct_fraction_negative"] > 0.3

# %% [markdown]
# ## 11.5 Layer normalisation (erratum 6)
#
# > $$\text{LayerNorm}(x_{l-1}, \gamma_l, \beta_l) = \gamma_l \frac{x_{l-1} + \beta_l}{\sqrt{d_{l-1}}}$$
#
# The printed formula subtracts no mean and divides by no standard deviation: it only shifts by $\beta$ and scales by
# the constant $1/\sqrt{d}$. Whatever statistics the input rows have, they keep (divided by $\sqrt d$).

# %%
xs = 3.0 + 5.0 * rng.standard_normal((256, 64))  # rows with mean 3 and standard deviation 5
ld = as_written.layer_norm_diagnostics(xs)
for who in ("input", "as_written", "correct"):
    print(f"{who:>10}: row mean {ld[who + '_row_mean']:+.3f}, row std {ld[who + '_row_std']:.3f}")
assert abs(ld["correct_row_mean"]) < 1e-6 and abs(ld["correct_row_std"] - 1) < 1e-3
assert abs(ld["as_written_row_mean"] - 3 / 8) < 0.1 and abs(ld["as_written_row_std"] - 5 / 8) < 0.1

# %% [markdown]
# Those numbers use $\beta = 0$, which hides the second error of the formula: its $\beta$ sits inside, added to $x$
# before the scaling. With a non-zero $\beta$ (about 0.5 per feature), the output's mean, and how far it moves when
# every $\beta_j$ moves by 1: for the correct LayerNorm, the printed formula, and the correct normalisation with
# only $\beta$ moved inside ($\gamma \odot \mathrm{norm}(x + \beta)$, that error alone).

# %%
beta_e = 0.5 + 0.1 * rng.standard_normal(64)                                # (C,)
bd = as_written_parts.layer_norm_beta_diagnostics(xs, beta_e)
print(f"mean of beta {bd['beta_mean']:.3f}")
for who in ("correct", "as_printed", "beta_inside"):
    mean, moves = (round(bd[who + key], 3) + 0.0 for key in ("_output_mean", "_shift_response"))   # no "-0.000"
    print(f"{who:>12}: output mean {mean:+.3f}, moves {moves:.3f} per unit of beta")
assert abs(bd["correct_output_mean"] - bd["beta_mean"]) < 1e-12 and abs(bd["beta_inside_shift_response"]) < 1e-12
assert abs(bd["as_printed_shift_response"] - 1 / 8) < 1e-12

# %% [markdown]
# The correct op's output has $\beta$'s mean and follows it one for one. The printed one follows it at $1/\sqrt{64}$
# and carries the input's offset $3/8$ along. With $\beta$ inside a real normalisation the offset is always 0, and
# no gradient step on $\beta$ can change it: the row's mean subtraction removes whatever $\beta$ adds uniformly.

# %% [markdown]
# ## 11.6 The missing residual connections (erratum 7)
#
# §3.3 lists the steps as: add the positional encoding; multi-head attention; multiply by the values; the FFN;
# "将隐藏状态通过层ORMAL化层计算，得到最终输出" (pass the hidden state through LayerNorm to get the final output).
# The paper wraps *every* sublayer as $\mathrm{LayerNorm}(x + \mathrm{Sublayer}(x))$. The residual term $x +$ gives
# every block an identity path: at initialisation, with small weights (std 0.02, as in GPT-2), a deep stack is close
# to the identity, and each token's output still carries its input; training then only has to learn corrections.
# Without it, each block replaces its input by a random function of it. We measure this with the reference ops: a
# stack of FFN + LayerNorm blocks, with and without the residual, and the cosine between each token's input and its
# output.

# %%
def input_output_cosine(depth, residual, d=32, n=64, seed=0):
    """Mean cosine between each row's input and its output after `depth` blocks LN(x + FFN(x)) or LN(FFN(x))."""
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, d))
    h, ones, zeros = x, np.ones(d), np.zeros(d)
    for _ in range(depth):
        W1, W2 = g.standard_normal((d, 4 * d)) * 0.02, g.standard_normal((4 * d, d)) * 0.02
        f, _ = ffn.forward(h, W1, np.zeros(4 * d), W2, zeros, activation="relu")
        h, _ = layernorm.forward(h + f if residual else f, ones, zeros)
    xc, hc = x - x.mean(1, keepdims=True), h - h.mean(1, keepdims=True)
    cos = (xc * hc).sum(1) / (np.linalg.norm(xc, axis=1) * np.linalg.norm(hc, axis=1))
    return float(cos.mean())


depths = [1, 2, 4, 8] if QUICK else [1, 2, 4, 8, 16, 32]
with_res = [input_output_cosine(L, True) for L in depths]
without = [input_output_cosine(L, False) for L in depths]
for L, a, b in zip(depths, with_res, without):
    print(f"depth {L:>2}: cosine(input, output) with residual {a:6.3f}   without {b:6.3f}")
assert min(with_res) > 0.9 and abs(without[-1]) < 0.2

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(depths, with_res, "o-", label="LN(x + FFN(x))  (the paper)")
ax.plot(depths, without, "s-", label="LN(FFN(x))  (§3.3 as written: no residual)")
ax.set_xscale("log", base=2)
ax.set_xlabel("number of blocks")
ax.set_ylabel("mean cosine(input, output)")
ax.set_ylim(-0.2, 1.05)
ax.legend(fontsize=8)
ax.set_title("With the residual, a deep stack starts near the identity")
fig.tight_layout()
savefig(fig, "errata_residual_identity.png")

# %% [markdown]
# Chapter 6.7 builds the real encoder and decoder layers with Add & Norm, and chapter 9 measures the gradient norms
# by layer for stacks with and without residuals, post-LN and pre-LN.
#
# ## 11.7 The references (errata 10 and 11)
#
# The list of references has two entries that do not exist as cited:
#
# * **[3]** "Radford, A., Vaswani, S., Salimans, T., & Sutskever, I. (2018). Imagenet classication with transformers.
#   arXiv:1811.08107". No paper of that title by these authors exists ("classication" is also misspelt). Radford,
#   Narasimhan, Salimans and Sutskever's 2018 paper is "Improving Language Understanding by Generative
#   Pre-Training", the GPT-1 report, which OpenAI published on its own site.
# * **[4]** "Brown, J., Ko, D., Lloret, G., Liu, Y., Radford, A., Salimans, T., & Zhang, Y. (2020). Language models
#   are unsupervised multitask learners. In Advances in neural information processing systems (pp. 10239–10249)".
#   This merges two papers. "Language Models are Unsupervised Multitask Learners" is Radford, Wu, Child, Luan, Amodei
#   and Sutskever (2019), the GPT-2 report. Brown et al. (2020), first author Tom B. Brown, is "Language Models are
#   Few-Shot Learners", the GPT-3 paper, in NeurIPS 33; its author list is not the one printed.
#
# References [1] (Vaswani et al. 2017, NeurIPS, pp. 5998–6008) and [2] (Devlin et al. 2018, arXiv:1810.04805) are
# right. So is the material's one number: GPT-3 has 175 B parameters (174.6 B counted in chapter 1).
#
# ## 11.8 The code of §4 (errata 8 and 9)
#
# Chapter 8 runs the material's code against the local MiniLM model and shows each failure as it happens: the
# missing `import torch` (a `NameError`), the missing `.logits` on `BertModel` (an `AttributeError`), what
# `argmax(dim=1)` would pick if a tensor were there (positions, not tokens), and why an encoder cannot generate a
# summary. It then builds the correct extractive summariser from the NumPy BERT (`reference/inference/summarizer.py`).
#
# ## 11.9 The remaining errors of §2, §3.1 and §5 (errata 12 to 17)
#
# Six more, smaller than the formulas above, each quoted as written and weighed.
#
# **Erratum 12, §2.1: the name of the RNN.**
#
# > 如卷积神经网络（Convolutional Neural Networks, CNN）、递归神经网络（Recurrent Neural Networks, RNN）和Transformer等。
# >
# > "such as convolutional neural networks (CNN), 递归 neural networks (Recurrent Neural Networks, RNN) and the
# > Transformer."
#
# 递归 means *recursive*. The recurrent network, which applies the same cell along a sequence, is 循环神经网络; the
# recursive neural network (Socher et al. 2011) is a different model that applies a cell along a parse tree. The
# English in the parentheses is right and the Chinese name is wrong: an error of terminology, with no number to
# show it.
#
# **Erratum 13, §2.1: "samples and labels".**
#
# > 模型训练是指通过学习数据中的样本和标签，使模型能够从中抽取出特征和规律，并在未知数据上进行预测的过程。
# >
# > "Model training is the process of learning from the samples and labels in the data, so that the model extracts
# > features and regularities and predicts on unseen data."
#
# True of supervised learning (chapter 5's classifiers), imprecise for the large models the material is about.
# A language model is pre-trained on raw text with no labels: the "label" of each position is the next token of the
# same text (§5.1 of the material itself says large models learn from unlabelled data). In the batches of chapter 2:

# %%
xb, yb = data.get_batch(train_ids, 8, 64, np.random.default_rng(0))
print(f"labels equal to the inputs shifted by one position: {np.mean(yb[:, :-1] == xb[:, 1:]):.0%} of them")
print("input: ", repr(tok_char.decode(xb[0, :40].tolist())))
print("labels:", repr(tok_char.decode(yb[0, :40].tolist())))
assert np.array_equal(yb[:, :-1], xb[:, 1:])

# %% [markdown]
# **Erratum 14, §2.1: "repeat the above steps".**
#
# > 4. 迭代训练：重复上述步骤，直到模型收敛或达到预设的训练轮数。
# >
# > "4. Iterative training: repeat the above steps until the model converges or reaches the preset number of epochs."
#
# The steps above are 1. preprocessing, 2. parameter initialisation, 3. gradient descent. Read literally, every
# iteration re-initialises the parameters and throws away what the previous one learned. What is meant is to repeat
# step 3 (with a new batch each time). An imprecision, but a literal reader's program would never learn, and the
# number shows it: the same small GPT, 60 AdamW steps, initialised once or at every iteration.

# %%
rep_cfg = gpt.GPTConfig(vocab_size=tok_char.vocab_size, block_size=32, n_layer=1, n_head=2, d_model=32)


def iterate(reinitialise, steps=60):
    """Validation loss after ``steps`` iterations of (maybe re-initialise) + one AdamW step on a new batch."""
    init_rng, batch_rng = np.random.default_rng(0), np.random.default_rng(1)
    params = gpt.init_params(rep_cfg, init_rng)
    state = optim.adamw_init(params)
    for _ in range(steps):
        if reinitialise:                                     # step 2 repeated, as written
            params = gpt.init_params(rep_cfg, init_rng)
            state = optim.adamw_init(params)
        x_, y_ = data.get_batch(train_ids, 16, 32, batch_rng)
        _, grads = gpt.loss_and_grads(params, rep_cfg, x_, y_)
        optim.adamw_step(params, grads, state, 3e-3)
    xv, yv = data.get_batch(val_ids, 32, 32, np.random.default_rng(2))
    return float(gpt.loss_and_grads(params, rep_cfg, xv, yv)[0])


once, every = iterate(False), iterate(True)
print(f"validation loss after 60 iterations: initialised once {once:.3f}, re-initialised every time {every:.3f} "
      f"(a uniform guess over {tok_char.vocab_size} ids: {np.log(tok_char.vocab_size):.3f})")
assert once < every - 1.0

# %% [markdown]
# Re-initialised at every iteration, the model ends one step away from a random one, at about the loss of a
# uniform guess (one Adam step moves each weight by at most the learning rate).
#
# **Erratum 15, §2.3: tokenisation as post-processing.**
#
# > 3. 后处理：对预测结果进行后处理，如词汇标记化、分数归一化等，以便与应用需求相符。
# >
# > "3. Post-processing: post-process the prediction, e.g. tokenisation (词汇标记化) and score normalisation, to fit
# > the application."
#
# Tokenisation turns text into ids, and the model reads only ids: it belongs to step 1, input preprocessing. What
# post-processing does with a language model's output is the inverse, detokenisation (ids to text, special tokens
# dropped), and score normalisation (a softmax, a length penalty); chapter 4.6 runs both. An error of placement.
# The model cannot even be called on text:

# %%
rep_params = gpt.init_params(rep_cfg, np.random.default_rng(0))
try:
    gpt.forward(rep_params, rep_cfg, "In the beginning")
except TypeError as err:
    print("gpt.forward on a string:", err)
ids_in = tok_char.encode("In the beginning")
print(f"preprocessing (tokenise): {len(ids_in)} ids; post-processing (detokenise) gives back "
      f"{tok_char.decode(ids_in)!r}")
assert tok_char.decode(ids_in) == "In the beginning"

# %% [markdown]
# **Erratum 16, §3.1: positional encoding and "sequences".**
#
# > 1. 位置编码（Positional Encoding）：用于将序列中的位置信息编码为向量形式，以便于模型学习序列之间的关系。
# >
# > "1. Positional encoding: encodes the position information in a sequence as vectors, so that the model can learn
# > the relations between sequences (序列之间)."
#
# The first half is right; the purpose is wrong. Self-attention without positions is blind to order *within* a
# sequence: permute the tokens and the outputs are permuted the same way, nothing else changes. The code of each
# position breaks that symmetry, so the model can relate positions of one sequence. Nothing in the model relates
# two sequences of a batch: each row is computed alone. Both in numbers, with one self-attention layer:

# %%
g_p = np.random.default_rng(4)
Cp, Tp = 16, 6
pp = {n: g_p.standard_normal((Cp, Cp)) / np.sqrt(Cp) for n in ("Wq", "Wk", "Wv", "Wo")}
xp = g_p.standard_normal((2, Tp, Cp))                                        # two sequences (B = 2)
perm = g_p.permutation(Tp)
pe_p = positional.sinusoidal(Tp, Cp)


def attend(z):
    return multihead.forward(z, z, pp, 2)[0]


no_pe = np.abs(attend(xp[:, perm]) - attend(xp)[:, perm]).max()
with_pe = np.abs(attend(xp[:, perm] + pe_p) - attend(xp + pe_p)[:, perm]).max()
other = xp.copy()
other[1] = g_p.standard_normal((Tp, Cp))                                     # change only the second sequence
across = np.abs(attend(other + pe_p)[0] - attend(xp + pe_p)[0]).max()
print(f"permute the tokens of a sequence: outputs just permuted without PE (max difference {no_pe:.1e}), "
      f"changed with PE ({with_pe:.2f})")
print(f"change sequence 2 entirely: sequence 1's outputs move by {across:.1e}")
assert no_pe < 1e-12 and with_pe > 0.1 and across == 0.0

# %% [markdown]
# **Erratum 17, §5.2: gradients "during training and inference".**
#
# > 4. 模型稳定性：大模型在训练和推理过程中可能出现梯度爆炸、梯度消失等问题，影响模型性能。
# >
# > "4. Model stability: during training and inference, large models may suffer from exploding and vanishing
# > gradients and similar problems, which hurts their performance."
#
# A gradient is the derivative of the training loss with respect to the parameters; inference computes no loss and
# no gradient (chapter 4's decoding loop calls only forward passes), so nothing can explode or vanish there. What
# can break at inference is the forward signal: activations that overflow a narrow number format. An error, which
# chapter 9 first translated without "and inference" (its translation now quotes the sentence whole and weighs it).
# Chapter 9.1 measures the gradients through depth in training, where the claim holds.
#
# ## Exercises
#
# 1. Show that the printed PE formula gives $|P(pos)| > 0.5$ for only a small fraction of positions: what fraction of
#    angles $\theta$ have $|\sin\theta|^{2048} > 0.5$?
# 2. The printed LayerNorm is linear in $x$. Write the matrix $A$ with $\mathrm{LN}_{\text{printed}}(x) = A x + c$ for
#    $\gamma = 1$, and the Jacobian of the correct LayerNorm at a given $x$. Which one can map two rows with different
#    means and scales to the same output?
#
# Worked solutions: `chapters/solutions/11_errata.py` (checked by `tests/book/test_solutions_11.py`).
