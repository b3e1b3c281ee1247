# %% [markdown]
# # 0. A map of the book: the models, their shapes, the reading order and the words
#
# The material (a short Chinese primer on large models, `shared/material/`) describes the Transformer in words and
# five formulas. This book computes every one of them in NumPy, and the chapters that follow use the pieces before
# the reader has seen the whole. This chapter is the whole, first:
#
# 1. the three models of the book, drawn by code, every box labelled with the `reference/` module that computes it
#    and the chapter that explains it;
# 2. one real batch of the King James Bible through one block of the book's GPT, with the shape of every
#    intermediate array, so that $B$, $T$, $C$, $H$, $d_k$ and $V$ mean something before chapter 2 uses them;
# 3. which chapter to read before which;
# 4. a glossary of the material's words: the Chinese as the material writes it, the English, the symbol the book
#    uses, and the file that computes it.
#
# | what | code |
# |---|---|
# | the diagrams (boxes, arrows, residuals; data, then one drawing function) | `book/diagrams.py`, checked by `tests/book/test_diagrams.py` |
# | the GPT whose shapes are traced | `reference/models/gpt.py`, the ops in `reference/ops/` |
# | the corpus and the character tokenizer | `reference/training/data.py`, `reference/tokenizers/char.py`, `reference/train.py` (`build_data`) |

# %%
import numpy as np

from book import QUICK, diagrams, savefig
from reference import train
from reference.models import gpt
from reference.ops import activations, attention, cross_entropy, embedding, ffn, layernorm, linear
from reference.training import data

print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 0.1 The three models
#
# **The decoder-only GPT** is the model the book trains (chapter 2) and then prunes, quantizes and distils
# (chapter 3), decodes from (chapter 4) and studies at depth (chapter 9). It is the GPT-2 layout: token and learned
# position embeddings, $L$ pre-LN blocks, a last LayerNorm and an output head that reuses the token embedding.
# Each block reads the residual stream $x$ through a LayerNorm, adds what causal attention computes, reads it
# again, and adds what the feed-forward network computes. The red lines are the residual connections: the stream
# passes around every sublayer, which is what lets a deep stack train (chapter 6.7, chapter 9).

# %%
fig = diagrams.draw(diagrams.gpt_block())
diagrams.legend(fig.axes[0])
savefig(fig, "map_gpt_block.png")

# %% [markdown]
# **The paper's encoder–decoder** is what the material's §3 describes (Vaswani et al. 2017): an encoder that reads
# the whole source at once, a decoder that writes the target one token at a time and reads the encoder's output
# ("memory") through cross-attention. The paper puts the LayerNorm *after* each residual sum (post-LN, "Add &
# Norm"). The material's five steps of §3.3 have neither the residual connections nor a LayerNorm per sublayer
# (chapter 6.7 and chapter 11 show what that costs). Chapter 6 derives and gradient-checks every box, then trains
# the whole model to reverse strings of digits (6.10).

# %%
fig = diagrams.draw(diagrams.encoder_decoder())
diagrams.legend(fig.axes[0])
savefig(fig, "map_encoder_decoder.png")

# %% [markdown]
# **The BERT encoder** is what the material's §4 loads (`BertModel`). An encoder has no causal mask: every token
# reads every other, so it can describe a text but cannot continue one. Chapter 8 runs a real pretrained one
# (all-MiniLM-L6-v2, 6 layers of width 384) in NumPy, matched to `transformers`, and uses it for what it can do:
# sentence vectors and an extractive summary.

# %%
fig = diagrams.draw(diagrams.bert_encoder())
diagrams.legend(fig.axes[0])
savefig(fig, "map_bert_encoder.png")

