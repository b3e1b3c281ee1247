"""The worked solutions of chapter 7's exercises (chapters/solutions/07_kernels.py), checked against reference/.

Budget: under 2 s (float64 NumPy on tiny shapes; no kernel runs here).
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from reference.gradcheck import RTOL_FD, numerical_grad, rel_error
from reference.ops import activations, attention, layernorm

_PATH = Path(__file__).resolve().parents[2] / "chapters" / "solutions" / "07_kernels.py"
_spec = importlib.util.spec_from_file_location("solutions_07", _PATH)  # the file name starts with a digit
sol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sol)


@pytest.mark.parametrize("n_chunks", [1, 2, 3, 23])
@pytest.mark.parametrize("T_q, causal", [(7, False), (23, True), (30, True)])
def test_split_kv_attention_equals_attention_over_all_keys(T_q, causal, n_chunks, rng):
    # T_q = 30 > T_k = 23 with a causal mask: the first 7 queries see no key at all; with 23 chunks of one key
    # most chunks are fully masked for most rows, so the lse = -inf weights are exercised
    T_k, d = 23, 4
    q = rng.standard_normal((2, 2, T_q, d))           # (B, H, T_q, d)
    k = rng.standard_normal((2, 2, T_k, d))           # (B, H, T_k, d)
    v = rng.standard_normal((2, 2, T_k, 3))           # (B, H, T_k, d_v)
    mask = attention.causal_mask(T_q, T_k) if causal else None
    out, lse = sol.split_kv_attention(q, k, v, n_chunks, mask=mask)
    out_ref, _ = attention.forward(q, k, v, mask=mask)
    _, lse_ref = attention.forward_blocked(q, k, v, mask=mask)
    # float64, the same sums regrouped by chunk: round-off ~1e-15; a wrong chunk weight misses by O(1e-1)
    assert rel_error(out, out_ref) < 1e-12
    assert np.array_equal(np.isneginf(lse), np.isneginf(lse_ref))     # exactly the rows that see no key
    seen = ~np.isneginf(lse_ref)
    assert np.abs(lse[seen] - lse_ref[seen]).max() < 1e-12


def test_averaging_chunks_without_their_weights_is_wrong(rng):
    # the check above can fail: a plain mean of the chunk outputs ignores each chunk's share of the denominator
    q, k, v = (rng.standard_normal((1, 1, 5, 4)) * s for s in (1.0, 2.0, 1.0))   # (1, 1, 5, 4) each
    outs = [attention.forward_blocked(q, k[..., c, :], v[..., c, :])[0] for c in (slice(0, 2), slice(2, 5))]
    out_ref, _ = attention.forward(q, k, v)
    assert rel_error(np.mean(outs, axis=0), out_ref) > 1e-2


@pytest.mark.parametrize("G", [1, 2, 3, 4, 8, 9])
def test_two_stage_reduction_gives_dgamma_and_dbeta_for_any_G(G, rng):
    M, N = 9, 5
    x = 1.0 + 2.0 * rng.standard_normal((M, N))
    gamma, beta = 1 + 0.1 * rng.standard_normal(N), 0.1 * rng.standard_normal(N)
    dy = rng.standard_normal((M, N))
    _, cache = layernorm.forward(x, gamma, beta)
    _, dgamma_ref, dbeta_ref = layernorm.backward(dy, cache)
    dgamma, dbeta, partial_dgamma, partial_dbeta = sol.two_stage_reduction(dy, cache.xhat, G)
    assert partial_dgamma.shape == partial_dbeta.shape == (G, N)
    # float64 sums of 9 terms of size ~1 in another order: round-off ~1e-16, so 1e-12 is generous; a program that
    # skipped or repeated a row would be off by O(1)
    assert rel_error(dgamma, dgamma_ref) < 1e-12
    assert rel_error(dbeta, dbeta_ref) < 1e-12


def test_two_stage_reduction_in_float32_depends_on_G_only_by_rounding(rng):
    M, N = 64, 32
    dy = rng.standard_normal((M, N)).astype(np.float32)
    xhat = rng.standard_normal((M, N)).astype(np.float32)
    exact = (dy.astype(np.float64) * xhat.astype(np.float64)).sum(axis=0)     # (N,) float64
    results = [sol.two_stage_reduction(dy, xhat, G)[0] for G in range(1, M + 1)]
    assert all(r.dtype == np.float32 for r in results)
    # 64 float32 additions of terms ~1: error ~sqrt(64) * 6e-8 * |terms| relative to sums of size ~8, below 1e-5
    assert max(rel_error(r, exact) for r in results) < 1e-5
    # ... and not bit-identical across G: addition is not associative in float32
    assert len({r.tobytes() for r in results}) > 1


def test_gelu_tanh_grad_matches_the_reference_backward():
    z = np.linspace(-6.0, 6.0, 121)                   # through 0, the bend near -0.75, and both saturated tails
    ours, ref = sol.gelu_tanh_grad_vs_reference(z)
    # the same closed form evaluated in float64 with other groupings: round-off ~1e-16
    assert rel_error(ours, ref) < 1e-12


def test_gelu_tanh_grad_matches_finite_differences(rng):
    z = 3.0 * rng.standard_normal(40)
    g = rng.standard_normal(40)                       # random upstream gradient: d sum(g phi(z)) / dz = g phi'(z)
    numeric = numerical_grad(lambda: float((activations.gelu_forward(z, approximate="tanh")[0] * g).sum()), z)
    # reference/gradcheck.py: a right derivative agrees to ~1e-8, a wrong term shows up at 1e-2
    assert rel_error(g * sol.gelu_tanh_grad(z), numeric) < RTOL_FD


def test_gelu_tanh_grad_keeps_float32():
    z = np.linspace(-3, 3, 7, dtype=np.float32)
    assert sol.gelu_tanh_grad(z).dtype == np.float32
