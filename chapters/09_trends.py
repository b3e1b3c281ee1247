# %% [markdown]
# # 9. Trends and challenges
#
# The material's §5 (未来发展趋势与挑战, "future trends and challenges") is two lists without a number in them:
#
# > 1. 模型规模的扩大：随着计算能力和存储技术的提升，大模型的规模将继续扩大，从而提高模型性能。
# >
# > "Growing scale: as compute and storage improve, large models will keep growing, and so perform better."
#
# > 1. 计算资源：大模型的训练和推理需要大量的计算资源，这将限制其应用范围。 ...
# > 4. 模型稳定性：大模型在训练和推理过程中可能出现梯度爆炸、梯度消失等问题，影响模型性能。
# >
# > "Compute: training and inference need a lot of it, which limits where large models can be used. ...
# > Stability: during training and inference, large models may suffer from exploding and vanishing gradients and
# > similar problems, which hurts their performance."
#
# The second item has an error: gradients are computed only in training. Inference runs the forward pass alone
# (chapter 4), so no gradient can explode or vanish there; what can go wrong at inference is the forward
# signal itself, activations that overflow a narrow number format (float16's largest value is 65504). The
# measurements below are all of training.
#
# Three of these claims can be measured on a laptop-sized model, and this chapter measures them: gradients through
# depth at initialisation for five ways of wiring a deep Transformer (9.1), what gradient clipping does to a run
# with a too-large learning rate (9.2), how the validation loss falls with model size at a fixed token budget (9.3),
# and how the compute formula of chapter 1, $C \approx 6ND$, compares with the time the runs took (9.4). The other
# items of the lists (transfer, self-supervision, interpretability, privacy) are pointed to in 9.5, with no claim
# that this book does not measure.
#
# | what | code |
# |---|---|
# | five wirings of a deep stack, forward and backward, gradient norms by layer | `reference/studies/depth.py`, `tests/studies/test_depth.py` |
# | a timed training run (clipping optional), the power-law fit | `reference/studies/scaling_law.py`, `tests/studies/test_scaling_law.py` |
# | the GPT, the optimizers, clipping, the compute formula | `reference/models/gpt.py`, `reference/training/optim.py`, `reference/studies/counting.py` |
# | the corpus and its tokenizer (KJV Bible, characters) | `reference/training/data.py`, `reference/train.py` (`build_data`) |

# %%
import os

# One BLAS thread: 9.4 measures what one core achieves, not how busy the other core is.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time  # noqa: E402
import warnings  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

from book import QUICK, glue, machine_load, savefig  # noqa: E402
from reference import train  # noqa: E402
from reference.models import gpt
from reference.studies import counting, depth, scaling_law

print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 9.1 Vanishing and exploding gradients through depth
#
# A block holds two sublayers, self-attention and the FFN (chapter 6). `reference/studies/depth.py` wraps each sublayer $S$
# in one of five ways:
#
# | variant | one sublayer | backward $dx$ | |
# |---|---|---|---|
# | `plain` | $y = S(x)$ | $J_S^\top dy$ | no skip, no norm |
# | `ln` | $y = \mathrm{LN}(S(x))$ | $J_S^\top J_{LN}^\top dy$ | a norm, no skip (like the material's §3.3) |
# | `residual` | $y = x + S(x)$ | $dy + J_S^\top dy$ | a skip, no norm |
# | `post_ln` | $y = \mathrm{LN}(x + S(x))$ | $(I + J_S)^\top J_{LN}^\top dy$ | the paper |
# | `pre_ln` | $y = x + S(\mathrm{LN}(x))$ | $dy + J_{LN}^\top J_S^\top dy$ | GPT-2 and most models since |
#
# Through $L$ blocks these Jacobians multiply. LayerNorm's Jacobian divides by the standard deviation of its input,
# so it cancels whatever scale the sublayer gave the signal; the skip's identity gives the gradient a path that no
# product touches. What these do together is easier to measure than to guess. At initialisation, with an input
# $x_0 \sim \mathcal N(0, 1)$ and a fixed random gradient $G$ arriving at the top, `gradient_norms_by_layer` returns
# $\|\partial \ell / \partial x_l\|$ at every block's input and the norm of every block's parameter gradients.
# The post-LN and pre-LN blocks are the encoder layer of `reference/models/layers.py`, operation for operation
# (`tests/studies/test_depth.py` checks both against it, and every variant against finite differences).
#
# Two initialisations: Xavier (every matrix $\mathcal N(0, 2/(n_{in}+n_{out}))$, as common implementations of the
# original Transformer) and GPT-2's (std 0.02; the projections into the residual stream 0.02/$\sqrt{2L}$).

