r"""The GPT of ``reference/models/gpt.py`` with its blocks passed in as functions.

``gpt.forward`` runs the L blocks with ``gpt.block_forward`` and keeps every block's cache for the backward pass.
Two techniques of training at scale change what one block computes or keeps, and nothing else:

- ``recompute.py`` (``--recompute``): a block keeps only its input and runs its forward again in the backward pass;
- ``tensor_parallel.py`` (``--tp N``): a block computes its share of the heads and hidden units, with two
  collectives in the forward pass and two in the backward pass.

So the model around the blocks is written once, here, exactly as ``gpt.forward`` and ``gpt.backward`` write it::

    x_0    = wte[ids] + P[0..T-1]                     (B, T, C)   embedding, the same on every rank
    x_l+1  = blocks.forward(x_l, params.blocks[l])    l = 0 .. L-1, each returning (x_l+1, its cache)
    logits = LN_f(x_L) wte^T                          (B, T, V)   tied head

and a :class:`Blocks` pair says what one block does. With gpt's own blocks (:data:`STORED`) :func:`forward` and
:func:`backward` give ``gpt.forward``'s and ``gpt.backward``'s numbers bit for bit (``tests/training/
test_recompute.py``). This file supports the GPT-2 block of ``gpt.py`` (LayerNorm, learned or sinusoidal positions,
multi-head attention, the GELU FFN); :func:`require_gpt2` refuses any other configuration by name.
"""
import dataclasses
from typing import Callable, NamedTuple

import numpy as np

from reference._checks import check_ids, check_int
from reference.models import gpt
from reference.ops import cross_entropy, embedding, layernorm, linear

# The fields of gpt.GPTConfig that the GPT-2 block reads; any other field must keep its default (require_gpt2).
GPT2_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "d_model", "positional", "activation", "ln_eps")


class Blocks(NamedTuple):
    """What one block does: ``forward(x (B, T, C), p, config) -> (y (B, T, C), cache)`` and
    ``backward(dy (B, T, C), cache) -> (dx (B, T, C), grads with the nesting of p)``."""

    forward: Callable
    backward: Callable


def _stored_forward(x, p, config):
    y, cache, _ = gpt.block_forward(x, p, config)     # the keys and values (for decoding) are not needed here
    return y, cache


STORED = Blocks(_stored_forward, gpt.block_backward)  # gpt's blocks: every activation kept for the backward pass


def require_gpt2(config, what):
    """Raise ValueError naming ``what`` if ``config`` is not a GPT-2-style ``gpt.GPTConfig`` (see the docstring)."""
    if not isinstance(config, gpt.GPTConfig):
        raise TypeError(f"{what}: expected a gpt.GPTConfig, got {type(config).__name__}")
    resolved = {"d_ff": 4 * config.d_model, "n_kv_head": config.n_head}   # what GPTConfig fills in for None
    for field in dataclasses.fields(config):
        if field.name in GPT2_FIELDS:
            continue
        value = getattr(config, field.name)
        if value != resolved.get(field.name, field.default):
            raise ValueError(f"{what} supports the GPT-2 block only (LayerNorm, learned or sinusoidal positions, "
                             f"multi-head attention, GELU FFN); this config has {field.name}={value!r}")


class ModelCache(NamedTuple):
    config: gpt.GPTConfig
    blocks: Blocks                              # whose backward walks the caches
    emb: embedding.EmbeddingCache
    caches: list                                # one per block, whatever blocks.forward returned
    ln_f: tuple
    head: linear.LinearCache                    # logits = xf wte^T


def forward(params, config, ids, blocks=STORED):
    """Logits (B, T, V) of ``ids`` (B, T), positions 0..T-1, through ``blocks``; returns ``(logits, ModelCache)``.

    ``params`` has gpt's nesting; its block parameters are whatever ``blocks.forward`` takes (a rank's shards under
    tensor parallelism).
    """
    require_gpt2(config, "blockwise.forward")
    check_ids("ids", ids, config.vocab_size)
    if ids.ndim != 2 or ids.shape[1] > config.block_size:
        raise ValueError(f"ids: expected shape (B, T) with T <= block_size={config.block_size}, got {ids.shape}")
    T = ids.shape[1]
    # as gpt.forward: x_0 = wte[ids] + P[positions]
    tok, emb_cache = embedding.forward(ids, params["wte"])                            # (B, T, C)
    x = tok + gpt.position_table(params, config, params["wte"].dtype)[np.arange(T)]   # (B, T, C)
    caches = []
    for p in params["blocks"]:
        x, c = blocks.forward(x, p, config)
        caches.append(c)
    xf, lnf_cache = layernorm.forward_fast(x, params["ln_f"]["gamma"], params["ln_f"]["beta"], config.ln_eps)
    logits, head_cache = linear.forward_fast(xf, params["wte"].T)                     # (B, T, V)
    return logits, ModelCache(config, blocks, emb_cache, caches, lnf_cache, head_cache)


def backward(dlogits, cache):
    """Gradients of every parameter given dL/dlogits (B, T, V): a tree with the nesting of ``params``."""
    config, xf = cache.config, cache.head.x
    if dlogits.shape != xf.shape[:2] + (config.vocab_size,) or dlogits.dtype != xf.dtype:
        raise ValueError(f"dlogits: expected {xf.dtype} {xf.shape[:2] + (config.vocab_size,)}, got "
                         f"{dlogits.dtype} {dlogits.shape}")
    # forward: logits = xf wte^T   (the head's share of dwte)
    dxf, dwte_T, _ = linear.backward_fast(dlogits, cache.head)      # (B, T, C), (C, V)
    dwte = np.ascontiguousarray(dwte_T.T)                            # (V, C)
    # forward: xf = LN_f(x_L)
    dx, dgamma_f, dbeta_f = layernorm.backward_fast(dxf, cache.ln_f)
    block_grads = []
    for c in reversed(cache.caches):
        dx, g = cache.blocks.backward(dx, c)
        block_grads.append(g)
    block_grads.reverse()
    # forward: x_0 = wte[ids] + P[0..T-1]   (the lookup's share of dwte adds to the head's)
    dwte += embedding.backward(dx, cache.emb)
    grads = {"wte": dwte}
    if config.positional == "learned":
        dwpe = np.zeros((config.block_size, config.d_model), dtype=xf.dtype)
        positions = np.broadcast_to(np.arange(dx.shape[1]), dx.shape[:2])            # (B, T)
        np.add.at(dwpe, positions.reshape(-1), dx.reshape(-1, config.d_model))       # as gpt.backward adds them
        grads["wpe"] = dwpe
    grads["blocks"] = block_grads
    grads["ln_f"] = {"gamma": dgamma_f, "beta": dbeta_f}
    return grads


def loss_and_grads(params, config, ids, targets, blocks=STORED):
    """Mean next-token cross-entropy of ``ids`` against ``targets`` (B, T) and its gradients, through ``blocks``.

    Returns ``(loss, grads)`` as ``gpt.loss_and_grads`` does.
    """
    logits, cache = forward(params, config, ids, blocks)
    check_int("targets", targets)
    if targets.shape != ids.shape:
        raise ValueError(f"targets: expected the shape of ids {ids.shape}, got {targets.shape}")
    loss, ce_cache = cross_entropy.forward(logits, targets)
    dlogits = cross_entropy.backward(np.ones((), dtype=logits.dtype), ce_cache)
    return loss, backward(dlogits, cache)
