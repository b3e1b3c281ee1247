# %% [markdown]
# # 4. Inference: from a prompt to text
#
# The material's §2.3 (模型推理, "model inference") describes inference in three steps:
#
# > 1. 输入预处理：将新数据转换为模型可以理解的格式。
# > 2. 前向传播：将预处理后的数据通过模型的前向传播层进行计算，得到预测结果。
# > 3. 后处理：对预测结果进行后处理，如词汇标记化、分数归一化等，以便与应用需求相符。
# >
# > "1. Input preprocessing: turn the new data into a format the model understands. 2. Forward pass: run the
# > preprocessed data through the model's forward layers to get the prediction. 3. Post-processing: process the
# > prediction, e.g. tokenisation and score normalisation, to fit the application."
#
# For a language model, step 2 is not one forward pass but a loop: the model gives a distribution over the next
# token, a *decoding strategy* picks one, the token is appended, and the model runs again. How the token is picked
# (greedy, sampling with a temperature, top-k, top-p, beam search) changes the text more than most readers expect;
# how the loop is run (recomputing everything, or keeping a *KV cache*) decides its speed. This chapter runs all of
# it on the character-level GPT trained in chapter 2, proves that the cache computes exactly what the full model
# computes, and measures what it saves.
#
# | what | code |
# |---|---|
# | the decoder-only model (logits of every position) | `reference/models/gpt.py` |
# | KV cache (`forward_cached`, `KVCache`), left padding, greedy / temperature / top-k / top-p sampling, beam search, post-processing | `reference/inference/decoding.py` |
# | the training run that produced the model | `reference/train.py` (chapter 2) |
# | the commands: generate from a checkpoint; export it for `transformers` | `reference/generate.py`, `reference/export.py`, `reference/tokenizers/hf.py` |
# | tokenizers (characters with byte fallback; BERT's WordPiece) | `reference/tokenizers/`, `reference/tokenizers/wordpiece.py` |
# | checks | `tests/inference/test_decoding.py`, `tests/test_generate.py`, `tests/test_export.py` |
# | the speed benchmark (`make bench`) | `bench/decode.py` |

# %%
import os

# One BLAS thread: the timings in 4.5 then measure the algorithm, not how busy the other core is.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from book import QUICK, glue, machine_load, savefig, trained_gpt  # noqa: E402
from reference import tokenizers, train, tree  # noqa: E402
from reference.inference import decoding as gen  # noqa: E402
from reference.models import bert, gpt
from reference.ops import softmax

print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 4.1 The model
#
# In `make book`, chapter 2 trains the default configuration of `reference/train.py` ("small": characters of the
# King James Bible, $d_{model} = 128$, 4 layers, 4 heads, a context of 128 characters, 800 AdamW steps) and writes
# `runs/small/checkpoint.npz`. This chapter loads that checkpoint. In quick mode (the test suite), or if the
# checkpoint is missing, it trains a model of its own for a few seconds instead, so the samples below then come
# from a much weaker model; the cell says which one it used.

# %%
ckpt, origin = trained_gpt("ch04_", quick_flags=["--config", "tiny", "--steps", "120"],
                           full_flags=["--config", "small", "--steps", "300"])
tok = tokenizers.from_json(ckpt["tokenizer"])
config = train.model_config(ckpt["run"], tok.vocab_size)
params = ckpt["params"]
val_step, val_loss = ckpt["history"]["val"][-1]
print(f"model: {origin}")
print(f"  {config}")
print(f"  {gpt.n_params(params):,} parameters, {params['wte'].dtype}; step {ckpt['step']}, "
      f"validation loss {val_loss:.3f} nats/char at step {val_step}")

# %% [markdown]
# ## 4.2 Step 1, preprocessing: text to ids, and a batch of prompts
#
# The tokenizer turns the prompt into ids (here one id per character). Prompts of different lengths are put in one
# batch by **left padding**: pads go first, so that every row's *next* token lands in the same column, and a boolean
# mask marks which columns are real. Left, not right: with right padding, the row's last real token would sit in a
# different column in every row and the new tokens would be appended after pads.

# %%
prompts_text = ["And God said", "In the beginning", "Jesus answered"]
prompts = [tok.encode(p) for p in prompts_text]
ids, mask = gen.left_pad(prompts, pad_id=0)
print("ids of", repr(prompts_text[0]), "=", prompts[0])
print("left-padded batch (B, T) =", ids.shape)
for row, m in zip(ids, mask):
    print("  " + " ".join(f"{i:>2}" if real else " ." for i, real in zip(row, m)))
assert all(tok.decode(p) == t for p, t in zip(prompts, prompts_text))  # the tokenizer round-trips

# %% [markdown]
# ## 4.3 Step 2, the forward pass: a distribution over the next token
#
# The model maps the ids to logits $z \in \mathbb{R}^V$ at the last position; the next-token distribution is
# $p = \mathrm{softmax}(z / \tau)$ with temperature $\tau$. A decoding strategy chooses from it:
#
# - **greedy**: $\arg\max_i z_i$ (the limit $\tau \to 0$);
# - **temperature** $\tau$: sample from $\mathrm{softmax}(z/\tau)$; $\tau < 1$ sharpens, $\tau > 1$ flattens;
# - **top-k**: keep the $k$ largest logits, renormalise, sample;
# - **top-p** (nucleus, Holtzman et al. 2020): keep the smallest set of most likely tokens whose mass reaches $p$;
#   unlike top-k, the set is small where the model is sure and large where it is not.
#
# Here is the distribution after "And God said", and what each filter keeps (all computed by `reference/`).