# %%
WIDTH, DEPTH = (32, 12) if QUICK else (64, 24)
SEEDS = range(1) if QUICK else range(3)
DEPTHS = (4, 8, 12) if QUICK else (6, 12, 24, 48)


def by_layer(variant, init_scheme, depth_=DEPTH, width=WIDTH):
    """Median over seeds of the gradient norms by layer (activations, parameters) and the forward rms."""
    runs = [depth.gradient_norms_by_layer(variant, depth_, width, np.random.default_rng(s), init_scheme=init_scheme)
            for s in SEEDS]
    return {k: np.median([r[k] for r in runs], axis=0) for k in runs[0]}


norms = {(v, i): by_layer(v, i) for i in depth.INITS for v in depth.VARIANTS}
print(f"depth {DEPTH}, width {WIDTH}, B=4, T=16; median of {len(SEEDS)} seed(s)")
print(f"{'init':>6} {'variant':>9} {'|dx_0|/|dx_L|':>14} {'|dW| first/last':>16} {'rms of x_L':>11}")
for (v, i), r in norms.items():
    a, p = r["activation"], r["params"]
    print(f"{i:>6} {v:>9} {a[0] / a[-1]:>14.3g} {p[0] / p[-1]:>16.3g} {r['forward_rms'][-1]:>11.3g}")

ratio = {k: r["activation"][0] / r["activation"][-1] for k, r in norms.items()}
assert ratio["plain", "xavier"] < 1e-3 and ratio["residual", "xavier"] > 1e2
assert all(1e-2 < ratio[v, "xavier"] < 1e2 for v in ("ln", "post_ln", "pre_ln"))
assert all(abs(ratio[v, "gpt2"] - 1) < 0.2 for v in ("residual", "post_ln", "pre_ln"))
assert ratio["plain", "gpt2"] < 1e-30
gpt2_ratios = [ratio[v, "gpt2"] for v in ("residual", "post_ln", "pre_ln")]
glue("gpt2_ratio_min", f"{min(gpt2_ratios):.2f}")
glue("gpt2_ratio_max", f"{max(gpt2_ratios):.2f}")
glue("gpt2_ln_rms", f"{norms['ln', 'gpt2']['forward_rms'][-1]:.2f}")

# %% [markdown]
# How the ratio between the input's gradient and the top's grows or shrinks with depth (Xavier init):

# %%
vs_depth = {v: [by_layer(v, "xavier", d, 32)["activation"] for d in DEPTHS] for v in depth.VARIANTS}
print("|dx_0| / |dx_L| at width 32, Xavier init")
print(f"{'depth':>9} " + " ".join(f"{d:>9}" for d in DEPTHS))
for v, rows in vs_depth.items():
    print(f"{v:>9} " + " ".join(f"{a[0] / a[-1]:>9.2g}" for a in rows))
post_ratios = [a[0] / a[-1] for a in vs_depth["post_ln"]]
pre_ratios = [a[0] / a[-1] for a in vs_depth["pre_ln"]]
glue("postln_min", f"{min(post_ratios):.1f}")
glue("postln_max", f"{max(post_ratios):.1f}")
glue("preln_first", f"{pre_ratios[0]:.1f}")
glue("preln_last", f"{pre_ratios[-1]:.0f}")
glue("depth_first", str(DEPTHS[0]))
glue("depth_last", str(DEPTHS[-1]))

