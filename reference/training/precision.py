"""Mixed precision: float32 master weights, forward and backward in float16 (real) or bfloat16 (emulated).

Training in 16 bits halves the bytes of the weights and activations that a step reads and, on a GPU, runs the
matmuls on tensor cores. The optimizer still keeps **float32 master weights** (and float32 Adam moments): an update
``lr * m / sqrt(v)`` is often below half a unit in the last place of a 16-bit weight and would round away. Each step
casts the masters down, computes the loss and gradients in 16 bits, casts the gradients up and updates the masters
(Micikevicius et al. 2018, "Mixed Precision Training").

The two 16-bit formats differ in where their bits go::

    float32   1 sign, 8 exponent, 23 mantissa bits   range 1.2e-38 .. 3.4e38, unit roundoff 2^-24 = 6.0e-8
    bfloat16  1 sign, 8 exponent,  7 mantissa bits   range 1.2e-38 .. 3.4e38, unit roundoff 2^-8  = 3.9e-3
    float16   1 sign, 5 exponent, 10 mantissa bits   range 6.1e-5 .. 65504,   unit roundoff 2^-11 = 4.9e-4
                                                     (subnormals down to 6.0e-8, with fewer significant bits)

bfloat16 has float32's range and needs nothing more. float16 has a narrow range: the gradient of a mean loss over
B T positions is about p_v / (B T) on a logit whose probability is p_v, so about 1 / (B T V) on most logits
(1.2e-5 for the tiny config, 1.5e-6 for small, with their V = 319 characters), below float16's smallest normal
number, where it loses bits or flushes to zero. **Dynamic loss scaling** multiplies the loss (so
every gradient) by S before the backward pass and divides the float32 gradients by S after it. If any gradient
overflowed (inf or NaN), the step is skipped and S halves; after ``growth_interval`` good steps in a row S doubles
(``torch.amp.GradScaler``'s rule; each event is logged).

What is rounded where (``loss_and_grads`` below)
-------------------------------------------------

=================  ==========================================  ===============================================
                   ``fp16`` (real NumPy float16)               ``bf16`` (emulated: float32 rounded to bf16)
=================  ==========================================  ===============================================
weights            masters cast to float16 (round to nearest)  masters rounded to bf16 values
forward            every op in float16: each elementwise       every op in float32, on the bf16 weights;
                   result is rounded to float16; a matmul      activations are not rounded (below)
                   sums its products in float32 and rounds
                   its output (as tensor cores do)
logits             float16, then cast to float32               rounded to bf16
loss, dlogits      cross-entropy and its gradient in float32   the same, and dlogits rounded to bf16
                   (as autocast does); dlogits x S cast to
                   float16
backward           every op in float16                         every op in float32
gradients          float16, cast to float32, divided by S      rounded to bf16 (the 16-bit model's gradients),
                                                               kept in float32
update             float32: clip, AdamW on the masters         the same
=================  ==========================================  ===============================================

Why the bf16 emulation leaves the activations alone, the residual stream between blocks included: under
``torch.autocast(dtype=torch.bfloat16)``, the usual way to train on float32 masters, a matmul returns bf16, but
LayerNorm, softmax and the loss run in float32, and the residual sum ``x + Attn(LN(x))`` of a float32 stream and a
bf16 branch is float32 (type promotion): the stream stays float32 from the embedding to the head. Rounding it at
block boundaries would model a model stored in bf16 (Megatron-LM's bf16 mode without ``fp32_residual_connection``),
not autocast. What this emulation leaves out is the rounding of each matmul's output (Q, K, V, the FFN's hidden
layer, the branch outputs), which would need rounding inside the ops. (``blockwise.py`` runs the blocks as separate
calls, so the other choice, a stream rounded at block boundaries, would be one wrapper around ``blockwise.Blocks``.)

NumPy has no bfloat16 type, so a bf16 value is stored as a float32 whose low 16 bits are zero: :func:`to_bf16`
rounds to nearest, ties to even, exactly as torch converts float32 to bfloat16 (tested bit for bit); inf stays inf,
a finite value that rounds past the largest bf16 (3.39e38) becomes inf, and NaN stays NaN. The arithmetic between
the rounding points is float32, which is more accurate than a chip that rounds every elementwise result to bf16:
the emulation shows the effect of bf16 storage of the weights, logits and gradients, not of bf16 arithmetic.
float16 needs no emulation: NumPy computes in it, slowly, since its float16 matmul does not use BLAS (the tiny
config's loss and gradients: 0.15 s against 0.007 s in float32, measured on an idle machine).
"""
import math
from functools import partial

