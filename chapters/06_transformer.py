# %% [markdown]
# # 6. The Transformer, equation by equation
#
# This chapter walks through §3 of the material (核心算法原理…数学模型公式, "core algorithms and the
# mathematical formulas") one equation at a time. For each piece it quotes the material, states the correct
# equation from Vaswani et al., *Attention Is All You Need* (2017), derives the backward pass, calls the code that
# implements both, and checks the gradient live against finite differences. Where the material's formula is wrong,
# it runs the formula *as printed* beside the correct one and shows the difference with numbers.
#
# | piece | material | code |
# |---|---|---|
# | scaled dot-product attention, causal mask | §3.2.1 | `reference/ops/attention.py` (`forward`, `backward`, `causal_mask`) |
# | the same, blocked with an online softmax | — | `reference/ops/attention.py` (`forward_blocked`, `backward_blocked`) |
# | softmax and its Jacobian | §3.2.1 | `reference/ops/softmax.py` |
# | multi-head attention | §3.2.2 | `reference/ops/multihead.py` |
# | sinusoidal positional encoding | §3.2.3 | `reference/ops/positional.py` |
# | position-wise feed-forward network | §3.2.4 | `reference/ops/ffn.py` (uses `reference/ops/activations.py`, `reference/ops/linear.py`) |
# | layer normalisation | §3.2.5 | `reference/ops/layernorm.py` |
# | residual + Add & Norm, encoder and decoder layers, the model | §3.1, §3.3 | `reference/models/layers.py`, `reference/models/transformer.py` |
# | the material's formulas exactly as printed | §3.2.3–§3.2.5 | `reference/ops/as_written.py` |
# | the same with each error alone | §3.2.3, §3.2.5 | `reference/ops/as_written_parts.py` |
# | the paper's regularisers: dropout, label smoothing | §3.1 item 4 | `reference/ops/dropout.py`, `reference/ops/label_smoothing.py` |
# | the model trained: digit reversal, greedy decoding, the learned cross-attention | §3 | `reference/training/seq2seq.py`, `reference/inference/seq2seq.py` |
#
# Nothing below defines model maths of its own: every equation is computed by `reference/`, and the notebook only
# calls it, checks it and draws it. The tests for the same equations live in `tests/test_<module>.py`.

# %%
import matplotlib.pyplot as plt
import numpy as np

from book import QUICK, glue, savefig
from reference.gradcheck import RTOL_FD, numerical_grad, rel_error
from reference.models import layers, transformer
from reference.ops import as_written, attention, ffn, layernorm, multihead, positional, softmax

np.set_printoptions(precision=4, suppress=True)
rng = np.random.default_rng(0)
# f(x +- h) ~ 1 in float64 has round-off ~1e-16, so a finite difference of a zero gradient is ~1e-16 / h = 1e-10
ZERO_ATOL = 1e-8


def gradcheck(name, loss, inputs, analytic):
    """Assert that analytic gradients match float64 central differences, and print the relative errors.

    ``loss()`` is sum(out * g) for a fixed random upstream gradient g, so d loss / d input is exactly what the
    backward pass returns for upstream g. RTOL_FD = 1e-6 (reference/gradcheck.py): a right gradient agrees to about
    1e-8, a wrong term shows up at 1e-2 or worse. A gradient that is exactly zero (see the key bias in 6.3) has
    no scale to be relative to: there both sides must be below ZERO_ATOL, the finite differences' round-off.
    """
    errs = {}
    for key, x in inputs.items():
        numeric = numerical_grad(loss, x)
        zero = max(np.abs(numeric).max(), np.abs(analytic[key]).max()) < ZERO_ATOL
        errs[key] = 0.0 if zero else rel_error(analytic[key], numeric)
    zeros = [k for k, e in errs.items() if e == 0.0]
    if len(errs) <= 5:
        print(f"{name}: relative error " + ", ".join(f"d{k} {e:.1e}" for k, e in errs.items()))
    else:
        worst = max(errs, key=errs.get)
        print(f"{name}: {len(errs)} gradients, largest relative error {errs[worst]:.1e} (d {worst})"
              + (f"; exactly zero: {zeros}" if zeros else ""))
    bad = {k: e for k, e in errs.items() if not e < RTOL_FD}
    assert not bad, f"{name}: relative errors above {RTOL_FD:.0e}: {bad}"


print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 6.1 What §3.1 lists, and two errata before we start
#
# > 4. 层ORMAL化（Layer Normalization）：用于正则化模型，减少过拟合。
# >
# > "4. Layer ORMAL-isation (Layer Normalization): used to regularise the model and reduce overfitting."
#
# Two things are wrong in this one line. "层ORMAL化" is a garbled word: the term is 层归一化 (layer
# normalisation). And LayerNorm is not a regulariser against overfitting: Ba, Kiros & Hinton (2016) introduced
# it to keep each layer's inputs at a fixed mean and scale, which makes training faster and more stable. The
# Transformer's regularisers are dropout and label smoothing (Vaswani et al., §5.4; §6.9 below). §3.1 also omits
# the residual connections, without which none of the stacks below would train; we come back to them in §6.7. And
# its item 1 gives positional encoding the wrong purpose: "以便于模型学习序列之间的关系" (so that the model learns
# the relations *between sequences*); the codes let attention relate positions *within* one sequence, and nothing
# in the model relates two sequences of a batch (chapter 11.9 shows both with numbers).

# %% [markdown]
# ## 6.2 Scaled dot-product attention (§3.2.1)
#
# > $\text{Attention}(Q, K, V) = \text{softmax}\left(\frac{QK^T}{\sqrt{d_k}}\right)V$，其中 $d_k$ 是键矩阵的维度。
# >
# > "…where $d_k$ is the dimension of the key matrix."
#
# This formula is right (it is equation (1) of the paper); $d_k$ is the width of one key vector.
#
# ### Three tokens by hand
#
# Before the general case, one small enough to do on paper. Three tokens, each a vector of $d = 2$ numbers, and
# the three projections of a single head ($d_k = 2$):
#
# $$
# X = \begin{pmatrix} 1 & 0 \\ 0 & 1 \\ 1 & 1 \end{pmatrix}, \quad
# W^Q = W^K = \begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}, \quad
# W^V = \begin{pmatrix} 2 & 0 \\ 0 & 1 \end{pmatrix}
# \quad\Rightarrow\quad Q = K = X, \quad V = XW^V = \begin{pmatrix} 2 & 0 \\ 0 & 1 \\ 2 & 1 \end{pmatrix}.
# $$
#
# Row $i$ of $Q$ asks a question, row $j$ of $K$ is what token $j$ offers to be matched on, row $j$ of $V$ is what
# it hands over. The scores are the dot products of every query with every key, divided by $\sqrt{d_k} = \sqrt 2$:
#
# $$
# \frac{QK^\top}{\sqrt 2} = \frac{1}{\sqrt 2}\begin{pmatrix} 1 & 0 & 1 \\ 0 & 1 & 1 \\ 1 & 1 & 2 \end{pmatrix}
# = \begin{pmatrix} 0.707 & 0 & 0.707 \\ 0 & 0.707 & 0.707 \\ 0.707 & 0.707 & 1.414 \end{pmatrix}.
# $$
#
# In a decoder (the book's GPT) token $i$ may only read tokens $j \le i$: the causal mask removes the scores above
# the diagonal before the softmax. Row by row:
#
# * token 1 sees only itself: $P_{1\cdot} = (1, 0, 0)$;
# * token 2 sees scores $(0, 0.707)$: $e^0 = 1$, $e^{0.707} = 2.028$, so
#   $P_{2\cdot} = (1, 2.028)/3.028 = (0.330, 0.670, 0)$;
# * token 3 sees $(0.707, 0.707, 1.414)$: $e^{0.707} = 2.028$ twice and $e^{1.414} = 4.113$, sum $8.169$, so
#   $P_{3\cdot} = (0.248, 0.248, 0.503)$.
#
# Each output is the weighted average of the value rows: $O_1 = V_1 = (2, 0)$;
# $O_2 = 0.330\,(2, 0) + 0.670\,(0, 1) = (0.660, 0.670)$;
# $O_3 = 0.248\,(2, 0) + 0.248\,(0, 1) + 0.503\,(2, 1) = (1.503, 0.752)$. Token 3 reads itself most, because its
# query and its own key agree best ($q_3 \cdot k_3 = 2$). The same numbers from `reference/ops/attention.py`:

# %%
X3 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])              # (T, d) three tokens
Q3, K3, V3 = X3 @ np.eye(2), X3 @ np.eye(2), X3 @ np.diag([2.0, 1.0])
O3, cache3 = attention.forward(Q3[None, None], K3[None, None], V3[None, None], mask=attention.causal_mask(3, 3))
print("P =\n", attention.probabilities(cache3)[0, 0].round(3))
print("O =\n", O3[0, 0].round(3))
assert np.allclose(O3[0, 0], [[2, 0], [0.660, 0.670], [1.503, 0.752]], atol=1e-3)   # the hand values, 3 decimals

# %% [markdown]
# ### The general case
#
# With $Q \in \mathbb{R}^{T_q \times d_k}$, $K \in \mathbb{R}^{T_k \times d_k}$, $V \in \mathbb{R}^{T_k \times d_v}$:
#
# $$
# S = \frac{Q K^\top}{\sqrt{d_k}}, \qquad P = \operatorname{softmax}_{\text{row}}(S), \qquad O = P V .
# $$
#
# The $1/\sqrt{d_k}$ keeps the scores at unit scale: if the entries of $q$ and $k$ are independent with variance 1,
# $q \cdot k$ has variance $d_k$, and a softmax of scores that large saturates (one weight near 1, the others
# near 0, and gradients near 0). A **mask** sets chosen scores to $-\infty$ before the softmax, so those weights
# are exactly 0. The decoder uses a *causal* mask: query $i$ may see key $j$ only if $j \le i$ (aligned
# bottom-right when $T_q \ne T_k$, so that decoding one token against a cache of earlier keys works).
#
# **Backward.** Given $dO = \partial L / \partial O$, go back through the three steps.
#
# * $O = PV$: $\quad dV = P^\top dO, \qquad dP = dO\, V^\top$.
# * $P = \operatorname{softmax}(S)$ row by row. The softmax Jacobian is
#   $\partial P_{ij} / \partial S_{il} = P_{ij}(\delta_{jl} - P_{il})$, so
#   $$dS_{il} = \sum_j dP_{ij} P_{ij}(\delta_{jl} - P_{il}) = P_{il}\Big(dP_{il} - \sum_j P_{ij}\, dP_{ij}\Big).$$
#   The row sum simplifies: $\sum_j P_{ij} dP_{ij} = \sum_j P_{ij} (dO_i \cdot V_j) = dO_i \cdot O_i =: D_i$.
#   So $dS = P \circ (dP - D)$ with $D = \operatorname{rowsum}(dO \circ O)$, a vector that needs no $T \times T$
#   matrix; the blocked version below depends on this.
# * $S = QK^\top / \sqrt{d_k}$: $\quad dQ = dS\, K / \sqrt{d_k}, \qquad dK = dS^\top Q / \sqrt{d_k}$.
#
# A masked score has $P = 0$, so its $dS$ is 0 too: no gradient flows through a connection that does not exist.
#
# First the softmax alone. Its backward (`reference/ops/softmax.py`) is the Jacobian-vector product above, never
# the $T \times T$ Jacobian itself:

# %%
s = rng.standard_normal((3, 5))                  # (rows, T_k) scores, float64
g = rng.standard_normal((3, 5))                  # a random upstream gradient
p, cache = softmax.forward(s)
ds = softmax.backward(g, cache)
gradcheck("softmax", lambda: float((softmax.forward(s)[0] * g).sum()), {"s": s}, {"s": ds})
print("rows of P sum to", p.sum(axis=-1))

# %% [markdown]
# Now attention with a causal mask, $T_q = 4$ queries against $T_k = 6$ keys (two keys are "from the cache"), and
# a live gradient check of $dQ, dK, dV$:

# %%
B, H, T_q, T_k, d_k = 2, 2, 4, 6, 3
q = rng.standard_normal((B, H, T_q, d_k))        # (B, H, T_q, d_k)
k = rng.standard_normal((B, H, T_k, d_k))        # (B, H, T_k, d_k)
v = rng.standard_normal((B, H, T_k, d_k))        # (B, H, T_k, d_v)
mask = attention.causal_mask(T_q, T_k)           # (T_q, T_k), True = may attend
print(mask.astype(int))

dout = rng.standard_normal((B, H, T_q, d_k))
out, cache = attention.forward(q, k, v, mask=mask)
dq, dk, dv = attention.backward(dout, cache)
gradcheck("attention (causal)", lambda: float((attention.forward(q, k, v, mask=mask)[0] * dout).sum()),
          {"q": q, "k": k, "v": v}, {"q": dq, "k": dk, "v": dv})

# %% [markdown]
# `attention.probabilities(cache)` returns the weights $P$ that the forward pass kept for the backward. The figure
# shows the causal mask, and the weights when the queries and keys are just the positional codes of §6.4
# ($Q = K = \text{PE}$): each position attends most to itself and its neighbours, because the dot product of two
# sinusoidal codes falls off with the distance between the positions.

# %%
T_pat, d_pat = (16, 32) if QUICK else (48, 64)
pe = positional.sinusoidal(T_pat, d_pat)[None, None]          # (1, 1, T, d): queries = keys = PE
P_full = attention.probabilities(attention.forward(pe, pe, pe)[1])[0, 0]                       # (T, T)
causal_pat = attention.causal_mask(T_pat, T_pat)                                               # (T, T)
P_causal = attention.probabilities(attention.forward(pe, pe, pe, mask=causal_pat)[1])[0, 0]    # (T, T)
assert np.all(P_causal[np.triu_indices(T_pat, 1)] == 0), "causal weights above the diagonal must be exactly 0"
assert np.allclose(P_causal.sum(-1), 1) and np.allclose(P_full.sum(-1), 1)

fig, axes = plt.subplots(1, 3, figsize=(13, 4.4), layout="constrained")
vmax = max(P_full.max(), P_causal.max())  # one colour scale for both weight panels, so one colour bar is right
panels = [(causal_pat, "causal mask\n(white = may attend)", dict(cmap="gray", vmin=0, vmax=1)),
          (P_full, "weights P, no mask", dict(cmap="viridis", vmin=0, vmax=vmax)),
          (P_causal, "weights P, causal mask\n(0 above the diagonal)", dict(cmap="viridis", vmin=0, vmax=vmax))]
for ax, (img, title, style) in zip(axes, panels):
    im = ax.imshow(img, **style)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("key position j")
axes[0].set_ylabel("query position i")
fig.colorbar(im, ax=axes[1:], shrink=0.85, label="attention weight P[i, j]")
fig.suptitle("Attention of the positional codes alone (Q = K = V = PE): each position attends to itself and its "
             "neighbours", fontsize=11)
savefig(fig, "transformer_attention_pattern.png")

# %% [markdown]
# ### The same attention without the $T \times T$ matrix: online softmax
#
# `attention.forward` builds $S$ and $P$, two $T_q \times T_k$ arrays per head: at $T = 4096$ that is 64 MiB per
# head in float32, and memory, not arithmetic, becomes the limit. `attention.forward_blocked` computes the same
# $O$ one block of keys at a time, keeping per query row only a running maximum $m$, a running sum $\ell$ and
# an unnormalised output $A$. For each key block $K_b, V_b$ with scores $S_b = Q K_b^\top / \sqrt{d_k}$:
#
# $$
# m' = \max\big(m, \operatorname{rowmax} S_b\big), \quad
# \ell' = \ell\, e^{m - m'} + \operatorname{rowsum} e^{S_b - m'}, \quad
# A' = A\, e^{m - m'} + e^{S_b - m'} V_b ,
# $$
#
# and at the end $O = A / \ell$ and $\text{lse} = m + \log \ell$ (the log of the softmax denominator). The factor
# $e^{m - m'}$ rescales what was summed under the old maximum to the new one, so the result is exactly the
# softmax, and every exponent stays $\le 0$. `backward_blocked` recomputes each block's weights from the saved
# lse, $P_b = e^{S_b - \text{lse}}$, and uses $dS_b = P_b \circ (dO\, V_b^\top - D)$ with
# $D = \operatorname{rowsum}(dO \circ O)$ from the derivation above. Memory is $O(T d)$ instead of $O(T^2)$; this
# is the algorithm of FlashAttention (Dao et al., 2022) and of the Triton kernel in chapter 7.
#
# Side by side, in float64, with a causal mask and a sequence that is not a multiple of the block size:

# %%
T_blk, d_blk, block = (100, 16, 32) if QUICK else (300, 32, 64)
qb, kb, vb, dob = (rng.standard_normal((2, 2, T_blk, d_blk)) for _ in range(4))   # (B, H, T, d) each
mask_blk = attention.causal_mask(T_blk, T_blk)

out_naive, cache = attention.forward(qb, kb, vb, mask=mask_blk)
grads_naive = attention.backward(dob, cache)
out_blocked, lse = attention.forward_blocked(qb, kb, vb, mask=mask_blk, block_size=block)
grads_blocked = attention.backward_blocked(dob, qb, kb, vb, out_blocked, lse, mask=mask_blk, block_size=block)

# float64 round-off after a few hundred additions in a different order: ~1e-15; 1e-12 leaves room for that and
# nothing else (a wrong rescale factor shows up at 1e-1)
print(f"out: naive vs blocked, max |diff| = {np.abs(out_naive - out_blocked).max():.1e}")
assert np.abs(out_naive - out_blocked).max() < 1e-12
for name, a, b in zip(("dq", "dk", "dv"), grads_naive, grads_blocked):
    print(f"{name}: naive vs blocked, relative error = {rel_error(a, b):.1e}")
    assert rel_error(a, b) < 1e-12
print("lse has shape", lse.shape, "(one number per query row; no T x T array was kept)")

# %% [markdown]
# The benchmark (`bench/ops.py`, `make bench`) measures the peak memory of both with `tracemalloc`: the naive
# forward grows with $T^2$, the blocked one with $T d$ (right panel; the left panel compares the reference's speed
# with PyTorch's on the same CPU).
#
# ![benchmark: speed ratios and attention peak memory](../figures/bench_ops.png)

# %% [markdown]
# ## 6.3 Multi-head attention (§3.2.2)
#
# > $\text{MultiHead}(Q, K, V) = \text{Concat}(\text{head}_1, \dots, \text{head}_h)W^O$ …
# > $W^Q_i, W^K_i, W^V_i, W^O$ 是各自注意力头的参数矩阵。
# >
# > "…$W^Q_i, W^K_i, W^V_i, W^O$ are the parameter matrices of the respective attention heads."
#
# The equation is right; the sentence after it is imprecise, and it is worth saying exactly how. $W^Q_i, W^K_i,
# W^V_i$ carry the head's index and do belong to head $i$. $W^O$ carries none: in the equation it is **one** matrix,
# $W^O \in \mathbb{R}^{h d_v \times d_\text{model}}$, applied once to the concatenation. Cut into row blocks
# $W^O_i \in \mathbb{R}^{d_v \times d_\text{model}}$ (rows $(i-1)d_v + 1$ to $i\,d_v$), it splits exactly into
# one output matrix per head, summed:
#
# $$ \text{Concat}(\text{head}_1, \dots, \text{head}_h)\, W^O = \sum_{i=1}^{h} \text{head}_i\, W^O_i . $$
#
# So "one $W^O_i$ per head, the results added" is the same model, not an error. What the sentence gets wrong is
# its notation: it lists an unindexed $W^O$ among "each head's" matrices, which fits neither reading (a shared $W^O$
# is no head's own; per-head $W^O_i$ need the sum, which the sentence does not mention). The reading it invites,
# each head projecting with its own $d_v \times d_v$ matrix into its own slice of the output (a block-diagonal
# $W^O$), *is* a different model: with $h$ times fewer output parameters, and heads that never mix. The cells
# below show the identity and the difference in numbers. (The section
# also says the heads learn "不同层次的依赖关系", dependencies of different *levels*; the paper's claim is
# different representation *subspaces*.) In the code all heads' projections are one $C \times C$ matrix each,
# head $i$ owning columns $i d_k \ldots (i+1) d_k - 1$ with $d_k = C/h$:
#
# $$
# \text{head}_i = \text{Attention}(X_q W^Q_i,\ X_{kv} W^K_i,\ X_{kv} W^V_i), \qquad
# Y = \text{Concat}(\text{head}_1, \dots, \text{head}_h)\, W^O + b^O .
# $$
#
# **Backward.** Each step is a linear map or the attention above: $dW^O = \text{Concat}^\top dY$,
# $d\,\text{Concat} = dY\, W^{O\top}$, split it into heads, run the attention backward per head to get
# $dQ, dK, dV$, merge the heads back, then $dW^Q = X_q^\top dQ$ and $dX_q = dQ\, W^{Q\top}$ (same for $K$, $V$
# with $X_{kv}$). In self-attention $X_q$ and $X_{kv}$ are the same array used twice, so its gradient is the
# **sum** $dX_q + dX_{kv}$ (the multivariate chain rule adds the contributions of every use).