colors = dict(zip(depth.VARIANTS, ["tab:gray", "tab:purple", "tab:red", "tab:blue", "tab:green"]))
markers = dict(zip(depth.VARIANTS, "osD^v"))
fig, ax = plt.subplots(1, 3, figsize=(15, 4.4))
for k, init_scheme in enumerate(depth.INITS):
    # The axis spans the curves that stay within 1e-6 of the top (x2 margin); one that falls further (plain under
    # GPT-2's init reaches ~1e-119) would squash the others onto one line, so it leaves the axis with its value noted.
    curves = {v: norms[v, init_scheme]["activation"] / norms[v, init_scheme]["activation"][-1] for v in depth.VARIANTS}
    kept = np.concatenate([c for c in curves.values() if c.min() >= 1e-6])
    ax[k].set_ylim(kept.min() / 2, kept.max() * 2)
    for v, c in curves.items():
        ax[k].semilogy(np.arange(DEPTH + 1), c, "-", marker=markers[v], ms=4, color=colors[v], label=v)
        if c.min() < kept.min() / 2:
            ax[k].annotate(f"{v}: {c[0]:.0e} at the input, off the axis", (0.02, 0.04), xycoords="axes fraction",
                           fontsize=8, color=colors[v])
    ax[k].set_xlabel("block l (0 = input, L = top)")
    ax[k].set_ylabel(r"$\|\partial\ell/\partial x_l\|\ /\ \|\partial\ell/\partial x_L\|$")
    ax[k].set_title(f"{init_scheme} init, depth {DEPTH}, width {WIDTH}")
    ax[k].grid(alpha=0.3)
ax[0].legend(fontsize=8)
for v in depth.VARIANTS:
    ax[2].loglog(DEPTHS, [a[0] / a[-1] for a in vs_depth[v]], "-", marker=markers[v], color=colors[v], label=v)
ax[2].set_xticks(DEPTHS)
ax[2].xaxis.set_major_formatter(ScalarFormatter())
ax[2].xaxis.set_minor_formatter(NullFormatter())
ax[2].set_xlabel("depth L (blocks)")
ax[2].set_ylabel("gradient at the input / at the top")
ax[2].set_title("Xavier init, width 32: through depth")
ax[2].grid(alpha=0.3, which="both")
fig.tight_layout()
savefig(fig, "trends_gradient_norms.png")

# %% [markdown]
# What the measurement shows:
#
# - **`plain` vanishes, geometrically.** Each block multiplies the gradient by about a half under Xavier init (the
#   ReLU zeroes half of the FFN's units; attention with near-uniform weights averages the positions), so
#   $\|dx_0\|$ falls by orders of magnitude in a few dozen blocks. Under GPT-2's small init it falls by about
#   $10^{-5}$ per block, and in float32 the gradient at the input is exactly 0 after 24 blocks
#   (`tests/studies/test_depth.py` checks it): no learning rate can recover it.
# - **`residual` without a norm explodes.** $x + S(x)$ adds variance in every sublayer, the forward signal grows
#   geometrically and the gradient with it: $\|dx_0\|$ is many orders of magnitude larger than the top's.
# - **With LayerNorm, neither.** `ln`, `post_ln` and `pre_ln` keep $\|dx_0\|/\|dx_L\|$ within an order of
#   magnitude at every depth measured. The `ln` wiring shows that it is the norm, not the skip, that
#   stops the vanishing: LN divides by the std of its input, so a sublayer that shrinks the signal has its
#   shrinkage divided out, in the backward pass too. It does not keep the information, though: without a skip,
#   attention's averaging makes all positions alike (chapter 6.7 measures it), while the gradient's size looks
#   healthy. A healthy gradient norm is necessary, not sufficient.
# - **post-LN vs pre-LN.** In `post_ln` the ratio stays between about {{postln_min}} and {{postln_max}} at every depth
#   measured, with no trend. In `pre_ln` the gradient grows towards the input, and more so the deeper the stack (about
#   {{preln_first}} at depth {{depth_first}}, {{preln_last}} at depth {{depth_last}}): the residual stream grows with depth, and every LN divides its gradient by the stream's std at
#   that depth, so the lower blocks, where the stream is smaller, receive more. Neither ratio alone says how well
#   a stack trains: Xiong et al. (2020) explain post-LN's need for a learning-rate warm-up by the scale of the
#   gradients of the parameters near the output at init, together with the learning rate (measured next).
# - **GPT-2's init makes every residual wiring the identity at init.** Sublayers with std-0.02 weights add almost
#   nothing, the skip carries the gradient unchanged (ratios {{gpt2_ratio_min}} to {{gpt2_ratio_max}}), and the scaled residual projections keep it so as
#   depth grows. The `ln` wiring is the exception under this init: its sublayers' outputs are so small that LN's
#   $\epsilon = 10^{-5}$ is not negligible beside their variance, and LN no longer fully renormalises (the rms of
#   $x_L$ is {{gpt2_ln_rms}}, not 1).
#
# ### Why post-LN needs a warm-up: the gradient of the top layers
#
# The ratios above show no vanishing through post-LN's LayerNorms at initialisation, so they cannot be why the
# paper's post-LN Transformer needs a learning-rate warm-up. Xiong et al. (2020, "On Layer Normalization in the
# Transformer Architecture") locate the difference elsewhere: in the gradient of the *parameters* of the last
# layers. At initialisation they bound it by $O(d\sqrt{\ln d})$ for post-LN, whatever the depth, and by
# $O(d\sqrt{\ln d / L})$ for pre-LN, where every block's contribution to the output is one of $L$ terms added to
# the residual stream before the final LayerNorm. A large learning rate from the first step then moves post-LN's top
# layers by a large step; a warm-up keeps those first steps small, and pre-LN can do without it. The prediction is a
# number we can check: the norm of the last block's parameter gradients as the stack deepens.