# %%
logits, _ = gen.forward_cached(params, config, np.array([prompts[0]]))
z = logits[:, -1].astype(np.float64)                                    # (1, V)
show = np.argsort(-z[0])[:12]
labels = [repr(tok.decode([i])) for i in show]                         # quoted, so that ' ' shows
fig, ax = plt.subplots(1, 2, figsize=(12, 3.6))
w = 0.27
for j, tau in enumerate((0.5, 1.0, 1.5)):
    p, _ = softmax.forward(z / tau)
    ax[0].bar(np.arange(12) + (j - 1) * w, p[0, show], w, label=f"τ = {tau}")
ax[0].set_title("softmax(z / τ): the next character after 'And God said'")
p1, _ = softmax.forward(z)
kept = {"top-k, k = 5": gen.top_k_filter(z, 5), "top-p, p = 0.9": gen.top_p_filter(z, 0.9)}
for j, (name, zf) in enumerate(kept.items()):
    pf, _ = softmax.forward(zf)
    ax[1].bar(np.arange(12) + (j - 0.5) * w, pf[0, show], w, label=f"{name} ({int(np.isfinite(zf).sum())} kept)")
ax[1].plot(np.arange(12), p1[0, show], "k.", label="τ = 1, unfiltered")
ax[1].set_title("after filtering, renormalised")
for a in ax:
    a.set_xticks(np.arange(12), labels)
    a.set_ylabel("probability")
    a.legend(fontsize=8)
fig.tight_layout()
savefig(fig, "inference_next_token.png")
for i in show[:5]:
    print(f"  {tok.decode([i])!r:>6}: p = {p1[0, i]:.3f}")
n_nucleus = int(np.isfinite(kept["top-p, p = 0.9"]).sum())
mass = np.cumsum(np.sort(p1[0])[::-1])                                  # (V,) mass of the i most likely
print(f"top-p 0.9 keeps {n_nucleus} characters holding {mass[n_nucleus - 1]:.3f} of the mass")
# the nucleus is the smallest set whose mass reaches p (1e-12: the two cumulative sums differ only by round-off)
assert mass[n_nucleus - 1] >= 0.9 - 1e-12 and (n_nucleus == 1 or mass[n_nucleus - 2] < 0.9 + 1e-12)

# %% [markdown]
# ## 4.4 The strategies side by side
#
# Every strategy below continues the same three prompts until a newline (the verse ends) or the context is full;
# the sampling ones use the same seed, so the cell prints the same text every time it runs. Next to each
# continuation: the mean log-probability per character that the model itself gives it (higher = more typical of
# the model; greedy maximises it one step at a time, not over the whole sequence).

# %%
NL = tok.encode("\n")[0]
N_NEW = min(80, config.block_size - max(len(p) for p in prompts) + 1)


def mean_logprob(prompt, new):
    """The model's mean log p(token | past) over the new tokens (a stop token included), in nats."""
    seq = np.array([prompt + new[:-1]])                               # (1, P + n - 1): the last is never fed
    lg, _ = gpt.forward(params, config, seq)
    lp = lg[0].astype(np.float64)
    lp = lp - lp.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))               # (P + n - 1, V) log-softmax
    targets = np.array(new)
    return float(lp[len(prompt) - 1 + np.arange(len(new)), targets].mean())


STRATEGIES = {
    "greedy": dict(temperature=0),
    "temperature 0.5": dict(temperature=0.5),
    "temperature 1.0": dict(temperature=1.0),
    "temperature 1.5": dict(temperature=1.5),
    "top-k 5": dict(temperature=1.0, top_k=5),
    "top-p 0.9": dict(temperature=1.0, top_p=0.9),
}
outputs = {}
for name, kw in STRATEGIES.items():
    outputs[name] = gen.generate(params, config, prompts, N_NEW, stop_tokens=[NL], rng=0, **kw)
    print(f"--- {name}")
    for prompt, new in zip(prompts, outputs[name]):
        print(f"  [{mean_logprob(prompt, new):6.3f}] {gen.postprocess(prompt + new, tok, special_ids=[NL])}")

# the same seed gives the same text; the cache changes nothing
again = gen.generate(params, config, prompts, N_NEW, stop_tokens=[NL], rng=0, **STRATEGIES["top-p 0.9"])
assert again == outputs["top-p 0.9"]
no_cache = gen.generate(params, config, prompts, N_NEW, stop_tokens=[NL], rng=0, use_cache=False,
                        **STRATEGIES["temperature 1.0"])
assert no_cache == outputs["temperature 1.0"]

