r"""Tensor parallelism (Megatron-LM, Shoeybi et al. 2019): each block's heads and hidden units split over N ranks.

Two facts about a product :math:`XW`. Split W by columns, :math:`W = [W_1 \mid \dots \mid W_N]`, and each rank
computes its own columns from the whole X (**column-parallel**); split W by rows and X's columns alike, and each
rank computes a partial product that one all-reduce adds up (**row-parallel**):

.. math::

    X W = [\,X W_1 \mid \dots \mid X W_N\,], \qquad
    A W = [A_1 \mid \dots \mid A_N] \begin{bmatrix} W_1 \\ \vdots \\ W_N \end{bmatrix} = \sum_{t=1}^{N} A_t W_t .

A block uses them in pairs, the column-parallel product first, so that what rank t computes is what it consumes:

- **attention**: the H heads are independent. Head h reads columns :math:`h d_k .. (h+1) d_k` of Wq, Wk, Wv (and
  of bq, bk, bv), and its output meets the same rows of Wo. Rank t keeps heads :math:`t H/N .. (t+1) H/N - 1`: a
  block of columns of Wq, Wk, Wv and the same block of rows of Wo;
- **FFN**: the activation acts element by element, so hidden unit j needs column j of W1, b1[j] and row j of W2.
  Rank t keeps 4C/N hidden units: a block of columns of W1 (and of b1), the same rows of W2.

Everything else is whole on every rank (``wte``, ``wpe``, the LayerNorms, ``bo``, ``b2``, ``ln_f``: the biases
that follow a row-parallel product are added once, after the sum). Rank t's share of one block (:func:`block_forward`)::

    h   = f( LN1(x) )                                       (B, T, C)    the same on every rank
    q, k, v = h [Wq_t | Wk_t | Wv_t] + [bq_t | bk_t | bv_t]   H/N heads   column-parallel
    a_t = Attention(q, k, v)                                (B, T, C/N)
    x   = x + g( a_t Wo_t ) + bo                            (B, T, C)    row-parallel, summed by g
    h   = f( LN2(x) )
    x   = x + g( gelu(h W1_t + b1_t) W2_t ) + b2                         4C/N hidden units

f and g are the two conjugate communication operators, each a forward/backward pair written below:

====  ================================  ==================================================================
f     forward: :math:`y = x`            backward: :math:`dx = \sum_t dy_t`, an all-reduce: x feeds all N
                                        ranks' heads, so its gradient is the sum of their gradients
g     forward: :math:`y = \sum_t x_t`,  backward: :math:`dx_t = dy`: each partial sum enters y with
      an all-reduce                     coefficient 1
====  ================================  ==================================================================

So a block costs two all-reduces of B T C floats in the forward pass (the g's) and two in the backward pass (the
f's): 4 L per step, of activations. Data parallelism sends the gradients instead, one all-reduce of all parameters
per step. Each rank holds 1/N of the blocks' weights, gradients and AdamW moments and computes 1/N of their FLOPs.

The gradients: rank t's gradient of a split parameter is its shard of the full gradient. A whole parameter gets the
same gradient on every rank, computed from the same numbers (an all-reduce leaves the same bits on every rank), so
it needs no communication, and every rank takes the same AdamW step on it. The global norm for clipping counts
every scalar once (:func:`owned_mask`). With data parallelism on top, the world is D x N ranks
(``distributed.init_groups``): the D replicas of one shard average their gradients over the "dp" group, and ZeRO-1
shards a replica's flat vector over "dp" as it would a whole model's.

Checkpoints hold the full parameters and moments (:func:`gather`), so a run saved on N ranks resumes on any number of
ranks, with or without ``--tp``, and the generation and export commands load it as any other. This file supports the
GPT-2 block (``blockwise.require_gpt2``).
"""
from typing import NamedTuple

import numpy as np

from reference import tree
from reference.ops import attention, ffn, layernorm, linear
from reference.training import blockwise, distributed
from reference.training.data_parallel import flat_layout

# The split parameters of a block and the axis each is split along (1: columns, 0: rows); the rest are whole.
SPLIT = {"attn": {"Wq": 1, "Wk": 1, "Wv": 1, "bq": 0, "bk": 0, "bv": 0, "Wo": 0},
         "ffn": {"W1": 1, "b1": 0, "W2": 0}}


def check(config, tp):
    """Raise ValueError unless ``config`` (a GPT-2 config) splits over ``tp`` ranks: whole heads on every rank."""
    blockwise.require_gpt2(config, "--tp")
    if not isinstance(tp, int) or tp < 1 or config.n_head % tp:
        raise ValueError(f"--tp {tp}: the {config.n_head} heads cannot be split equally over {tp} ranks; use a "
                         f"divisor of n_head")