# %%
last = {v: [by_layer(v, "xavier", d, 32)["params"][-1] for d in DEPTHS] for v in ("post_ln", "pre_ln")}
print("norm of the last block's parameter gradients (Xavier init, width 32, median over seeds)")
print(f"{'depth':>9} " + " ".join(f"{d:>7}" for d in DEPTHS) + f" {'deepest / shallowest':>21}")
for v, g in last.items():
    print(f"{v:>9} " + " ".join(f"{x:>7.0f}" for x in g) + f" {g[-1] / g[0]:>21.2f}")
print(f"1/sqrt(L) from depth {DEPTHS[0]} to {DEPTHS[-1]}: {np.sqrt(DEPTHS[0] / DEPTHS[-1]):.2f}")

fig, ax = plt.subplots(figsize=(6, 3.8))
for v, g in last.items():
    ax.loglog(DEPTHS, g, "o-", color=colors[v], label=v)
ref = np.array(DEPTHS, dtype=float)
ax.loglog(ref, last["pre_ln"][0] * np.sqrt(ref[0] / ref), "k:", lw=1, label=r"$\propto 1/\sqrt{L}$")
ax.set_xticks(DEPTHS)
ax.xaxis.set_major_formatter(ScalarFormatter())
ax.xaxis.set_minor_formatter(NullFormatter())
ax.set_xlabel("depth L (blocks)")
ax.set_ylabel("|gradient of the last block's parameters|")
ax.set_title("At init, post-LN's top-layer gradient does not shrink with depth", fontsize=10)
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=8)
fig.tight_layout()
savefig(fig, "trends_last_block_gradients.png")
if not QUICK:   # Xiong et al.'s prediction, on these stacks
    assert last["pre_ln"][-1] / last["pre_ln"][0] < 0.5 and last["post_ln"][-1] / last["post_ln"][0] > 0.8
    assert abs(last["pre_ln"][-1] / last["pre_ln"][0] / np.sqrt(DEPTHS[0] / DEPTHS[-1]) - 1) < 0.3   # "close to"
glue("last_pre_ratio", f"{last['pre_ln'][-1] / last['pre_ln'][0]:.2f}")
glue("last_post_ratio", f"{last['post_ln'][-1] / last['post_ln'][0]:.2f}")
glue("last_sqrt_ratio", f"{np.sqrt(DEPTHS[0] / DEPTHS[-1]):.2f}")