# %%
B, T, C, n_head = 2, 4, 8, 2
x = rng.standard_normal((B, T, C))               # (B, T, C)
params = {name: rng.standard_normal((C, C)) / np.sqrt(C) for name in ("Wq", "Wk", "Wv", "Wo")}
params.update({name: 0.1 * rng.standard_normal(C) for name in ("bq", "bk", "bv", "bo")})
causal = attention.causal_mask(T, T)
dy = rng.standard_normal((B, T, C))

y, cache = multihead.forward(x, x, params, n_head, mask=causal)
dx_q, dx_kv, dparams = multihead.backward(dy, cache)
mha_loss = lambda: float((multihead.forward(x, x, params, n_head, mask=causal)[0] * dy).sum())  # noqa: E731
gradcheck("multi-head self-attn", mha_loss, {"x": x, **params}, {"x": dx_q + dx_kv, **dparams})

# %% [markdown]
# One gradient above is exactly zero, and for a reason worth a line: the key bias $b_K$. Adding $b_K$ to every key
# adds $q \cdot b_K$ to every score of a row, the same constant for all keys, and the softmax does not see a
# constant added to a whole row (exercise 1). A relative error means nothing there (0 against finite-difference
# noise), so `gradcheck` compares sizes instead:

# %%
dbk_numeric = numerical_grad(mha_loss, params["bk"])
print(f"|dbk| analytic {np.abs(dparams['bk']).max():.1e}, finite differences {np.abs(dbk_numeric).max():.1e} "
      f"(round-off of f / h ~ 1e-16 / 1e-6), against |dbq| ~ {np.abs(dparams['bq']).max():.1e}")
# the analytic value is a sum of terms that cancel exactly (round-off ~1e-16); the numerical one is
# (f(b + h) - f(b - h)) / 2h with f ~ 1, so round-off ~1e-16 / 1e-6 = 1e-10: 1e-8 bounds both
assert np.abs(dparams["bk"]).max() < 1e-12 and np.abs(dbk_numeric).max() < 1e-8

# %% [markdown]
# $W^O$ mixes the heads, in numbers: change only head 0's query projection (its columns of $W^Q$) and count how
# many of the $C$ output coordinates move. If $W^O$ were one matrix per head, writing its own slice of the output,
# only $C/h$ of them would.