# %% [markdown]
# In the full build (chapter 2's model) greedy decoding gives the highest mean log-probability and the worst text:
# it falls into a loop within a few words ("son of the LORD son of the LORD ..."). Each step takes the most likely
# character, and after a frequent phrase the most likely continuation starts that phrase again. Sampling at
# $\tau = 1$ draws from the model's own distribution, so its text has the model's statistics, misspellings
# included; $\tau = 1.5$ gives weight to the unreliable tail and the text falls apart. Top-k and top-p cut the
# tail off and keep the variety of sampling; $\tau = 0.5$ sits between sampling and greedy.
#
# To see the trade-off on more than one sample, we draw 16 continuations of one prompt per strategy and measure
# two things: the model's mean log-probability (how typical) and the share of distinct character 4-grams among
# all 4-grams of the 16 texts (how varied; a loop repeats its 4-grams).

# %%
N_SAMPLES = 4 if QUICK else 16
diversity, typicality = {}, {}
for name, kw in STRATEGIES.items():
    batch = gen.generate(params, config, [prompts[0]] * N_SAMPLES, N_NEW, rng=1, **kw)
    grams = [tuple(s[i:i + 4]) for s in batch for i in range(len(s) - 3)]
    diversity[name] = len(set(grams)) / len(grams)
    typicality[name] = float(np.mean([mean_logprob(prompts[0], s) for s in batch]))
    print(f"{name:>16}: mean log p {typicality[name]:6.3f} nats/char, distinct 4-grams {diversity[name]:.1%}")
fig, ax = plt.subplots(figsize=(6, 4))
for name in STRATEGIES:
    ax.plot(typicality[name], diversity[name], "o")
    ax.annotate(name, (typicality[name], diversity[name]), xytext=(5, 3), textcoords="offset points", fontsize=8)
ax.set_xlabel("model's mean log-probability per character (nats)")
ax.set_ylabel("distinct 4-grams among all 4-grams")
ax.set_title(f"{N_SAMPLES} continuations of 'And God said' per strategy")
ax.grid(alpha=0.3)
savefig(fig, "inference_strategies.png")
assert diversity["greedy"] <= min(diversity.values()) + 1e-12  # 16 identical greedy texts: the fewest 4-grams

# %% [markdown]
# ### Beam search and its length penalty
#
# Beam search keeps the `beam_width` best partial sequences by total log-probability, extends each by every token,
# and keeps the best again. A hypothesis that ends in the stop token is finished and scored
#
# $$ \mathrm{score}(y) = \frac{1}{n^{\alpha}} \sum_{i=1}^{n} \log p(y_i \mid y_{<i}, x), $$
#
# with $n$ its length. With $\alpha = 0$ the score is the total log-probability, which only gets smaller with every
# token: the search prefers to stop as early as it can. $\alpha = 1$ ranks by the mean log-probability per token
# and lets longer hypotheses compete. The run below shows that effect on the model: in the full build, the winner at
# $\alpha = 0$ and $0.5$ is "And God said." (two new characters, the full stop and the newline), and at
# $\alpha = 1$ a 60-character hypothesis that has not finished. That one loops like greedy decoding: beam search
# looks for the most likely text, and for open-ended generation the most likely text is repetitive (Holtzman et
# al. 2020 call it degeneration). Beam search suits tasks with one right answer, such as translation.

# %%
BEAM_NEW = min(60, config.block_size - len(prompts[0]) + 1)
best_len = {}
for alpha in (0.0, 0.5, 1.0):
    hyps = gen.beam_search(params, config, prompts[0], beam_width=4, max_new_tokens=BEAM_NEW,
                           length_penalty=alpha, stop_tokens=[NL])
    best_len[alpha] = len(hyps[0][0])
    print(f"alpha = {alpha}:")
    for tokens, score in hyps[:2]:
        print(f"  {len(tokens):>2} new tokens, score {score:8.3f}: "
              f"{gen.postprocess(prompts[0] + tokens, tok, special_ids=[NL])!r}")
# The search keeps beams by total log-probability, so the finished hypotheses are the same for every alpha; alpha
# only ranks them. If a shorter b (log-prob L_b) beat a longer a (L_a) at alpha = 1 but lost at 0, then
# L_b / b >= L_a / a and L_a >= L_b; with L_a < 0 and b < a that gives L_b >= L_a b / a > L_a >= L_b, impossible.
assert best_len[0.0] <= best_len[0.5] <= best_len[1.0]
# beam width 1 without stop tokens keeps exactly the greedy path
(beam1, _), = gen.beam_search(params, config, prompts[0], beam_width=1, max_new_tokens=20)
assert beam1 == gen.generate(params, config, [prompts[0]], 20, temperature=0)[0]

# %% [markdown]
# ## 4.5 The KV cache
#
# In a causal model a position's keys and values never change once computed: the mask keeps later tokens from
# influencing earlier ones. So the decoder can keep, per layer, the keys and values of all past positions, and for a
# new token compute only its own $q_t, k_t, v_t$:
#
# $$ K_{1..t} = [K_{1..t-1};\ k_t], \qquad V_{1..t} = [V_{1..t-1};\ v_t], \qquad
#    o_t = \mathrm{softmax}\!\left(q_t K_{1..t}^\top / \sqrt{d_k}\right) V_{1..t}. $$
#
# Without the cache, token $t$ costs a forward pass over all $t$ positions: $O(t)$ work in every matrix product and
# $O(t^2)$ in attention. With it, the projections and the FFN run on one position, and attention reads $t$ cached
# keys: $O(t)$ in total, most of it cheap. `gen.forward_cached` does both the *prefill* (the prompt in one call) and
# the *decode steps* (one token per call).
#
# A cache is only worth having if it computes the same function. We check that in float64, where the cached and the
# full computation must agree to round-off: at every step, the cached logits against `gpt.forward` on the whole
# sequence so far.

