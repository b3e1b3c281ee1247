"""torch.distributed as the communication engine: the one module of ``reference/`` that imports torch.

Everything else in the package is NumPy. When several processes train together, they need collectives (all-reduce,
all-gather, reduce-scatter, broadcast) over a network or shared memory, and writing those is a library's job, not a
primer's. So the NumPy arrays travel as torch tensors that **share their memory** (``torch.from_numpy``): a
collective writes its result straight into the NumPy buffer, with no copy in either direction.

The launcher starts one process per rank and tells each who it is through the environment::

    torchrun --standalone --nproc_per_node=2 -m reference.train --config tiny

sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in every process (``LOCAL_RANK`` too, and
``TORCHELASTIC_RESTART_COUNT`` after ``--max-restarts`` restarted the group). :func:`init` reads them and joins the
group with the gloo backend (CPU tensors; NCCL would need GPU tensors). In a single process (no launcher, or one
rank) nothing is initialised, torch is not even imported, and every collective below is the identity, so the
training code calls them unconditionally.

The collectives, for W ranks, each with an array ``a`` of the same shape and dtype (N = ``a.size``):

====================  =========================================================  =============================
``all_reduce(a)``     every rank gets :math:`\\sum_r a_r` (in place)              sends 2(W-1)/W N elements (ring)
``all_gather(a)``     every rank gets ``stack([a_0, ..., a_{W-1}])``              sends (W-1)/W of the result
``reduce_scatter(a)`` rank r gets chunk r of :math:`\\sum_r a_r` (``a`` splits     sends (W-1)/W N elements
                      into W equal chunks)
``broadcast(a, src)`` every rank gets ``a_src`` (in place)
====================  =========================================================  =============================

(An all-reduce is a reduce-scatter followed by an all-gather, hence its 2(W-1)/W; ``bench/comm.py`` measures it.)
The process group is torch's global state: one per process, made by :func:`init`, ended by :func:`destroy`.

Subgroups: with tensor parallelism (``--tp N``) the W ranks form a grid of W/N data-parallel replicas times N
tensor-parallel ranks (:func:`init_groups`). Rank ``d N + t`` is tensor-parallel rank t of replica d (Megatron's
order: the ranks of one tensor-parallel group are neighbours, on one machine where the traffic is heaviest)::

    W = 4, N = 2:    "tp" groups {0, 1} {2, 3}     (one replica's model, split)
                     "dp" groups {0, 2} {1, 3}     (the same shard in every replica)

Every collective takes ``group="world"`` (all ranks, the default), ``"dp"`` or ``"tp"`` (this rank's group of
that kind); :func:`rank` and :func:`world_size` too. Without tensor parallelism "dp" is the world and "tp" is this
rank alone, where a collective is the identity. :func:`traffic` counts the collectives' calls, bytes and seconds.
"""
import os
import time

import numpy as np

_dist = None                     # the torch.distributed module once init() joined a group; None in one process
_groups = {}                     # "dp", "tp" -> (torch group or None for the world, ranks); unset: see _group
_traffic = {}                    # collective name -> [calls, bytes of the arrays given, seconds]


def launched_world_size():
    """The world size the launcher announced (``WORLD_SIZE``), 1 without a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def restart_count():
    """How many times ``torchrun --max-restarts`` has restarted this group (0 on the first start)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def init(backend="gloo"):
    """Join the process group the launcher set up; returns ``(rank, world_size)``; ``(0, 1)`` in one process."""
    global _dist
    if launched_world_size() > 1 and _dist is None:
        import torch.distributed as dist

        # The launcher's key-value store (from RANK, WORLD_SIZE, MASTER_ADDR/PORT) outlives a restart, and so do the
        # addresses the ranks published in it: a restarted rank could read a dead rank's address and fail to
        # connect (pytorch/pytorch#135712). Each start of the group therefore uses keys of its own. (On several
        # machines the agents may count restarts differently; there set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1.)
        store, rank_, world = next(dist.rendezvous("env://"))
        store = dist.PrefixStore(f"start{restart_count()}", store)
        dist.init_process_group(backend, store=store, rank=rank_, world_size=world)
        _dist = dist
    return rank(), world_size()


def init_groups(tp=1):
    """Split the W ranks into W/tp data-parallel replicas of ``tp`` tensor-parallel ranks (module docstring).

    A collective over the world: every rank calls it, with the same ``tp``. Returns ``(dp_size, tp_size)``.
    """
    W = world_size()
    if not isinstance(tp, int) or tp < 1 or W % tp:
        raise ValueError(f"tp: expected a positive divisor of the world size {W}, got {tp!r}")
    _groups.clear()
    dp = W // tp
    if _dist is not None:
        # torch.distributed.new_group is itself a collective: every rank creates every group, in the same order,
        # and keeps the one it belongs to. The world needs no new group (None), nor does a rank alone.
        for kind, grid in (("tp", [list(range(d * tp, (d + 1) * tp)) for d in range(dp)]),
                           ("dp", [list(range(t, W, tp)) for t in range(tp)])):
            for ranks in grid:
                group = None if len(ranks) == W else _dist.new_group(ranks) if len(ranks) > 1 else None
                if rank() in ranks:
                    _groups[kind] = (group, tuple(ranks))
    return dp, tp


