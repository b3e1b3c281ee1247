"""Test setup. TRITON_INTERPRET must be set before any @triton.jit is imported, so it comes first."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
# `make test` runs two pytest workers on two cores: one BLAS/OpenMP thread each, or they oversubscribe the machine
# (a small matmul measured 36 ms instead of 0.2 ms that way). Set before numpy or torch is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# ... and the fast ops' own threads (reference/_threads.py) likewise; the tests that check their threaded paths ask
# for threads explicitly with `_threads.using(n)`.
os.environ.setdefault("LM_PRIMER_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Deterministic, bounded property tests: CI time stays predictable.
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("ci")


@pytest.fixture
def rng():
    """A fresh seeded generator per test, so tests do not depend on their order."""
    return np.random.default_rng(0)