# %%
params64 = tree.unflatten({k: v.astype(np.float64) for k, v in tree.flatten(params).items()})
verse = tok.encode("In the beginning God created the heaven and the earth. And the earth was without form")
verse = verse[:config.block_size]
T0 = 5
lg, cache = gen.forward_cached(params64, config, np.array([verse[:T0]]))            # prefill
full, _ = gpt.forward(params64, config, np.array([verse[:T0]]))
errors = [np.abs(lg - full).max()]
for t in range(T0, len(verse)):
    lg, cache = gen.forward_cached(params64, config, np.array([[verse[t]]]), cache)  # one token, (1, 1, V)
    full, _ = gpt.forward(params64, config, np.array([verse[:t + 1]]))             # everything again
    errors.append(np.abs(lg[0, 0] - full[0, -1]).max())
print(f"{len(errors)} steps (prefill of {T0} + {len(errors) - 1} decode steps), float64: "
      f"largest |cached - full| logit difference {max(errors):.1e}")
print(f"cache: {cache.length} positions x {config.n_layer} layers, k and v each {cache.k[0].shape}")
# float64 round-off on logits of size ~10 after a few layers is ~1e-14; a wrong position or mask moves them by 1e-2
assert max(errors) < 1e-12

# %% [markdown]
# The same holds for a batch of prompts of different lengths, which is where most educational KV-cache code goes
# wrong. Two things are needed: a key-padding mask (no query may attend to a pad) and positions counted per row
# from its first real token (a pad must not shift the position ids of a shorter prompt). With both, each row of the
# padded batch gives exactly the logits of the row run alone. Without them (feeding the padded row to the plain
# model), the logits change.

# %%
lg, cache = gen.forward_cached(params64, config, ids, attention_mask=mask)             # (B, T_max, V)
for b, p in enumerate(prompts):
    alone, _ = gpt.forward(params64, config, np.array([p]))
    naive, _ = gpt.forward(params64, config, ids[b:b + 1])                             # pads attended, shifted
    err, wrong = np.abs(lg[b, -1] - alone[0, -1]).max(), np.abs(naive[0, -1] - alone[0, -1]).max()
    print(f"row {b} ({len(p):>2} real of {ids.shape[1]}): masked + per-row positions {err:.1e}; "
          f"pads as input {wrong:.1e}")
    assert err < 1e-12
    assert len(p) == ids.shape[1] or wrong > 1e-6  # padding without the mask is a different input

# %% [markdown]
# ### What the cache costs and what it saves
#
# Memory: per token, every layer stores a key and a value vector of width $d_{model}$, so
# $2 \cdot L \cdot d_{model}$ numbers per token and sequence. Time: we time one decode step at several context
# lengths, with the cache (one new token against $t$ cached positions) and without (a forward pass over all $t+1$
# positions). The model for this measurement has the trained model's width and depth but random weights and a longer
# context table (the time depends on the shapes, not on the values); `make bench` runs the larger benchmark of
# `bench/decode.py` (prompts of 64 and 512 tokens) and writes `figures/bench_decode.png`. The times below and the
# figure are measurements of the machine that built this book: they change from build to build.

# %% tags=["measurement"]
bytes_per_token = sum(k[0, :, 0].nbytes + v[0, :, 0].nbytes for k, v in zip(cache.k, cache.v))
assert bytes_per_token == 2 * config.n_layer * config.d_model * np.dtype(np.float64).itemsize
print(f"cache size: {bytes_per_token // 8} numbers per token = {bytes_per_token // 2:,} bytes in float32")

lengths = [8, 16, 32, 64] if QUICK else [16, 32, 64, 128, 256, 512]
repeats = 3 if QUICK else 7
bench_cfg = gpt.GPTConfig(vocab_size=config.vocab_size, block_size=max(lengths) + 1, n_layer=config.n_layer,
                          n_head=config.n_head, d_model=config.d_model)
bench_params = gpt.init_params(bench_cfg, np.random.default_rng(0), dtype=np.float32)
seq = np.random.default_rng(1).integers(0, config.vocab_size, size=(1, max(lengths) + 1))