def destroy():
    """Leave the process group (at the end of a run); a no-op in one process."""
    global _dist
    if _dist is not None:
        _dist.destroy_process_group()
        _dist = None
    _groups.clear()


def _group(group):
    """``(torch group or None, ranks)`` of this rank's group called ``group``."""
    if group not in ("world", "dp", "tp"):
        raise ValueError(f"group: expected 'world', 'dp' or 'tp', got {group!r}")
    if group == "world" or (group == "dp" and "dp" not in _groups):
        return None, tuple(range(_dist.get_world_size() if _dist is not None else 1))
    if group == "tp" and "tp" not in _groups:
        return None, (_dist.get_rank() if _dist is not None else 0,)
    return _groups[group]


def rank(group="world"):
    """This process's rank within ``group`` (0 to its size - 1; 0 in one process)."""
    if _dist is None:
        return 0
    return _group(group)[1].index(_dist.get_rank())


def world_size(group="world"):
    """The number of ranks in ``group`` (W for the world; 1 in one process)."""
    return len(_group(group)[1]) if _dist is not None else 1


def _active(group):
    """The torch group to pass to a collective, or False when ``group`` is this rank alone (nothing to send)."""
    handle, ranks = _group(group)
    return False if _dist is None or len(ranks) == 1 else handle


def _count(name, a, t0):
    calls = _traffic.setdefault(name, [0, 0, 0.0])
    calls[0] += 1
    calls[1] += a.nbytes
    calls[2] += time.perf_counter() - t0


def traffic(reset=False):
    """``{collective: {"calls", "bytes", "seconds"}}`` since the start (or the last reset): the collectives that
    sent anything, the bytes of the arrays they were given (the ring sends 2(W-1)/W of that for an all-reduce)
    and the seconds spent in them, waiting for the other ranks included."""
    out = {k: {"calls": c, "bytes": b, "seconds": round(s, 6)} for k, (c, b, s) in sorted(_traffic.items())}
    if reset:
        _traffic.clear()
    return out


def is_main():
    """True on rank 0, the one that writes checkpoints, logs and figures."""
    return rank() == 0


def _tensor(name, a):
    """A torch tensor sharing ``a``'s memory (so a collective writes into ``a``)."""
    import torch

    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    if not (a.flags.c_contiguous and a.flags.writeable):
        raise ValueError(f"{name}: expected a C-contiguous, writeable array (the collective writes into its "
                         f"memory), got strides {a.strides} for shape {a.shape}")
    return torch.from_numpy(a)


def all_reduce(a, op="sum", group="world"):
    """Sum (``op="sum"``) or mean (``op="mean"``: the sum divided by W) of ``a`` over the ranks of ``group``, in
    place.

    gloo has no average, so the mean is the sum followed by one division on every rank (which all do alike, so the
    ranks keep identical bits). Returns ``a``.
    """
    if op not in ("sum", "mean"):
        raise ValueError(f"op: expected 'sum' or 'mean', got {op!r}")
    handle = _active(group)
    if handle is False:
        return a
    t0 = time.perf_counter()
    _dist.all_reduce(_tensor("a", a), op=_dist.ReduceOp.SUM, group=handle)
    if op == "mean":
        a /= world_size(group)
    _count("all_reduce", a, t0)
    return a


def all_gather(a, group="world"):
    """Every rank's ``a`` (ranks of ``group``), stacked: shape ``(W, *a.shape)``, the same on every rank."""
    W = world_size(group)
    out = np.empty((W,) + a.shape, dtype=a.dtype)
    handle = _active(group)
    if handle is False:
        out[0] = a
        return out
    t0 = time.perf_counter()
    _dist.all_gather([_tensor("out", out[r]) for r in range(W)], _tensor("a", a), group=handle)
    _count("all_gather", a, t0)
    return out


def reduce_scatter(a, group="world"):
    """Chunk ``rank(group)`` of the sum over the ranks of ``group`` of ``a`` (1-D, its length a multiple of their
    number W): shape ``(a.size // W,)``."""
    W = world_size(group)
    if a.ndim != 1 or a.size % W:
        raise ValueError(f"a: expected a 1-D array whose length is a multiple of the world size {W}, got shape "
                         f"{a.shape}")
    handle = _active(group)
    if handle is False:
        return a.copy()
    t0 = time.perf_counter()
    out = np.empty(a.size // W, dtype=a.dtype)
    chunks = [_tensor("a", chunk) for chunk in np.split(a, W)]
    _dist.reduce_scatter(_tensor("out", out), chunks, op=_dist.ReduceOp.SUM, group=handle)
    _count("reduce_scatter", a, t0)
    return out


def broadcast(a, src=0):
    """Rank ``src``'s ``a`` on every rank, in place. Returns ``a``."""
    if _dist is not None:
        _dist.broadcast(_tensor("a", a), src=src)
    return a


def barrier():
    """Wait until every rank reaches this line."""
    if _dist is not None:
        _dist.barrier()
