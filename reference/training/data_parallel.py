r"""Data parallelism and gradient accumulation: the gradient of one global batch, computed in pieces.

Every rank holds the whole model. Each draws the *same* global batch (the same seed, the same draws), takes its own
slice of rows, computes the gradient of its rows, and one all-reduce averages the ranks' gradients; every rank then
applies the same update to the same parameters, so they stay equal without ever being sent.

Why the average of the ranks' gradients is the gradient of the global batch: the loss is a mean over the B T
positions of the batch, and W ranks holding B/W rows each (rank r's rows :math:`R_r`) split that mean into a mean of
means,

.. math::

    L = \frac{1}{BT} \sum_{b,t} \ell_{bt} = \frac{1}{W} \sum_{r=0}^{W-1} L_r, \qquad
    L_r = \frac{1}{(B/W)\,T} \sum_{b \in R_r,\,t} \ell_{bt}, \qquad \nabla L = \frac{1}{W} \sum_r \nabla L_r .

The identity needs equal rows on every rank (with unequal rows the mean of means would weight some rows more than
others), so a batch size that W does not divide is refused.

Gradient accumulation is the same identity in time instead of space: ``--grad-accum K`` draws K B rows, runs them
as K micro-batches of B rows one after the other, and averages their gradients before one update, which is the
update of one batch of K B rows. Together, for micro-batch k and rank r::

    x                       (K B, T)   drawn once, the same on every rank
    micro-batch k           rows [k B, (k+1) B)
    rank r's share of it    rows [k B + r B/W, k B + (r+1) B/W)

The gradients travel as one flat float32 vector (all parameters end to end, ``FlatLayout``), so one step costs one
all-reduce of N floats; ``zero.py`` shards that same vector.

With tensor parallelism (``tensor_parallel.py``) the ranks of one replica hold different shards of the model: the
rows above are split over the "dp" group (the replicas, ``distributed.init_groups``) and the gradients averaged
over it, and the global norm adds the "tp" group's shares, each scalar counted once (``owned``).
"""
import hashlib
import math
from typing import NamedTuple

import numpy as np

from reference import tree
from reference.training import distributed, optim, precision


class FlatLayout(NamedTuple):
    """Where each parameter sits in the flat vector: ``names`` in ``tree.flatten`` order, their shapes, offsets."""

    names: tuple
    shapes: tuple
    offsets: tuple
    size: int                    # N, the number of scalars


def flat_layout(params):
    """The flat layout of ``params`` (or of gradients with their nesting)."""
    flat = tree.flatten(params)
    sizes = [a.size for a in flat.values()]
    offsets = tuple(int(o) for o in np.cumsum([0] + sizes[:-1]))
    return FlatLayout(tuple(flat), tuple(a.shape for a in flat.values()), offsets, int(sum(sizes)))


def to_flat(params, layout, out):
    """Copy the tree's arrays into ``out[:layout.size]``, end to end; returns ``out``."""
    for a, off in zip(tree.flatten(params).values(), layout.offsets):
        out[off:off + a.size] = a.ravel()
    return out


def tree_view(flat, layout):
    """The tree whose arrays are views into ``flat``: writing to one writes to the other."""
    return tree.unflatten({name: flat[off:off + math.prod(shape)].reshape(shape)
                           for name, shape, off in zip(layout.names, layout.shapes, layout.offsets)})


def check_batch(batch_size, world_size):
    """Refuse a global batch that the ranks cannot share equally (see the module docstring)."""
    if batch_size % world_size:
        raise ValueError(f"--batch-size {batch_size} is not divisible by the world size {world_size}: every rank "
                         f"needs the same number of rows, or the mean of the ranks' mean losses would not be the "
                         f"batch's mean loss; use a multiple of {world_size}")


def rank_rows(batch_size, rank, world_size):
    """The slice of rows of a (micro-)batch of ``batch_size`` rows that ``rank`` computes."""
    check_batch(batch_size, world_size)
    per_rank = batch_size // world_size
    return slice(rank * per_rank, (rank + 1) * per_rank)