# %%
head0 = slice(0, C // n_head)
nudged = dict(params, Wq=params["Wq"].copy())
nudged["Wq"][:, head0] += 0.5
y_nudged, _ = multihead.forward(x, x, nudged, n_head, mask=causal)
moved = np.abs(y_nudged - y).max(axis=(0, 1)) > 1e-9             # (C,) which output coordinates changed
print(f"changing head 0 moved {moved.sum()} of {C} output coordinates (a block-diagonal W^O would move "
      f"{C // n_head})")
assert moved.sum() == C

# the identity Concat(head_1..head_h) W^O = sum_i head_i W^O_i, with W^O_i the i-th block of d_k rows
d_head = C // n_head
proj = {n: x @ params["W" + n] + params["b" + n] for n in "qkv"}                     # (B, T, C) each
split = {n: z.reshape(B, T, n_head, d_head).transpose(0, 2, 1, 3) for n, z in proj.items()}  # (B, H, T, d_k)
head_out, _ = attention.forward(split["q"], split["k"], split["v"], mask=causal)      # (B, H, T, d_k)
concat = head_out.transpose(0, 2, 1, 3).reshape(B, T, C)                             # (B, T, C)
summed = sum(head_out[:, i] @ params["Wo"][i * d_head:(i + 1) * d_head] for i in range(n_head))
print(f"max |Concat(heads) W^O - sum_i head_i W^O_i| = {np.abs(concat @ params['Wo'] - summed).max():.1e}")
assert np.allclose(concat @ params["Wo"] + params["bo"], y, rtol=0, atol=1e-12)   # the op computes exactly this
assert np.abs(concat @ params["Wo"] - summed).max() < 1e-12          # float64: the same products, summed in groups
blockdiag = np.zeros_like(params["Wo"])
for i in range(n_head):
    rows = slice(i * d_head, (i + 1) * d_head)
    blockdiag[rows, rows] = params["Wo"][rows, rows]
print(f"output parameters: one W^O {params['Wo'].size}, block-diagonal per-head W^O {int((blockdiag != 0).sum())}")

# %% [markdown]
# ## 6.4 Positional encoding (§3.2.3)
#
# > 通常，位置编码采用正弦函数或对数正弦函数形式：$P(pos) = \sin\left(\frac{pos}{10000^{2/d_p}}\right)^{2048}$
# >
# > "Usually the positional encoding takes the form of a sine or log-sine function: …"
#
# Attention by itself is blind to order: shuffle the keys together with their values and every query's output is
# unchanged. So each position gets a code vector that is added to its token embedding. The printed formula cannot do that job: it
# has no dimension index (every one of the $d_p$ coordinates gets the same number), the exponent 2048 flattens
# almost every value to 0, and there is no "log-sine" in the paper. The paper's encoding (§3.5) is, for
# $i = 0, \dots, d_\text{model}/2 - 1$,
#
# $$
# \text{PE}(pos, 2i) = \sin\!\left(\frac{pos}{10000^{2i/d_\text{model}}}\right), \qquad
# \text{PE}(pos, 2i+1) = \cos\!\left(\frac{pos}{10000^{2i/d_\text{model}}}\right),
# $$
#
# a sine and a cosine of the same frequency $\omega_i = 10000^{-2i/d_\text{model}}$ in each pair of coordinates,
# the wavelengths growing geometrically from $2\pi$ to $10000 \cdot 2\pi$. Every coordinate stays in $[-1, 1]$
# (the same scale at position 5 and at position 5000), and every position gets its own code. Because
# $(\sin, \cos)$ at $pos + k$ is a fixed rotation of $(\sin, \cos)$ at $pos$, $\text{PE}(pos + k)$ is a linear
# function of $\text{PE}(pos)$ for each offset $k$ (exercise 2). There is no parameter, so there is no backward
# pass: the gradient stops at the sum $x = \text{embedding} + \text{PE}$.

# %%
n_pos, d_model = (128, 32) if QUICK else (512, 128)
pe = positional.sinusoidal(n_pos, d_model)                      # (n_pos, d_model)
dist = np.sqrt(((pe[:, None, :] - pe[None, :, :]) ** 2).sum(-1))   # (n_pos, n_pos) distances between codes
np.fill_diagonal(dist, np.inf)
print(f"PE: values in [{pe.min():.3f}, {pe.max():.3f}]; closest two of {n_pos} positions are "
      f"{dist.min():.3f} apart (norm of every code = sqrt(d/2) = {np.sqrt(d_model / 2):.2f})")
assert np.abs(pe).max() <= 1 and dist.min() > 0.1

fig, ax = plt.subplots(figsize=(9, 3.8))
im = ax.imshow(pe.T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
ax.set_xlabel("position pos")
ax.set_ylabel("dimension (2i: sin, 2i+1: cos)")
ax.set_title(f"sinusoidal positional encoding, d_model = {d_model}")
fig.colorbar(im, ax=ax)
savefig(fig, "transformer_pe_heatmap.png")

# %% [markdown]
# The formula as printed (`as_written.positional_encoding`, which broadcasts its one number per position to all
# $d_p$ columns), against the paper's, on the same positions. "Sharing a code" means another position's code is
# within $10^{-3}$ in every coordinate: indistinguishable once added to an embedding of size ~1.

# %%
diag = as_written.positional_diagnostics(n_pos, d_model)
for key in ("min", "max", "fraction_near_zero", "all_dimensions_identical", "positions_sharing_a_code"):
    print(f"{key:>26}:  as written {diag['as_written_' + key]!s:>6.6}   correct {diag['correct_' + key]!s:>6.6}")
assert diag["as_written_all_dimensions_identical"] and not diag["correct_all_dimensions_identical"]
assert diag["as_written_positions_sharing_a_code"] > 0.9 * n_pos and diag["correct_positions_sharing_a_code"] == 0

# %% [markdown]
# The printed formula differs from the paper's in three places at once. Which one does the damage? Put each back
# into the paper's formula alone (`reference/ops/as_written_parts.py`): **no index $i$** (the printed $2/d_p$ for
# $2i/d$: every pair of columns turns at the same frequency), **no cosine** (a sine in both columns of a pair), and
# **the power 2048** (the paper's entries raised to it). Besides the range and the shared codes above, two more
# numbers: how many positions $j \ge 2$ have a code closer to position 0's than position 1's code is (positions the
# code confuses with the start), and whether the code of $pos + 1$ is still a linear map of the code of $pos$ (the
# relative residual of the best such map: round-off for the paper, exercise 2).

# %%
from reference.ops import as_written_parts  # noqa: E402

pe_tables = as_written_parts.positional_variants(n_pos, d_model)
pe_stats = {name: as_written_parts.positional_stats(t) for name, t in pe_tables.items()}
keys = ("distinct_columns", "min", "fraction_near_zero", "positions_sharing_a_code", "closer_to_0_than_1",
        "relative_residual")
print(f"{n_pos} positions, d = {d_model}")
print(f"{'':>11}" + "".join(f"{k:>26}" for k in keys))
for name, st in pe_stats.items():
    print(f"{name:>11}" + "".join(f"{st[k]:>26.3g}" for k in keys))
assert pe_stats["no_index_i"]["distinct_columns"] == 2 and pe_stats["no_index_i"]["closer_to_0_than_1"] > 0
assert pe_stats["no_cos"]["relative_residual"] > 0.1 > pe_stats["paper"]["relative_residual"]
assert pe_stats["power_2048"]["min"] >= 0 and pe_stats["power_2048"]["fraction_near_zero"] > 0.5
glue("pe_no_i_closer", str(int(pe_stats["no_index_i"]["closer_to_0_than_1"])))
glue("pe_n_pos", str(n_pos))

fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), sharey=True)
for ax, name in zip(axes, ("paper", "no_index_i", "no_cos", "power_2048")):
    im = ax.imshow(pe_tables[name][:64].T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title({"paper": "the paper", "no_index_i": "only the index i missing (2/d for 2i/d)",
                  "no_cos": "only the cosine missing", "power_2048": "only the power 2048 added"}[name], fontsize=9)
    ax.set_xlabel("position")
axes[0].set_ylabel("dimension")
fig.colorbar(im, ax=axes, shrink=0.8)
fig.suptitle("The paper's positional code with each error of the printed formula put back alone", fontsize=10, y=1.04)
savefig(fig, "transformer_pe_errors_alone.png")

# %% [markdown]
# Each error alone breaks something different. Without the index $i$ every pair of columns carries the same two
# numbers (two distinct columns out of $d$): the code is a point on one circle, which it goes round every $2\pi \cdot
# 10000^{2/d}$ positions, so {{pe_no_i_closer}} of the {{pe_n_pos}} positions land closer to position 0 than position
# 1 does. Without the cosine, half the columns are copies and position 0 gets the all-zero code; worse, the code of
# $pos + 1$ is no longer a linear function of the code of $pos$ (a sine alone cannot be rotated), which is the
# property the paper chose sinusoids for. The power 2048 alone folds every value into $[0, 1]$, sets most of them to
# about 0, and also destroys the linear relation; at this width the remaining spikes still tell the positions apart.
# Together, as printed, the three leave one number per position, 0 almost everywhere.

# %% [markdown]
# ## 6.5 The position-wise feed-forward network (§3.2.4)
#
# > 由两个全连接层组成：$F(x) = \text{ReLU}(W_2\sigma(W_1x + b_1) + b_2)$
# >
# > "It consists of two fully connected layers: …"
#
# The paper's FFN (equation (2)) has one nonlinearity, between the two layers, and none after the second:
#
# $$
# \text{FFN}(x) = \max(0,\ x W_1 + b_1)\, W_2 + b_2, \qquad W_1 \in \mathbb{R}^{d_\text{model} \times d_\text{ff}},\
# W_2 \in \mathbb{R}^{d_\text{ff} \times d_\text{model}}
# $$
#
# ($d_\text{ff} = 2048 = 4 d_\text{model}$ in the base model; GPT-2 and BERT use GELU instead of ReLU). The
# printed version wraps the second layer in an extra outer ReLU, so its output is never negative. The FFN's output
# is *added* to the residual stream, so an FFN that can only add non-negative numbers can push every coordinate
# up but never down. (The $\sigma$ inside is left undefined; `reference/ops/as_written.py` reads it as the
# logistic sigmoid, its usual meaning.) The same FFN is applied to every position independently
# ("position-wise"), so for $x$ of shape $(B, T, C)$ it is two matrix products over all $B T$ rows.
#
# **Backward.** Name the steps $a = x W_1 + b_1$, $h = \max(0, a)$, $y = h W_2 + b_2$. Then
# $dW_2 = h^\top dy$, $db_2 = \sum_\text{rows} dy$, $dh = dy\, W_2^\top$, $da = dh \circ \mathbb{1}[a > 0]$,
# $dW_1 = x^\top da$, $db_1 = \sum_\text{rows} da$, $dx = da\, W_1^\top$ (with the rows of $x$ and $dy$ flattened
# over $B$ and $T$ for the weight gradients).

# %%
B, T, C, d_ff = 2, 3, 6, 16
x = rng.standard_normal((B, T, C))                                           # (B, T, C)
W1, b1 = rng.standard_normal((C, d_ff)) / np.sqrt(C), 0.1 * rng.standard_normal(d_ff)
W2, b2 = rng.standard_normal((d_ff, C)) / np.sqrt(d_ff), 0.1 * rng.standard_normal(C)
dy = rng.standard_normal((B, T, C))
for act in ("relu", "gelu"):
    y, cache = ffn.forward(x, W1, b1, W2, b2, activation=act)
    dx, dW1, db1, dW2, db2 = ffn.backward(dy, cache)
    gradcheck(f"FFN ({act})", lambda: float((ffn.forward(x, W1, b1, W2, b2, activation=act)[0] * dy).sum()),
              {"x": x, "W1": W1, "b1": b1, "W2": W2, "b2": b2},
              {"x": dx, "W1": dW1, "b1": db1, "W2": dW2, "b2": db2})

# %% [markdown]
# As printed against correct, same input and weights (a batch of rows at a realistic width):

# %%
C_big, ff_big = (32, 128) if QUICK else (256, 1024)
x_ffn = rng.standard_normal((512, C_big))                                     # (rows, C)
ffn_w = dict(W1=rng.standard_normal((C_big, ff_big)) / np.sqrt(C_big), b1=np.zeros(ff_big),
             W2=rng.standard_normal((ff_big, C_big)) / np.sqrt(ff_big), b2=np.zeros(C_big))
diag = as_written.ffn_diagnostics(x_ffn, **ffn_w)
for who in ("as_written", "correct"):
    print(f"{who:>10}: min output {diag[who + '_min']:+.3f}, negative outputs {diag[who + '_fraction_negative']:.0%}")
assert diag["as_written_fraction_negative"] == 0 and diag["correct_fraction_negative"] > 0.3

# %% [markdown]
# ## 6.6 Layer normalisation (§3.2.5)
#
# > 层ORMAL化是一种正则化技术，用于减少过拟合：
# > $\text{LayerNorm}(x_{l-1}, \gamma_l, \beta_l) = \gamma_l \frac{x_{l-1} + \beta_l}{\sqrt{d_{l-1}}}$
# >
# > "Layer normalisation is a regularisation technique used to reduce overfitting: …"
#
# Besides the two errata of §6.1, the formula is wrong: it adds $\beta$ *before* dividing, divides by the
# constant $\sqrt{d}$ (the width, not the spread of the data), and never subtracts the mean. LayerNorm
# (Ba et al., 2016) normalises each row $x \in \mathbb{R}^{C}$ (one token's features) by its own statistics:
#
# $$
# \mu = \frac{1}{C}\sum_{j} x_j, \qquad \sigma^2 = \frac{1}{C}\sum_j (x_j - \mu)^2, \qquad
# \hat{x} = \frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}}, \qquad y = \gamma \circ \hat{x} + \beta .
# $$
#
# The variance is the biased one (divide by $C$), and $\varepsilon = 10^{-5}$ sits inside the square root, so a
# constant row gives $\hat x = 0$, not a division by zero. Whatever the row's offset and scale, $\hat{x}$ has
# mean 0 and variance $\approx 1$; $\gamma$ and $\beta$ then choose the scale and offset the next layer gets.
#
# **Backward.** $d\gamma = \sum_\text{rows} dy \circ \hat{x}$ and $d\beta = \sum_\text{rows} dy$. For $dx$, let
# $g = dy \circ \gamma$ (the gradient reaching $\hat{x}$) and $s = \sqrt{\sigma^2 + \varepsilon}$. Every
# $\hat{x}_i$ depends on every $x_j$ of its row, through $\mu$ and $s$:
# $\partial \mu / \partial x_j = 1/C$ and $\partial s / \partial x_j = (x_j - \mu)/(C s) = \hat{x}_j / C$, so
#
# $$
# \frac{\partial \hat{x}_i}{\partial x_j} = \frac{1}{s}\Big(\delta_{ij} - \frac{1}{C}\Big) - \frac{x_i - \mu}{s^2}\,
# \frac{\hat{x}_j}{C} = \frac{1}{s}\Big(\delta_{ij} - \frac{1}{C} - \frac{\hat{x}_i \hat{x}_j}{C}\Big),
# \qquad
# dx_j = \sum_i g_i \frac{\partial \hat{x}_i}{\partial x_j}
# = \frac{1}{s}\Big(g_j - \overline{g} - \hat{x}_j\, \overline{g \circ \hat{x}}\Big),
# $$
#
# where the bars are means over the row. The two subtracted terms remove from $g$ its component along the
# all-ones direction and along $\hat x$: moving $x$ along those directions (a shift, a rescale) does not change
# $\hat{x}$, so the gradient has no component there (exercise 3).

# %%
B, T, C = 2, 3, 8
x = 3.0 + 2.0 * rng.standard_normal((B, T, C))                             # (B, T, C), offset and scaled rows
gamma, beta = 1 + 0.1 * rng.standard_normal(C), 0.1 * rng.standard_normal(C)
dy = rng.standard_normal((B, T, C))
y, cache = layernorm.forward(x, gamma, beta)
dx, dgamma, dbeta = layernorm.backward(dy, cache)
gradcheck("LayerNorm", lambda: float((layernorm.forward(x, gamma, beta)[0] * dy).sum()),
          {"x": x, "gamma": gamma, "beta": beta}, {"x": dx, "gamma": dgamma, "beta": dbeta})

# %% [markdown]
# What normalisation does to activations, and what the printed formula does instead. The rows below imitate a
# residual stream: each token's features have their own offset and their own spread. LayerNorm (with
# $\gamma = 1, \beta = 0$) maps every row to mean 0 and standard deviation 1; the formula as printed only divides
# by $\sqrt{d}$, so each row keeps its offset and its spread relative to the others.

# %%
n_rows, C_ln = (256, 64) if QUICK else (2048, 512)
row_mean = 2.0 * rng.standard_normal((n_rows, 1))                      # (rows, 1) a different offset per row
row_std = np.exp(rng.standard_normal((n_rows, 1)))                     # (rows, 1) and a different spread
acts = row_mean + row_std * rng.standard_normal((n_rows, C_ln))        # (rows, C)
ones, zeros = np.ones(C_ln), np.zeros(C_ln)
after = {"before (input)": acts,
         "LayerNorm (correct)": layernorm.forward(acts, ones, zeros)[0],
         "LayerNorm as printed": as_written.layer_norm(acts, ones, zeros)}
diag = as_written.layer_norm_diagnostics(acts)
for who in ("input", "as_written", "correct"):
    print(f"{who:>10}: rows have mean {diag[who + '_row_mean']:+.3f} and std {diag[who + '_row_std']:.3f} on average")
means, stds = {k: v.mean(-1) for k, v in after.items()}, {k: v.std(-1) for k, v in after.items()}
print(f"spread of the row stds: input {stds['before (input)'].std():.3f}, as printed "
      f"{stds['LayerNorm as printed'].std():.3f}, correct {stds['LayerNorm (correct)'].std():.1e}")
assert abs(diag["correct_row_mean"]) < 1e-6 and abs(diag["correct_row_std"] - 1) < 1e-3
assert np.allclose(stds["LayerNorm as printed"], stds["before (input)"] / np.sqrt(C_ln))   # only rescaled

fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4))
for name, a in after.items():
    ax.hist(a.ravel(), bins=120, range=(-12, 12), histtype="step", density=True, label=name)
    bx.scatter(means[name], stds[name], s=40 if "correct" in name else 6, alpha=0.6, label=name,
               zorder=3 if "correct" in name else 2)
ax.set_xlabel("activation value")
ax.set_ylabel("density")
ax.set_title("all values, pooled over rows")
ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)
bx.set_xscale("symlog", linthresh=0.1)
bx.set_yscale("log")
bx.set_xlabel("row mean")
bx.set_ylabel("row standard deviation")
bx.set_title("one dot per row (token): correct LN collapses all to (0, 1)")
bx.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)
savefig(fig, "transformer_layernorm_activations.png")