def split_axis(name):
    """The axis along which the parameter called ``name`` (``"blocks.0.attn.Wq"``) is split, or None (whole)."""
    parts = name.split(".")
    return SPLIT.get(parts[2], {}).get(parts[3]) if parts[0] == "blocks" and len(parts) == 4 else None


# ---------------------------------------------------------------------------------------------------------------
# Shards and the full format
# ---------------------------------------------------------------------------------------------------------------

def shard(params, rank, tp):
    """Rank ``rank``'s share of full ``params`` (or of AdamW moments, which have their nesting): new arrays."""
    out = {}
    for name, a in tree.flatten(params).items():
        axis = split_axis(name)
        out[name] = a.copy() if axis is None else np.ascontiguousarray(np.split(a, tp, axis=axis)[rank])
    return tree.unflatten(out)


def merge(shards):
    """The full tree from every rank's share (a list, rank order): split parameters concatenated, whole ones once."""
    flats = [tree.flatten(s) for s in shards]
    return tree.unflatten({name: a if split_axis(name) is None else
                           np.concatenate([f[name] for f in flats], axis=split_axis(name))
                           for name, a in flats[0].items()})


def gather(local):
    """The full tree on every rank of the "tp" group, from each rank's ``local`` share (a collective)."""
    full = {}
    for name, a in tree.flatten(local).items():
        axis = split_axis(name)
        full[name] = a if axis is None else np.concatenate(list(distributed.all_gather(a, group="tp")), axis=axis)
    return tree.unflatten(full)


def owned_mask(local, size=None):
    """The scalars of ``local``'s flat vector (``data_parallel.FlatLayout``, padded to ``size``) that this rank
    counts in the global gradient norm: all of its shards, and the whole parameters on tensor-parallel rank 0 only,
    so that summing over the "tp" group counts every scalar of the model once. float32, 1 or 0."""
    layout = flat_layout(local)
    mask = np.zeros(layout.size if size is None else size, np.float32)
    first = distributed.rank("tp") == 0
    for name, shape, off in zip(layout.names, layout.shapes, layout.offsets):
        if first or split_axis(name) is not None:
            mask[off:off + int(np.prod(shape))] = 1.0
    return mask


# ---------------------------------------------------------------------------------------------------------------
# The two conjugate operators
# ---------------------------------------------------------------------------------------------------------------

def f_forward(x):
    """f: the identity. Every rank goes on with its own copy of x (B, T, C)."""
    return x


def f_backward(dy):
    """f's backward: :math:`dx = \\sum_t dy_t`, an all-reduce over the "tp" group (in place on ``dy``)."""
    # forward: y = x on every rank t, so dL/dx = sum over t of dL/dy_t
    return distributed.all_reduce(np.ascontiguousarray(dy), group="tp")


def g_forward(x):
    """g: :math:`y = \\sum_t x_t`, the all-reduce of the ranks' partial sums (in place on ``x``)."""
    return distributed.all_reduce(np.ascontiguousarray(x), group="tp")


def g_backward(dy):
    """g's backward: the identity, :math:`dx_t = dy` on every rank."""
    # forward: y = x_0 + ... + x_{N-1}, so dL/dx_t = dL/dy
    return dy


# ---------------------------------------------------------------------------------------------------------------
# One block, rank t's share
# ---------------------------------------------------------------------------------------------------------------

class AttentionCache(NamedTuple):
    qkv: linear.LinearCache                     # qkv = h [Wq_t | Wk_t | Wv_t] + [bq_t | bk_t | bv_t]
    attn: attention.AttentionCache              # this rank's H/N heads
    out: linear.LinearCache                     # y_t = a_t Wo_t   (no bias: bo is added after g)


class BlockCache(NamedTuple):
    ln1: tuple
    attn: AttentionCache
    ln2: tuple
    ffn: ffn.FfnCache                           # gelu(h W1_t + b1_t) W2_t   (no b2: added after g)


