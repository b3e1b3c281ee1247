r"""Is LayerNorm a regulariser? A small GPT trained to overfit, with and without LayerNorm and dropout (material §3.1).

The material says LayerNorm is "用于正则化模型，减少过拟合" (used to regularise the model and reduce overfitting). A
regulariser is judged by the gap it leaves between the loss on the training data and the loss on held-out data.
This module trains the same small character-level GPT on a slice of text small enough to overfit, four ways:

==================  ==========================================================================================
``ln``              pre-LN blocks as in :mod:`reference.models.gpt`: :math:`x \mathrel{+}= S(\mathrm{LN}(x))`, final LN
``none``            the same with every LayerNorm removed: :math:`x \mathrel{+}= S(x)`, no final LN
``ln+dropout``      ``ln`` with dropout on every sublayer's output and on the embeddings (the paper's §5.4)
``none+dropout``    ``none`` with the same dropout
==================  ==========================================================================================

and reports, for each, the final loss on the training windows and on validation windows, both in evaluation mode.

The model is :mod:`reference.models.gpt`'s, written out again here only because it needs two switches that the
book's GPT does not have (no LayerNorm, dropout); every step calls the same ops, and ``tests/studies/
test_regularisation.py`` checks that with LayerNorm and without dropout it computes exactly what ``gpt.forward``
computes, and its gradients against ``gpt.backward``. Parameters use ``gpt.init_params``'s keys; the ``none``
variants simply have no ``ln1``, ``ln2``, ``ln_f`` entries.

Dropout (:mod:`reference.ops.dropout`) is applied where the paper applies it: to each sublayer's output before it is
added to the residual stream, and to the sum of the token and position embeddings. It is on in training and off in
evaluation. LayerNorm has no such switch: it computes the same function in both modes.
"""
import math

import numpy as np

from reference.models import gpt
from reference.ops import attention, cross_entropy, dropout, embedding, ffn, layernorm, multihead
from reference.training import data, optim

VARIANTS = ("ln", "none", "ln+dropout", "none+dropout")


def init_params(config, rng, use_layernorm=True):
    """``gpt.init_params(config, rng, float64)``, without the LayerNorm parameters when ``use_layernorm`` is False."""
    params = gpt.init_params(config, rng, dtype=np.float64)
    if not use_layernorm:
        params.pop("ln_f")
        for p in params["blocks"]:
            p.pop("ln1")
            p.pop("ln2")
    return params


def forward(params, config, ids, p_drop=0.0, rng=None):
    r"""Logits of the next token; pre-LN when ``params`` has LayerNorm entries, no normalisation otherwise.

    Parameters
    ----------
    params : from :func:`init_params`
    config : gpt.GPTConfig (learned positions)
    ids : int ndarray (B, T)
    p_drop : float in [0, 1); dropout is on when ``p_drop > 0`` and ``rng`` is given (training), off otherwise
    rng : numpy.random.Generator or None

    Returns
    -------
    logits : (B, T, V);  cache for :func:`backward`
    """
    training = p_drop > 0 and rng is not None
    use_ln = "ln_f" in params
    B, T = ids.shape
    mask = attention.causal_mask(T, T)                                        # (T, T)

    def drop(z):
        return dropout.forward(z, p_drop, rng=rng if training else None, training=training)

    def norm(z, ln):
        if not use_ln:
            return z, None
        return layernorm.forward(z, ln["gamma"], ln["beta"], eps=config.ln_eps)

    tok, emb_cache = embedding.forward(ids, params["wte"])                    # (B, T, C)
    x, drop0 = drop(tok + params["wpe"][:T])                                  # (B, T, C)
    caches = []
    for p in params["blocks"]:
        h, c_ln1 = norm(x, p.get("ln1"))
        a, c_attn = multihead.forward(h, h, p["attn"], config.n_head, mask=mask)
        a, c_d1 = drop(a)
        x = x + a                                                             # x += drop(MHA(LN1(x)))
        h, c_ln2 = norm(x, p.get("ln2"))
        m = p["ffn"]
        f, c_ffn = ffn.forward(h, m["W1"], m["b1"], m["W2"], m["b2"], activation=config.activation)
        f, c_d2 = drop(f)
        x = x + f                                                             # x += drop(FFN(LN2(x)))
        caches.append((c_ln1, c_attn, c_d1, c_ln2, c_ffn, c_d2))
    xf, c_lnf = norm(x, params.get("ln_f"))
    logits = xf @ params["wte"].T                                             # (B, T, V) tied head
    return logits, (params, config, emb_cache, drop0, caches, xf, c_lnf, T)