# %% [markdown]
# The figure above used $\beta = 0$, and that hides the printed formula's other error: its $\beta$ is added to the
# input *inside* the fraction, $\gamma (x + \beta)/\sqrt d$, not to the output. With a non-zero $\beta$ (here about
# 0.5 per feature, rows of mean 3 and std 2), three versions: the correct LayerNorm, the printed formula, and the
# correct normalisation with only $\beta$ moved inside, $\gamma \odot \mathrm{norm}(x + \beta)$
# (`as_written_parts.layer_norm_beta_inside`). For each, the mean of the outputs (what $\beta$ is there to set) and
# how far it moves when every $\beta_j$ moves by 1 (what a gradient step on $\beta$ can do to it).

# %%
from reference.ops import as_written_parts  # noqa: E402

rng_b = np.random.default_rng(66)                                 # its own generator: later cells' draws unchanged
x_b = 3.0 + 2.0 * rng_b.standard_normal((256, 64))               # (rows, C) offset and scaled rows
beta_b = 0.5 + 0.1 * rng_b.standard_normal(64)                    # (C,) a learned-looking shift
bd = as_written_parts.layer_norm_beta_diagnostics(x_b, beta_b)
print(f"mean of beta: {bd['beta_mean']:.3f}")
for who in ("correct", "as_printed", "beta_inside"):
    mean, moves = (round(bd[who + key], 3) + 0.0 for key in ("_output_mean", "_shift_response"))   # no "-0.000"
    print(f"{who:>12}: output mean {mean:+.3f}, moves {moves:.3f} per unit of beta")
assert abs(bd["correct_output_mean"] - bd["beta_mean"]) < 1e-12 and abs(bd["beta_inside_shift_response"]) < 1e-12

# %% [markdown]
# The correct LayerNorm's output has exactly $\beta$'s mean, and moves one for one with it. The printed formula's
# mean is $(\bar x + \bar\beta)/\sqrt{d}$: the input's offset leaks through, and $\beta$ counts only $1/\sqrt{64} =
# 1/8$. With $\beta$ inside a real normalisation it counts for nothing at all: the mean subtraction removes it with
# the row's mean, so its gradient along that direction is exactly 0 and no training can learn an offset.

# %% [markdown]
# The three as-printed formulas side by side with the correct ones, in one figure: the positional code as printed
# is the same number in every dimension and almost always 0; the FFN as printed never outputs a negative number;
# the LayerNorm as printed leaves each row's spread proportional to the input's.

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
pos = np.arange(100)
pe_correct = positional.sinusoidal(100, 64)                            # (100, 64)
pe_printed = as_written.positional_encoding(100, 64)                   # (100, 64), every column equal
for j in (0, 10, 40):
    axes[0].plot(pos, pe_correct[:, j], lw=1, label=f"correct, dim {j}")
axes[0].plot(pos, pe_printed[:, 0], "k", lw=2, label="as printed (every dim)")
axes[0].set_xlabel("position")
axes[0].set_ylabel("PE value (dimensionless)")
axes[0].set_title("positional code: printed = rare spikes, same in every dim", fontsize=10)
axes[0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
y_right, _ = ffn.forward(x_ffn, **ffn_w)
axes[1].hist(y_right.ravel(), bins=80, histtype="step", density=True, label="correct: max(0, xW1+b1)W2+b2")
axes[1].hist(as_written.ffn(x_ffn, **ffn_w).ravel(), bins=80, histtype="step", density=True,
             label="as printed: ReLU(σ(xW1+b1)W2+b2)")
axes[1].axvline(0, color="k", lw=0.8)
axes[1].set_yscale("log")
axes[1].set_xlabel("FFN output value")
axes[1].set_ylabel("density (log scale)")
axes[1].set_title("FFN outputs: printed is never negative", fontsize=10)
axes[1].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16))
axes[2].loglog(stds["before (input)"], stds["LayerNorm (correct)"], ".", ms=3, label="correct")
axes[2].loglog(stds["before (input)"], stds["LayerNorm as printed"], ".", ms=3, label="as printed")
axes[2].set_xlabel("input row std")
axes[2].set_ylabel("output row std")
axes[2].set_title("LayerNorm: printed keeps the input's spread", fontsize=10)
axes[2].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
fig.suptitle("The material's formulas as printed vs the correct ones", fontsize=12)
savefig(fig, "transformer_as_written_failures.png")

# %% [markdown]
# ## 6.7 Residual connections and Add & Norm (missing from §3.3)
#
# > 1. 将输入序列的每个位置的向量与位置编码相加 … 2. 通过多头自注意力层计算，得到注意力权重矩阵。
# > 3. 将注意力权重矩阵与值矩阵相乘，得到上下文向量。 4. 通过前馈神经网络层计算，得到隐藏状态。
# > 5. 通过层ORMAL化层计算，得到最终输出。
# >
# > "1. add the positional encoding to each position's vector; 2. pass it through multi-head self-attention to get
# > the attention weight matrix; 3. multiply the weights by the value matrix to get context vectors; 4. pass them
# > through the FFN to get hidden states; 5. pass those through layer normalisation to get the final output."
#
# The paper wraps *every* sublayer (attention, FFN) in a residual connection followed by LayerNorm (§3.1 of the
# paper, "Add & Norm"); §3.3 has neither the residual connections nor a LayerNorm per sublayer, only one at the
# very end. (Steps 2 and 3 are also two halves of the attention inside one sublayer, not two layers; and the list
# stops before the decoder, its cross-attention, the $N = 6$ stacked layers and the output projection.)
#
# $$
# \text{post-LN (paper)}: \ y = \operatorname{LN}\big(x + \operatorname{Sublayer}(x)\big), \qquad
# \text{pre-LN (GPT-2 and most models since)}: \ y = x + \operatorname{Sublayer}\big(\operatorname{LN}(x)\big).
# $$
#
# **Backward.** The residual is an identity path: for $y = x + S(x)$, $dx = dy + J_S^\top dy$. However small the
# sublayer's Jacobian $J_S$ is, the upstream gradient reaches $x$ unchanged through the first term. In pre-LN this
# holds from the output all the way down to the embeddings; in post-LN each layer's LayerNorm sits on the path. That
# is often given as the reason deep post-LN stacks need a learning-rate warm-up, but the measurement says otherwise:
# at initialisation the gradient that reaches the input of a post-LN stack is as large as at its top (chapter 9.1:
# their ratio stays of order one from 6 to 48 layers). What differs, as Xiong et al. (2020) showed, is the gradient of
# the top layers' *parameters*: in post-LN it does not shrink as the stack deepens, in pre-LN it falls like
# $1/\sqrt{L}$ (chapter 9.1 measures both), so the same learning rate moves a deep post-LN model's top layers much
# further in its first steps, and a warm-up keeps those steps small. `reference/models/layers.py` implements both
# (`norm="post"`, the default, or `"pre"`); in its backward the line `dx = dr + ds_dx` is the residual's "+".
#
# What goes wrong without the residual path, in the forward pass already: at initialisation the attention
# weights are spread over many keys, so an attention output is close to an *average* of the positions. Stack the
# steps as §3.3 lists them (attention, then FFN, no residual; LayerNorm only to compare directions) and after
# one or two layers every position carries the same vector: the model no longer knows which token was where. With
# the residual, each position keeps its own vector and the sublayer adds to it. The number below is the mean
# cosine similarity between the (layer-normalised) vectors of different positions, the input's printed first.

# %%
C_r, H_r, T_r = (32, 4, 16) if QUICK else (64, 8, 32)
deep_cfg = transformer.TransformerConfig(src_vocab_size=5, tgt_vocab_size=5, d_model=C_r, n_head=H_r,
                                         n_layer=6, d_ff=4 * C_r)
deep = transformer.init_params(deep_cfg, rng)["encoder"]           # six encoder layers, the paper's init
x0 = rng.standard_normal((2, T_r, C_r)) + positional.sinusoidal(T_r, C_r)   # (B, T, C) embeddings + positions


def position_similarity(x):
    """Mean cosine similarity between the LayerNorm-ed vectors of two different positions of one sequence."""
    u, _ = layernorm.forward(x, np.ones(C_r), np.zeros(C_r))        # (B, T, C)
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    cos = u @ u.transpose(0, 2, 1)                                  # (B, T, T)
    return (cos.sum() - np.trace(cos, axis1=1, axis2=2).sum()) / (cos.size - cos.shape[0] * T_r)


rows = {"§3.3 as listed (no residual)": [], "post-LN (paper)": [], "pre-LN": []}
x_list, x_post, x_pre = x0, x0, x0
for p in deep:
    x_list = ffn.forward(multihead.forward(x_list, x_list, p["attn"], H_r)[0], **p["ffn"])[0]
    x_post = layers.encoder_layer_forward(x_post, p, H_r, norm="post")[0]
    x_pre = layers.encoder_layer_forward(x_pre, p, H_r, norm="pre")[0]
    for name, xs in zip(rows, (x_list, x_post, x_pre)):
        rows[name].append(position_similarity(xs))
print(f"input: {position_similarity(x0):.2f}")
print(f"{'after layer':>30} " + " ".join(f"{n:>5}" for n in range(1, 7)))
for name, sims in rows.items():
    print(f"{name:>30} " + " ".join(f"{v:5.2f}" for v in sims))
assert rows["§3.3 as listed (no residual)"][1] > 0.99 and rows["pre-LN"][1] < 0.9

# %% [markdown]
# Without residuals the positions are indistinguishable after two layers. With them they stay apart, most of all
# in pre-LN, whose identity path from input to output is never normalised; post-LN at random initialisation also
# drifts together with depth. (Why deep post-LN models need a warm-up is the size of their top layers' gradients,
# measured in chapter 9.1, not this drift.)
#
# The encoder layer is $h = \operatorname{LN}_1(x + \operatorname{MHA}(x, x))$,
# $y = \operatorname{LN}_2(h + \operatorname{FFN}(h))$. The decoder layer has a third sublayer between the two:
# masked (causal) self-attention, then **cross-attention** $\operatorname{MHA}(h_1, m)$ whose keys and values come
# from the encoder's output $m$ ("memory"), then the FFN. Live checks of both layers, every parameter, in post-LN
# and pre-LN:

# %%
def leaves(tree, prefix=""):
    """The arrays of a nested parameter dict, flattened to {"attn.Wq": array, ...} (same objects)."""
    out = {}
    for key, val in (tree.items() if isinstance(tree, dict) else enumerate(tree)):
        name = f"{prefix}{key}"
        out.update(leaves(val, name + ".") if isinstance(val, (dict, list)) else {name: val})
    return out


