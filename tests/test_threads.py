"""reference/_threads.py: the default thread count, ``using``, the split into parts, errors from a pool thread."""
import numpy as np
import pytest

from reference import _threads


@pytest.mark.parametrize("env, expected", [
    ({}, 1),                                                     # OpenBLAS default: one thread per core
    ({"OPENBLAS_NUM_THREADS": "1"}, "cores"),
    ({"OMP_NUM_THREADS": "1"}, "cores"),
    ({"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "1"}, 1),  # the variable BLAS reads first wins
    ({"OPENBLAS_NUM_THREADS": "1", "LM_PRIMER_THREADS": "3"}, 3),
    ({"LM_PRIMER_THREADS": "1"}, 1),
])
def test_default_workers_follow_the_blas_thread_count(env, expected, monkeypatch):
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "LM_PRIMER_THREADS"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(_threads.os, "cpu_count", lambda: 4)
    assert _threads._default_workers() == (4 if expected == "cores" else expected)


def test_using_sets_and_restores_the_count():
    before = _threads.workers()
    with _threads.using(3):
        assert _threads.workers() == 3
        assert _threads.workers_for(10, min_size=100) == 1        # too small to be worth threads
        assert _threads.workers_for(100, min_size=100) == 3
    assert _threads.workers() == before
    with pytest.raises(ValueError, match=r"workers: expected an int >= 1, got 0"):
        with _threads.using(0):
            pass


@pytest.mark.parametrize("n, workers", [(10, 3), (2, 3), (0, 2), (7, 1)])
def test_parts_cover_the_range_in_order(n, workers):
    parts = _threads.parts(n, workers)
    assert len(parts) == workers
    assert [i for p in parts for i in range(p.start, p.stop)] == list(range(n))
    sizes = [p.stop - p.start for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_run_calls_every_part_and_reraises_a_thread_error():
    out = np.zeros(9)

    def fill(part):
        out[part] = part.start

    _threads.run(fill, _threads.parts(9, 3))
    assert out.tolist() == [0, 0, 0, 3, 3, 3, 6, 6, 6]

    def fail(part):
        if part.start == 0:                      # the first part runs on a pool thread
            raise RuntimeError("from a worker")

    with pytest.raises(RuntimeError, match="from a worker"):
        _threads.run(fail, _threads.parts(9, 3))


def test_pool_threads_follow_the_callers_errstate():
    def divide(part):
        if part.start == 0:                      # only on the pool thread
            np.divide(np.ones(2), np.zeros(2))

    with np.errstate(divide="raise"):
        with pytest.raises(FloatingPointError):
            _threads.run(divide, _threads.parts(4, 2))       # the first part runs on a pool thread