def backward(dlogits, cache):
    """Gradients of every parameter of :func:`forward` (same nesting as ``params``)."""
    params, config, emb_cache, drop0, caches, xf, c_lnf, T = cache
    wte = params["wte"]
    V, C = wte.shape
    # forward: logits = xf wte^T
    dx = dlogits @ wte                                                        # (B, T, C)
    dwte = dlogits.reshape(-1, V).T @ xf.reshape(-1, C)                       # (V, C)
    grads = {}
    if c_lnf is not None:
        # forward: xf = LN_f(x)
        dx, dg, db = layernorm.backward(dx, c_lnf)
        grads["ln_f"] = {"gamma": dg, "beta": db}
    blocks = []
    for c_ln1, c_attn, c_d1, c_ln2, c_ffn, c_d2 in reversed(caches):
        g = {}
        # forward: x = x + drop(FFN(LN2(x)))
        dh = dropout.backward(dx, c_d2)
        dh, dW1, db1, dW2, db2 = ffn.backward(dh, c_ffn)
        g["ffn"] = {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}
        if c_ln2 is not None:
            dh, dg, db = layernorm.backward(dh, c_ln2)
            g["ln2"] = {"gamma": dg, "beta": db}
        dx = dx + dh
        # forward: x = x + drop(MHA(LN1(x)))
        da = dropout.backward(dx, c_d1)
        dq, dkv, g["attn"] = multihead.backward(da, c_attn)
        dh = dq + dkv                                                         # self-attention: h used twice
        if c_ln1 is not None:
            dh, dg, db = layernorm.backward(dh, c_ln1)
            g["ln1"] = {"gamma": dg, "beta": db}
        dx = dx + dh
        blocks.append(g)
    grads["blocks"] = blocks[::-1]
    # forward: x0 = drop(wte[ids] + wpe[:T])
    dx = dropout.backward(dx, drop0)
    grads["wte"] = dwte + embedding.backward(dx, emb_cache)
    dwpe = np.zeros_like(params["wpe"])
    dwpe[:T] = dx.sum(axis=0)
    grads["wpe"] = dwpe
    return grads


def mean_loss(params, config, tokens, windows, batch_size=16):
    """Mean next-token cross-entropy in evaluation mode (no dropout) over fixed windows ``(starts,)`` of ``tokens``."""
    T = config.block_size
    losses = []
    for i in range(0, len(windows), batch_size):
        idx = windows[i:i + batch_size, None] + np.arange(T)                  # (b, T)
        logits, _ = forward(params, config, tokens[idx])
        losses.append(float(cross_entropy.forward(logits, tokens[idx + 1])[0]) * len(idx))
    return sum(losses) / len(windows)


def train_variant(variant, config, train_tokens, val_tokens, steps, batch_size=16, lr=3e-3, p_drop=0.2,
                  eval_windows=64, eval_every=None, seed=0):
    r"""Train one variant of :data:`VARIANTS` with AdamW and return its losses.

    Every variant starts from the same ``gpt.init_params(config, seed)`` (the LayerNorm entries dropped for the
    ``none`` ones), sees the same batches, and is scored on the same ``eval_windows`` windows of the training text
    and of the validation text, in evaluation mode.

    Returns
    -------
    dict with ``"curve"``: list of ``(step, train_loss, val_loss)``, ``"train"``, ``"val"``, ``"gap"`` (the last
    point, gap = val - train), ``"params"``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    use_ln, p = not variant.startswith("none"), (p_drop if variant.endswith("dropout") else 0.0)
    params = init_params(config, np.random.default_rng(seed), use_layernorm=use_ln)
    state = optim.adamw_init(params)
    batch_rng, drop_rng = np.random.default_rng(seed + 1), np.random.default_rng(seed + 2)
    pick = np.random.default_rng(seed + 3)
    T = config.block_size
    train_windows = pick.integers(0, len(train_tokens) - T, size=eval_windows)
    val_windows = pick.integers(0, len(val_tokens) - T, size=eval_windows)
    eval_every = eval_every or max(1, steps // 8)

    def point(step):
        return (step, mean_loss(params, config, train_tokens, train_windows),
                mean_loss(params, config, val_tokens, val_windows))

    curve = [point(0)]
    for step in range(1, steps + 1):
        x, y = data.get_batch(train_tokens, batch_size, T, batch_rng)
        logits, cache = forward(params, config, x, p, drop_rng)
        loss, ce_cache = cross_entropy.forward(logits, y)
        if not math.isfinite(float(loss)):
            raise FloatingPointError(f"{variant}: the loss is {float(loss)} at step {step}")
        grads = backward(cross_entropy.backward(1.0, ce_cache), cache)
        optim.clip_grad_norm(grads, 1.0)
        optim.adamw_step(params, grads, state, optim.warmup_cosine(step, lr, steps // 10, steps, min_lr=0.1 * lr),
                         betas=(0.9, 0.95), weight_decay=0.1, decay_mask=optim.decay_matrices)
        if step % eval_every == 0 or step == steps:
            curve.append(point(step))
    _, tr, va = curve[-1]
    return {"curve": curve, "train": tr, "val": va, "gap": va - tr, "params": params}


def mode_difference(params, config, ids, p_drop, seed=0):
    r"""How much the model's output differs between training mode and evaluation mode, on the same input.

    :math:`\lVert z_\text{train} - z_\text{eval}\rVert / \lVert z_\text{eval}\rVert` over the logits: exactly 0
    without dropout, whatever the LayerNorms (they have no mode); positive with it.
    """
    train_logits, _ = forward(params, config, ids, p_drop, np.random.default_rng(seed))
    eval_logits, _ = forward(params, config, ids)
    return float(np.linalg.norm(train_logits - eval_logits) / np.linalg.norm(eval_logits))