def best_time(fn):
    """The fastest of ``repeats`` runs after a warm-up: on a shared machine, the run least disturbed by others."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


step_cached, step_full = [], []
for T in lengths:
    _, past = gen.forward_cached(bench_params, bench_cfg, seq[:, :T])
    step_cached.append(best_time(lambda: gen.forward_cached(bench_params, bench_cfg, seq[:, T:T + 1], past)))
    step_full.append(best_time(lambda: gen.forward_cached(bench_params, bench_cfg, seq[:, :T + 1])))
    print(f"context {T:>4}: one step {1e3 * step_cached[-1]:7.2f} ms with the cache, "
          f"{1e3 * step_full[-1]:7.2f} ms recomputing ({step_full[-1] / step_cached[-1]:5.1f}x)")

# %% [markdown]
# And end to end on the trained model: greedy continuations of the three prompts, with and without the cache. The
# two must produce the same tokens; only the time differs.

# %% tags=["measurement"]
n_gen = min(64, config.block_size - ids.shape[1] + 1)
t0 = time.perf_counter()
with_cache = gen.generate(params, config, prompts, n_gen, temperature=0, use_cache=True)
t_cache = time.perf_counter() - t0
t0 = time.perf_counter()
without = gen.generate(params, config, prompts, n_gen, temperature=0, use_cache=False)
t_full = time.perf_counter() - t0
assert with_cache == without
print(f"{len(prompts)} x {n_gen} tokens: {t_cache:.2f} s with the cache, {t_full:.2f} s without "
      f"({t_full / t_cache:.1f}x); same tokens")
print(machine_load())

fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(lengths, 1e3 * np.array(step_full), "o-", color="#c44e52", label="recompute all positions")
ax.plot(lengths, 1e3 * np.array(step_cached), "o-", color="#4c72b0", label="KV cache (one position)")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("context length t (tokens already seen)")
ax.set_ylabel("time of one decode step (ms)")
ax.set_title(f"One decode step, NumPy float32, d_model={config.d_model}, {config.n_layer} layers"
             + (" (quick)" if QUICK else "") + f"\n(measured on the build machine, load {os.getloadavg()[0]:.1f})",
             fontsize=10)
ax.grid(alpha=0.3, which="both")
ax.legend()
savefig(fig, "inference_kv_cache.png")

# %% [markdown]
# The printed times vary from run to run on a shared machine, but the shape does not. Recomputing costs a couple
# of milliseconds at a context of 16 and tens of milliseconds at 512, roughly linear in $t$ (the matrix products
# over $t$ positions dominate; the $O(t^2)$ attention term starts to show at 512). With the cache the step stays
# near one millisecond: the projections and the FFN see one position, and what grows is only the attention over
# the cached keys and the copy that appends to the cache (`np.concatenate` makes a new array each step, which
# keeps the cache a plain value; a production cache preallocates and writes in place). At 512 tokens of context
# the cache makes a step more than ten times faster. End to end, on prompts of 12 to 16 characters, the gain is
# smaller (a few times, above), because most of those steps have a short context.
#
# ## 4.6 Step 3, post-processing
#
# The material lists "词汇标记化、分数归一化" (tokenisation, score normalisation). Tokenisation is misplaced there: it
# turns text into ids, which is step 1 (4.2), and the model's output is already ids. What post-processing does is
# its inverse, detokenisation (chapter 11.9 lists this erratum). For generation the two steps are:
#
# - **ids back to text**: drop the special ids (the stop token, padding) and detokenise. For characters this is a
#   lookup; for WordPiece (chapter 8) the `##` continuation pieces are glued to the previous piece and `[CLS]`,
#   `[SEP]`, `[PAD]` are dropped;
# - **scores**: logits become probabilities by a softmax (4.3), and beam scores are normalised by length (4.4).

# %%
ended = [p + n for outs in outputs.values() for p, n in zip(prompts, outs) if n[-1] == NL]
raw = ended[0] if ended else prompts[1] + with_cache[1]   # a continuation that stopped at a newline
print("raw ids -> text:", repr(tok.decode(raw)))
print("postprocessed:  ", repr(gen.postprocess(raw, tok, special_ids=[NL])))
assert "\n" not in gen.postprocess(raw, tok, special_ids=[NL])

wp = bert.tokenizer()
wp_ids = wp.encode("Decoding is the loop; unbelievably, the cache changes nothing.")
padded = wp_ids + [wp.pad_id] * 3
print("WordPiece pieces:", [wp.vocab[i] for i in padded])
print("postprocessed:   ", repr(gen.postprocess(padded, wp, special_ids=wp.special_ids)))
assert gen.postprocess(padded, wp, special_ids=wp.special_ids) == wp.decode(wp_ids)

# %% [markdown]
# ## 4.7 The model outside this notebook: a command, and `transformers`
#
# Everything above called `reference/inference/decoding.py` from Python. A trained model is also used from the shell:
# `python -m reference.generate CHECKPOINT --prompt TEXT` loads a checkpoint of the training command (its tokenizer
# travels with it), encodes the prompt, decodes with the KV cache and streams the text as the tokens come, with the
# speed on standard error. Here it continues a prompt greedily, then samples three continuations at temperature
# 0.8 among the 20 most likely characters. The greedy output must be what `gen.generate` gives in this notebook.

# %% tags=["measurement"]
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from book import ROOT  # noqa: E402
from reference.training import checkpoint  # noqa: E402

work = Path(tempfile.mkdtemp(prefix="ch04_commands_"))
ckpt_path = work / "checkpoint.npz"
checkpoint.save(ckpt_path, ckpt)                       # the model of 4.1, as the training command saved it


def command(*args):
    """Run ``python -m ...`` from the repository root; show the command line, standard output and error."""
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    shown = " ".join(a if " " not in a else repr(a) for a in args).replace(str(work), "$RUN")
    print(f"$ python -m {shown}\n{done.stdout}{done.stderr}".replace(str(work), "$RUN"))
    assert done.returncode == 0
    return done.stdout


prompt = "And God said"
n_new = min(80, config.block_size - len(tok.encode(prompt)) + 1)     # what the context has room for
greedy_cmd = command("reference.generate", str(ckpt_path), "--prompt", prompt, "--temperature", "0",
                     "--max-new-tokens", str(n_new))
greedy_ids = gen.generate(params, config, [tok.encode(prompt)], n_new, temperature=0)[0]
assert greedy_cmd == prompt + tok.decode(greedy_ids) + "\n"
command("reference.generate", str(ckpt_path), "--prompt", prompt, "--temperature", "0.8", "--top-k", "20",
        "--seed", "1", "--num-samples", "3", "--max-new-tokens", str(n_new));

# %% [markdown]
# `python -m reference.export CHECKPOINT OUTDIR` writes the same model in the Hugging Face format: the weights as
# `model.safetensors` under GPT-2's names, a GPT-2 `config.json`, and the tokenizer as a `tokenizers` file
# (`tokenizer.json`). The GPT of chapter 2 *is* GPT-2's architecture (pre-LN blocks, learned positions, tanh GELU,
# tied output head), so the export is a renaming. The character tokenizer with byte fallback becomes a BPE model
# with no merges and `byte_fallback=True`, the mechanism Llama's tokenizer uses for unknown characters.
#
# Then `transformers` loads the folder offline, with its own tokenizer class and its own `generate`, and must
# continue the prompt exactly as the command did: the logits of the two implementations agree to float32 round-off,
# far below the gap between the first and second choice at every greedy step.

# %%
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()
command("reference.export", str(ckpt_path), str(work / "hf"))
hf_config = json.loads((work / "hf" / "config.json").read_text())
print({k: hf_config[k] for k in ("architectures", "n_layer", "n_head", "n_embd", "n_positions", "vocab_size",
                                 "activation_function")})

hf_model = AutoModelForCausalLM.from_pretrained(work / "hf").eval()
hf_tok = AutoTokenizer.from_pretrained(work / "hf")
hf_ids = hf_tok(prompt, return_tensors="pt")["input_ids"]
assert hf_ids[0].tolist() == tok.encode(prompt)
with torch.no_grad():
    hf_out = hf_model.generate(hf_ids, max_new_tokens=n_new, do_sample=False, pad_token_id=0)
    hf_logits = hf_model(hf_out[:, :-1]).logits[0].numpy()              # (T, V) at every position of the text
hf_text = hf_tok.decode(hf_out[0])
print(f"transformers ({type(hf_model).__name__}, {type(hf_tok).__name__}):\n{hf_text}")
ours_logits, _ = gpt.forward(params, config, hf_out[:, :-1].numpy())
top2 = np.sort(ours_logits[0], axis=-1)[:, -2:]
print(f"max |logits NumPy - transformers| = {np.abs(ours_logits[0] - hf_logits).max():.1e}; "
      f"smallest gap between the two best tokens on the greedy path: "
      f"{(top2[:, 1] - top2[:, 0])[len(hf_ids[0]) - 1:].min():.1e}")
assert hf_text + "\n" == greedy_cmd                      # the same continuation, character for character

# ## 4.8 What the trained model attends to
#
# Every attention picture before this point showed either positional codes (chapter 6) or a model someone else
# trained (chapter 8). Here is the model of this chapter, the GPT trained in chapter 2: its attention weights on a
# verse it never saw in training (1 Corinthians 13:7, from the held-out end of the New Testament), every layer and
# every head. `reference/studies/attention_heads.py` runs the same forward pass as `gpt.forward` with the same ops,
# keeping each block's probabilities $P = \mathrm{softmax}(QK^\top/\sqrt{d_k})$, and checks that its logits are
# `gpt.forward`'s. Row $i$ of a map is what the character at position $i$ reads; the causal mask leaves everything
# above the diagonal at 0.

# %%
from reference.studies import attention_heads  # noqa: E402
from reference.training import data  # noqa: E402

verse = "Beareth all things, believeth all things, hopeth all things, endureth all things."
v_ids = np.array([tok.encode(verse)[:config.block_size]])               # (1, T); quick mode's model reads 32
maps, v_logits = attention_heads.attention_weights(params, config, v_ids)
assert np.abs(v_logits - gpt.forward(params, config, v_ids)[0]).max() < 1e-4   # float32, same ops in order
L_, H_ = config.n_layer, config.n_head
fig, axes = plt.subplots(L_, H_, figsize=(2.3 * H_, 2.3 * L_), squeeze=False)
for layer in range(L_):
    for head in range(H_):
        ax = axes[layer, head]
        # sqrt: small weights stay visible
        ax.imshow(maps[layer][0, head] ** 0.5, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
axes[-1, 0].set_xlabel("key position (read)")
axes[-1, 0].set_ylabel("query position (reading)")
fig.suptitle(f"Attention of the trained GPT (colour: sqrt of the weight) on {verse!r}", fontsize=9)
fig.tight_layout()
savefig(fig, "inference_attention_heads.png", dpi=90)     # 16 maps: a lower resolution keeps the PNG small

# %% [markdown]
# A map of one verse invites stories; numbers over many windows decide between them. For every head, over
# {{heads_windows}} windows of {{heads_window_T}} characters of the validation text: the mean weight on the previous character, on the first
# position of the window, on the query itself; how far back the head reads on average; the entropy of its rows
# (against $\ln(i+1)$, the entropy of a uniform row); the weight on earlier copies of the query's own character and
# on spaces, each beside the share of visible positions that hold one (what a head blind to content would give).

# %%
_, _, val_ids = train.build_data(ckpt["run"], tok, progress=False)
windows, _ = data.get_batch(val_ids, 32, config.block_size, np.random.default_rng(0))   # (32, T)
w_maps, _ = attention_heads.attention_weights(params, config, windows)
space = tok.encode(" ")[0]
stats = [attention_heads.head_statistics(P, windows, space) for P in w_maps]
cols = ("previous", "first", "self", "distance", "entropy", "same_token", "on_spaces", "on_last_space")
print(f"{'layer head':>10} " + " ".join(f"{c:>13}" for c in cols))
for layer, s in enumerate(stats):
    for head in range(H_):
        print(f"{layer + 1:>5} {head + 1:>4} " + " ".join(f"{s[c][head]:>13.2f}" for c in cols))
print(f"chance: same character {stats[0]['same_token_chance'][0]:.2f}, spaces {stats[0]['space_fraction'][0]:.2f}; "
      f"uniform-row entropy {stats[0]['uniform_entropy'][0]:.2f} nats")
table = {c: np.array([s[c] for s in stats]) for c in cols}               # (L, H) each
best = {c: np.unravel_index(table[c].argmax(), table[c].shape) for c in cols}
for c in ("previous", "on_last_space", "same_token"):
    (l, h) = best[c]
    print(f"largest {c}: layer {l + 1}, head {h + 1} ({table[c][l, h]:.2f})")

space_chance, same_chance = stats[0]["space_fraction"][0], stats[0]["same_token_chance"][0]
ws = best["on_last_space"]                                               # the word-start head, (layer, head)
space_ratio_last = table["on_spaces"][-1] / space_chance                 # the last layer's heads, against chance
glue("heads_windows", str(windows.shape[0]))
glue("heads_window_T", str(windows.shape[1]))
glue("ws_layer", str(ws[0] + 1))
glue("ws_head", str(ws[1] + 1))
glue("ws_last_space", f"{table['on_last_space'][ws]:.2f}")
glue("ws_spaces", f"{table['on_spaces'][ws]:.2f}")
glue("space_chance", f"{space_chance:.2f}")
glue("ws_entropy", f"{table['entropy'][ws]:.2f}")
glue("uniform_entropy", f"{stats[0]['uniform_entropy'][0]:.2f}")
glue("prev_max", f"{table['previous'].max():.2f}")
glue("prev_layer", str(best["previous"][0] + 1))
glue("prev_head", str(best["previous"][1] + 1))
glue("l1_dist_min", f"{table['distance'][0].min():.0f}")
glue("l1_dist_max", f"{table['distance'][0].max():.0f}")
glue("l1_self_min", f"{table['self'][0].min():.2f}")
glue("l1_self_max", f"{table['self'][0].max():.2f}")
glue("same_max", f"{table['same_token'].max():.2f}")
glue("same_chance", f"{same_chance:.2f}")
glue("last_layer", str(L_))
glue("last_dist_min", f"{table['distance'][-1].min():.0f}")
glue("last_dist_max", f"{table['distance'][-1].max():.0f}")
glue("last_space_ratio_min", f"{space_ratio_last.min():.2f}")
glue("last_space_ratio_max", f"{space_ratio_last.max():.2f}")
glue("first_max", f"{table['first'].max():.2f}")
glue("gpt_steps", str(ckpt["step"]))

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
x_heads = np.arange(L_ * H_)
names = [f"{l + 1}.{h + 1}" for l in range(L_) for h in range(H_)]
for ax, (cs, chance, title) in zip(axes, (
        (("previous", "self", "first"), None, "weight on one position"),
        (("on_last_space", "on_spaces", "same_token"), ("space_fraction", "same_token_chance"), "weight by content"),
        (("distance",), None, "mean distance read back (characters)"))):
    width = 0.8 / len(cs)
    for j, c in enumerate(cs):
        ax.bar(x_heads + (j - (len(cs) - 1) / 2) * width, table[c].ravel(), width, label=c)
    for c, ls in zip(chance or (), ("--", ":")):
        ax.axhline(stats[0][c][0], ls=ls, lw=1, color="gray", label=f"chance: {c}")
    ax.set_xticks(x_heads, names, fontsize=7)
    ax.set_xlabel("layer.head")
    ax.set_title(title, fontsize=9)
    if len(cs) > 1:
        ax.legend(fontsize=7, ncol=2)
axes[0].set_ylabel("mean attention weight")
fig.tight_layout()
savefig(fig, "inference_head_statistics.png")

# %% [markdown]
# What the numbers say about this model (the full-mode notebook; quick mode trains a much smaller model whose
# heads differ):
#
# - **A word-start head.** Head {{ws_head}} of layer {{ws_layer}} puts {{ws_last_space}} of its weight on the most
#   recent space, the start of the word being written, and {{ws_spaces}} on spaces in all, against
#   {{space_chance}} for a head blind to content. To predict the next letter of a word, where the word began is what
#   a character model needs most, and this is the sharpest head of the model (the lowest entropy, {{ws_entropy}}
#   nats against {{uniform_entropy}} for a uniform row). The staircase in its map above is this: every character of
#   a word reads the space before it.
# - **No pure previous-token head.** The largest mean weight on the previous character is {{prev_max}} (layer
#   {{prev_layer}}, head {{prev_head}}). Layer 1's heads are local, reading {{l1_dist_min}} to {{l1_dist_max}}
#   characters back on average, with {{l1_self_min}} to {{l1_self_max}} of their weight on the query itself.
# - **No copying.** Earlier occurrences of the query's own character get about what chance gives them (at most
#   {{same_max}} against {{same_chance}}): no head looks up where the current character last appeared and what
#   followed it, the move that "induction heads" make in larger models (Olsson et al. 2022), though the verse's
#   repeated "all things" would reward it.
# - **Later layers read further and skip spaces.** The heads of layer {{last_layer}} look {{last_dist_min}} to
#   {{last_dist_max}} characters back on average and give spaces {{last_space_ratio_min}} to
#   {{last_space_ratio_max}} times what chance gives them.
# - **No attention sink yet.** No head parks its weight on the first position of the window (at most
#   {{first_max}}), the habit of larger, longer-trained models (chapter 8 measures BERT's heads on `[CLS]`).
#
# These are correlations measured on one model after {{gpt_steps}} steps, not a proof of what each head computes;
# removing a head and measuring the loss (chapter 3 does it for MiniLM's heads) is the next step.

# %%
wl, wh = best["on_last_space"]
T_v = v_ids.shape[1]
fig, ax = plt.subplots(figsize=(11, 9))
ax.imshow(maps[wl][0, wh], cmap="magma", vmin=0, vmax=1)
chars = [c if c != " " else "␣" for c in verse[:T_v]]
ax.set_xticks(range(T_v), chars, fontsize=6)
ax.set_yticks(range(T_v), chars, fontsize=6)
ax.set_xlabel("key (the character read)")
ax.set_ylabel("query (the character reading)")
ax.set_title(f"layer {wl + 1}, head {wh + 1}: {table['on_last_space'][wl, wh]:.2f} of the weight on the most "
             f"recent space (␣), over the validation windows", fontsize=9)
fig.tight_layout()
savefig(fig, "inference_word_start_head.png")
if not QUICK:   # the claims above, on the model chapter 2 trains; quick mode's model is too small to hold them
    assert table["on_last_space"][wl, wh] > 3 * stats[0]["space_fraction"][0]
    assert table["entropy"][wl, wh] == table["entropy"].min()
    assert table["previous"].max() < 0.5
    assert table["same_token"].max() < 2 * stats[0]["same_token_chance"][0]
    assert table["distance"][-1].min() > table["distance"][0].max()
    assert np.all(table["on_spaces"][-1] < stats[0]["space_fraction"][0])
    assert table["first"].max() < 0.05

# %% [markdown]
# ## Summary
#
# - Inference is the material's three steps, but step 2 is a loop: one forward pass per generated token.
# - The decoding strategy is part of the model's behaviour: greedy loops, pure sampling wanders, top-k and top-p
#   cut the unreliable tail; beam search needs a length penalty or it prefers short outputs.
# - The KV cache turns each step from a pass over the whole sequence into a pass over one token. It is exact: in
#   float64 the cached logits equal the full recomputation to round-off at every step, also for left-padded
#   batches, provided the pads are masked and positions are counted per row.
# - A trained model leaves the notebook as a command (`python -m reference.generate`) and as a Hugging Face folder
#   (`python -m reference.export`) from which `transformers` generates the same text.
#
# ## Exercises
#
# Worked solutions: `chapters/solutions/04_inference.py` (checked by `tests/book/test_solutions_04.py`).
#
# 1. **Cache memory.** Write the number of bytes of a KV cache for a batch of $B$ sequences of $T$ tokens as a
#    function of the GPT config and the dtype, and check it against the arrays of a real `KVCache`. How large is the
#    cache of this chapter's model for 32 sequences filling its context, in float32?
# 2. **Three roads to greedy.** Show that `top_k=1`, `top_p` close to 0, and a temperature close to 0 all give
#    the greedy tokens. Which of the three can still disagree with greedy decoding, and when?
# 3. **Min-p sampling.** Write a filter that keeps the tokens whose probability is at least
#    $p_{min} \cdot \max_i p_i$ (Nguyen et al. 2024). Show that it always keeps the most likely token, that
#    $p_{min} \to 0$ keeps everything and $p_{min} = 1$ only the argmax (and its ties), and explain how it differs
#    from top-p when the model is sure and when it is not.