B, T_src, T_tgt, C, n_head, d_ff = 2, 4, 3, 8, 2, 16
layer_cfg = transformer.TransformerConfig(src_vocab_size=5, tgt_vocab_size=5, d_model=C, n_head=n_head,
                                          n_layer=1, d_ff=d_ff)
one = transformer.init_params(layer_cfg, rng)                # take one encoder and one decoder layer from it
enc_p, dec_p = one["encoder"][0], one["decoder"][0]
for name, a in {**leaves(enc_p), **leaves(dec_p)}.items():
    if not name.split(".")[-1].startswith("W"):              # biases, gamma, beta: move them off 0 and 1
        a += 0.1 * rng.standard_normal(a.shape)


x = rng.standard_normal((B, T_src, C))                       # (B, S, C) encoder input
h = rng.standard_normal((B, T_tgt, C))                       # (B, T, C) decoder input
memory = rng.standard_normal((B, T_src, C))                  # (B, S, C) encoder output
dy_enc, dy_dec = rng.standard_normal(x.shape), rng.standard_normal(h.shape)
causal = attention.causal_mask(T_tgt, T_tgt)
for norm in ("post", "pre"):
    y, cache = layers.encoder_layer_forward(x, enc_p, n_head, norm=norm)
    dx, dp = layers.encoder_layer_backward(dy_enc, cache)
    gradcheck(f"encoder layer ({norm}-LN)",
              lambda: float((layers.encoder_layer_forward(x, enc_p, n_head, norm=norm)[0] * dy_enc).sum()),
              {"x": x, **leaves(enc_p)}, {"x": dx, **leaves(dp)})
    y, cache = layers.decoder_layer_forward(h, memory, dec_p, n_head, self_mask=causal, norm=norm)
    dh, dmem, dp = layers.decoder_layer_backward(dy_dec, cache)
    gradcheck(f"decoder layer ({norm}-LN)",
              lambda: float((layers.decoder_layer_forward(h, memory, dec_p, n_head, self_mask=causal,
                                                          norm=norm)[0] * dy_dec).sum()),
              {"x": h, "memory": memory, **leaves(dec_p)}, {"x": dh, "memory": dmem, **leaves(dp)})

# %% [markdown]
# ## 6.8 The whole encoder-decoder model
#
# `reference/models/transformer.py` stacks $N$ encoder and $N$ decoder layers. Tokens are embedded, scaled by
# $\sqrt{d_\text{model}}$ and summed with the positional codes; the decoder's output is projected back onto the
# vocabulary with the target embedding matrix (tied weights, paper §3.4), giving logits whose softmax is the
# next-token distribution. Two parameters are used more than once and so collect a *sum* of gradients: the
# encoder's output feeds every decoder layer's cross-attention, and the tied target embedding is both the lookup
# table and the output projection. A live check on a tiny model (in quick mode on a few of its parameter
# arrays, in full mode on all of them):

# %%
cfg = transformer.TransformerConfig(src_vocab_size=7, tgt_vocab_size=6, d_model=8, n_head=2, n_layer=2, d_ff=16)
model = transformer.init_params(cfg, rng)
src = rng.integers(0, cfg.src_vocab_size, size=(2, 5))       # (B, S) token ids
tgt = rng.integers(0, cfg.tgt_vocab_size, size=(2, 4))       # (B, T)
logits, cache = transformer.forward(model, cfg, src, tgt)
print("logits", logits.shape, "= (B, T, V_tgt)")
dlogits = rng.standard_normal(logits.shape)
grads = transformer.backward(dlogits, cache)
checked = (["wte_tgt", "wte_src", "encoder.0.ffn.W1", "decoder.1.cross_attn.Wk", "decoder.0.ln2.gamma"]
           if QUICK else list(leaves(model)))
gradcheck("Transformer (N = 2)",
          lambda: float((transformer.forward(model, cfg, src, tgt)[0] * dlogits).sum()),
          {k: leaves(model)[k] for k in checked}, {k: leaves(grads)[k] for k in checked})

# %% [markdown]
# ## 6.9 The paper's regularisers: dropout and label smoothing
#
# §3.1 of the material calls LayerNorm the model's regulariser (§6.1 and chapter 11.1: it is not). The paper names
# two others (§5.4), and they complete the set of equations a trained Transformer needs.
#
# **Dropout** (`reference/ops/dropout.py`), with rate $p$ ($P_{drop} = 0.1$ in the paper), on each sublayer's output
# before the residual sum and on the embeddings plus positions. In training each entry is kept with probability
# $1 - p$ and scaled by $1/(1-p)$, so that its expectation is unchanged; in evaluation it is the identity:
#
# $$ m \sim \mathrm{Bernoulli}(1 - p), \qquad y = \frac{m \odot x}{1 - p}, \qquad dx = \frac{m \odot dy}{1 - p}. $$
#
# For a fixed mask the map is linear, so the backward pass is the same mask and scale. The op is a pure function:
# the mask comes from a generator passed in (or is passed in itself), never from hidden global state.
#
# **Label smoothing** (`reference/ops/label_smoothing.py`), with $\epsilon_{ls} = 0.1$: the target distribution
# mixes the one-hot with the uniform one, $q = (1 - \epsilon)\,\mathrm{onehot}(t) + \epsilon/V$, and the loss is the
# cross-entropy against it,
#
# $$ L = -\sum_v q_v \log \mathrm{softmax}(z)_v, \qquad \frac{\partial L}{\partial z} = \mathrm{softmax}(z) - q . $$
#
# Its minimum is at $\mathrm{softmax}(z) = q$, not at a one-hot prediction: the model is paid for staying a little
# unsure. The tests hold it equal to PyTorch's `cross_entropy(..., label_smoothing=eps)`. Live checks:

# %%
from reference.ops import dropout, label_smoothing  # noqa: E402

x_d = rng.standard_normal((2, 3, 8))
mask_d = np.random.default_rng(9).random(x_d.shape) >= 0.1
dy_d = rng.standard_normal(x_d.shape)
_, cache_d = dropout.forward(x_d, 0.1, mask=mask_d)
gradcheck("dropout (p = 0.1, fixed mask)", lambda: float((dropout.forward(x_d, 0.1, mask=mask_d)[0] * dy_d).sum()),
          {"x": x_d}, {"x": dropout.backward(dy_d, cache_d)})
ones_d, _ = dropout.forward(np.ones(100_000), 0.1, rng=np.random.default_rng(10))
print(f"dropout of 100,000 ones: {np.mean(ones_d == 0):.3f} dropped, mean {ones_d.mean():.4f} (expected 1)")

z_ls = rng.standard_normal((4, 5, 11))
t_ls = np.random.default_rng(11).integers(0, 11, size=(4, 5))
_, cache_ls = label_smoothing.forward(z_ls, t_ls, 0.1)
gradcheck("label smoothing (eps = 0.1)", lambda: float(label_smoothing.forward(z_ls, t_ls, 0.1)[0]),
          {"z": z_ls}, {"z": label_smoothing.backward(1.0, cache_ls)})

# the loss of one prediction as the true class's logit pulls away from the others (V = 11 classes)
margins = np.linspace(-2, 14, 161)
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for eps in (0.0, 0.1):
    z_m = np.zeros((margins.size, 11))
    z_m[:, 0] = margins                                                       # true class 0 ahead by the margin
    per_row = [float(label_smoothing.forward(z_m[i:i + 1], np.array([0]), eps)[0]) for i in range(margins.size)]
    ax.plot(margins, per_row, label=f"eps = {eps}" + (" (plain cross-entropy)" if eps == 0 else ""))
best = np.log((1 - 0.1 + 0.1 / 11) / (0.1 / 11))                              # softmax(z) = q at this margin
ax.axvline(best, color="gray", ls=":", lw=1, label=f"minimum at margin {best:.2f}")
ax.set_xlabel("logit of the true class minus the others'")
ax.set_ylabel("loss (nats)")
ax.set_title("Label smoothing stops rewarding ever larger margins", fontsize=10)
ax.legend(fontsize=8)
fig.tight_layout()
savefig(fig, "transformer_label_smoothing.png")

# %% [markdown]
# Plain cross-entropy keeps falling as the margin grows, so a model that can separate its training data is pushed
# towards infinite logits; with $\epsilon = 0.1$ the loss has a minimum at a finite margin, $\ln\frac{1 - \epsilon +
# \epsilon/V}{\epsilon/V}$, and rises beyond it. Chapter 11.1 measures what dropout does to a model that overfits;
# 6.10 trains the paper's model with both.

# %% [markdown]
# ## 6.10 The encoder–decoder, trained
#
# Every check so far holds the model still: one equation, one gradient. None of it shows the paper's architecture
# doing what it was built for, reading one sequence and writing another. Here it does, on a task small enough for
# two cores and whose answer can be seen: **reverse a string of digits**. Output token $t$ of a reversed string of
# length $n$ is input token $n - 1 - t$, so a model that has learned the task should show it in its
# cross-attention, the decoder's read of the encoder: an anti-diagonal.
#
# `reference/training/seq2seq.py` makes the data. Source and target share one vocabulary of 13 ids (padding, BOS,
# EOS and the ten digits). The source ends in EOS; the decoder's input is the target shifted right behind a BOS, and
# its label at each position is the next target token, EOS at the end: **teacher forcing**, the decoder reads the
# true prefix in training, whatever it would have generated itself. Padding is hidden from every attention by the
# masks of 6.8 and ignored by the loss. Two pairs as a batch:

# %%
import time  # noqa: E402

from book import machine_load  # noqa: E402
from reference.inference import seq2seq as s2s_decode  # noqa: E402
from reference.training import seq2seq  # noqa: E402

src_ids, src_mask, tgt_in, tgt_mask, tgt_out = seq2seq.make_batch([((4, 0, 7), (7, 0, 4)), ((2, 9), (9, 2))])
for name, a in (("src_ids", src_ids), ("tgt_in (decoder input)", tgt_in), ("tgt_out (labels)", tgt_out)):
    print(f"{name:>23}: {a.tolist()}")
print(f"ids: PAD {seq2seq.PAD}, BOS {seq2seq.BOS}, EOS {seq2seq.EOS}, digit k = {seq2seq.DIGIT0} + k; "
      f"label {seq2seq.IGNORE} = ignored (padding)")