import numpy as np

from reference import tree
from reference.models import gpt
from reference.ops import cross_entropy
from reference.training import blockwise

PRECISIONS = ("fp32", "fp16", "bf16")

# Dynamic loss scaling, as torch.amp.GradScaler: start at 2^16, halve on overflow, double after a run of good steps
# (torch waits 2000 steps; 200 lets the scale grow within the short runs of this book).
INIT_SCALE = 2.0 ** 16
GROWTH_INTERVAL = 200


def to_bf16(x):
    """Round float32 values to the nearest bfloat16 (ties to even), returned as float32.

    bfloat16 is the top 16 bits of a float32. Adding ``0x7FFF`` plus the lowest kept bit to the 32-bit pattern
    and clearing the low 16 bits rounds to nearest with ties to even; a carry out of the mantissa steps the
    exponent, so the largest finite values round up to inf, as they should.

    Parameters
    ----------
    x : float32 ndarray, any shape

    Returns
    -------
    float32 ndarray of x's shape whose every element is a bfloat16 value (low 16 bits zero); NaN stays NaN
    (sign kept, quiet bit set), +-inf stays +-inf.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"x: expected a float32 numpy.ndarray (bf16 rounds float32 bit patterns), got {got}")
    u = np.ascontiguousarray(x).view(np.uint32)
    lowest_kept = (u >> np.uint32(16)) & np.uint32(1)
    rounded = (u + np.uint32(0x7FFF) + lowest_kept) & np.uint32(0xFFFF0000)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)        # exponent all ones, mantissa not zero
    rounded[nan] = (u[nan] & np.uint32(0xFFFF0000)) | np.uint32(0x00400000)   # keep NaN a (quiet) NaN
    return rounded.view(np.float32)


def _map(fn, params):
    return tree.unflatten({name: fn(a) for name, a in tree.flatten(params).items()})


def loss_and_grads(params, config, ids, targets, precision="fp32", scale=1.0, blocks=None):
    """Mean cross-entropy and the float32 gradients of the master ``params``, computed in ``precision``.

    Parameters
    ----------
    params : the GPT's float32 master parameters (never modified)
    config : gpt.GPTConfig
    ids, targets : int ndarrays (B, T)
    precision : "fp32", "fp16" or "bf16"; see the module's table for what is rounded where
    scale : float
        The loss scale S, fp16 only: the backward pass starts from S dL/dlogits, and the gradients returned are
        divided by S again. fp32 and bf16 need no scaling (their range is float32's) and take only 1.
    blocks : ``blockwise.Blocks`` or None
        What each block does (recomputed, tensor-parallel: ``reference/training/blockwise.py``); None: ``gpt``'s
        own forward and backward.

    Returns
    -------
    loss : float
        The float32 cross-entropy of this batch (computed from the 16-bit logits in fp16 and bf16).
    grads : float32 tree like ``params``, unscaled; may hold inf or NaN in fp16 after an overflow (check with
        :func:`all_finite`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and config.activation == "gelu":
        raise ValueError("precision fp16: the erf GELU has no float16 polynomial in ops/activations.py; use "
                         "activation 'gelu_tanh' (the GPT's default) or 'relu'")
    if precision != "fp16" and scale != 1.0:
        raise ValueError(f"scale: loss scaling is for fp16; {precision} takes scale 1, got {scale!r}")
    if blocks is None:
        forward, backward = gpt.forward, gpt.backward
    else:                                       # blockwise runs dense GPT-2 blocks only: no auxiliary loss
        forward = partial(blockwise.forward, blocks=blocks)
        backward = lambda dlogits, cache, d_aux: blockwise.backward(dlogits, cache)   # noqa: E731
    if precision == "fp32":
        logits, cache = forward(params, config, ids)                     # as gpt.loss_and_grads
        loss, ce_cache = cross_entropy.forward(logits, targets)
        dlogits = cross_entropy.backward(np.ones((), dtype=logits.dtype), ce_cache)
        loss, d_aux = _with_aux(loss, cache, config, 1.0)
        return float(loss), backward(dlogits, cache, d_aux)
    if precision == "fp16":
        with np.errstate(over="ignore", invalid="ignore"):   # an overflow is expected, detected, and skipped
            half = _map(lambda p: p.astype(np.float16), params)          # weights: master -> float16
            logits, cache = forward(half, config, ids)                   # (B, T, V) float16, every op in float16
            loss, ce_cache = cross_entropy.forward(logits.astype(np.float32), targets)   # loss in float32
            dlogits = cross_entropy.backward(np.array(scale, dtype=np.float32), ce_cache)  # S dL/dlogits
            loss, d_aux = _with_aux(loss, cache, config, scale)          # MoE: + coef * load-balancing loss
            grads = backward(dlogits.astype(np.float16), cache, d_aux)   # backward in float16
        inv_scale = 1.0 / scale
        return float(loss), _map(lambda g: g.astype(np.float32) * np.float32(inv_scale), grads)
    # bf16, emulated: rounding at the points of the table above
    bf = _map(to_bf16, params)                                           # weights: master -> bf16 values
    logits, cache = forward(bf, config, ids)                             # (B, T, V) float32 arithmetic
    loss, ce_cache = cross_entropy.forward(to_bf16(logits), targets)     # logits rounded; loss in float32
    dlogits = cross_entropy.backward(np.ones((), dtype=np.float32), ce_cache)
    loss, d_aux = _with_aux(loss, cache, config, 1.0)
    grads = backward(to_bf16(dlogits), cache, d_aux)                     # float32 arithmetic
    return float(loss), _map(to_bf16, grads)                             # gradients rounded to bf16


def _with_aux(loss, cache, config, scale):
    """The loss plus a mixture of experts' ``aux_loss_coef`` times its load-balancing loss (as ``gpt.loss_and_grads``),
    and the upstream gradient of that loss for ``gpt.backward``, times the loss scale. A dense model: ``(loss, 0)``."""
    if getattr(cache, "aux", None) is None or not config.aux_loss_coef:
        return loss, 0.0
    return loss + np.float32(config.aux_loss_coef) * np.float32(gpt.aux_loss(cache)), config.aux_loss_coef * scale


def all_finite(grads):
    """True when no gradient holds inf or NaN (an fp16 overflow makes the step skip)."""
    return all(bool(np.isfinite(g).all()) for g in tree.flatten(grads).values())


# ---------------------------------------------------------------------------------------------------------------
# Dynamic loss scaling
# ---------------------------------------------------------------------------------------------------------------

def scaler_init(scale=None, growth_interval=None):
    """The loss scaler's state (JSON values, saved in checkpoints): the scale S (default ``INIT_SCALE``), the
    good steps in a row, and the run of good steps that doubles S (default ``GROWTH_INTERVAL``)."""
    scale = INIT_SCALE if scale is None else scale
    growth_interval = GROWTH_INTERVAL if growth_interval is None else growth_interval
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale: expected a positive finite number, got {scale!r}")
    if not isinstance(growth_interval, int) or growth_interval < 1:
        raise ValueError(f"growth_interval: expected a positive integer, got {growth_interval!r}")
    return {"scale": float(scale), "good_steps": 0, "growth_interval": growth_interval}


def scaler_update(state, finite):
    """Advance the scaler after a step whose gradients were ``finite`` (or not); in place.

    An overflow halves S and the step must be skipped; ``growth_interval`` finite steps in a row double S.
    Returns the event as a short string (``"overflow: scale 65536 -> 32768, step skipped"``), or None.
    """
    old = state["scale"]
    if not finite:
        state["scale"] = old * 0.5
        state["good_steps"] = 0
        return f"overflow: scale {old:.8g} -> {state['scale']:.8g}, step skipped"
    state["good_steps"] += 1
    if state["good_steps"] == state["growth_interval"]:
        state["scale"] = old * 2.0
        state["good_steps"] = 0
        return f"{state['growth_interval']} good steps: scale {old:.8g} -> {state['scale']:.8g}"
    return None