# %% [markdown]
# ## 0.2 One batch through one block: every shape
#
# The names are llm.c's and the paper's: $B$ sequences per batch, $T$ tokens per sequence, $C = d_\text{model}$
# features per token, $H$ heads of $d_k = C/H$ features each, $V$ tokens in the vocabulary, $L$ blocks. The GPT
# below has the shape of the model chapter 2 trains (the "small" configuration of `reference/train.py`), freshly
# initialised: the shapes do not depend on training. The batch is four random windows of 64 characters of the King
# James Bible (the model allows up to 128; 64 keeps $T$ apart from $C$ in the shapes below), one token per
# character. Each step calls the op that computes it; the last cell checks that the steps together give exactly what
# `gpt.forward` gives.

# %%
run = dict(train.DEFAULTS, **train.CONFIGS["small"])
tokenizer, train_ids, _ = train.build_data(run, progress=False)
config = gpt.GPTConfig(vocab_size=tokenizer.vocab_size, block_size=run["block_size"], n_layer=run["n_layer"],
                       n_head=run["n_head"], d_model=run["d_model"])
params = gpt.init_params(config, np.random.default_rng(0), dtype=np.float64)
B, T = 4, 64
ids, targets = data.get_batch(train_ids, B, T, np.random.default_rng(1))      # (B, T) each, targets = ids shifted
C, H, V = config.d_model, config.n_head, config.vocab_size
d_k = C // H
print(f"B = {B}, T = {T}, C = d_model = {C}, H = {H}, d_k = C / H = {d_k}, V = {V}, L = {config.n_layer}")
print("sequence 0 of the batch:", repr(tokenizer.decode(ids[0].tolist())[:70]) + " ...")
print("its targets, one ahead: ", repr(tokenizer.decode(targets[0].tolist())[:70]) + " ...")

# %%
trace = []


def step(name, array, formula, where):
    """Record one intermediate array of the forward pass, with the formula and the file that computes it."""
    trace.append((name, array.shape, formula, where))
    return array


p = params["blocks"][0]                                                         # the first block's parameters
tok, _ = embedding.forward(ids, params["wte"])
step("ids", ids, "token ids", "tokenizers/char.py")
step("wte[ids]", tok, "token embedding lookup", "ops/embedding.py")
pos = step("wpe[:T]", params["wpe"][:T], "learned positions (broadcast over B)", "models/gpt.py")
x0 = step("x0", tok + pos, "x0 = wte[ids] + wpe[:T]", "models/gpt.py")
h = step("h", layernorm.forward(x0, p["ln1"]["gamma"], p["ln1"]["beta"])[0], "h = LN1(x0)", "ops/layernorm.py")
a = p["attn"]
q = step("q", linear.forward(h, a["Wq"], a["bq"])[0], "q = h Wq + bq   (Wq: C x C)", "ops/linear.py")
k = linear.forward(h, a["Wk"], a["bk"])[0]                                      # (B, T, C)
v = linear.forward(h, a["Wv"], a["bv"])[0]                                      # (B, T, C)


def heads(z):
    """(B, T, C) -> (B, H, T, d_k): head i owns the columns i d_k .. (i + 1) d_k - 1."""
    return z.reshape(B, T, H, d_k).transpose(0, 2, 1, 3)