# %% [markdown]
# The recipe is the paper's, at a small size. The model is `reference/models/transformer.py` as derived above:
# post-LN layers, sinusoidal positions, the output projection tied to the target embedding. In training, dropout
# with $P_{drop} = 0.1$ sits where §5.4 of the paper puts it: on the sum of the embeddings and the positions, and on
# every sublayer's output before its residual sum (`transformer.forward(..., training=True, rng=rng)`, which draws
# every mask from `rng`; the backward through the masks is checked against finite differences in
# `tests/models/test_transformer.py`). The loss is the label-smoothed cross-entropy of 6.9 with
# $\epsilon_{ls} = 0.1$. The optimiser is Adam with the paper's $\beta_2 = 0.98$, $\epsilon = 10^{-9}$; the paper's
# learning-rate rule would peak at $(d_\text{model} \cdot \text{warm-up})^{-1/2}$, a rate made for width 512, so a
# linear warm-up and a cosine decay (chapter 2) take its place. The model is {{s2s_width}} wide, with
# {{s2s_layers}} encoder and {{s2s_layers}} decoder layers of {{s2s_heads}} heads ({{s2s_params}} parameters); it
# trains on {{s2s_n_train}} strings of {{s2s_min_len}} to {{s2s_max_len}} digits for {{s2s_steps}} steps of
# {{s2s_batch}} pairs, and every {{s2s_eval_every}} steps it reverses {{s2s_n_held}} held-out strings (never
# trained on) by greedy decoding.

# %%
s2s_run = (seq2seq.ReversalRun(min_len=2, max_len=5, n_train=3000, d_model=32, n_layer=1, n_head=2, d_ff=64,
                               batch_size=32, steps=400, lr=3e-3, warmup=40)
           if QUICK else seq2seq.ReversalRun())
s2s_held = seq2seq.reversal_pairs(200 if QUICK else 500, s2s_run.min_len, s2s_run.max_len, np.random.default_rng(100))
s2s_eval_every = s2s_run.steps // 8
t0 = time.perf_counter()
s2s = seq2seq.train(s2s_run, eval_pairs=s2s_held, eval_every=s2s_eval_every)
s2s_seconds = time.perf_counter() - t0
s2s_params, s2s_cfg = s2s["params"], s2s["config"]
n_s2s = sum(a.size for a in leaves(s2s_params).values())
print(f"{n_s2s:,} parameters; {s2s_run.steps} steps of {s2s_run.batch_size} pairs, {s2s_cfg.norm}-LN, "
      f"p_drop {s2s_cfg.p_drop}, label smoothing {s2s_run.label_smoothing}")
print("step  training loss (mean of 10 steps)  held-out exact match")
for step, em in s2s["eval"]:
    print(f"{step:>4}  {s2s['loss'][step - 10:step].mean():>33.3f}  {em:>20.1%}")
glue("s2s_width", str(s2s_run.d_model))
glue("s2s_layers", str(s2s_run.n_layer))
glue("s2s_heads", str(s2s_run.n_head))
glue("s2s_params", f"{n_s2s:,}".replace(",", " "))
glue("s2s_n_train", f"{s2s_run.n_train:,}".replace(",", " "))
glue("s2s_min_len", str(s2s_run.min_len))
glue("s2s_max_len", str(s2s_run.max_len))
glue("s2s_steps", str(s2s_run.steps))
glue("s2s_batch", str(s2s_run.batch_size))
glue("s2s_eval_every", str(s2s_eval_every))
glue("s2s_n_held", str(len(s2s_held)))

# %% tags=["measurement"]
print(f"training and the {len(s2s['eval'])} evaluations took {s2s_seconds:.0f} s "
      f"({1000 * s2s_seconds / s2s_run.steps:.0f} ms per step); {machine_load()}")

# %% [markdown]
# The training loss is the label-smoothed one, measured with dropout on, and it cannot reach 0: its minimum is the
# entropy of the smoothed target $q$, {{s2s_floor}} nats for $\epsilon = 0.1$ over 13 ids (6.9), which the model
# approaches to within {{s2s_loss_gap}} nats. The exact match is the strict measure: a string counts only if every
# digit and the final EOS are right.

# %%
V_s2s = s2s_cfg.tgt_vocab_size
q_true = 1 - s2s_run.label_smoothing + s2s_run.label_smoothing / V_s2s          # q at the label
q_other = s2s_run.label_smoothing / V_s2s                                       # q at each of the other V - 1 ids
ls_floor = -(q_true * np.log(q_true) + (V_s2s - 1) * q_other * np.log(q_other))  # the entropy of q
final_loss = s2s["loss"][-50:].mean()
fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 3.8))
ax.plot(np.arange(1, s2s_run.steps + 1), s2s["loss"], lw=0.6, color="tab:blue", alpha=0.5, label="each step")
smooth = np.convolve(s2s["loss"], np.ones(20) / 20, mode="valid")
ax.plot(np.arange(20, s2s_run.steps + 1), smooth, color="tab:blue", label="mean of 20 steps")
ax.axhline(ls_floor, color="gray", ls=":", label=f"minimum possible: entropy of q ({ls_floor:.2f})")
ax.set_xlabel("step")
ax.set_ylabel("label-smoothed loss (nats/token)")
ax.set_title("Training loss (dropout on, teacher forcing)", fontsize=10)
ax.legend(fontsize=8)
steps_eval, em_eval = zip(*s2s["eval"])
bx.plot(steps_eval, em_eval, "o-", color="tab:green")
bx.set_ylim(-0.02, 1.02)
bx.set_xlabel("step")
bx.set_ylabel("exact match (fraction of strings)")
bx.set_title(f"Greedy decoding of {len(s2s_held)} held-out strings", fontsize=10)
bx.grid(alpha=0.3)
fig.suptitle("The paper's encoder–decoder learning to reverse digit strings" + (" (quick)" if QUICK else ""),
             fontsize=11)
fig.tight_layout()
savefig(fig, "transformer_reversal_training.png")
glue("s2s_floor", f"{ls_floor:.2f}")
glue("s2s_loss_gap", f"{final_loss - ls_floor:.2f}")
assert final_loss > ls_floor                                   # a smoothed loss below its floor would be a bug

# %% [markdown]
# **Greedy decoding** (`reference/inference/seq2seq.py`) is the model in evaluation mode, dropout off: encode the
# source once, then start the decoder on BOS and append the most likely next token until EOS. The decoder runs
# again over the whole prefix at every step (for strings this short the repeated work is small; chapter 4's KV
# cache removes it for the GPT), and `tests/inference/test_seq2seq.py` holds every step equal to the argmax of a
# full `transformer.forward`. On the held-out strings:

# %%
first = s2s_held[:6]
src_ids, src_mask, *_ = seq2seq.make_batch(first)
tokens, _ = s2s_decode.greedy(s2s_params, s2s_cfg, src_ids, seq2seq.BOS, seq2seq.EOS, s2s_run.max_len + 2, src_mask)
print(f"greedy's tokens for {first[0][0]}: {tokens[0].tolist()} (digit k = {seq2seq.DIGIT0} + k, EOS = {seq2seq.EOS})")
for (src, tgt), row in zip(first, tokens):
    out = seq2seq.decode_digits(row)                                # the digits before the first EOS
    print(f"{''.join(map(str, src)):>10} -> {''.join(map(str, out)):<10} {'right' if out == tgt else 'WRONG'}")
s2s_pred = seq2seq.predict(s2s_params, s2s_cfg, s2s_held)          # the same, in batches, for all of them
s2s_exact = seq2seq.exact_match(s2s_pred, s2s_held)
print(f"exact match on {len(s2s_held)} held-out strings: {s2s_exact:.1%}")
glue("s2s_exact", f"{100 * s2s_exact:.1f} %")
assert s2s_exact == s2s["eval"][-1][1]
assert s2s_exact > (0.3 if QUICK else 0.95)

# %% [markdown]
# The model reverses {{s2s_exact}} of the strings it never saw. Where does it look while doing so? The decoder's
# cross-attention (`transformer.cross_attention(cache)`, one $(B, H, T, S)$ array per decoder layer) on the held-out
# strings, teacher-forced, which is the prefix greedy decoding also reads wherever its output is right. Row $t$ is
# the decoder position that writes output token $t$; it should read source position $n - 1 - t$. The figure shows
# every head of every layer on one held-out string, then, over all of them, the share of each head's weight on
# that anti-diagonal (`seq2seq.alignment_mass`), beside the diagonals just before and after it and beside what
# uniform attention over the digits and EOS would give.

# %%
src_ids, src_mask, tgt_in, tgt_mask, tgt_out = seq2seq.make_batch(s2s_held)
_, s2s_cache = transformer.forward(s2s_params, s2s_cfg, src_ids, tgt_in, src_mask, tgt_mask)
cross = transformer.cross_attention(s2s_cache)                                # per layer (B, H, T, S)
lengths = [len(s) for s, _ in s2s_held]
chance = seq2seq.alignment_chance(lengths)
mass = {off: np.array([seq2seq.alignment_mass(P, lengths, off) for P in cross]) for off in (-1, 0, 1)}   # (L, H)
print(f"uniform attention over the digits and EOS: {chance:.3f}")
print(f"{'layer':>5} {'head':>4} {'on the anti-diagonal':>21} {'one before':>11} {'one after':>10}")
for layer in range(s2s_cfg.n_layer):
    for head in range(s2s_cfg.n_head):
        print(f"{layer + 1:>5} {head + 1:>4} {mass[0][layer, head]:>21.3f} {mass[-1][layer, head]:>11.3f} "
              f"{mass[1][layer, head]:>10.3f}")

ex = int(np.argmax(lengths))                                                   # a longest held-out string
n_ex = lengths[ex]
L_s, H_s = s2s_cfg.n_layer, s2s_cfg.n_head
fig = plt.figure(figsize=(2.4 * H_s + 4.5, 2.4 * L_s + 0.6), layout="constrained")
grid = fig.add_gridspec(L_s, H_s + 2)
src_labels = [str(d) for d in s2s_held[ex][0]] + ["EOS"]
tgt_labels = ["BOS"] + [str(d) for d in s2s_held[ex][1]]
map_axes = []
for layer in range(L_s):
    for head in range(H_s):
        ax = fig.add_subplot(grid[layer, head])
        map_axes.append(ax)
        im = ax.imshow(cross[layer][ex, head, :n_ex + 1, :n_ex + 1], cmap="magma", vmin=0, vmax=1,
                       interpolation="nearest")
        ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=8)
        ax.set_xticks(range(n_ex + 1), src_labels, fontsize=6)
        ax.set_yticks(range(n_ex + 1), tgt_labels, fontsize=6)
        if layer == L_s - 1:
            ax.set_xlabel("source (key)", fontsize=8)
        if head == 0:
            ax.set_ylabel("decoder input (query)", fontsize=8)
