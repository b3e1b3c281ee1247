# %% [markdown]
# # 7. From equations to kernels
#
# The material says where large models run, and nothing about how:
#
# > 大模型的推理通常需要高性能计算设备，如GPU和TPU，以便在合理的时间内完成计算。
# > (§2.3)
# >
# > "Inference with large models usually needs high-performance computing devices such as GPUs and TPUs, so that
# > the computation finishes in a reasonable time."
#
# That is true, and a GPU is not fast by itself. On a GPU, a matrix product is cheap; moving a large array through
# its memory (HBM) is expensive. A kernel is fast when it does many operations for each byte that it reads. This
# chapter takes three equations from chapter 6 and follows each one from NumPy to a Triton GPU kernel. At each step
# it checks the new version against the one before:
#
# 1. **attention**: the naive equation, which builds the $T \times T$ matrix; the same equation computed one block
#    at a time with an online softmax in NumPy; then the FlashAttention kernel, which runs that blocked algorithm;
# 2. **LayerNorm**: one row per program, and a backward pass whose $d\gamma, d\beta$ is a two-stage reduction;
# 3. **the FFN**: a tiled matrix product whose *epilogue* (the code that runs after the product) also adds the bias
#    and applies the activation.
#
# | what | NumPy twin | Triton kernel | checks |
# |---|---|---|---|
# | attention, naive and blocked (online softmax) | `reference/ops/attention.py` (`forward`, `backward`, `forward_blocked`, `backward_blocked`, `peak_memory`) | `kernels/attention.py` (`flash_attention`) | `tests/ops/test_attention.py`, `tests/kernels/test_attention_triton.py` |
# | LayerNorm | `reference/ops/layernorm.py` | `kernels/layernorm.py` (`layer_norm`) | `tests/ops/test_layernorm.py`, `tests/kernels/test_layernorm_triton.py` |
# | FFN with a fused epilogue | `reference/ops/ffn.py` | `kernels/ffn.py` (`fused_ffn`) | `tests/ops/test_ffn.py`, `tests/kernels/test_ffn_triton.py` |
# | host-side checks, interpreter settings | — | `kernels/_common.py` | the tests above |
# | benchmarks | `bench/ops.py` (CPU) | `bench/kernels.py` (GPU) | `make bench` |
#
# **Where the kernels run here.** This notebook runs every Triton kernel in Triton's *interpreter*
# (`TRITON_INTERPRET=1`). The interpreter executes the kernel's Python source on the CPU with NumPy, one program
# after another. On a CUDA GPU the same source compiles to native code. The interpreter is for checking correctness,
# not for measuring speed: it is far slower than a GPU, and slower even than plain NumPy, so nothing here says
# anything about how fast the kernels are. The shapes are tiny to keep the interpreter's run short. They are
# chosen so that every sequence length leaves a ragged last block.

# %%
import inspect
import json
import os
import textwrap

os.environ.setdefault("TRITON_INTERPRET", "1")   # before any kernel is imported: run them in the CPU interpreter

import matplotlib.pyplot as plt
import numpy as np
import torch
import triton

from book import QUICK, ROOT, savefig
from kernels import attention as k_attention
from kernels import ffn as k_ffn
from kernels import flash_attention, fused_ffn, layer_norm
from kernels import _common as k_common
from kernels import layernorm as k_layernorm
from reference.gradcheck import rel_error
from reference.ops import activations, attention, ffn, layernorm

np.set_printoptions(precision=4, suppress=True)
rng = np.random.default_rng(0)
print("quick mode" if QUICK else "full mode", "| Triton", triton.__version__,
      "| interpreter" if os.environ["TRITON_INTERPRET"] == "1" else "| native")

# Kernel (float32) against the float64 NumPy reference computed from the same float32 inputs, as in
# tests/kernels/triton_checks.py: float32 unit roundoff is 6e-8, and sums of a few hundred float32 terms in any order
# stay below ~1e-6, so 1e-5 leaves a 10x margin, while a wrong term, mask or rescale factor gives 1e-2 or worse.
KERNEL_RTOL = 1e-5
# Two float64 algorithms for one function (naive vs blocked): round-off ~1e-15 after a few hundred additions in a
# different order, so 1e-12 leaves room for that and nothing else.
F64_RTOL = 1e-12


def as_torch(a, requires_grad=False):
    """A float32 CPU tensor holding ``a`` (the interpreter runs on CPU tensors)."""
    return torch.tensor(a, dtype=torch.float32, requires_grad=requires_grad)


def as64(t):
    """A torch tensor as a float64 NumPy array: the exact float32 values, for the float64 reference."""
    return t.detach().to(torch.float64).numpy()


def source(obj, first, last):
    """The source lines of ``obj`` (a Python function or a Triton kernel) from the first line that contains
    ``first`` to the next one that contains ``last``, dedented."""
    while hasattr(obj, "fn"):                    # Autotuner -> JITFunction (or InterpretedFunction) -> function
        obj = obj.fn
    lines = inspect.getsource(obj).splitlines()
    i = next(n for n, line in enumerate(lines) if first in line)
    j = next(n for n in range(i, len(lines)) if last in lines[n])
    return textwrap.dedent("\n".join(lines[i:j + 1]))


def show(title, text):
    print(f"--- {title} " + "-" * max(0, 100 - len(title)))
    print(text)


def check(name, got, ref, rtol):
    """Print the relative error of ``got`` against ``ref`` and assert it is below ``rtol``."""
    err = rel_error(got, ref)
    print(f"{name:<44} relative error {err:.1e}  (bound {rtol:.0e})")
    assert err < rtol, f"{name}: {err:.2e} >= {rtol:.0e}"

