# %% [markdown]
# # 10. FAQ: the material's questions, answered with what this book measured
#
# The material closes (§6, 附录常见问题与解答, "appendix: frequently asked questions") with six questions. Its answers
# are general; here each gets a short answer that points to the chapter and the code that show it, with a number
# where one exists.
#
# | question | chapters | code |
# |---|---|---|
# | What distinguishes large models from small ones? | 1, 5, 9 | `reference/studies/counting.py`, `reference/models/logreg.py`, `reference/models/classifier.py` |
# | How to choose a suitable large model? | 1, 3 | `reference/studies/counting.py`, `reference/compression/quantize.py` |
# | How to train a large model? | 2, 6, 9 | `reference/train.py`, `reference/training/optim.py`, `reference/models/gpt.py` |
# | How to use a large model? | 4, 8 | `reference/inference/decoding.py`, `reference/models/bert.py`, `reference/inference/summarizer.py` |
# | What are the trends? | 1, 9 | `reference/studies/counting.py`, `reference/studies/scaling_law.py` |
# | What are the challenges? | 3, 7, 9 | `reference/compression/prune.py`, `reference/compression/quantize.py`, `kernels/`, `reference/studies/depth.py` |

# %%
from book import QUICK
from reference.studies import counting

print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## Q1. 大模型与小模型的区别是什么？ What distinguishes large models from small ones?
#
# The material answers "scale and complexity". Concretely, the architecture can be exactly the same (chapter 6's
# blocks); what changes is the width $d$, the depth $L$, the data $D$ and so the compute $6ND$. The parameter count
# grows like $12Ld^2$:

# %%
small = counting.DecoderShape(n_layer=4, d_model=128, n_head=4, n_ctx=128, vocab_size=319)  # chapter 2's default model
n_small = counting.param_count(small)["total"]
n_gpt3 = counting.param_count(counting.GPT3_175B)["total"]
print(f"chapter 2's model: {n_small:,} parameters; GPT-3: {n_gpt3:,} ({n_gpt3 / n_small:,.0f} times more)")
assert n_gpt3 / n_small > 1e5

# %% [markdown]
# What scale buys is measured in chapter 9 (validation loss falls as a power law in the parameter count at a fixed
# token budget) and chapter 5 (where a logistic regression on bag-of-words features is enough, and where a
# Transformer's sensitivity to word order is needed).
#
# ## Q2. 如何选择合适的大模型？ How to choose a suitable large model?
#
# > 选择合适的大模型需要考虑以下因素：任务类型、数据规模、计算资源、模型性能等。
# >
# > "Choosing a suitable large model means weighing the type of task, the scale of the data, the compute available,
# > the model's performance, and so on."
#
# Each factor has an answer the book measured:
#
# * **The task decides the architecture.** To continue text, a decoder (the GPT of chapters 2 and 4); to represent
#   or classify text, an encoder (BERT, chapter 8, which cannot generate: the material's §4 code tries); to turn
#   one sequence into another, the paper's encoder–decoder (chapter 6). Chapter 0 draws all three.
# * **The data decides how large a model is worth it.** With a few thousand labelled examples, a linear model on the
#   right features beat a small Transformer on both of chapter 5's tasks; a student distilled from a teacher gained
#   most where its own data was small (chapter 3.3). A larger model pays when there is data to fit it (chapter 9.3).
# * **Quality is measured, not assumed.** Compare candidates on held-out data of *your* task (validation loss,
#   accuracy), as every chapter does, and keep the smallest that is good enough.
#
# Then the compute budget, which can be computed before anything is downloaded: memory for the weights (chapter 1.4:
# 2 bytes per parameter in bfloat16, 0.5 in int4), the KV cache for the context you need (chapter 1, exercise 3), and
# the compute per token ($2N$ FLOPs). Chapter 3 measures what int8/int4 quantization, pruning and distillation cost in
# quality, so you can trade size for loss with numbers rather than hopes.

# %%
for bits_name, bytes_per_param in (("bfloat16", 2), ("int8", 1), ("int4", 0.5)):
    print(f"a 7 B-parameter model in {bits_name:>8}: {7e9 * bytes_per_param / 2**30:5.1f} GiB of weights")

# %% [markdown]
# ## Q3. 如何训练大模型？ How to train a large model?
#
# The material lists four steps: preprocessing, initialisation, gradient descent, iteration. Chapter 2 runs all
# four for real on the King James Bible with a NumPy GPT whose backward pass is written by hand (`reference/models/gpt.py`)
# and checked against PyTorch and finite differences (`tests/models/test_gpt.py`). The details that make it work at depth
# (residual connections, LayerNorm placement, scaled initialisation, warmup, clipping) are chapter 6.7 and chapter 9;
# checkpoints that survive a crash and resume bit-identically are `reference/training/checkpoint.py`.
#
# ## Q4. 如何使用大模型？ How to use a large model?
#
# Preprocess (tokenise), run the forward pass, post-process (decode). Chapter 4 does this with greedy, sampling,
# top-k, top-p and beam search, and proves that the KV cache gives the same logits as recomputing everything.
# Chapter 8 runs a real pretrained encoder (all-MiniLM-L6-v2) in NumPy, matched to `transformers` to 1e-5, and uses it
# for what an encoder can do: embeddings and an extractive summary.
#
# ## Q5. 大模型的未来发展趋势是什么？ What are the trends?
#
# The material names scale, transfer across domains, self-supervised learning and interpretability. The one we can
# measure on two CPU cores is scale: chapter 9 fits the power law of loss against parameters for a handful of model
# sizes and compares the $6ND$ estimate of chapter 1 with the measured time. Self-supervision is what chapter 2's
# next-token objective is: the labels are the text itself.
#
# ## Q6. 大模型面临的挑战是什么？ What are the challenges?
#
# * Compute and memory: chapter 1 (GPT-3 needs about 2.5 TiB of training state), chapter 7 (kernels that never
#   store the $T \times T$ attention matrix) and chapter 3 (smaller models from large ones).
# * Training stability ("梯度爆炸、梯度消失", exploding and vanishing gradients): chapter 9 measures gradient norms
#   by layer with and without residuals and for post-LN vs pre-LN, and the effect of clipping at a large learning
#   rate.
# * Interpretability: chapter 8 draws the attention maps of a real model; attention weights show where a head looks,
#   not why the model decides, so they are a starting point rather than an explanation.
# * Data privacy: not measured here. A language model can reproduce text from its training data, which is why the
#   corpus of this book is public domain.
#
# ## Exercises
#
# 1. A 7 B-parameter model is trained with Adam in mixed precision. How many 80 GiB accelerators does its training
#    state alone (weights, gradients, Adam moments, master weights; no activations) need?
# 2. The same model has 32 layers and $d_{model} = 4096$. How many tokens of KV cache (bfloat16) fit in the memory
#    left on one 80 GiB accelerator after its bfloat16 weights?
#
# Worked solutions: `chapters/solutions/10_faq.py` (checked by `tests/book/test_solutions_10.py`).
