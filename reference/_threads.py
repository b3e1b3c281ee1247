"""Threads for the fast variants (``forward_fast``/``backward_fast`` of the ops, ``optim.adamw_step_fast``).

NumPy releases the GIL inside its ufuncs and BLAS calls, so Python threads that each run NumPy on their own rows of
an array run at the same time. A fast variant splits its rows into ``workers`` contiguous parts (:func:`parts`) and
runs one call per part (:func:`run`): all but the last on this module's pool, the last on the calling thread. Each
part runs the same NumPy calls on its own rows whatever the split, so the result does not depend on the number of
threads (the tests check this bit for bit).

How many threads: :func:`workers`, an execution setting like ``torch.set_num_threads`` (it changes the speed, never
the result), changed for a block of code with ``with using(n):``. It starts as

- ``LM_PRIMER_THREADS``, if set;
- else 1 when NumPy's BLAS runs several threads (``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OMP_NUM_THREADS``
  unset or above 1). BLAS then spreads each matrix product over the cores itself, and OpenBLAS's threads keep
  spinning on them for a while after each call: threads of ours on the same cores would queue behind them (measured
  on 2 cores: ``np.tanh`` on two threads took 0.8 ms with a one-thread BLAS, 1.4 ms right after a two-thread BLAS
  product);
- else (BLAS runs one thread per call, as the tests and ``bench/`` set it) one thread per core: the products and
  the element-wise work are then spread over the cores by the fast variants.

The variables are read once, at import, as the BLAS library reads its own.
"""
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from reference._checks import check_count

_BLAS_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def _default_workers():
    """The rule of the module docstring, from the environment."""
    own = os.environ.get("LM_PRIMER_THREADS", "").strip()
    if own:
        return check_count("LM_PRIMER_THREADS", int(own), minimum=1)
    for var in _BLAS_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            return (os.cpu_count() or 1) if value == "1" else 1
    return 1                                    # unset: OpenBLAS runs one thread per core


_workers = _default_workers()
_local = threading.local()                      # .inside is True on the pool's threads
_pool, _pool_size = None, 0
_pool_lock = threading.Lock()


def workers():
    """The number of threads the fast variants split their work into (module docstring)."""
    return _workers


@contextlib.contextmanager
def using(n):
    """Run the block with ``workers() == n``; the previous setting comes back after it."""
    global _workers
    previous, _workers = _workers, check_count("workers", n, minimum=1)
    try:
        yield
    finally:
        _workers = previous


def workers_for(size, min_size):
    """The threads for one call: :func:`workers`, but 1 for work smaller than ``min_size`` (starting threads
    would cost more than they save) and 1 on a pool thread (no pool inside the pool)."""
    if size < min_size or getattr(_local, "inside", False):
        return 1
    return _workers


def parts(n, workers):
    """``workers`` contiguous slices that cover ``range(n)``, their sizes differing by at most one."""
    edges = [n * j // workers for j in range(workers + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def run(fn, slices):
    """Call ``fn(s)`` for every slice in ``slices``, all but the last on the pool; re-raise any worker's error."""
    if len(slices) == 1:
        fn(slices[0])
        return
    err = np.geterr()                           # the caller's np.errstate, which a pool thread would not see
    futures = [_get_pool(len(slices) - 1).submit(_in_pool, fn, s, err) for s in slices[:-1]]
    try:
        fn(slices[-1])
    finally:
        for f in futures:
            f.result()                          # waits for every part; raises the first worker error


def _in_pool(fn, s, err):
    _local.inside = True
    with np.errstate(**err):
        fn(s)


def _get_pool(n):
    """The shared pool, grown to at least ``n`` threads."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool_size < n:
            _pool_size = max(n, (os.cpu_count() or 1) - 1)
            _pool = ThreadPoolExecutor(max_workers=_pool_size, thread_name_prefix="lm-primer")
        return _pool
