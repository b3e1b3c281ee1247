"""The worked solutions of chapter 3's exercises (chapters/solutions/03_optimization.py)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from reference.compression import distill, quantize

_PATH = Path(__file__).resolve().parents[2] / "chapters" / "solutions" / "03_optimization.py"
_spec = importlib.util.spec_from_file_location("solutions_03", _PATH)  # the file name starts with a digit
sol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sol)


@pytest.mark.parametrize("bits, group_size", [(4, 32), (4, 128), (8, None), (4, None), (3, 16)])
def test_quantized_bytes_match_the_reference(bits, group_size, rng):
    W = rng.standard_normal((128, 512)).astype(np.float32)
    axis = 1 if group_size is None else None
    q = quantize.quantize(W, bits=bits, axis=axis, group_size=group_size)
    nbytes, _ = sol.quantized_bytes(128, 512, bits, group_size)
    assert nbytes == q.nbytes                                                  # exact: a count


def test_bits_per_weight():
    assert sol.quantized_bytes(128, 512, 4, 32)[1] == 5.0                     # 4 + 32/32
    assert sol.quantized_bytes(128, 512, 4, 128)[1] == 4.25                   # 4 + 32/128
    assert sol.quantized_bytes(128, 512, 8)[1] == 8.25                        # 8 + 32/128 (a scale per column)


def test_csr_bytes_and_break_even(rng):
    mask = rng.random((64, 96)) > 0.7
    # CSR by hand: values and column indices of the nonzeros, row pointers from a cumulative count.
    values = np.zeros((64, 96), dtype=np.float32)[mask]
    cols = np.nonzero(mask)[1].astype(np.int32)
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int32)
    assert sol.csr_bytes(mask) == values.nbytes + cols.nbytes + indptr.nbytes
    assert sol.csr_break_even(4, 4) == 0.5 and sol.csr_break_even(4, 2) == pytest.approx(1 / 3)
    assert sol.bitmask_break_even(4) == 1 / 32
    # At the break-even sparsity plus/minus a margin, CSR is smaller / larger than dense (row pointers included).
    K, N = 256, 256
    for s, smaller in ((0.45, False), (0.55, True)):
        m = np.zeros(K * N, dtype=bool)
        m[:round((1 - s) * K * N)] = True
        assert (sol.csr_bytes(m.reshape(K, N)) < K * N * 4) == smaller


def test_high_temperature_distillation_is_logit_matching(rng):
    zs, zt = rng.standard_normal((2, 5, 9)), rng.standard_normal((2, 5, 9))   # (N positions..., V)
    limit = sol.logit_matching_grad(zs, zt) / 10                               # distill divides by N = 10
    errors = []
    for T in (10.0, 100.0, 1000.0):
        _, cache = distill.forward(zs, zt, None, T=T, alpha=0.0)
        errors.append(np.abs(distill.backward(1.0, cache) - limit).max())
    # The error is O(1/T): it falls about 10x for each 10x in T (float64 round-off ~1e-16 * T is far below).
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] / errors[0] < 0.15 and errors[2] / errors[1] < 0.15
    assert errors[2] < 1e-3 * np.abs(limit).max()