qh, kh, vh = step("q by head", heads(q), "split C into H heads of d_k", "models/gpt.py"), heads(k), heads(v)
out, attn_cache = attention.forward(qh, kh, vh, mask=attention.causal_mask(T, T))
step("causal mask", attention.causal_mask(T, T), "key j visible to query i iff j <= i", "ops/attention.py")
step("P", attention.probabilities(attn_cache), "softmax(q k^T / sqrt(d_k)), masked", "ops/attention.py")
step("P v", out, "each head's weighted sum of values", "ops/attention.py")
concat = step("concat", out.transpose(0, 2, 1, 3).reshape(B, T, C), "heads side by side", "models/gpt.py")
y_attn = step("attn out", linear.forward(concat, a["Wo"], a["bo"])[0], "concat Wo + bo", "ops/linear.py")
x1 = step("x1", x0 + y_attn, "x1 = x0 + attention   (residual)", "models/gpt.py")
h2 = step("h2", layernorm.forward(x1, p["ln2"]["gamma"], p["ln2"]["beta"])[0], "h2 = LN2(x1)", "ops/layernorm.py")
m = p["ffn"]
u = step("u", linear.forward(h2, m["W1"], m["b1"])[0], "u = h2 W1 + b1   (W1: C x 4C)", "ops/linear.py")
g = step("GELU(u)", activations.gelu_forward(u, approximate="tanh")[0], "GELU, tanh form", "ops/activations.py")
f = step("ffn out", linear.forward(g, m["W2"], m["b2"])[0], "GELU(u) W2 + b2   (W2: 4C x C)", "ops/linear.py")
assert np.array_equal(f, ffn.forward(h2, m["W1"], m["b1"], m["W2"], m["b2"], activation="gelu_tanh")[0])
x2 = step("x2", x1 + f, "x2 = x1 + FFN   (residual)", "models/gpt.py")
xf = step("LN_f(x)", layernorm.forward(x2, params["ln_f"]["gamma"], params["ln_f"]["beta"])[0],
          "after the last block (here: block 1 of 1)", "ops/layernorm.py")
logits = step("logits", xf @ params["wte"].T, "LN_f(x) wte^T   (tied head)", "models/gpt.py")
loss, _ = cross_entropy.forward(logits, targets)
step("loss", loss, "mean over B T of -log p(target)", "ops/cross_entropy.py")

print(f"{'array':<12} {'shape':<18} {'what':<42} computed by reference/...")
for name, shape, formula, where in trace:
    print(f"{name:<12} {str(shape):<18} {formula:<42} {where}")

# %% [markdown]
# Three things in this table recur in every chapter. The residual stream ($x_0$, $x_1$, $x_2$) keeps the shape
# $(B, T, C)$ through every block, so blocks can be stacked $L$ deep. Attention is the only step in which
# positions meet: its weights $P$ have shape $(B, H, T, T)$, one $T \times T$ matrix per sequence and head, which is
# why long contexts are expensive (chapter 7 computes attention without storing it). Everything else acts on
# each of the $B T$ positions separately. The feed-forward network widens each position to $4C$ and back.
#
# The parameters of this block, and where they are used:

# %%
for group, arrays in p.items():
    print(f"{group:>5}: " + ", ".join(f"{name} {arr.shape}" for name, arr in arrays.items()))
n_block = sum(arr.size for arrays in p.values() for arr in arrays.values())
print(f"one block: {n_block:,} parameters = 12 C^2 + 13 C with C = {C}: {12 * C * C + 13 * C:,}")
assert n_block == 12 * C * C + 13 * C

# %% [markdown]
# The check: the same steps, for a one-block model with these parameters, against `gpt.forward` (which fuses the
# three projections into one matrix product; float64, so the two agree to round-off).

# %%
one_block = gpt.GPTConfig(vocab_size=V, block_size=config.block_size, n_layer=1, n_head=H, d_model=C)
ref_logits, _ = gpt.forward({**params, "blocks": params["blocks"][:1]}, one_block, ids)
print(f"max |trace - gpt.forward| over {logits.size:,} logits: {np.abs(logits - ref_logits).max():.1e}")
assert np.abs(logits - ref_logits).max() < 1e-10    # float64, the same products summed in another order: ~1e-15
print(f"loss at initialisation: {float(loss):.3f} nats; a uniform guess over V = {V} ids: ln V = {np.log(V):.3f}")

# %% [markdown]
# ## 0.3 Which chapter to read before which
#
# The chapters follow the material's sections, but the material's order is not an order of ideas: §2 trains and
# decodes a model whose equations only come in §3. The book's chapters can be read in the material's order (each
# says where to look back), or in the order of what each one needs:

# %%
TITLES = {0: "Map", 1: "Background", 2: "Training", 3: "Optimization", 4: "Inference", 5: "Traditional ML",
          6: "Transformer", 7: "Kernels", 8: "Worked example", 9: "Trends", 10: "FAQ", 11: "Errata"}