def loss_and_grads(params, config, x, y, precision_name="fp32", scale=1.0, grad_accum=1, pad_to=1, blocks=None):
    """Mean loss and gradient of the global batch ``(x, y)`` (K B rows), this rank's share computed here.

    Parameters
    ----------
    params : the float32 master parameters
    x, y : int ndarrays (K B, T), the same on every rank
    precision_name, scale, blocks : passed to ``precision.loss_and_grads``
    grad_accum : K, the number of micro-batches
    pad_to : the flat gradient's length is rounded up to a multiple of this (ZeRO's shards); the padding is 0

    Returns
    -------
    loss : float
        The mean loss of the global batch (all-reduced, the same on every rank).
    flat : float32 (N padded,)
        The mean gradient of **this rank's rows** over the K micro-batches, not yet averaged over ranks.
    """
    K, W = grad_accum, distributed.world_size("dp")
    if x.shape[0] % K:
        raise ValueError(f"x: {x.shape[0]} rows cannot form grad_accum={K} equal micro-batches")
    B = x.shape[0] // K
    rows = rank_rows(B, distributed.rank("dp"), W)
    layout = flat_layout(params)
    flat = np.zeros(-(-layout.size // pad_to) * pad_to, dtype=np.float32)   # (N padded,)
    buf = np.empty_like(flat)
    loss = 0.0
    for k in range(K):
        xk, yk = x[k * B:(k + 1) * B][rows], y[k * B:(k + 1) * B][rows]      # (B/W, T)
        loss_k, grads_k = precision.loss_and_grads(params, config, xk, yk, precision_name, scale, blocks)
        loss += loss_k / K
        flat += to_flat(grads_k, layout, buf)
    if K > 1:
        flat /= np.float32(K)
    loss = float(distributed.all_reduce(np.array([loss]), op="mean", group="dp")[0])
    return loss, flat


def global_norm(g, owned, group):
    """The L2 norm of the model's gradient from this rank's part ``g`` (1-D): the sum over ``group`` of each rank's
    sum of squares of the elements it ``owns`` (a 0/1 mask like ``g``, ``tensor_parallel.owned_mask``)."""
    sq = float(np.vdot(g * owned, g))
    return math.sqrt(distributed.all_reduce(np.array([sq]), group=group)[0])


def update(params, flat, opt_state, lr, max_norm, betas, weight_decay, skip_nonfinite=False, owned=None):
    """Average the ranks' gradients (one all-reduce), clip them to ``max_norm``, and take one AdamW step, in place.

    Every rank holds the same mean gradient afterwards and applies the same update. With ``skip_nonfinite`` (fp16)
    a gradient with inf or NaN is not applied. Under tensor parallelism ``owned`` is this rank's
    ``tensor_parallel.owned_mask``, and the norm adds the "tp" group's shares. Returns the global gradient norm
    before clipping.
    """
    layout = flat_layout(params)
    distributed.all_reduce(flat, op="mean", group="dp")                # sum over the replicas / D, in place
    grads = tree_view(flat, layout)
    with np.errstate(invalid="ignore" if skip_nonfinite else "warn"):   # fp16 overflow: inf * 0, then skipped
        if owned is None:
            grads, grad_norm = optim.clip_grad_norm(grads, max_norm)
        else:
            grad_norm = global_norm(flat, owned, "tp")
            clip_coef = max_norm / (grad_norm + 1e-6)                  # optim.clip_grad_norm's rule
            if not clip_coef >= 1.0:
                flat *= clip_coef
    if skip_nonfinite and not math.isfinite(grad_norm):
        return grad_norm
    optim.adamw_step(params, grads, opt_state, lr, betas=betas, weight_decay=weight_decay,
                     decay_mask=optim.decay_matrices)
    return grad_norm


def replicas_agree(params, group="dp"):
    """True when every rank of ``group`` holds bit-identical ``params``: their sha256 digests, all-gathered, are
    equal.

    Data parallelism never sends parameters; the replicas stay equal because they apply the same update to the
    same numbers. This checks it (a collective: every rank calls it). Under tensor parallelism the replicas of one
    shard form the "dp" group, and the ranks of the "tp" group hold the same whole parameters."""
    digest = hashlib.sha256(b"".join(a.tobytes() for a in tree.flatten(params).values())).digest()
    digests = distributed.all_gather(np.frombuffer(digest, dtype=np.uint8).copy(), group=group)   # (W, 32)
    return bool((digests == digests[0]).all())
