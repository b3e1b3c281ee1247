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
"""
import os

import numpy as np

_dist = None                     # the torch.distributed module once init() joined a group; None in one process


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


def destroy():
    """Leave the process group (at the end of a run); a no-op in one process."""
    global _dist
    if _dist is not None:
        _dist.destroy_process_group()
        _dist = None


def rank():
    """This process's rank, 0 to W-1 (0 in one process)."""
    return _dist.get_rank() if _dist is not None else 0


def world_size():
    """The number of ranks W (1 in one process)."""
    return _dist.get_world_size() if _dist is not None else 1


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


def all_reduce(a, op="sum"):
    """Sum (``op="sum"``) or mean (``op="mean"``: the sum divided by W) of ``a`` over the ranks, in place.

    gloo has no average, so the mean is the sum followed by one division on every rank (which all do alike, so the
    ranks keep identical bits). Returns ``a``.
    """
    if op not in ("sum", "mean"):
        raise ValueError(f"op: expected 'sum' or 'mean', got {op!r}")
    if _dist is None:
        return a
    _dist.all_reduce(_tensor("a", a), op=_dist.ReduceOp.SUM)
    if op == "mean":
        a /= world_size()
    return a


def all_gather(a):
    """Every rank's ``a``, stacked: shape ``(W, *a.shape)``, the same on every rank."""
    out = np.empty((world_size(),) + a.shape, dtype=a.dtype)
    if _dist is None:
        out[0] = a
        return out
    _dist.all_gather([_tensor("out", out[r]) for r in range(world_size())], _tensor("a", a))
    return out


def reduce_scatter(a):
    """Chunk ``rank`` of the sum over ranks of ``a`` (1-D, its length a multiple of W): shape ``(a.size // W,)``."""
    W = world_size()
    if a.ndim != 1 or a.size % W:
        raise ValueError(f"a: expected a 1-D array whose length is a multiple of the world size {W}, got shape "
                         f"{a.shape}")
    if _dist is None:
        return a.copy()
    out = np.empty(a.size // W, dtype=a.dtype)
    chunks = [_tensor("a", chunk) for chunk in np.split(a, W)]
    _dist.reduce_scatter(_tensor("out", out), chunks, op=_dist.ReduceOp.SUM)
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
