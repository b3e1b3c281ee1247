r"""Activation recomputation (gradient checkpointing, Chen et al. 2016): keep each block's input, not its cache.

The backward pass of a block needs what its forward pass computed: the LayerNorm statistics, Q, K, V, the attention
probabilities (one T x T matrix per head), the FFN's hidden layer before and after the activation. Kept for all L
blocks until the backward pass reaches them, these caches are most of training's memory beyond the weights
(``reference/training/memory.py`` fits about :math:`26\,BTC + BHT^2` floats per block). Recomputation keeps only each
block's input x (B T C floats) and, when the backward pass reaches block l, runs block l's forward again from its
input to rebuild the cache, uses it, and drops it:

.. math::

    \text{kept} \approx \underbrace{L \cdot BTC}_{\text{block inputs}}
    + \underbrace{26\,BTC + BHT^2}_{\text{one block's cache, in the backward pass}}
    \quad\text{instead of}\quad L\,(26\,BTC + BHT^2).

The price is a second forward pass of every block: with the backward costing about twice the forward, a step costs
about :math:`1 + 2 + 1 = 4` forward passes instead of 3, a third more compute (the embedding and the head are not
recomputed). The gradients do not change at all: the forward of a block is a deterministic function of its input
and its parameters, so the recomputed cache holds the same bits as the one that was dropped, and the backward pass
computes from the same numbers (tested bit for bit). ``bench/recompute.py`` measures the memory and the time.

Recomputation is a wrapper around any :class:`~reference.training.blockwise.Blocks`: gpt's blocks, or the tensor-
parallel ones (where the second forward also repeats the forward pass's two all-reduces, as in Megatron-LM).
"""
from typing import NamedTuple

from reference.training import blockwise


class Saved(NamedTuple):
    """What a recomputed block keeps between its forward and its backward pass."""

    x: object                                   # (B, T, C) the block's input
    p: dict                                     # the block's parameters (references, not copies)
    config: object


def recomputed(blocks=None):
    """``blocks`` (default gpt's, ``blockwise.STORED``) whose forward keeps only :class:`Saved` and whose backward
    recomputes the cache first."""
    blocks = blockwise.STORED if blocks is None else blocks

    def forward(x, p, config):
        y, _ = blocks.forward(x, p, config)                 # the cache is dropped here
        return y, Saved(x, p, config)

    def backward(dy, saved):
        _, cache = blocks.forward(saved.x, saved.p, saved.config)   # the forward again: the same bits
        return blocks.backward(dy, cache)

    return blockwise.Blocks(forward, backward)


def loss_and_grads(params, config, ids, targets):
    """``gpt.loss_and_grads`` with every block recomputed: the same loss and gradients, bit for bit."""
    return blockwise.loss_and_grads(params, config, ids, targets, recomputed())
