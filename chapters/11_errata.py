# %% [markdown]
# # 11. Errata: where the material is wrong, and how we know
#
# The primer this book follows (`shared/material/`, in Chinese) gets several formulas, one algorithm, its code
# example and two references wrong. The chapters never fix it silently: each shows the text as written beside the
# correct statement. This appendix gathers every erratum in one place, each with the number, test or figure that
# shows it. Where a number can be computed in a second, it is computed here, live.
#
# | # | where | as written | correct | shown by |
# |---|---|---|---|---|
# | 1 | §3.1 item 4 | "层ORMAL化" | 层归一化 (layer normalisation) | the text |
# | 2 | §3.1 item 4, §3.2.5 | LayerNorm "regularises the model, reduces overfitting" | it normalises each token's features, for stable and fast training | chapter 6.1, 6.6 |
# | 3 | §3.2.2 | $W^O$ among "each head's parameter matrices" | one $W^O \in \mathbb{R}^{h d_v \times d_{model}}$ after the concatenation | `reference/ops/multihead.py`, `tests/ops/test_multihead.py` |
# | 4 | §3.2.3 | $P(pos) = \sin(pos / 10000^{2/d_p})^{2048}$, "sine or log-sine form" | $PE_{(pos,2i)} = \sin(pos/10000^{2i/d})$, $PE_{(pos,2i+1)} = \cos(\cdot)$ | 11.3 below, `tests/ops/test_as_written.py`, `transformer_as_written_failures.png` |
# | 5 | §3.2.4 | $F(x) = \mathrm{ReLU}(W_2\,\sigma(W_1x+b_1)+b_2)$ | $\mathrm{FFN}(x) = \max(0, xW_1+b_1)W_2+b_2$ | 11.4, `tests/ops/test_as_written.py` |
# | 6 | §3.2.5 | $\gamma\,(x+\beta)/\sqrt{d}$ | $\gamma \odot (x-\mu)/\sqrt{\sigma^2+\epsilon} + \beta$ | 11.5, `tests/ops/test_as_written.py`, `transformer_layernorm_activations.png` |
# | 7 | §3.3 | five steps with no residual connection, one LayerNorm at the very end, no decoder | $x + \mathrm{Sublayer}(x)$ then LayerNorm around *every* sublayer; encoder and decoder stacks | 11.6, chapter 6.7, `reference/models/layers.py` |
# | 8 | §4 | `BertModel` + `outputs.logits` + `torch.argmax(..., dim=1)` "generates a summary" | `BertModel` has no logits, `torch` is never imported, `dim=1` is the position axis, and an encoder does not generate | chapter 8, `tests/inference/test_summarizer.py` |
# | 9 | §4 | `pip install transformers` | the code also needs PyTorch (`torch`) | chapter 8 |
# | 10 | references [3] | Radford, Vaswani, Salimans, Sutskever (2018), "Imagenet classication with transformers", arXiv:1811.08107 | Radford, Narasimhan, Salimans, Sutskever (2018), "Improving Language Understanding by Generative Pre-Training", an OpenAI report (GPT-1) | 11.7 |
# | 11 | references [4] | Brown, Ko, Lloret, Liu, Radford, Salimans, Zhang (2020), "Language models are unsupervised multitask learners", NeurIPS pp. 10239–10249 | two papers merged: Radford et al. (2019), "Language Models are Unsupervised Multitask Learners" (GPT-2, an OpenAI report); Brown et al. (2020), "Language Models are Few-Shot Learners" (GPT-3, NeurIPS 33) | 11.7 |
#
# The code of every as-written formula is `reference/ops/as_written.py`; nothing in the models uses it.

# %%
import matplotlib.pyplot as plt
import numpy as np

from book import QUICK, savefig
from reference.ops import as_written, ffn, layernorm

rng = np.random.default_rng(0)
print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 11.1 "层ORMAL化" and "regularisation" (errata 1 and 2)
#
# > 4. 层ORMAL化（Layer Normalization）：用于正则化模型，减少过拟合。
#
# "层ORMAL化" is a garbled 层归一化, with half of the English word "NORMAL" left in. The claim in the same line is
# wrong too: Ba, Kiros and Hinton (2016) introduced layer normalisation to make training faster and more stable by
# fixing each layer's input statistics, not as a regulariser. It has no noise and no penalty, and it acts the same
# way at training and test time. The Transformer's regularisers are dropout and label smoothing (Vaswani et al., §5.4).
#
# ## 11.2 $W^O$ is one matrix (erratum 3)
#
# > $W^Q_i, W^K_i, W^V_i, W^O$ 是各自注意力头的参数矩阵。 ("... are each attention head's parameter matrices.")
#
# The projections $W^Q_i, W^K_i, W^V_i$ are per head, but $W^O$ is applied once, to the concatenation of all heads:
# its row block $i$ multiplies head $i$, and every output feature mixes all heads. `reference/ops/multihead.py` holds one
# `Wo` of shape `(d_model, d_model)`, and `tests/ops/test_multihead.py` checks it against PyTorch's
# `nn.MultiheadAttention`, whose `out_proj` is likewise one matrix.
#
# ## 11.3 The positional encoding (erratum 4)
#
# > $$P(pos) = \sin\left(\frac{pos}{10000^{2/d_p}}\right)^{2048}$$
#
# The printed formula has no dimension index, so every dimension gets the same number; its exponent turns the sine
# into a spike that is almost always 0; and there is no "log-sine" (对数正弦) form anywhere in the literature.

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
# Chapter 6.4 draws both tables (`transformer_pe_heatmap.png`, `transformer_as_written_failures.png`).
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
# ## Exercises
#
# 1. Show that the printed PE formula gives $|P(pos)| > 0.5$ for only a small fraction of positions: what fraction of
#    angles $\theta$ have $|\sin\theta|^{2048} > 0.5$?
# 2. The printed LayerNorm is linear in $x$. Write the matrix $A$ with $\mathrm{LN}_{\text{printed}}(x) = A x + c$ for
#    $\gamma = 1$, and the Jacobian of the correct LayerNorm at a given $x$. Which one can map two rows with different
#    means and scales to the same output?
#
# Worked solutions: `chapters/solutions/11_errata.py` (checked by `tests/book/test_solutions_11.py`).