# %% [markdown]
# Pre-LN's last block gets a gradient that falls close to $1/\sqrt{L}$ as the stack deepens (by a factor
# {{last_pre_ratio}} from {{depth_first}} to {{depth_last}} blocks, against {{last_sqrt_ratio}} for $1/\sqrt{L}$);
# post-LN's does not fall (a factor {{last_post_ratio}}). This is the measurement chapter 6.7 points to, and it is the
# one that agrees with Xiong et al.: post-LN's need for a warm-up comes from the size of the top layers' gradients at
# the start (which the learning rate multiplies), not from the gradient vanishing on its way down. Chapter 2 lists the
# other explanations of warm-up that have been proposed (Adam's early second-moment estimates among them); they are
# not exclusive.
#
# ## 9.2 Gradient clipping against a too-large learning rate
#
# Global-norm clipping (`optim.clip_grad_norm`, chapter 2) rescales all gradients together when their norm exceeds
# $\tau$: $g \leftarrow g \cdot \min(1, \tau/\|g\|)$. It bounds the step of SGD, which is proportional to $\|g\|$.
# Adam divides each coordinate by a running root-mean-square of its own gradient, so a constant factor on the gradient
# cancels (exercise 1); only steps clipped harder than their neighbours change its update. Four runs of the same GPT
# (2 blocks, $d = 64$, 4 heads, $T = 64$, $B = 16$, character tokens of the KJV), the same batches, a constant
# learning rate with no warm-up, with and without clipping at $\tau = 1$:

# %%
tokenizer, train_ids, val_ids = train.build_data({"tokenizer": "char", "block_size": 64, "bpe_vocab": 0})
print(f"KJV: {train_ids.size:,} training and {val_ids.size:,} validation characters, vocabulary {tokenizer.vocab_size}")
clip_config = gpt.GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=4, d_model=64)
CLIP_STEPS = 25 if QUICK else 300
clip_runs = {}
for opt, lr in (("sgd", 1.0), ("adamw", 0.1)):
    for clip in (None, 1.0):
        with warnings.catch_warnings():   # the unclipped SGD run overflows on its way to NaN (in worker threads too)
            warnings.simplefilter("ignore", RuntimeWarning)
            clip_runs[opt, clip] = scaling_law.train_run(clip_config, train_ids, val_ids, CLIP_STEPS, 16, lr,
                                                     optimizer=opt, min_lr_ratio=1.0, grad_clip=clip,
                                                     eval_batches=4 if QUICK else 8)
print(f"{'optimizer':>9} {'lr':>5} {'clip':>5} {'diverged at':>11} {'max |g|':>10} {'last train loss':>15} "
      f"{'val loss':>8}")
for (opt, clip), r in clip_runs.items():
    lr = 1.0 if opt == "sgd" else 0.1
    val = f"{r['val'][-1][1]:.3f}" if r["val"] else "-"
    print(f"{opt:>9} {lr:>5} {str(clip):>5} {str(r['diverged_at']):>11} {max(r['grad_norm']):>10.3g} "
          f"{np.mean(r['train_loss'][-10:]):>15.4g} {val:>8}")

assert clip_runs["sgd", None]["diverged_at"] is not None
sgd_clipped = clip_runs["sgd", 1.0]
assert sgd_clipped["diverged_at"] is None and sgd_clipped["val"][-1][1] < sgd_clipped["train_loss"][0] - 1.0
assert all(clip_runs["adamw", c]["diverged_at"] is None for c in (None, 1.0))
adamw_gap = clip_runs["adamw", 1.0]["val"][-1][1] - clip_runs["adamw", None]["val"][-1][1]
glue("adamw_clip_gap", f"{abs(adamw_gap):.2f} nats {'higher' if adamw_gap > 0 else 'lower'}")

fig, ax = plt.subplots(1, 2, figsize=(12, 4))
for k, (opt, lr) in enumerate((("sgd", 1.0), ("adamw", 0.1))):
    for clip, color in ((None, "tab:red"), (1.0, "tab:blue")):
        r = clip_runs[opt, clip]
        label = "no clipping" if clip is None else f"clip at {clip}"
        if r["diverged_at"]:
            label += f" (loss NaN at step {r['diverged_at']})"
        plot = ax[k].semilogy if opt == "sgd" else ax[k].plot     # SGD's diverging loss needs a log scale
        plot(np.arange(1, len(r["train_loss"]) + 1), r["train_loss"], color=color, lw=1, label=label)
    ax[k].set_xlabel("step")
    ax[k].set_ylabel("training loss (nats per character)" + (", log scale" if opt == "sgd" else ""))
    ax[k].set_title(f"{opt.upper() if opt == 'sgd' else 'AdamW'}, constant lr {lr}, no warm-up")
    ax[k].grid(alpha=0.3, which="both")
    ax[k].legend(fontsize=8)