def attention_forward(h, p, config):
    """This rank's heads of causal self-attention on ``h`` (B, T, C): the partial sum ``a_t Wo_t`` (B, T, C)."""
    B, T, C = h.shape
    d_k = config.d_k
    H_t = p["Wq"].shape[1] // d_k                                 # this rank's heads, H / N
    W_qkv = np.concatenate([p["Wq"], p["Wk"], p["Wv"]], axis=1)   # (C, 3 C/N) column-parallel
    b_qkv = np.concatenate([p["bq"], p["bk"], p["bv"]])            # (3 C/N,)
    qkv, qkv_cache = linear.forward_fast(h, W_qkv, b_qkv)         # (B, T, 3 C/N)
    q, k, v = qkv.reshape(B, T, 3, H_t, d_k).transpose(2, 0, 3, 1, 4)   # each (B, H/N, T, d_k)
    heads, attn_cache = attention.forward_fast(q, k, v, attention.causal_mask(T, T))
    a = heads.transpose(0, 2, 1, 3).reshape(B, T, H_t * d_k)      # (B, T, C/N) this rank's heads, concatenated
    y_t, out_cache = linear.forward_fast(a, p["Wo"])              # (B, T, C) row-parallel: a partial sum
    return y_t, AttentionCache(qkv_cache, attn_cache, out_cache)


def attention_backward(dy_t, cache):
    """Gradients of :func:`attention_forward`: dL/dh (this rank's heads' share) and the rank's attention shards."""
    B, T, C = dy_t.shape
    H_t, d_k = cache.attn.qs.shape[1], cache.attn.qs.shape[3]
    # forward: y_t = a_t Wo_t
    da, dWo, _ = linear.backward_fast(dy_t, cache.out)            # (B, T, C/N)
    # forward: a_t = concat_heads(attention(q, k, v))
    dheads = da.reshape(B, T, H_t, d_k).transpose(0, 2, 1, 3)     # (B, H/N, T, d_k)
    dq, dk, dv = attention.backward_fast(dheads, cache.attn)
    # forward: q, k, v = split_heads(qkv)
    dqkv = np.stack([dq, dk, dv], axis=0).transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * H_t * d_k)
    # forward: qkv = h [Wq_t | Wk_t | Wv_t] + [bq_t | bk_t | bv_t]
    dh, dW_qkv, db_qkv = linear.backward_fast(np.ascontiguousarray(dqkv), cache.qkv)   # (B, T, C)
    dWq, dWk, dWv = (np.ascontiguousarray(w) for w in np.split(dW_qkv, 3, axis=1))
    dbq, dbk, dbv = np.split(db_qkv, 3)
    return dh, {"Wq": dWq, "Wk": dWk, "Wv": dWv, "Wo": dWo, "bq": dbq, "bk": dbk, "bv": dbv}


def block_forward(x, p, config):
    """Rank t's share of one pre-LN block (the module docstring's six lines): ``(y (B, T, C), BlockCache)``, y the
    same on every rank of the "tp" group."""
    a, f = p["attn"], p["ffn"]
    h, ln1_cache = layernorm.forward_fast(x, p["ln1"]["gamma"], p["ln1"]["beta"], config.ln_eps)
    y_t, attn_cache = attention_forward(f_forward(h), a, config)
    x = x + (g_forward(y_t) + a["bo"])                              # a new array: the LN cache holds the old x
    h, ln2_cache = layernorm.forward_fast(x, p["ln2"]["gamma"], p["ln2"]["beta"], config.ln_eps)
    m_t, ffn_cache = ffn.forward_fast(f_forward(h), f["W1"], f["b1"], f["W2"], None, config.activation)
    return x + (g_forward(m_t) + f["b2"]), BlockCache(ln1_cache, attn_cache, ln2_cache, ffn_cache)


def block_backward(dy, cache):
    """Gradients of :func:`block_forward`: ``(dx (B, T, C), grads like the rank's block params)``."""
    C = dy.shape[-1]
    # forward: y = x + g(m_t) + b2
    db2 = dy.reshape(-1, C).sum(axis=0)
    dh, dW1, db1, dW2, _ = ffn.backward_fast(g_backward(dy), cache.ffn)
    # forward: h = f(LN2(x))
    dh, dgamma2, dbeta2 = layernorm.backward_fast(f_backward(dh), cache.ln2)
    dx = dy + dh
    # forward: x = x_in + g(y_t) + bo
    dbo = dx.reshape(-1, C).sum(axis=0)
    dh, dattn = attention_backward(g_backward(dx), cache.attn)
    # forward: h = f(LN1(x_in))
    dh, dgamma1, dbeta1 = layernorm.backward_fast(f_backward(dh), cache.ln1)
    dx += dh
    return dx, {"ln1": {"gamma": dgamma1, "beta": dbeta1}, "attn": {**dattn, "bo": dbo},
                "ln2": {"gamma": dgamma2, "beta": dbeta2}, "ffn": {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}}


BLOCKS = blockwise.Blocks(block_forward, block_backward)