# %% [markdown]
# ## 7.1 One equation, three algorithms
#
# Chapter 6 derived attention and its backward pass:
#
# $$
# S = \frac{Q K^\top}{\sqrt{d}} + M, \qquad P = \operatorname{softmax}_\text{row}(S), \qquad O = P V .
# $$
#
# `attention.forward` computes exactly that. It builds the $T_q \times T_k$ scores $S$ for each head, turns them into
# $P$ in place, and keeps $P$ for the backward pass. `attention.forward_blocked` gives the same $O$ from $\texttt{block\_size}^2$ tiles
# of $S$. It keeps only the log-sum-exp $\text{lse}_i = \log \sum_j e^{S_{ij}}$ of each row, for the backward pass.
# `kernels.flash_attention` runs the blocked algorithm as a GPU kernel. Each *program* (one block of threads on a
# GPU, one loop iteration in the interpreter) owns one block of query rows of one (batch, head) and loops over the
# key blocks.
#
# The chain of checks below has two links. naive = blocked is checked in float64 (the two must agree to
# round-off). blocked = kernel is checked in float32: the kernel runs in float32, and its answer is compared with
# the float64 reference computed from the same float32 inputs. The mask is causal and aligned bottom-right, as in
# `attention.causal_mask`, the second case has $T_q < T_k$ (queries against a longer cache), and in the third $T_q > T_k$, so that
# the first $T_q - T_k$ queries see no key at all. In the
# interpreter the kernel's tiles are 32 queries × 16 keys, and the NumPy blocked version uses 16 × 16. None of the
# lengths is a multiple of either.

# %%
cases = ([(1, 2, 40, 40, 16), (1, 2, 17, 40, 16), (1, 1, 40, 17, 16)] if QUICK
         else [(2, 2, 100, 100, 32), (2, 2, 37, 100, 32), (1, 2, 100, 37, 32)])
for B, H, T_q, T_k, d in cases:
    print(f"B={B} H={H} T_q={T_q} T_k={T_k} d={d}, causal")
    q = as_torch(rng.standard_normal((B, H, T_q, d)))             # (B, H, T_q, d) float32
    k = as_torch(rng.standard_normal((B, H, T_k, d)))             # (B, H, T_k, d)
    v = as_torch(rng.standard_normal((B, H, T_k, d)))             # (B, H, T_k, d)
    q64, k64, v64 = as64(q), as64(k), as64(v)                     # the same values in float64
    mask = attention.causal_mask(T_q, T_k)                        # (T_q, T_k), True = may attend

    out_naive, _ = attention.forward(q64, k64, v64, mask=mask)                               # (B, H, T_q, d)
    out_blocked, lse_blocked = attention.forward_blocked(q64, k64, v64, mask=mask, block_size=16)
    out_kernel, lse_kernel = k_attention.attention_fwd(q, k, v, causal=True)                 # float32
    check("  naive vs blocked (float64), out", out_blocked, out_naive, F64_RTOL)
    check("  blocked vs Triton kernel (float32), out", as64(out_kernel), out_blocked, KERNEL_RTOL)
    seen = np.isfinite(lse_blocked)                               # (B, H, T_q) False: the row sees no key
    assert np.array_equal(np.isfinite(as64(lse_kernel)), seen)
    check("  blocked vs Triton kernel (float32), lse", as64(lse_kernel)[seen], lse_blocked[seen], KERNEL_RTOL)
    if not seen.all():
        assert np.all(as64(out_kernel)[~seen] == 0)
        print(f"  {(~seen[0, 0]).sum()} rows see no key: lse = -inf and out = 0 exactly, in both")

# %% [markdown]
# All three compute the same function. The kernel also returns the same log-sum-exp per row, the only thing besides
# $O$ that the forward pass keeps for the backward pass. In the second case every query sees the $T_k - T_q$ keys of
# the "cache" and the new keys up to its own position. In the third, a row with no key to attend to has no
# softmax to take; the reference and the kernel both give it output 0 and lse $= -\infty$ (and, below, zero
# gradients).
#
# ## 7.2 The online softmax, worked by hand
#
# The blocked algorithm keeps three running quantities per query row: the largest score seen so far, $m$; the sum
# $\ell = \sum_j e^{s_j - m}$ over the keys seen so far; and the unnormalised output
# $a = \sum_j e^{s_j - m} v_j$. A new block of scores $s_b$ may raise the maximum to $m' \ge m$. Every term already
# summed was computed relative to the old $m$. Multiplying by $\alpha = e^{m - m'}$ moves it to the new one, because
# $e^{s_j - m} e^{m - m'} = e^{s_j - m'}$:
#
# $$
# m' = \max(m, \max_j s_{b,j}), \qquad \alpha = e^{m - m'}, \qquad
# \ell' = \alpha\,\ell + \sum_j e^{s_{b,j} - m'}, \qquad a' = \alpha\, a + \sum_j e^{s_{b,j} - m'} v_{b,j} .
# $$
#
# At the end, $o = a / \ell$ and $\text{lse} = m + \log \ell$. Every exponent is $\le 0$, so nothing overflows. This
# is the same stabilisation as the usual "subtract the row max" softmax, applied to a maximum that only becomes
# known as the keys arrive.
#
# One query, twelve keys in blocks of four. With $d = 1$ and $q = 1$, the score of key $j$ is just $k_j$, so the
# scores can be chosen by hand. They are chosen so that the maximum grows in every block:

# %%
scores = np.array([0.5, 1.0, -0.3, 0.2,   2.5, 0.1, 1.7, -1.0,   0.3, 3.2, 0.0, 1.1])   # (T_k,) = s_j
block = 4
values = rng.standard_normal((scores.size, 2))                 # (T_k, d_v) one value vector per key

m, l, acc = -np.inf, 0.0, np.zeros(2)                           # running max, running sum, running a
trace = []
print(" block  max(s_b)    m -> m'    alpha = e^(m-m')   alpha*l + sum_b = l'")
for b0 in range(0, scores.size, block):
    s_b, v_b = scores[b0:b0 + block], values[b0:b0 + block]    # (4,), (4, d_v)
    m_new = max(m, s_b.max())
    alpha = np.exp(m - m_new)                                    # 0 on the first block: nothing to rescale
    p_b = np.exp(s_b - m_new)                                    # (4,) this block's terms, relative to m'
    trace.append(dict(m_old=m, m=m_new, alpha=alpha, carried=alpha * l, block_sum=p_b.sum()))
    print(f"{b0 // block:>6} {s_b.max():>9.2f} {m:>7.2f} -> {m_new:4.2f} {alpha:>12.4f} "
          f"{alpha * l:>13.4f} + {p_b.sum():.4f} = {alpha * l + p_b.sum():.4f}")
    l = alpha * l + p_b.sum()
    acc = alpha * acc + p_b @ v_b
    m = m_new
