r"""ZeRO stage 1 (Rajbhandari et al. 2020): the AdamW state sharded over the data-parallel ranks.

AdamW keeps two float32 moments per parameter, 8 bytes against the weight's 4: the largest item of training memory.
Plain data parallelism keeps all of it on every rank, and every rank performs the same update on the same numbers.
ZeRO stage 1 splits the flat parameter vector (``data_parallel.FlatLayout``, padded to W equal shards of
S = ceil(N / W) elements) and rank r keeps m and v of shard r only. One step:

1. **reduce-scatter** the flat gradients: rank r receives shard r of the sum over ranks, divided by W (the mean);
2. the **global norm** for clipping: each rank sums the squares of its shard; an all-reduce of one number adds them;
3. clip shard r and take the **AdamW step on shard r** of the parameters, with shard r of m and v;
4. **all-gather** the updated shards, so every rank holds all the new parameters again.

Steps 1 and 4 send (W-1)/W N elements each, together what the all-reduce of plain data parallelism sends
(2 (W-1)/W N): ZeRO-1 saves 8 N (W-1)/W bytes per rank for no extra traffic. (Stage 2 also frees the gradients
outside the shard; stage 3 shards the parameters themselves and gathers each layer just before it is used.)

AdamW works element by element, so shard r updated alone gives the numbers the full update gives there. The shard
is handed to ``optim.adamw_step`` as a small tree of 1-D views, one per parameter that the shard overlaps; weight
decay follows the parameter each piece belongs to. Checkpoints hold the full state (:func:`full_state` gathers it),
so a run saved with ZeRO resumes without it, or on another number of ranks, and the other way round.

Under tensor parallelism the shards are taken over the "dp" group (the replicas of one tensor-parallel shard of the
model, ``distributed.init_groups``), and the norm of step 2 adds every rank's share, each scalar counted once.
"""
import math

import numpy as np

from reference import tree
from reference.training import distributed, optim
from reference.training.data_parallel import flat_layout, global_norm, to_flat, tree_view


def shard_range(size, rank, world_size):
    """``(lo, hi)``: rank's shard of a flat vector of ``size`` elements padded to ``world_size`` equal shards."""
    shard = -(-size // world_size)                       # S = ceil(N / W)
    return rank * shard, (rank + 1) * shard


def _pieces(layout, lo, hi):
    """``{name: (start, stop)}``: the part of each parameter that lies in [lo, hi), relative to ``lo``."""
    pieces = {}
    for name, shape, off in zip(layout.names, layout.shapes, layout.offsets):
        start, stop = max(off, lo), min(off + math.prod(shape), hi)
        if start < stop:
            pieces[name] = (start - lo, stop - lo)
    return pieces


def init(params, opt_state=None):
    """This rank's shard of the AdamW state: zeros for a new run, or the shard of a full state (a checkpoint's).

    Returns
    -------
    dict ``{"step": int, "m": (S,) float32, "v": (S,) float32}``
    """
    layout = flat_layout(params)
    lo, hi = shard_range(layout.size, distributed.rank("dp"), distributed.world_size("dp"))
    padded = (hi - lo) * distributed.world_size("dp")    # W S
    if opt_state is None:
        return {"step": 0, "m": np.zeros(hi - lo, np.float32), "v": np.zeros(hi - lo, np.float32)}
    m = to_flat(opt_state["m"], layout, np.zeros(padded, np.float32))
    v = to_flat(opt_state["v"], layout, np.zeros(padded, np.float32))
    return {"step": int(opt_state["step"]), "m": m[lo:hi].copy(), "v": v[lo:hi].copy()}


def update(params, flat, state, lr, max_norm, betas, weight_decay, skip_nonfinite=False, owned=None):
    """Steps 1-4 of the module docstring, in place on ``params`` and ``state``; ``flat`` is this rank's flat
    gradient (length a multiple of W). With ``skip_nonfinite`` (fp16) a non-finite gradient is not applied.
    ``owned``: under tensor parallelism, ``tensor_parallel.owned_mask`` of ``flat``. Returns the global gradient
    norm before clipping, as ``data_parallel.update`` does."""
    layout = flat_layout(params)
    W = distributed.world_size("dp")
    lo, hi = shard_range(layout.size, distributed.rank("dp"), W)
    # 1. reduce-scatter: shard r of the mean gradient
    g = distributed.reduce_scatter(flat, group="dp")     # (S,)
    g /= np.float32(W)
    # 2. global norm: the ranks' sums of squares, added (every rank's, each scalar once, under tensor parallelism)
    if owned is None:
        grad_norm = math.sqrt(distributed.all_reduce(np.array([float(np.vdot(g, g))]), group="dp")[0])
    else:
        grad_norm = global_norm(g, owned[lo:hi], "world")
    if skip_nonfinite and not math.isfinite(grad_norm):
        return grad_norm
    # 3. clip (optim.clip_grad_norm's rule) and AdamW on the shard
    clip_coef = max_norm / (grad_norm + 1e-6)
    if not clip_coef >= 1.0:
        g *= clip_coef
    p = to_flat(params, layout, np.zeros(W * (hi - lo), np.float32))   # (W S,) all parameters, end to end
    pieces = _pieces(layout, lo, hi)
    full = tree.flatten(params)
    decays = {name: optim.decay_matrices(name.replace(".", "/"), full[name]) for name in pieces}
    view = lambda a: {name: a[start:stop] for name, (start, stop) in pieces.items()}   # noqa: E731
    shard_state = {"step": state["step"], "m": view(state["m"]), "v": view(state["v"])}
    optim.adamw_step(view(p[lo:hi]), view(g), shard_state, lr, betas=betas, weight_decay=weight_decay,
                     decay_mask=lambda name, _: decays[name])
    state["step"] = shard_state["step"]
    # 4. all-gather the updated shards into every rank's parameters
    p = distributed.all_gather(np.ascontiguousarray(p[lo:hi]), group="dp").reshape(-1)
    for name, new in tree.flatten(tree_view(p, layout)).items():
        full[name][...] = new
    return grad_norm


def full_state(params, state):
    """The AdamW state of one process (``{"step", "m", "v"}``, trees like ``params``) gathered from the shards.

    A collective: every rank of the "dp" group must call it (rank 0 then writes it into the checkpoint).
    """
    layout = flat_layout(params)
    m = distributed.all_gather(state["m"], group="dp").reshape(-1)
    v = distributed.all_gather(state["v"], group="dp").reshape(-1)
    return {"step": state["step"], "m": tree_view(m, layout), "v": tree_view(v, layout)}


def optimizer_bytes(state):
    """Bytes of AdamW moments this rank holds: its shards (a ZeRO state) or the full trees (``optim``'s state)."""
    return int(sum(a.nbytes for a in tree.flatten({"m": state["m"], "v": state["v"]}).values()))