fig.tight_layout()
savefig(fig, "trends_clipping.png")

# %% [markdown]
# Without clipping, SGD at this rate takes a step large enough to raise the loss, which raises the gradient, which
# makes the next step larger: the gradient norm grows by many orders of magnitude and the loss becomes NaN within a
# few dozen steps. Clipped, the same rate trains, since the step is at most $\eta\tau$. For AdamW the two curves are
# close (its per-coordinate steps stay near $\eta$ whatever the gradient's size), and at this rate clipping
# does not rescue or improve the run (the clipped run's validation loss ended {{adamw_clip_gap}}): what Adam needs against a
# too-large rate is a smaller rate or a warm-up. In practice clipping with Adam guards against rare spikes:
# chapter 2's training run clips at 1 and logs how often it fires.
#
# ## 9.3 Validation loss against model size, at one token budget
#
# Kaplan et al. (2020) measured that, with data and compute not the bottleneck, the test loss falls as a power law
# in the number of non-embedding parameters: $L(N) \approx (N_c/N)^{\alpha_N}$ with $\alpha_N \approx 0.076$, a
# straight line on log-log axes. Here, a small version: GPTs of five sizes, each trained on the **same number of
# tokens** (the same steps, batch and context), the same learning-rate schedule, and their validation loss on the
# held-out end of the New Testament. `scaling_law.fit_power_law` fits $\log L = a + b \log N$ by least squares.