lse_trace, out_trace = m + np.log(l), acc / l

# the same row through the reference's blocked forward, and the softmax written out in one go
out_ref, lse_ref = attention.forward_blocked(np.ones((1, 1)), scores[:, None], values, block_size=block)
exact_lse = np.log(np.exp(scores).sum())
print(f"lse: by hand {lse_trace:.12f}, forward_blocked {lse_ref[0]:.12f}, log(sum(exp(s))) {exact_lse:.12f}")
assert abs(lse_trace - lse_ref[0]) < 1e-14 and abs(lse_trace - exact_lse) < 1e-14   # float64, 12 terms
assert rel_error(out_trace, out_ref[0]) < 1e-14

# %% [markdown]
# The left panel shows the scores, the blocks and the running maximum. The right panel shows how $\ell$ is built:
# in each block, the sum carried over from earlier blocks shrinks by $\alpha$ (because $m$ rose), and the block's
# own terms are added on top. Without the factor $\alpha$, the first block's terms would stay measured against a
# maximum of 1.0 instead of 3.2, and $\ell$ would come out too large.

# %%
fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4))
n_blocks = scores.size // block
for b in range(n_blocks):
    ax.axvspan(b * block - 0.5, (b + 1) * block - 0.5, color="0.92" if b % 2 == 0 else "white", zorder=0)
    ax.hlines(trace[b]["m"], b * block - 0.5, (b + 1) * block - 0.5, color="tab:red", lw=2,
              label="running max m after the block" if b == 0 else None)
ax.stem(np.arange(scores.size), scores, basefmt=" ", label="score s_j")
ax.axhline(scores.max(), color="tab:red", ls=":", lw=1, label="final max")
ax.set_xlabel("key j  (shaded: key blocks of 4)")
ax.set_ylabel("score")
ax.set_title("scores arrive one block at a time")
ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)

carried = [t["carried"] for t in trace]
new = [t["block_sum"] for t in trace]
xs = np.arange(n_blocks)
bx.bar(xs, carried, color="tab:gray", label="carried: alpha * l (old sum, rescaled to the new max)")
bx.bar(xs, new, bottom=carried, color="tab:blue", label="this block: sum exp(s_j - m')")
for x, t in zip(xs, trace):
    bx.annotate(f"alpha = {t['alpha']:.3f}\nm' = {t['m']:.1f}", (x, t["carried"] + t["block_sum"]),
                ha="center", va="bottom", fontsize=8)
bx.set_xticks(xs, [f"block {b}" for b in xs])
bx.set_ylim(0, 1.35 * max(c + n for c, n in zip(carried, new)))
bx.set_ylabel("running sum l")
bx.set_title("l' = alpha * l + block sum")
bx.legend(fontsize=8, loc="upper left")
savefig(fig, "kernels_online_softmax.png")

# %% [markdown]
# ## 7.3 The kernel next to the NumPy it mirrors
#
# Here is the inner loop of `forward_blocked` (NumPy, one query block against one key block per iteration), and
# below it the inner loop of the forward kernel (Triton, one program). Both are printed from the files that this
# notebook just ran.

# %%
show("NumPy: reference/ops/attention.py, forward_blocked",
     source(attention.forward_blocked, "for j0 in range", "m = m_new"))
show("Triton: kernels/attention.py, _attn_fwd_inner (the forward kernel's loop over key blocks)",
     source(k_attention._attn_fwd_inner, "for start_n in range", "m_i = m_new"))

# %% [markdown]
# Line by line:
#
# | NumPy | Triton | note |
# |---|---|---|
# | `s = qs_i @ k[..., cols, :].T` | `s = tl.dot(q, kT)` | the kernel loads the key tile transposed, $(D, \text{BLOCK\_N})$, so `tl.dot` needs no transpose; the scale comes later |
# | `np.copyto(s, -inf, where=~keep)` | `s = tl.where(visible, s, -inf)` | only in the masked copy of the loop (`MASKED`), run on the blocks that the diagonal or the ragged last block (`offs_n < T_k`) cuts |
# | `m_new = np.maximum(m, s.max(-1))` | `m_new = tl.maximum(m_i, tl.max(s, axis=1) * qk_scale)` | the kernel works in base 2: $e^x = 2^{x \log_2 e}$, with $\log_2 e / \sqrt d$ in `qk_scale` |
# | `m_ref = _zero_where_neg_inf(m_new)` | `m_use = tl.where(m_new == -inf, 0, m_new)` | a row that has seen no key yet: $e^{-\infty - 0} = 0$, not $e^{-\infty + \infty}$ = NaN |
# | `np.exp(s - m_ref)` | `p = tl.math.exp2(s * qk_scale - m_use)` | the scale rides in the fused multiply-add that the exponent needs anyway |
# | `alpha = np.exp(m - m_ref)` | `alpha = tl.math.exp2(m_i - m_use)` | |
# | `l = alpha * l + s.sum(-1)` | `l_i = l_i * alpha + tl.sum(p, axis=1)` | |
# | `acc = alpha * acc + s @ v` | `acc = tl.dot(p, v, acc * alpha)` | the kernel rounds $P$ to the input dtype before this product, as the GPU's tensor cores need |
#
# The kernel also differs from the NumPy in where it *stops*. With a causal mask, the loop bound
# `hi = min(T_k, start_m + BLOCK_M + shift)` skips the key blocks that lie entirely above the diagonal. For long
# sequences this halves the work. The NumPy version visits every tile and masks it instead. Whether a row sees any
# key is decided by the mask too (`sees = offs_m + shift >= 0`), never by the numbers: a row whose scores are NaN
# or overflow gets NaN, as in PyTorch, not the 0 of a row that the mask empties.
#
# ## 7.4 Memory: $O(T^2)$ against $O(T d)$
#
# The point of all this is memory. `attention.peak_memory` runs a function under `tracemalloc` and returns the most
# bytes it held at once (NumPy reports its buffers to `tracemalloc`). One head, float32, no mask. The peaks are
# measurements of the machine that built this book: their last digits can change from build to build.