fig.colorbar(im, ax=map_axes, shrink=0.6, label="attention weight", location="left")
bx = fig.add_subplot(grid[:, H_s:])
names = [f"{layer + 1}.{head + 1}" for layer in range(L_s) for head in range(H_s)]
xs = np.arange(len(names))
for j, (off, label) in enumerate(((-1, "one before"), (0, "the anti-diagonal"), (1, "one after"))):
    bx.bar(xs + (j - 1) * 0.27, mass[off].ravel(), 0.27, label=label)
bx.axhline(chance, color="gray", ls="--", lw=1, label=f"uniform attention ({chance:.2f})")
bx.set_xticks(xs, names)
bx.set_xlabel("layer.head")
bx.set_ylabel("mean weight, held-out strings")
bx.set_ylim(0, 1.3)                                             # room above the bars for the legend
bx.set_yticks(np.linspace(0, 1, 6))
bx.legend(fontsize=8, loc="upper left", ncol=2)
bx.set_title("where the cross-attention goes", fontsize=10)
fig.suptitle(f"Cross-attention of the trained model on {''.join(src_labels[:-1])} "
             "(each row sums to 1): the anti-diagonal is the reversal", fontsize=10)
savefig(fig, "transformer_reversal_cross_attention.png")

best_l, best_h = np.unravel_index(mass[0].argmax(), mass[0].shape)
last = mass[0][-1]
glue("s2s_chance", f"{chance:.2f}")
glue("s2s_last_min", f"{last.min():.2f}")
glue("s2s_last_max", f"{last.max():.2f}")
glue("s2s_first_min", f"{mass[0][0].min():.2f}")
glue("s2s_first_max", f"{mass[0][0].max():.2f}")
glue("s2s_neighbour_max", f"{max(mass[-1][-1].max(), mass[1][-1].max()):.2f}")
glue("s2s_last_layer", {1: "its one decoder layer", 2: "the second decoder layer"}.get(L_s, f"decoder layer {L_s}"))
assert last.min() > (2 if QUICK else 4) * chance                 # every head of the last layer follows the reversal
assert last.min() > max(mass[-1][-1].max(), mass[1][-1].max())  # and the anti-diagonal, not a neighbour, is its peak
if L_s > 1:                                                      # the first layer's heads are the less focused ones
    assert mass[0][0].max() < last.min()

# %% [markdown]
# The alignment is learned, and it is sharp where the answer is read. Every head of {{s2s_last_layer}} puts
# {{s2s_last_min}} to {{s2s_last_max}} of its weight on the one source digit it is about to copy, against
# {{s2s_chance}} for attention spread evenly, and no diagonal next to it gets more than {{s2s_neighbour_max}}. In
# the full run's two-layer decoder the first layer's heads are less focused ({{s2s_first_min}} to
# {{s2s_first_max}} on the anti-diagonal): the last layer does most of the reading. Nothing told the model that
# reversal is an alignment: the loss asked only for the next digit, and the digits themselves say nothing about
# where they stand, so which source position answers which target position was learned from the sinusoidal codes
# that the encoder and the decoder add to their inputs.
#
# **Where it stops generalising.** The same model on strings longer than any it trained on: the positional codes
# of those positions exist (the sinusoids are defined at every position) but the model has never had to use them.
# Per length, greedy exact match and the last layer's mean weight on the anti-diagonal (teacher-forced):

# %%
gen_lengths = list(range(s2s_run.min_len, s2s_run.max_len + 5))
gen = {}
for n_len in gen_lengths:
    pairs = seq2seq.reversal_pairs(100 if QUICK else 200, n_len, n_len, np.random.default_rng(200 + n_len))
    src_ids, src_mask, tgt_in, tgt_mask, _ = seq2seq.make_batch(pairs)
    _, c_len = transformer.forward(s2s_params, s2s_cfg, src_ids, tgt_in, src_mask, tgt_mask)
    gen[n_len] = (seq2seq.exact_match(seq2seq.predict(s2s_params, s2s_cfg, pairs), pairs),
                  float(seq2seq.alignment_mass(transformer.cross_attention(c_len)[-1], [n_len] * len(pairs)).mean()),
                  seq2seq.alignment_chance([n_len]))
print(f"{'digits':>6} {'exact match':>11} {'anti-diagonal (last layer)':>27} {'uniform':>8}")
for n_len, (em, am, ch) in gen.items():
    seen = "trained" if n_len <= s2s_run.max_len else "longer"
    print(f"{n_len:>6} {em:>11.1%} {am:>27.2f} {ch:>8.2f}   {seen}")

fig, ax = plt.subplots(figsize=(7, 3.6))
ax.axvspan(s2s_run.min_len - 0.5, s2s_run.max_len + 0.5, color="tab:green", alpha=0.08, label="trained lengths")
ax.plot(gen_lengths, [gen[n][0] for n in gen_lengths], "o-", label="exact match (greedy)")
ax.plot(gen_lengths, [gen[n][1] for n in gen_lengths], "s-", label="weight on the anti-diagonal (last layer)")
ax.plot(gen_lengths, [gen[n][2] for n in gen_lengths], ":", color="gray", label="uniform attention")
ax.set_xlabel("digits in the string")
ax.set_ylabel("fraction")
ax.set_ylim(-0.02, 1.02)
ax.set_title("Beyond the trained lengths the alignment, and the answer, fall apart", fontsize=10)
ax.legend(fontsize=8, loc="center left")
fig.tight_layout()
savefig(fig, "transformer_reversal_lengths.png")
one_more, two_more = gen[s2s_run.max_len + 1], gen[s2s_run.max_len + 2]
glue("s2s_len_plus1", str(s2s_run.max_len + 1))
glue("s2s_len_plus2", str(s2s_run.max_len + 2))
glue("s2s_exact_plus1", f"{100 * one_more[0]:.1f} %")
glue("s2s_exact_plus2", f"{100 * two_more[0]:.1f} %")
glue("s2s_align_plus2", f"{two_more[1]:.2f}")
glue("s2s_align_trained", f"{gen[s2s_run.max_len][1]:.2f}")
exact_trained = min(gen[n][0] for n in gen if n <= s2s_run.max_len)
glue("s2s_exact_trained", "every string" if exact_trained == 1 else f"at least {100 * exact_trained:.1f} % of the strings")
assert two_more[0] < 0.5 * gen[s2s_run.max_len][0]           # the answer falls apart two digits past the training

# %% [markdown]
# At every trained length the model reverses {{s2s_exact_trained}}; one digit longer
# ({{s2s_len_plus1}}) it gets {{s2s_exact_plus1}} right, two digits longer ({{s2s_len_plus2}})
# {{s2s_exact_plus2}}, and the last layer's weight on the anti-diagonal falls from {{s2s_align_trained}} at the
# longest trained length to {{s2s_align_plus2}}. The sinusoids of 6.4 make the code of $pos + k$ a linear function
# of the code of $pos$, but that is a possibility the architecture offers, not something a model trained on a few
# positions has to learn: this one learned the positions it saw. Length generalisation comes from the training data
# (strings of every length one needs) or from the positional scheme (relative ones, such as the rotary codes of
# `reference/ops/rope.py`, are one line of work on it); attention does not give it for free.

# %% [markdown]
# ## 6.11 The errata of §3.1–§3.3 in one table
#
# | where | the material says | correct (Vaswani et al., 2017; Ba et al., 2016) | shown above |
# |---|---|---|---|
# | §3.1, §3.2.5 title | 层ORMAL化 | 层归一化, layer normalisation (a garbled word) | §6.1 |
# | §3.1 item 4, §3.2.5 | LayerNorm regularises the model, reducing overfitting | it normalises each token's features to stabilise and speed up training; the regularisers are dropout and label smoothing | §6.1 |
# | §3.2.2 | an unindexed $W^O$ listed among "各自注意力头的参数矩阵" (each head's own matrices) | one $W^O \in \mathbb{R}^{h d_v \times d_\text{model}}$ after the concatenation; its row blocks give $\sum_i \mathrm{head}_i W^O_i$ exactly, so the error is the notation (an imprecision) | §6.3, with numbers |
# | §3.1 item 1 | PE lets the model learn relations "序列之间" (between sequences) | between positions of one sequence | chapter 11.9, with numbers |
# | §3.2.3 | $P(pos) = \sin(pos / 10000^{2/d_p})^{2048}$, "sine or log-sine" | interleaved $\sin$/$\cos$ with frequency $10000^{-2i/d}$ per pair of dimensions | §6.4, each of the three errors alone, with numbers and figures |
# | §3.2.4 | $F(x) = \text{ReLU}(W_2\sigma(W_1x + b_1) + b_2)$ | $\max(0, xW_1 + b_1)W_2 + b_2$: no outer ReLU | §6.5, with numbers and a figure |
# | §3.2.5 | $\gamma (x + \beta)/\sqrt{d}$ | $\gamma \circ (x - \mu)/\sqrt{\sigma^2 + \varepsilon} + \beta$: statistics of the row, and $\beta$ outside | §6.6, with numbers (also with a non-zero $\beta$) and figures |
# | §3.3 | five steps, no residual connections, one LayerNorm at the end | Add & Norm around every sublayer; $N = 6$ layers; a decoder with masked self-attention and cross-attention; output projection | §6.7, with numbers |
#
# The attention formula of §3.2.1 and the multi-head formula of §3.2.2 are correct as printed.
#
# ## Exercises
#
# Worked solutions: `chapters/solutions/06_transformer.py` (run by `tests/book/test_solutions_06.py`).
#
# 1. **The softmax Jacobian.** Write the full Jacobian $J = \partial p / \partial s$ of one softmax row as a
#    $T \times T$ matrix. Show that $J^\top g$ is what `softmax.backward` returns, that $J$ is symmetric, and that its
#    rows sum to zero. What does the last fact say about adding a constant to every score of a row, and why is the
#    gradient of the key bias $b_K$ in §6.3 exactly zero?
# 2. **Relative positions are linear.** Find a matrix $R_k$, independent of $pos$, with
#    $\text{PE}(pos + k) = \text{PE}(pos)\, R_k$ for every $pos$, and check it against `positional.sinusoidal`.
#    (Hint: the angle-sum formulas, one $2 \times 2$ block per frequency.) Why would the as-printed code of §3.2.3
#    admit no such matrix?
# 3. **What LayerNorm cannot see.** Show that $\text{LN}(x + b\mathbf{1}) = \text{LN}(x)$ and
#    $\text{LN}(a x) \approx \text{LN}(x)$ for $a > 0$, and that every row of the gradient $dx$ from
#    `layernorm.backward` sums to zero and is (nearly) orthogonal to $\hat{x}$. Use the $dx$ formula of §6.6 to say
#    exactly how far from orthogonal it is when $\varepsilon > 0$.