PREREQUISITES = {   # chapter: the chapters whose content it uses
    1: [0], 6: [0],
    2: [1, 6],         # the GPT of chapter 6's ops; 6ND from chapter 1
    3: [2],            # prunes, quantizes and distils the model chapter 2 trains
    4: [2, 6],         # decodes from that model; the KV cache is chapter 6's attention
    5: [2, 6],         # an encoder classifier, AdamW
    7: [6],            # attention, LayerNorm and the FFN as kernels
    8: [4, 6],         # BERT is chapter 6's encoder; generation vs encoding is chapter 4's
    9: [1, 2, 6],      # 6ND, training runs, post-LN vs pre-LN
    10: [1, 2, 3, 4, 5, 8, 9],
    11: [2, 4, 6, 8, 9],
}
for c, title in TITLES.items():
    pre = PREREQUISITES.get(c, [])
    print(f"{c:>2}. {title:<15} after: {', '.join(f'{p}. {TITLES[p]}' for p in pre) or '-'}")
fig = diagrams.reading_order(PREREQUISITES, TITLES)
fig.axes[0].set_title("Reading order: an arrow from each chapter to the chapters that build on it "
                      "(arrows implied by others left out)", fontsize=9)
savefig(fig, "map_reading_order.png")

# %% [markdown]
# A reader who wants the maths first reads 0, 6, then 2; one who wants a working model first reads 0, 1, 2 and
# goes back to 6 when a block needs explaining. Chapter 7 (kernels) needs only chapter 6. Chapter 11 gathers the
# material's errors, each with the number that shows it, from every chapter.
#
# ## 0.4 The material's words
#
# The Chinese terms as the material writes them (including its mistakes, marked), the English, the symbol or name
# the book uses, and where it is computed (paths under `reference/` unless said otherwise).
#
# | material (as written) | English | symbol in the book | computed in | chapter |
# |---|---|---|---|---|
# | 大模型 | large model | $N$ parameters | `studies/counting.py` | 1 |
# | 参数 | parameters | $\theta$; `params` | `models/gpt.py` (`init_params`, `n_params`) | 1, 2 |
# | 模型训练 | model training | | `train.py` | 2 |
# | 样本和标签 | samples and labels; for a language model the label is the next token of the same text (chapter 11) | `x`, `y` | `training/data.py` (`get_batch`) | 2, 11 |
# | 卷积神经网络 | convolutional neural network (CNN) | | not in this book | — |
# | 递归神经网络 (as written; the usual name of an RNN is 循环神经网络, 递归 is "recursive") | recurrent neural network (RNN) | | not in this book | 11 |
# | 数据预处理 | data preprocessing | | `tokenizers/`, `training/data.py` | 2 |
# | 词嵌入向量 | word embedding vectors | `wte`, $E$ | `ops/embedding.py` | 2, 6 |
# | 参数初始化 | parameter initialisation | | `training/init.py` | 2 |
# | 梯度下降 | gradient descent | $\theta \leftarrow \theta - \eta \nabla L$ | `training/optim.py` | 2 |
# | 损失函数 | loss function | $L$ | `ops/cross_entropy.py` | 2, 6 |
# | 迭代训练 | iterative training | step | `train.py` | 2 |
# | 训练轮数 | number of epochs | | `train.py` (counts steps) | 2 |
# | 收敛 | convergence | | `train.py` (validation loss) | 2 |
# | 剪枝 | pruning | mask $M$ | `compression/prune.py` | 3 |
# | 量化 | quantization | int8, int4, scale $s$ | `compression/quantize.py` | 3 |
# | 知识蒸馏 | knowledge distillation | temperature $T$, $\alpha$ | `compression/distill.py` | 3 |
# | 模型推理 | model inference | | `inference/decoding.py` | 4 |
# | 前向传播 | forward pass | `forward` | every op's `forward` | 4, 6 |
# | 后处理 | post-processing | | `inference/decoding.py` (`postprocess`) | 4 |
# | 词汇标记化 (listed as post-processing; chapter 11) | tokenisation | | `tokenizers/` | 4, 11 |
# | 分数归一化 | score normalisation | softmax | `ops/softmax.py` | 4 |
# | 逻辑回归 | logistic regression | $W$, $b$ | `models/logreg.py` | 5 |
# | 支持向量机 | support vector machine | hinge loss | `models/linear_svm.py` | 5 |
# | 决策树 | decision tree | | not implemented (chapter 5 says why it cannot help on one task) | 5 |
# | 序列到序列模型 | sequence-to-sequence model | | `models/transformer.py` | 6 |
# | 自注意力机制 | self-attention | $\mathrm{Attention}(Q, K, V)$ | `ops/attention.py` | 6 |
# | 查询（Query）矩阵, 键（Key）矩阵, 值（Value）矩阵 | query, key, value matrices | $Q$, $K$, $V$ | `ops/attention.py`, `ops/multihead.py` | 6 |
# | 多头自注意力 | multi-head self-attention | $H$ heads, $d_k = C/H$ | `ops/multihead.py` | 6 |
# | 注意力头 | attention head | $\mathrm{head}_i$ | `ops/multihead.py` | 6 |
# | 注意力权重矩阵 | attention weight matrix | $P$ | `ops/attention.py` (`probabilities`) | 6 |
# | 上下文向量 | context vectors | $O = PV$ | `ops/attention.py` | 6 |
# | 位置编码 | positional encoding | $PE$, `wpe` | `ops/positional.py` | 6 |
# | 前馈神经网络 | feed-forward network | FFN, $W_1$, $W_2$ | `ops/ffn.py` | 6 |
# | 全连接层 | fully connected (linear) layer | $xW + b$ | `ops/linear.py` | 6 |
# | 层ORMAL化 (as written; 层归一化) | layer normalisation | LN, $\gamma$, $\beta$, $\epsilon$ | `ops/layernorm.py` | 6, 11 |
# | 正则化 | regularisation (the paper's: dropout, label smoothing) | $P_{drop}$, $\epsilon_{ls}$ | `ops/dropout.py`, `ops/label_smoothing.py` | 6, 11 |
# | 过拟合 | overfitting | train/validation gap | `studies/regularisation.py` | 11 |
# | 隐藏状态 | hidden states | $x$, $h$ | `models/` | 6 |
# | 硬件加速器 | hardware accelerators | | `kernels/` (Triton) | 7 |
# | 分词和标记 | splitting into tokens and marking them | WordPiece, `[CLS]`, `[SEP]` | `tokenizers/wordpiece.py` | 8 |
# | 文本摘要生成 | text summary generation | | `inference/summarizer.py` (extractive) | 8 |
# | 模型规模的扩大 | growing model scale | $N$, $D$, $C \approx 6ND$ | `studies/scaling_law.py`, `studies/counting.py` | 1, 9 |
# | 梯度爆炸、梯度消失 | exploding and vanishing gradients | $\lVert\partial\ell/\partial x_l\rVert$ | `studies/depth.py` | 9 |
# | 模型稳定性 | model stability | | `studies/depth.py`, `training/optim.py` (clipping) | 9 |
# | 计算资源 | compute resources | FLOPs | `studies/counting.py` | 1, 9 |
# | 跨领域知识迁移 | transfer across domains | | chapter 8 (a pretrained encoder reused) | 9 |
# | 自主学习和无监督学习 | self-directed and unsupervised learning | | chapter 2 (next-token objective) | 9 |
# | 模型解释性和可解释性 | interpretability | | chapter 4 (attention maps of the trained GPT), chapter 8 | 9 |
# | 数据隐私 | data privacy | | not measured | 9 |
#
# The chapters in one line each, with the section of the material that each follows, are listed in `README.md` at the
# top of the repository.