# %%
SIZES = [(1, 32, 2), (2, 48, 4)] if QUICK else [(1, 32, 2), (2, 48, 4), (3, 64, 4), (4, 80, 4), (4, 112, 4)]
SWEEP_STEPS, BATCH, CONTEXT, LR = (30, 16, 64, 3e-3) if QUICK else (300, 16, 64, 3e-3)
budget, WARMUP = SWEEP_STEPS * BATCH * CONTEXT, min(30, SWEEP_STEPS // 4)
print(f"token budget per model: {SWEEP_STEPS} steps x {BATCH} x {CONTEXT} = {budget:,} characters "
      f"({budget / train_ids.size:.1%} of an epoch); AdamW, lr {LR}, warm-up {WARMUP}, cosine to 10 %")
sweep = []
for L, d, H in SIZES:
    config = gpt.GPTConfig(vocab_size=tokenizer.vocab_size, block_size=CONTEXT, n_layer=L, n_head=H, d_model=d)
    r = scaling_law.train_run(config, train_ids, val_ids, SWEEP_STEPS, BATCH, LR, warmup=WARMUP,
                          eval_every=SWEEP_STEPS // 2, eval_batches=4 if QUICK else 16)
    n_embed = r["params"]["wte"].size + r["params"]["wpe"].size
    sweep.append({"L": L, "d": d, "N": r["n_params"] - n_embed, "n_matmul": r["n_matmul"], "tokens": r["tokens"],
                  "seconds": r["seconds"], "val": r["val"][-1][1], "val_mid": r["val"][0][1], "config": config})
    print(f"L={L} d={d:>3}: N = {sweep[-1]['N']:>8,} non-embedding parameters, val loss {sweep[-1]['val_mid']:.4f} "
          f"at step {r['val'][0][0]}, {sweep[-1]['val']:.4f} at the end")
N = np.array([s["N"] for s in sweep], dtype=float)
val_loss = np.array([s["val"] for s in sweep])
a, b, r2 = scaling_law.fit_power_law(N, val_loss)
print(f"fit: L(N) = {np.exp(a):.3f} * N^({b:.4f}),  alpha_N = {-b:.4f},  R^2 = {r2:.3f}")
if not QUICK:
    assert b < 0 and r2 > 0.8
    assert all(s["val"] < s["val_mid"] for s in sweep)   # still learning at the end of the budget

fig, ax = plt.subplots(figsize=(6.5, 4.2))
ax.loglog(N, val_loss, "o", ms=7, label="measured")
grid = np.geomspace(N.min() / 1.5, N.max() * 1.5, 50)
ax.loglog(grid, scaling_law.power_law(grid, a, b), "--", label=rf"fit $L \propto N^{{{b:.3f}}}$ ($R^2$ = {r2:.2f})")
for s in sweep:
    ax.annotate(f"L={s['L']}, d={s['d']}", (s["N"], s["val"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
ax.set_xlabel("non-embedding parameters N")
ax.set_ylabel("validation loss (nats per character)")
ax.yaxis.set_major_formatter(ScalarFormatter())
ax.yaxis.set_minor_formatter(ScalarFormatter())
ax.set_title(f"Bigger is better at a fixed budget ({budget:,} tokens per model)", fontsize=10)
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=8)
savefig(fig, "trends_scaling.png")

# %% [markdown]
# ## 9.4 Compute: $6ND$ against the clock
#
# Chapter 1's estimate: training costs $C \approx 6ND$ FLOPs (2 per parameter per token forward, 4 backward). For
# these small models the tied output head is a real matmul per token, so $N$ here counts the blocks and the head
# (`scaling_law.matmul_params`); attention's scores and weighted sum add $6 \cdot 2LTd \cdot \tfrac12$ per token under a
# causal mask (`counting.flops_per_token`), a visible share at $d = 32$ with $T = 64$. The achieved rate is $C$ over
# the measured wall time of the training steps (evaluation excluded). The machine: one BLAS thread on a 2-core CPU
# that was shared with other jobs while this ran (its load average is printed), NumPy float32. The next cell and its
# figure are measurements of the machine that built this book: their numbers change from build to build.

# %% tags=["measurement"]
for s in sweep:
    shape = counting.DecoderShape(n_layer=s["L"], d_model=s["d"], n_head=s["config"].n_head, n_ctx=CONTEXT,
                               vocab_size=tokenizer.vocab_size)
    s["C_6ND"] = counting.training_flops(s["n_matmul"], s["tokens"])
    s["C_attn"] = 3 * counting.flops_per_token(shape, n_params=s["n_matmul"]) * s["tokens"]
    s["rate"] = s["C_6ND"] / s["seconds"]
print(f"{'L':>2} {'d':>4} {'N (matmul)':>11} {'6ND':>9} {'+attention':>11} {'seconds':>8} {'GFLOP/s (6ND)':>14}")
for s in sweep:
    print(f"{s['L']:>2} {s['d']:>4} {s['n_matmul']:>11,} {s['C_6ND']:>9.3g} {s['C_attn']:>11.3g} {s['seconds']:>8.1f} "
          f"{s['rate'] / 1e9:>14.2f}")
rate = float(np.median([s["rate"] for s in sweep]))

n_mm = 256 if QUICK else 512
A_ = np.random.default_rng(0).standard_normal((n_mm, n_mm)).astype(np.float32)
trials = []
for _ in range(7):                  # the best of 7 trials: the other jobs on the machine only ever slow a trial down
    t0 = time.perf_counter()
    for _ in range(10):
        A_ @ A_
    trials.append(time.perf_counter() - t0)
matmul_rate = 10 * 2 * n_mm ** 3 / min(trials)
print(f"median achieved rate: {rate / 1e9:.2f} GFLOP/s; a {n_mm}x{n_mm} float32 matmul (best of 7): "
      f"{matmul_rate / 1e9:.1f} GFLOP/s; the training steps reach {rate / matmul_rate:.0%} of it")
print(machine_load())
gpt3 = 3.14e23
print(f"at {rate / 1e9:.1f} GFLOP/s, GPT-3's 3.14e23 training FLOPs would take {gpt3 / rate / 3.156e7:,.0f} years")

fig, ax = plt.subplots(figsize=(6.5, 4.2))
C = np.array([s["C_6ND"] for s in sweep])
ax.loglog(C, [s["seconds"] for s in sweep], "o", ms=7, label="measured wall time")
cgrid = np.geomspace(C.min() / 1.5, C.max() * 1.5, 50)
ax.loglog(cgrid, cgrid / rate, "--", label=f"6ND at {rate / 1e9:.1f} GFLOP/s (median)")
ax.set_xlabel("training compute 6ND (FLOPs)")
ax.set_ylabel("training time (s)")
ax.set_title(f"Compute predicts time, up to the achieved rate\n(measured on the build machine, load "
             f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", fontsize=10)
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=8)
savefig(fig, "trends_compute_time.png")

# %% [markdown]
# What the sweep shows, and what it does not:
#
# - The loss falls steadily with size at a fixed budget, and a line fits it on log-log axes. The exponent is much
#   smaller than Kaplan et al.'s 0.076. These runs are far from converged (a fraction of one epoch, and every
#   model's validation loss was still falling between the middle and the end of its run), so most of each loss is
#   what no model of this budget removes, and a pure power law has no term for it. Exercise 2 fits one with a
#   floor, $L = E + AN^b$.
# - Kaplan's law holds when data is not the bottleneck. At a fixed token budget a larger model is eventually
#   *worse* for the same compute than a smaller one trained longer: the compute-optimal split (Hoffmann et al. 2022,
#   about 20 tokens per parameter, chapter 1's exercise 2) gives these sizes 0.25 M to 12 M tokens, and the budget
#   here is below that for every model but the smallest.
# - Time follows $6ND$ only up to the achieved rate, and the rate is not a constant: small matmuls and the
#   per-step Python overhead (LayerNorm, softmax, the optimizer's loop over arrays) waste a larger share of the time
#   of small models, and a shared machine adds noise. The rate reached is a fraction of what one large matmul
#   reaches on the same cores; measured against the hardware's peak, that fraction is the model FLOP utilisation
#   (MFU) that large training runs report (PaLM: 46 %, Chowdhery et al. 2022).
#
# ## 9.5 The other trends and challenges of §5
#
# | material | what it means | in this book | further reading |
# |---|---|---|---|
# | 跨领域知识迁移 (transfer across domains) | a model pre-trained on broad text is reused for tasks it was not trained for | chapter 8 uses MiniLM's pre-trained sentence embeddings for extractive summaries | Radford et al. 2018 (GPT-1); Devlin et al. 2018 (BERT) |
# | 自主学习和无监督学习 (self-supervised learning) | the labels come from the data: the next token | every GPT here trains on raw text with no labels (chapter 2, and 9.2–9.3 above) | Radford et al. 2019 (GPT-2) |
# | 模型解释性 (interpretability) | why a model produced its output | chapter 8 draws attention maps (`worked_attention.png`); attention weights are not by themselves explanations | Jain & Wallace 2019; Elhage et al. 2021 (transformer circuits) |
# | 数据隐私 (data privacy) | a model can reproduce parts of its training data | not measured in this book | Carlini et al. 2021 (extracting training data); Abadi et al. 2016 (DP-SGD clips *each example's* gradient and adds noise) |
# | 计算资源 (compute) | training and inference cost | chapter 1 (6ND, memory), 9.4, chapter 3 (pruning, quantization, distillation), chapter 4 (the KV cache) | Kaplan et al. 2020; Hoffmann et al. 2022 |
# | 模型稳定性 (stability) | exploding and vanishing gradients | 9.1, 9.2, chapter 2 (initialisation, clipping) | Xiong et al. 2020 (post-LN vs pre-LN); Pascanu et al. 2013 (clipping) |
#
# ## Exercises
#
# 1. Show that Adam's first update is $-\eta\,\mathrm{sign}(g)$ when $\epsilon = 0$, whatever the gradient's scale,
#    and that multiplying every step's gradient by the same constant leaves Adam's updates unchanged. Why, then,
#    did clipping hardly change the AdamW run of 9.2, and when does it change Adam's update at all?
# 2. The fit of 9.3 has no floor. Fit $L(N) = E + A N^{b}$ instead (a grid over $E$, then the line of
#    `scaling_law.fit_power_law` on $L - E$), check on synthetic data that it recovers $E$, $A$ and $b$, and apply it to
#    the sweep. Why are three parameters from five points loosely determined?
# 3. At the rate measured in 9.4, how long would one epoch of the KJV (3.7 M characters) take for a
#    0.5 M-parameter model, and how long would GPT-3's 3.14e23 training FLOPs take on this machine?
#
# Worked solutions: `chapters/solutions/09_trends.py` (checked by `tests/book/test_solutions_09.py`).