# %% tags=["measurement"]
mem_Ts, mem_d = ([128, 256, 512, 1024], 32) if QUICK else ([256, 512, 1024, 2048, 4096], 64)
mem_rows = []
for T in mem_Ts:
    q, k, v = (rng.standard_normal((1, 1, T, mem_d)).astype(np.float32) for _ in range(3))   # (1, 1, T, d) each
    naive = attention.peak_memory(attention.forward_fast, q, k, v)[1]      # in place: P is its one T x T array
    blocked = attention.peak_memory(attention.forward_blocked, q, k, v)[1]
    mem_rows.append((T, naive, blocked))
    print(f"T = {T:>5}: forward {naive / 2**20:8.2f} MiB   forward_blocked {blocked / 2**20:6.3f} MiB   "
          f"(one T x T float32 = {T * T * 4 / 2**20:7.2f} MiB, one T x d = {T * mem_d * 4 / 2**20:6.3f} MiB)")

(T_a, naive_a, blocked_a), (T_b, naive_b, blocked_b) = mem_rows[-2], mem_rows[-1]
slope_naive = np.log(naive_b / naive_a) / np.log(T_b / T_a)
slope_blocked = np.log(blocked_b / blocked_a) / np.log(T_b / T_a)
print(f"growth between T = {T_a} and {T_b}: forward ~ T^{slope_naive:.2f}, forward_blocked ~ T^{slope_blocked:.2f}")
assert naive_b >= T_b * T_b * 4             # the naive forward holds at least P, one T x T float32 matrix
assert slope_naive > 1.8 and slope_blocked < 1.3
assert blocked_b < naive_b / 10

fig, ax = plt.subplots(figsize=(6.5, 4.2))
Ts = np.array(mem_Ts)
ax.loglog(Ts, [r[1] / 2**20 for r in mem_rows], "o-", label="attention.forward_fast (holds P, T x T)")
ax.loglog(Ts, [r[2] / 2**20 for r in mem_rows], "s-", label="attention.forward_blocked (online softmax)")
ax.loglog(Ts, Ts * Ts * 4 / 2**20, "k:", lw=1, label="one T x T float32 matrix")
ax.loglog(Ts, Ts * mem_d * 4 / 2**20, "k--", lw=1, label="one T x d float32 matrix")
ax.set_xticks(Ts, [str(t) for t in Ts])
ax.minorticks_off()
ax.set_xlabel(f"sequence length T  (one head, d = {mem_d}, float32)")
ax.set_ylabel("tracemalloc peak (MiB)")
ax.set_title("attention forward: peak memory")
ax.legend(fontsize=8)
savefig(fig, "kernels_attention_memory.png")

# %% [markdown]
# The naive forward's peak sits on the $T^2$ line: $P$ alone is $4T^2$ bytes per head. The blocked forward grows
# like the $T \times d$ line. It holds the output, the scaled queries and a few $64 \times 64$ tiles, which is why
# it lies above that line at small $T$. The GPU kernel never stores a $T \times T$ array in HBM either: a tile of
# $S$ lives in registers and shared memory for one loop iteration. Per head it writes $O$ ($T d$ values) and lse
# ($T$ float32 values). At $T = 16\,384$ in bfloat16, $P$ for one head would be 512 MiB, and a model has dozens of
# heads per layer.
#
# ## 7.5 The backward pass: $\delta$, two kernels, no atomics
#
# The backward pass needs $P$, which the forward pass did not keep. The kernel recomputes it tile by tile from the
# saved lse: $P_{ij} = e^{S_{ij} - \text{lse}_i}$, one exponential per entry, with no running max this time. Then,
# from chapter 6,
#
# $$
# dV = P^\top dO, \qquad dP = dO\, V^\top, \qquad dS = P \circ (dP - \delta), \qquad
# dQ = \frac{dS\, K}{\sqrt d}, \qquad dK = \frac{dS^\top Q}{\sqrt d},
# $$
#
# with $\delta_i = \sum_j P_{ij}\, dP_{ij}$. As written, $\delta$ needs a whole row of $P$, which no single tile
# has. Because $O = PV$, it equals $\sum_c dO_{ic} O_{ic}$, a row sum over the $d$ columns of two arrays that we
# already have. The kernel computes it first, in a small *preprocess* kernel. The identity, live:

# %%
B, H, T, d = 1, 2, 24, 16
q64, k64, v64, do64 = (rng.standard_normal((B, H, T, d)) for _ in range(4))   # (B, H, T, d) each, float64
out64, cache = attention.forward(q64, k64, v64, mask=attention.causal_mask(T, T))
P = attention.probabilities(cache)                                # (B, H, T, T)
dP = do64 @ v64.swapaxes(-1, -2)                                  # (B, H, T, T)
delta_from_P = (P * dP).sum(-1)                                   # (B, H, T) needs whole rows of P
delta_from_O = (do64 * out64).sum(-1)                             # (B, H, T) needs only dO and O
check("delta: rowsum(P * dP) vs rowsum(dO * O)", delta_from_O, delta_from_P, F64_RTOL)

# %% [markdown]
# Next comes the question of who writes what. $dK_j$ and $dV_j$ (key block $j$) are sums over all query blocks.
# $dQ_i$ (query block $i$) is a sum over all key blocks. If one program walked the tiles and added into both, two
# programs would write the same rows of $dQ$ or of $dK$ at once. Those writes would then need atomic adds.
# Floating-point atomics complete in whatever order the hardware schedules them, so the result would change from
# run to run in the last bits. The kernel avoids atomics with two kernels, each of which owns its output:
#
# * **dK/dV kernel**: one program per key block. It loops over the query blocks and writes its own rows of $dK$ and
#   $dV$ once, at the end;
# * **dQ kernel**: one program per query block. It loops over the key blocks and writes its own rows of $dQ$ once.
#
# The price is arithmetic. Both kernels recompute $S$, $P$ and $dP$ for every tile: seven $T \times T \times d$
# products in total, against five for a single pass with atomics. The gain is a backward pass that gives the same
# bits on every run, and that has no write contention.
#
# The figure shows who visits which tile, for a causal $T = 100$ with the interpreter's tile sizes (on a GPU the
# autotuner picks larger ones). Each colour is one program. A tile is visited when at least one of its scores is
# unmasked: that is exactly what the kernels' loop bounds (`first` in the dK/dV kernel, `hi` in the dQ kernel)
# compute. Tiles entirely above the diagonal are never loaded, and only the tiles that the diagonal (or the ragged
# edge of $T$) cuts pay for the mask: every other tile runs a copy of the loop body compiled without it.

# %%
T_t = 100
mask_t = attention.causal_mask(T_t, T_t)                         # (T, T)
fig, axes = plt.subplots(1, 2, figsize=(11, 5))
panels = [("dK/dV kernel: one program per key block", k_attention._INTERP_DKDV, "key"),
          ("dQ kernel: one program per query block", k_attention._INTERP_FWD, "query")]
for ax, (title, config, owner) in zip(axes, panels):
    bm, bn = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]   # queries, keys per tile
    program = np.full((T_t, T_t), np.nan)                        # (T_q, T_k) the program that visits each score
    visited = 0
    for i0 in range(0, T_t, bm):
        for j0 in range(0, T_t, bn):
            if mask_t[i0:i0 + bm, j0:j0 + bn].any():
                program[i0:i0 + bm, j0:j0 + bn] = j0 // bn if owner == "key" else i0 // bm
                visited += 1
    n_tiles = -(-T_t // bm) * -(-T_t // bn)
    print(f"{title}: {bm} x {bn} tiles, visits {visited} of {n_tiles}")
    ax.imshow(program, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    ax.plot([0, T_t - 1], [0, T_t - 1], "k-", lw=1)
    ax.set_xticks(np.arange(0, T_t, bn) - 0.5, [str(j) for j in range(0, T_t, bn)])
    ax.set_yticks(np.arange(0, T_t, bm) - 0.5, [str(i) for i in range(0, T_t, bm)])
    ax.grid(color="white", lw=1)
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
    ax.set_title(f"{title}\n(white: skipped; line: the causal diagonal)", fontsize=10)
savefig(fig, "kernels_backward_tiles.png")

# %% [markdown]
# In the left panel a program owns a column of tiles. It is the only one that writes that column's rows of $dK$
# and $dV$. In the right panel a program owns a row of tiles, and is the only one that writes that row's rows of
# $dQ$. `backward_blocked` in NumPy uses the dK/dV loop order (outer loop over key blocks) and accumulates $dQ$ in
# the same pass, which is safe in a serial loop. The dK/dV kernel's loop body against it, then the dQ kernel's:

# %%
show("NumPy: reference/ops/attention.py, backward_blocked",
     source(attention.backward_blocked, "for i0 in range", "dk_j += "))
show("Triton: kernels/attention.py, _attn_bwd_dkdv_step (one query block of the dK/dV kernel's loop)",
     source(k_attention._attn_bwd_dkdv_step, "sT = tl.dot(k, qT", "dk = tl.dot("))
show("Triton: kernels/attention.py, _attn_bwd_dq_inner (the dQ kernel's loop over key blocks)",
     source(k_attention._attn_bwd_dq_inner, "s = tl.dot(q, kT", "dq = tl.dot("))

# %% [markdown]
# The kernel computes the transposed tile $S^\top$ (keys × queries) because its program owns a block of keys.
# `pT` is then directly the $P^\top$ of $dV = P^\top dO$. The kernels keep the lse in base 2,
# $L_2 = \text{lse} \cdot \log_2 e$, so that $P = 2^{c\,(q \cdot k) - L_2}$ with $c = \log_2 e / \sqrt d$ is one
# fused multiply-add and one `exp2`. A row that sees no key at all (a property of the mask, not of the numbers) has
# lse $= -\infty$; it only ever meets masked tiles, where the mask sets $P = 0$.
#
# The live check of the whole chain for the gradients: naive = blocked in float64, and blocked = the kernel's three
# backward kernels (through `torch.autograd`) in float32.

# %%
for B, H, T_q, T_k, d in cases:
    print(f"B={B} H={H} T_q={T_q} T_k={T_k} d={d}, causal")
    q, k, v = (as_torch(rng.standard_normal((B, H, T, d)), requires_grad=True) for T in (T_q, T_k, T_k))
    do = as_torch(rng.standard_normal((B, H, T_q, d)))               # (B, H, T_q, d) upstream gradient
    q64, k64, v64, do64 = as64(q), as64(k), as64(v), as64(do)
    mask = attention.causal_mask(T_q, T_k)

    out_naive, cache = attention.forward(q64, k64, v64, mask=mask)
    grads_naive = attention.backward(do64, cache)
    out_blocked, lse = attention.forward_blocked(q64, k64, v64, mask=mask, block_size=16)
    grads_blocked = attention.backward_blocked(do64, q64, k64, v64, out_blocked, lse, mask=mask, block_size=16)
    out_kernel = flash_attention(q, k, v, causal=True)
    grads_kernel = torch.autograd.grad(out_kernel, (q, k, v), do)
    for name, g_naive, g_blocked, g_kernel in zip(("dq", "dk", "dv"), grads_naive, grads_blocked, grads_kernel):
        check(f"  {name}: naive vs blocked (float64)", g_blocked, g_naive, F64_RTOL)
        check(f"  {name}: blocked vs Triton kernels (float32)", as64(g_kernel), g_blocked, KERNEL_RTOL)
    if T_q > T_k:                                # the first T_q - T_k queries see no key: no gradient at all
        assert np.all(as64(grads_kernel[0])[:, :, :T_q - T_k] == 0)
        print(f"  dq of the {T_q - T_k} rows that see no key: exactly 0")

# %% [markdown]
# **Lower precision.** On a GPU these kernels run in bfloat16 or float16: they load the inputs in that dtype, do the
# matrix products on tensor cores with float32 accumulation, and keep $m$, $\ell$, lse and $\delta$ in float32.
# The error against the float64 reference, per dtype, for the first case above. The reference starts from the
# inputs *after* rounding to the dtype, so only the kernel's own rounding counts. The tolerances are those of
# `tests/kernels/triton_checks.py`: a few units in the last place of each format. (In the interpreter the kernels upcast
# each tile to float32 right after loading it, because the interpreter's bfloat16 arithmetic is broken. The
# product of two bf16 or fp16 values is exact in float32, so this still computes what a tensor core computes; see
# `kernels/_common.py`.)

# %%
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}   # see tests/kernels/triton_checks.py
B, H, T_q, T_k, d = cases[0]
base = [rng.standard_normal((B, H, T, d)) for T in (T_q, T_k, T_k, T_q)]   # q, k, v, dO in float64
print(f"{'dtype':>10} {'unit roundoff':>14}   " + "   ".join(f"{n:>7}" for n in ("out", "dq", "dk", "dv"))
      + "   tolerance")
for dtype, tol in TOL.items():
    q, k, v = (torch.tensor(a).to(dtype).requires_grad_(True) for a in base[:3])
    do = torch.tensor(base[3]).to(dtype)
    out_kernel = flash_attention(q, k, v, causal=True)
    got = (out_kernel, *torch.autograd.grad(out_kernel, (q, k, v), do))
    out_ref, cache = attention.forward(as64(q), as64(k), as64(v), mask=attention.causal_mask(T_q, T_k))
    ref = (out_ref, *attention.backward(as64(do), cache))
    errs = [rel_error(as64(g), r) for g, r in zip(got, ref)]
    print(f"{str(dtype).split('.')[1]:>10} {torch.finfo(dtype).eps / 2:>14.1e}   "
          + "   ".join(f"{e:7.1e}" for e in errs) + f"   {tol:.1e}")
    assert max(errs) < tol

# %% [markdown]
# ## 7.6 LayerNorm: one row per program, and a two-stage reduction
#
# LayerNorm (chapter 6, §6.6) normalises each row on its own, so the forward pass is *one row per program*: a
# program loads a whole row into registers, computes $\mu$ and $r = 1/\sqrt{\sigma^2 + \epsilon}$ in float32,
# writes $y = \hat x \gamma + \beta$, and saves $\mu$ and $r$ (two floats per row) for the backward pass.
#
# The backward pass has two kinds of output. $dx$ is per row again:
# $dx = r\,\big(g - \operatorname{mean}_j(g) - \hat x \operatorname{mean}_j(g \hat x)\big)$ with $g = dy \circ \gamma$.
# But $d\gamma = \sum_\text{rows} dy \circ \hat x$ and $d\beta = \sum_\text{rows} dy$ are sums over *all* rows, so
# every program contributes to the same $N$ numbers. The kernel does this in two stages, without locks or atomics:
#
# 1. $G$ programs; program $g$ takes rows $g, g + G, g + 2G, \dots$, writes their $dx$, and keeps running float32
#    sums of $dy \circ \hat x$ and $dy$ in registers. At the end it writes them to row $g$ of a $(G, N)$ buffer.
# 2. A second kernel sums the $G$ rows of that buffer, column by column.
#
# On a GPU $G$ is the number of streaming multiprocessors (one program each, enough to fill the chip), and the
# partial sums of both gradients share one $(G, 2N)$ buffer, so that stage 2 is a single column sum whose column
# strips are narrow enough to give every multiprocessor work even at $N = 1024$. In the interpreter $G = 4$. The two
# stages, printed from the kernels:

# %%
show("Triton: kernels/layernorm.py, _layer_norm_bwd_dx_kernel (stage 1)",
     source(k_layernorm._layer_norm_bwd_dx_kernel, "for _ in range(g, M, n_programs)", "Partial + g * 2 * N + N"))
show("Triton: kernels/_common.py, _column_sum_kernel (stage 2)",
     source(k_common._column_sum_kernel, "for r0 in range", "tl.store(OUT"))

# %% [markdown]
# The live check has three parts. First, the whole kernel (through `torch.autograd`) against `reference/ops/layernorm.py`.
# Then stage 1 alone: its $(G, N)$ buffer of partial sums is compared with the same partial sums computed in NumPy
# from the reference's $\hat x$. Last, stage 2, the sum of that buffer, is compared with $d\gamma$. The rows are
# given their own offsets and scales, as in a residual stream, and $N$ is not a power of two, so the last columns of
# the kernel's power-of-two block are masked.

# %%
M_rows, N = (24, 48) if QUICK else (64, 96)
x = as_torch(3.0 + 2.0 * rng.standard_normal((M_rows, 1)) * rng.standard_normal((M_rows, N)), requires_grad=True)
gamma = as_torch(1.0 + 0.1 * rng.standard_normal(N), requires_grad=True)        # (N,)
beta = as_torch(0.1 * rng.standard_normal(N), requires_grad=True)               # (N,)
dy = as_torch(rng.standard_normal((M_rows, N)))                                 # (M, N)

y_kernel = layer_norm(x, gamma, beta)
dx_kernel, dgamma_kernel, dbeta_kernel = torch.autograd.grad(y_kernel, (x, gamma, beta), dy)
y_ref, ln_cache = layernorm.forward(as64(x), as64(gamma), as64(beta))
dx_ref, dgamma_ref, dbeta_ref = layernorm.backward(as64(dy), ln_cache)
for name, got, ref in (("y", y_kernel, y_ref), ("dx", dx_kernel, dx_ref),
                       ("dgamma", dgamma_kernel, dgamma_ref), ("dbeta", dbeta_kernel, dbeta_ref)):
    check(f"LayerNorm {name}: Triton vs reference", as64(got), ref, KERNEL_RTOL)

# Stage 1 alone, launched as kernels/layernorm.py's layer_norm_bwd launches it.
_, mean, rstd = k_layernorm.layer_norm_fwd(x.detach(), gamma.detach(), beta.detach())   # (M,), (M,) float32
G = k_layernorm._n_partials(M_rows, x.device)
partial = torch.empty((G, 2 * N), dtype=torch.float32)                           # (G, 2N) stage-1 output
dgamma_partial = partial[:, :N]                                                  # (G, N) view
dx_stage1 = torch.empty((M_rows, N), dtype=torch.float32)                        # (M, N)
k_layernorm._layer_norm_bwd_dx_kernel[(G,)](
    x.detach(), dy, dx_stage1, gamma.detach(), mean, rstd, partial,
    x.stride(0), x.stride(1), dy.stride(0), dy.stride(1), gamma.stride(0),
    M_rows, N, BLOCK_N=triton.next_power_of_2(N),
)
xhat_ref = ln_cache.xhat                                                         # (M, N) float64
partial_ref = np.stack([(as64(dy)[g::G] * xhat_ref[g::G]).sum(0) for g in range(G)])   # (G, N)
print(f"stage 1: G = {G} programs, each summed rows g, g + {G}, ... into one row of a {G} x {N} buffer")
check("stage 1: partial dgamma, Triton vs NumPy", as64(dgamma_partial), partial_ref, KERNEL_RTOL)
check("stage 2: sum of the partials vs dgamma", dgamma_partial.sum(0).double().numpy(), dgamma_ref, KERNEL_RTOL)

# %% [markdown]
# The answer does not depend on the order in which programs finish. Each program owns one row of the buffer, and
# stage 2 adds the rows in a fixed order. Run it twice and you get the same bits. With `atomic_add` into one
# $N$-vector, the float32 sums would be added in whatever order the programs happened to finish. (The Triton
# tutorial's LayerNorm backward uses a lock per group of rows for the same job. This one needs none.)
#
# ## 7.7 The FFN: a GEMM with a fused epilogue
#
# The FFN is $Y = \phi(X W_1 + b_1) W_2 + b_2$. Written as separate operations, the first half is three passes over
# an $M \times d_\text{ff}$ array in HBM. The GEMM writes $XW_1$; the bias add reads it back and writes it again;
# the activation reads it and writes $H$. A tiled GEMM program ends with its $\text{BLOCK\_M} \times
# \text{BLOCK\_N}$ tile of $XW_1$ still in registers. The *epilogue*, the code after the $K$ loop, can add $b_1$
# and apply $\phi$ right there, and store $Z = XW_1 + b_1$ (kept for the backward pass) and $H = \phi(Z)$ once.
# Only $Z$ is kept: the backward pass recomputes $H = \phi(Z)$ in one element-wise pass just before $dW_2 = H^\top dY$
# needs it, and frees it before $dZ$ exists, so forward + backward hold two $M \times d_\text{ff}$ arrays at a time
# where PyTorch eager holds three ($Z$ and $H$ saved, and $dH$).
# The backward pass does the same with $dZ = (dY\, W_2^\top) \circ \phi'(Z)$: the GEMM $dY\, W_2^\top$ reads
# the tile of $Z$ in its epilogue and multiplies by $\phi'(Z)$, so $dH$ is never stored.
#
# | first layer, elements of $M \times d_\text{ff}$ moved through HBM | forward | backward ($dZ$) |
# |---|---|---|
# | separate ops | write $XW_1$; read + write for $+b_1$; read + write for $\phi$: **5** | write $dH$; read $dH$ and $Z$, write $dZ$: **4** |
# | fused epilogue | write $Z$, write $H$: **2** | read $Z$, write $dZ$: **2** |
#
# One kernel does all six products of the FFN: transposes are just swapped strides. A compile-time flag `EPILOGUE`
# picks what happens after the $K$ loop. The epilogue and the activation's derivative, printed from the kernel:

# %%
show("Triton: kernels/ffn.py, _gemm_kernel (epilogue)",
     source(k_ffn._gemm_kernel, "if EPILOGUE == 1:", "out = acc * _act_grad"))
show("Triton: kernels/ffn.py, _act_grad", source(k_ffn._act_grad, "if ACT == 0:", "return g"))
show("NumPy: reference/ops/ffn.py, backward", source(ffn.backward, "# forward: y = h W2 + b2", "dx, dW1, db1 ="))

# %% [markdown]
# The bias gradients are column sums. $db_1 = \sum_m dZ_m$: each program of the $dZ$ GEMM sums the columns of its
# output tile once, in the epilogue (`COLSUM`), into one row per row of tiles, and a column sum adds those rows.
# $db_2 = \sum_m dY_m$ is one column sum of $dY$, the same small kernel as LayerNorm's stage 2. Neither is summed
# inside the $K$ loop, where it would cost a reduction on every step.
#
# The live check, for each activation: the epilogue's stored $Z$ and $H$ (is $H = \phi(Z)$, with $\phi$ from
# `reference/ops/activations.py`?), then the output and all five gradients against `reference/ops/ffn.py`. $M$ is not a
# multiple of the interpreter's 32 × 32 tiles.

# %%
M_ffn, d_model, d_ff = (40, 32, 64) if QUICK else (100, 48, 160)
x_np = rng.standard_normal((M_ffn, d_model))                                     # (M, d_model)
W1_np = rng.standard_normal((d_model, d_ff)) / np.sqrt(d_model)                  # (d_model, d_ff)
b1_np = 0.1 * rng.standard_normal(d_ff)                                          # (d_ff,)
W2_np = rng.standard_normal((d_ff, d_model)) / np.sqrt(d_ff)                     # (d_ff, d_model)
b2_np = 0.1 * rng.standard_normal(d_model)                                       # (d_model,)
dy_np = rng.standard_normal((M_ffn, d_model))                                    # (M, d_model)
act_ref = {"relu": activations.relu_forward,
           "gelu": lambda z: activations.gelu_forward(z, approximate="none"),
           "gelu_tanh": lambda z: activations.gelu_forward(z, approximate="tanh")}
for act in ("relu", "gelu", "gelu_tanh"):
    params = [as_torch(a, requires_grad=True) for a in (x_np, W1_np, b1_np, W2_np, b2_np)]
    dy = as_torch(dy_np)
    _, z_kernel, h_kernel = k_ffn.ffn_fwd(*(p.detach() for p in params), activation=act)   # (M, d_ff) each
    check(f"{act}: epilogue H vs phi(epilogue Z)", as64(h_kernel), act_ref[act](as64(z_kernel))[0], KERNEL_RTOL)

    y_kernel = fused_ffn(*params, activation=act)
    grads_kernel = torch.autograd.grad(y_kernel, params, dy)
    y_ref, ffn_cache = ffn.forward(*(as64(p) for p in params), activation=act)
    grads_ref = ffn.backward(as64(dy), ffn_cache)
    for name, got, ref in zip(("y", "dx", "dW1", "db1", "dW2", "db2"), (y_kernel, *grads_kernel), (y_ref, *grads_ref)):
        check(f"{act}: {name}, Triton vs reference", as64(got), ref, KERNEL_RTOL)

# %% [markdown]
# ## 7.8 The benchmarks, and what has not been measured
#
# `make bench` runs two benchmark modules. `bench/ops.py` times the NumPy reference against PyTorch on the CPU
# (float32, forward + backward). It also measures attention's peak memory as in §7.4, up to $T = 4096$:
#
# ![the NumPy reference against PyTorch on the CPU, and attention's peak memory](../figures/bench_ops.png)
#
# The numbers behind the figure, from `bench/results/ops.json`:

# %%
ops_json = ROOT / "bench" / "results" / "ops.json"
if ops_json.exists():
    ops = json.loads(ops_json.read_text())
    print(f"bench/ops.py, {ops['date']}, {ops['machine']['cpus']} CPUs, torch {ops['machine']['torch']}, "
          f"{'quick' if ops['quick'] else 'full'} sizes")
    for threads, run in ops["results"]["by_threads"].items():
        load = run["load_average_1min"]
        print(f" {threads} thread(s), load average {load['before']} -> {load['after']}:")
        for name, ratio in run["ratios_torch_over_numpy"].items():
            print(f"  {name:>24}: torch time / NumPy time = {ratio:.2f}")
    for row in ops["results"]["attention_peak_memory"]:
        print(f"  T = {row['T']:>5}: forward {row['naive_forward_bytes'] / 2**20:7.1f} MiB, "
              f"forward_blocked {row['blocked_forward_bytes'] / 2**20:5.2f} MiB")
else:
    print("bench/results/ops.json is not in this checkout: `make bench` measures it")

kernels_json = ROOT / "bench" / "results" / "kernels.json"
gpu = (json.loads(kernels_json.read_text())["results"] if kernels_json.exists()
       else {"skipped": "bench/results/kernels.json does not exist, so bench/kernels.py has never been run"})
if "skipped" in gpu:
    print(f"\nGPU benchmark (bench/kernels.py): {gpu['skipped']}.\nNo GPU has run these kernels yet, "
          "so there are no GPU timings and no GPU figures.")
else:
    print(f"\nGPU benchmark (bench/kernels.py) ran on {gpu['device']} in {gpu['dtype']}; figure: {gpu['figure']}; "
          "the numbers are in bench/results/kernels.json")

# %% [markdown]
# The CPU ratios compare NumPy with PyTorch on the same two cores. They say nothing about the Triton kernels.
# `bench/kernels.py` is the Triton benchmark. On a CUDA GPU it measures attention in TFLOP/s against PyTorch's SDPA
# (flash and cuDNN backends), LayerNorm in GB/s against a copy of the same size, and the FFN against `F.linear` +
# activation, with its peak memory. Its targets are attention forward ≥ 0.9× SDPA-flash, LayerNorm forward ≥ 85 % of
# that copy's bandwidth, and the FFN ≥ 0.9× torch. `make gpu-check` runs the kernels' tests natively, their accuracy
# in bfloat16 against PyTorch's, and a subset of these timings, in about eight minutes. On a machine without CUDA
# both record only that they were skipped. As printed above,
# **no GPU has run these kernels yet**. Every claim in this chapter about the kernels is a correctness claim,
# checked in the interpreter. How fast they run on a GPU has not been measured.
#
# ## Exercises
#
# Worked solutions: `chapters/solutions/07_kernels.py` (run by `tests/book/test_solutions_07.py`).
#
# 1. **Merging partial softmaxes (split-KV).** During decoding one query attends to a long cache, and a single
#    program walking all of it would leave most of the GPU idle. Split the keys into $n$ chunks, run
#    `attention.forward_blocked` on each chunk to get $(o_s, \text{lse}_s)$, and combine the chunks' results into the
#    attention over all keys. Show that $\text{lse} = \log \sum_s e^{\text{lse}_s}$ and
#    $o = \sum_s e^{\text{lse}_s - \text{lse}}\, o_s$, and check the result against `attention.forward`. This is the
#    update of §7.2, applied to whole chunks instead of single blocks.
# 2. **The two-stage reduction for any $G$.** Write stage 1 and stage 2 of §7.6 in NumPy for any number of programs
#    $G$, from the reference's $\hat x$ and $dy$. Check that every $G$ from 1 to $M$ gives `layernorm.backward`'s
#    $d\gamma$ and $d\beta$ in float64. In float32, do different $G$ give the same bits? Does one fixed $G$ give the
#    same bits every time?
# 3. **The activation derivative in the epilogue.** Derive $\phi'(z)$ for the tanh approximation of GELU,
#    $\phi(z) = \tfrac12 z\,(1 + \tanh u)$ with $u = \sqrt{2/\pi}\,(z + 0.044715 z^3)$. This is what `_act_grad`
#    computes. Check it against `activations.gelu_backward` and against finite differences.
