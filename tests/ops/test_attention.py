"""Checks for reference/ops/attention.py: finite differences, torch autograd, the blocked algorithm, the mask rules.

torch is only the oracle here. Its attention is written out in eager ops (scores scaled after the product, masked
with an explicitly built boolean mask), so it shares no code and no shortcut with the reference.
"""
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference.gradcheck import check_grads
from reference import _threads
from reference.ops import attention

# float64 against float64: both sides round at ~1e-16 per operation and the sums here have at most a few hundred
# terms, so agreement is ~1e-14; 1e-12 leaves two orders of margin and still catches any wrong term (>= 1e-3).
RTOL_F64 = 1e-12
# float32 against torch float32: each side's error is a few float32 ulps (6e-8) times sqrt(number of summed terms)
# (<= 60 here), i.e. ~1e-6 relative to the largest entry; 2e-5 is above that and far below a real error (>= 1e-2).
RTOL_F32 = 2e-5


def rel_error(a, b):
    """max |a - b| relative to max(|b|, 1).

    The inputs are standard normal, so every output and gradient is a sum of O(1) products and its rounding error is
    relative to 1 even where the exact value is 0 (e.g. dq = 0 when T_k = 1, which the two sides reach by different
    cancellations, leaving ~1e-17). Dividing by max(|b|) alone would call that 1e-17 a 100 % error.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape mismatch: {a.shape} vs {b.shape}"
    if a.size == 0:
        return 0.0
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1.0))


def random_qkv(rng, lead, T_q, T_k, d_k, d_v, dtype=np.float64):
    q = rng.standard_normal(lead + (T_q, d_k)).astype(dtype)
    k = rng.standard_normal(lead + (T_k, d_k)).astype(dtype)
    v = rng.standard_normal(lead + (T_k, d_v)).astype(dtype)
    return q, k, v


def torch_masked_softmax(s, mask):
    """Softmax of torch scores over the last axis under a boolean numpy mask (True = may attend); a fully masked
    row gives probabilities 0 (the reference's convention) instead of torch's NaN."""
    if mask is None:
        return torch.softmax(s, dim=-1)
    allowed = torch.from_numpy(np.broadcast_to(mask, s.shape).copy())
    any_key = allowed.any(dim=-1, keepdim=True)
    s = s.masked_fill(~allowed, float("-inf")).masked_fill(~any_key, 0.0)
    return torch.softmax(s, dim=-1) * any_key


def torch_attention(q, k, v, mask, dout):
    """Attention and its gradients by torch autograd; fully masked rows give 0 (the reference's convention)."""
    tq, tk, tv = (torch.from_numpy(a.copy()).requires_grad_() for a in (q, k, v))
    p = torch_masked_softmax(tq @ tk.transpose(-1, -2) / math.sqrt(q.shape[-1]), mask)
    out = p @ tv
    out.backward(torch.from_numpy(dout))
    return [t.detach().numpy() for t in (out, tq.grad, tk.grad, tv.grad)]


def run_reference(q, k, v, mask, dout):
    out, cache = attention.forward(q, k, v, mask)
    return [out, *attention.backward(dout, cache)]


def random_mask(rng, shape, p=0.7):
    return rng.random(shape) < p


# ---------------------------------------------------------------- causal mask

@pytest.mark.parametrize("T_q, T_k", [(1, 1), (4, 4), (3, 7), (7, 3), (0, 5), (5, 0)])
def test_causal_mask_is_bottom_right_aligned(T_q, T_k):
    # query i sees key j iff j <= i + T_k - T_q: the lower triangle shifted right by T_k - T_q
    expected = np.tril(np.ones((T_q, T_k), dtype=bool), k=T_k - T_q)
    got = attention.causal_mask(T_q, T_k)
    assert got.dtype == np.bool_ and got.shape == (T_q, T_k)
    np.testing.assert_array_equal(got, expected)
    if T_q > T_k:
        # the first T_q - T_k queries see nothing: fully masked rows
        assert not got[: T_q - T_k].any()
    if 0 < T_q <= T_k:
        assert got[-1].all()  # the newest query sees every key


def test_causal_mask_makes_kv_cache_decoding_equal_full_attention(rng):
    # the last T_q queries against all T_k keys = the last T_q rows of full causal self-attention
    T, T_new = 9, 3
    q, k, v = random_qkv(rng, (2,), T, T, 4, 5)
    full, _ = attention.forward(q, k, v, attention.causal_mask(T, T))
    tail, _ = attention.forward(q[:, -T_new:], k, v, attention.causal_mask(T_new, T))
    assert rel_error(tail, full[:, -T_new:]) < RTOL_F64


# ---------------------------------------------------------------- finite differences

MASK_CASES = ["none", "random", "causal"]


def make_mask(kind, rng, lead, T_q, T_k):
    if kind == "none":
        return None
    if kind == "causal":
        return attention.causal_mask(T_q, T_k)
    return random_mask(rng, lead + (T_q, T_k))


@pytest.mark.parametrize("kind", MASK_CASES)
@pytest.mark.parametrize("T_q, T_k", [(4, 4), (3, 5), (5, 3)])
def test_gradients_match_finite_differences(kind, T_q, T_k, rng):
    lead = (2,)
    q, k, v = random_qkv(rng, lead, T_q, T_k, 3, 2)
    mask = make_mask(kind, rng, lead, T_q, T_k)
    g = rng.standard_normal(lead + (T_q, 2))     # random upstream gradient: every output entry matters

    def loss():
        return float(np.sum(attention.forward(q, k, v, mask)[0] * g))

    _, cache = attention.forward(q, k, v, mask)
    dq, dk, dv = attention.backward(g, cache)
    check_grads(loss, {"q": q, "k": k, "v": v}, {"q": dq, "k": dk, "v": dv})


def test_blocked_gradients_match_finite_differences(rng):
    lead, T_q, T_k = (2,), 5, 7
    q, k, v = random_qkv(rng, lead, T_q, T_k, 3, 2)
    mask = attention.causal_mask(T_q, T_k)
    g = rng.standard_normal(lead + (T_q, 2))

    def loss():
        return float(np.sum(attention.forward_blocked(q, k, v, mask, block_size=2)[0] * g))

    out, lse = attention.forward_blocked(q, k, v, mask, block_size=2)
    dq, dk, dv = attention.backward_blocked(g, q, k, v, out, lse, mask, block_size=2)
    check_grads(loss, {"q": q, "k": k, "v": v}, {"q": dq, "k": dk, "v": dv})


# ---------------------------------------------------------------- torch oracle

@pytest.mark.parametrize("kind", MASK_CASES)
@pytest.mark.parametrize("T_q, T_k", [(6, 6), (4, 9), (9, 4)])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, RTOL_F64), (np.float32, RTOL_F32)])
def test_matches_torch_autograd(kind, T_q, T_k, dtype, rtol, rng):
    lead = (2, 3)
    q, k, v = random_qkv(rng, lead, T_q, T_k, 8, 5, dtype)
    mask = make_mask(kind, rng, lead, T_q, T_k)
    dout = rng.standard_normal(lead + (T_q, 5)).astype(dtype)
    got = run_reference(q, k, v, mask, dout)
    want = torch_attention(q, k, v, mask, dout)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        assert a.dtype == dtype, f"{name}: dtype {a.dtype}, expected {dtype}"
        assert rel_error(a, b) < rtol, f"{name}: relative error {rel_error(a, b):.1e}"


def test_causal_matches_torch_explicit_tril_mask(rng):
    # torch's own is_causal=True is aligned top-left when T_q != T_k; the bottom-right rule is built explicitly
    T_q, T_k = 3, 8
    q, k, v = random_qkv(rng, (2,), T_q, T_k, 4, 4)
    dout = rng.standard_normal((2, T_q, 4))
    torch_mask = torch.ones(T_q, T_k).tril(diagonal=T_k - T_q).bool().numpy()
    got = run_reference(q, k, v, attention.causal_mask(T_q, T_k), dout)
    want = torch_attention(q, k, v, torch_mask, dout)
    for a, b in zip(got, want):
        assert rel_error(a, b) < RTOL_F64


def test_non_contiguous_inputs(rng):
    base_q, base_k, base_v = random_qkv(rng, (3, 2), 5, 6, 4, 4)
    q, k, v = (x.swapaxes(0, 1) for x in (base_q, base_k, base_v))   # (2, 3, T, d) views
    dout = rng.standard_normal((2, 3, 5, 4))[..., ::-1]
    got = run_reference(q, k, v, None, dout)
    want = torch_attention(q, k, v, None, dout.copy())
    for a, b in zip(got, want):
        assert rel_error(a, b) < RTOL_F64


# ---------------------------------------------------------------- random shapes

shapes = st.tuples(
    st.sampled_from([(), (0,), (1,), (2,), (1, 0), (2, 3)]),   # leading axes, batch 0 and 1 included
    st.integers(1, 7), st.integers(1, 7),                      # T_q, T_k (T_q != T_k included, and T = 1)
    st.integers(1, 5), st.integers(1, 5),                      # d_k, d_v (d_k = 1 included)
)


@given(shape=shapes, mask_kind=st.sampled_from(MASK_CASES), block_size=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_random_shapes_match_torch_and_blocked(shape, mask_kind, block_size, seed):
    rng = np.random.default_rng(seed)
    lead, T_q, T_k, d_k, d_v = shape
    q, k, v = random_qkv(rng, lead, T_q, T_k, d_k, d_v)
    mask = make_mask(mask_kind, rng, lead, T_q, T_k)
    dout = rng.standard_normal(lead + (T_q, d_v))
    got = run_reference(q, k, v, mask, dout)
    want = torch_attention(q, k, v, mask, dout)
    for a, b in zip(got, want):
        assert a.shape == b.shape and rel_error(a, b) < RTOL_F64
    out_b, lse = attention.forward_blocked(q, k, v, mask, block_size=block_size)
    grads_b = attention.backward_blocked(dout, q, k, v, out_b, lse, mask, block_size=block_size)
    for a, b in zip([out_b, *grads_b], got):
        assert rel_error(a, b) < RTOL_F64


def run_fast(q, k, v, mask, dout):
    out, cache = attention.forward_fast(q, k, v, mask)
    return [out, *attention.backward_fast(dout, cache)]


# forward_fast/backward_fast against forward/backward: per (batch, head) slice the same products and the same
# softmax steps, in place instead of into new arrays; only NumPy's choice of loop over the stacked matmuls can round
# differently, so float64 agreement is a few ulps: RTOL_F64 (1e-12 relative to max(|b|, 1)) holds with margin.
@given(shape=shapes, mask_kind=st.sampled_from(MASK_CASES + ["fully masked rows", "broadcast"]),
       seed=st.integers(0, 2**16))
def test_fast_equals_readable(shape, mask_kind, seed):
    rng = np.random.default_rng(seed)
    lead, T_q, T_k, d_k, d_v = shape
    q, k, v = random_qkv(rng, lead, T_q, T_k, d_k, d_v)
    if mask_kind == "fully masked rows":
        mask = random_mask(rng, lead + (T_q, T_k))
        mask[..., ::2, :] = False                # every other query row sees no key
    elif mask_kind == "broadcast":
        mask = random_mask(rng, (1,) * len(lead) + (1, T_k))    # one key mask for every slice and query
    else:
        mask = make_mask(mask_kind, rng, lead, T_q, T_k)
    dout = rng.standard_normal(lead + (T_q, d_v))
    for a, b in zip(run_fast(q, k, v, mask, dout), run_reference(q, k, v, mask, dout)):
        assert a.shape == b.shape and a.dtype == b.dtype and rel_error(a, b) < RTOL_F64


@pytest.mark.parametrize("lead, T_q, T_k", [((2,), 3, 0), ((2,), 0, 4), ((0, 3), 2, 2), ((), 1, 1)])
@pytest.mark.parametrize("masked", [False, True])
def test_fast_equals_readable_on_empty_axes(lead, T_q, T_k, masked, rng):
    q, k, v = random_qkv(rng, lead, T_q, T_k, 4, 3)
    mask = random_mask(rng, (T_q, T_k)) if masked else None
    dout = rng.standard_normal(lead + (T_q, 3))
    for a, b in zip(run_fast(q, k, v, mask, dout), run_reference(q, k, v, mask, dout)):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)      # zeros or empty on both sides


def test_fast_and_readable_caches_are_interchangeable(rng):
    q, k, v = random_qkv(rng, (2, 3), 5, 6, 4, 4)
    mask, dout = attention.causal_mask(5, 6), rng.standard_normal((2, 3, 5, 4))
    _, cache = attention.forward(q, k, v, mask)
    _, cache_fast = attention.forward_fast(q, k, v, mask)
    assert type(cache) is type(cache_fast) is attention.AttentionCache
    for a, b in zip(attention.backward_fast(dout, cache), attention.backward(dout, cache_fast)):
        assert rel_error(a, b) < RTOL_F64


# ---------------------------------------------------------------- NaN and overflow

def nan_rows(x):
    """Which rows (..., T_q) of an output (..., T_q, d) hold a NaN, and check that a row is all NaN or all finite."""
    bad = np.isnan(x)
    assert (bad.all(-1) | np.isfinite(x).all(-1)).all()
    return bad.all(-1)


@pytest.mark.parametrize("kind", ["nan in q", "float32 scores overflow"])
@pytest.mark.parametrize("masked", [False, True])
def test_nan_and_overflow_propagate_in_every_algorithm(kind, masked, rng):
    # A fully masked row is a property of the mask. A NaN in q (row 1 of slice 0), or float32 scores that overflow
    # to inf (row 3 of slice 1: q ~ 1e20, k ~ 1e20, so q.k ~ 1e40 > 3.4e38), make the softmax NaN in torch and in
    # forward; forward_blocked used to read them as "no key seen" and return a zero row (lse -inf) instead.
    q, k, v = random_qkv(rng, (2,), 4, 6, 3, 3, np.float32)
    if kind == "nan in q":
        q[0, 1, 0] = np.nan
        want = np.array([[False, True, False, False], [False] * 4])
    else:
        q[1, 3] = 1e20
        k[1] = np.abs(k[1]) * 1e20
        want = np.array([[False] * 4, [False, False, False, True]])
    mask = None
    if masked:
        mask = np.ones((4, 6), dtype=bool)
        mask[2] = False                          # row 2 is fully masked: 0, not NaN
    with np.errstate(all="ignore"):
        out, _ = attention.forward(q, k, v, mask)
        out_fast, _ = attention.forward_fast(q, k, v, mask)
        out_b, lse = attention.forward_blocked(q, k, v, mask, block_size=4)
        tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
        out_t = torch_masked_softmax(tq @ tk.transpose(-1, -2) / math.sqrt(3), mask) @ tv
    for o in (out, out_fast, out_b, out_t.numpy()):
        np.testing.assert_array_equal(nan_rows(o), want)
    assert np.isnan(lse[want]).all() or kind == "float32 scores overflow"   # overflow: lse is inf or NaN
    assert not np.isfinite(lse[want]).any()
    if masked:
        for o in (out, out_fast, out_b):
            assert not o[:, 2].any()
        assert (lse[:, 2] == -np.inf).all()


# ---------------------------------------------------------------- fully masked rows, broadcast masks

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fully_masked_rows_give_zero_output_and_gradients(dtype, rng):
    lead, T_q, T_k = (2,), 5, 6
    q, k, v = random_qkv(rng, lead, T_q, T_k, 4, 3, dtype)
    mask = random_mask(rng, lead + (T_q, T_k))
    mask[:, 1] = True
    mask[0, 2] = False                           # one fully masked row in batch 0
    mask[1] = False                              # batch 1: every row fully masked
    dout = rng.standard_normal(lead + (T_q, 3)).astype(dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")           # no RuntimeWarning (invalid value, divide by zero) either
        out, dq, dk, dv = run_reference(q, k, v, mask, dout)
        out_b, lse = attention.forward_blocked(q, k, v, mask, block_size=4)
        dq_b, dk_b, dv_b = attention.backward_blocked(dout, q, k, v, out_b, lse, mask, block_size=4)
    for x in (out, dq, dk, dv, out_b, lse, dq_b, dk_b, dv_b):
        assert not np.isnan(x).any()
    for x in (out, dq, out_b, dq_b):
        assert not x[0, 2].any() and not x[1].any()
    assert not dk[1].any() and not dv[1].any() and not dk_b[1].any() and not dv_b[1].any()
    assert lse[0, 2] == -np.inf and (lse[1] == -np.inf).all() and np.isfinite(np.delete(lse[0], 2)).all()
    # the masked row sends nothing to k and v: same gradients as with that row's upstream gradient removed
    dout_cut = dout.copy()
    dout_cut[0, 2] = 0
    _, _, dk_cut, dv_cut = run_reference(q, k, v, mask, dout_cut)
    np.testing.assert_array_equal(dk, dk_cut)
    np.testing.assert_array_equal(dv, dv_cut)


def test_causal_with_more_queries_than_keys_masks_the_first_rows(rng):
    T_q, T_k = 6, 4
    q, k, v = random_qkv(rng, (), T_q, T_k, 3, 3)
    dout = rng.standard_normal((T_q, 3))
    out, dq, _, _ = run_reference(q, k, v, attention.causal_mask(T_q, T_k), dout)
    assert not out[: T_q - T_k].any() and not dq[: T_q - T_k].any()
    assert np.abs(out[T_q - T_k:]).min() > 0


def test_empty_key_sequence_gives_zeros(rng):
    q, k, v = random_qkv(rng, (2,), 3, 0, 4, 5)
    dout = rng.standard_normal((2, 3, 5))
    out, dq, dk, dv = run_reference(q, k, v, None, dout)
    assert out.shape == (2, 3, 5) and not out.any() and not dq.any()
    assert dk.shape == (2, 0, 4) and dv.shape == (2, 0, 5)
    out_b, lse = attention.forward_blocked(q, k, v)
    assert not out_b.any() and (lse == -np.inf).all()


@pytest.mark.parametrize("mask_shape", [(1, 3, 5, 6), (2, 1, 5, 6), (1, 1, 1, 6), (5, 6)])
def test_mask_with_broadcast_axes_equals_the_full_mask(mask_shape, rng):
    lead = (2, 3)
    q, k, v = random_qkv(rng, lead, 5, 6, 4, 4)
    mask = random_mask(rng, mask_shape, p=0.8)
    full = np.broadcast_to(mask, lead + (5, 6)).copy()
    dout = rng.standard_normal(lead + (5, 4))
    got = run_reference(q, k, v, mask, dout)
    for a, b in zip(got, run_reference(q, k, v, full, dout)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(got, torch_attention(q, k, v, full, dout)):
        assert rel_error(a, b) < RTOL_F64


# ---------------------------------------------------------------- blocked == naive

@pytest.mark.parametrize("block_size", [1, 8, 16, 64])
@pytest.mark.parametrize("kind", MASK_CASES)
@pytest.mark.parametrize("T_q, T_k", [(37, 53), (53, 37), (64, 64)])
def test_blocked_equals_naive(block_size, kind, T_q, T_k, rng):
    lead = (2, 2)
    q, k, v = random_qkv(rng, lead, T_q, T_k, 8, 6)
    mask = make_mask(kind, rng, lead, T_q, T_k)
    dout = rng.standard_normal(lead + (T_q, 6))
    out, cache = attention.forward(q, k, v, mask)
    grads = attention.backward(dout, cache)
    out_b, lse = attention.forward_blocked(q, k, v, mask, block_size=block_size)
    grads_b = attention.backward_blocked(dout, q, k, v, out_b, lse, mask, block_size=block_size)
    assert rel_error(out_b, out) < RTOL_F64
    for a, b in zip(grads_b, grads):
        assert rel_error(a, b) < RTOL_F64
    # lse is the log-sum-exp of the scaled, masked scores, -inf where nothing is unmasked
    s = torch.from_numpy(q @ k.swapaxes(-1, -2) / math.sqrt(8))
    if mask is not None:
        s = s.masked_fill(~torch.from_numpy(np.broadcast_to(mask, s.shape).copy()), float("-inf"))
    want = torch.logsumexp(s, dim=-1).numpy()
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(lse), finite)
    assert rel_error(lse[finite], want[finite]) < RTOL_F64


def test_blocked_float32_stays_float32(rng):
    q, k, v = random_qkv(rng, (2,), 19, 23, 4, 4, np.float32)
    dout = rng.standard_normal((2, 19, 4)).astype(np.float32)
    mask = attention.causal_mask(19, 23)
    out, lse = attention.forward_blocked(q, k, v, mask, block_size=8)
    grads = attention.backward_blocked(dout, q, k, v, out, lse, mask, block_size=8)
    want = run_reference(q, k, v, mask, dout)
    for a, b in zip([out, *grads], want):
        assert a.dtype == np.float32 and rel_error(a, b) < RTOL_F32
    assert lse.dtype == np.float32


def test_blocked_peak_memory_is_linear_not_quadratic(rng):
    # naive holds P (T x T); blocked holds out, lse and q/sqrt(d_k) (O(T d)) and a few block x block tiles
    T, d, block = 1024, 16, 64
    q, k, v = random_qkv(rng, (), T, T, d, d)
    _, naive_bytes = attention.peak_memory(attention.forward, q, k, v)
    _, blocked_bytes = attention.peak_memory(attention.forward_blocked, q, k, v, block_size=block)
    score_bytes = T * T * 8
    linear_bound = 4 * T * d * 8 + 4 * block * block * 8      # 0.66 MB, while the scores alone are 8 MB
    assert naive_bytes >= score_bytes
    assert blocked_bytes < linear_bound


# ---------------------------------------------------------------- threads

def test_threaded_result_is_bitwise_the_serial_one(rng):
    # 4 slices of 128 x 128 scores: above the size where forward_fast starts threads
    q, k, v = random_qkv(rng, (2, 2), 128, 128, 8, 8, np.float32)
    mask = attention.causal_mask(128, 128)
    dout = rng.standard_normal((2, 2, 128, 8)).astype(np.float32)
    results = []
    for workers in (1, 2, 3):
        with _threads.using(workers):
            out, cache = attention.forward_fast(q, k, v, mask)
            results.append([out, *attention.backward_fast(dout, cache)])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_probabilities_are_the_masked_softmax(rng):
    lead, T_q, T_k = (2, 3), 4, 5
    q, k, v = random_qkv(rng, lead, T_q, T_k, 3, 3)
    mask = random_mask(rng, lead + (T_q, T_k))
    mask[0, 0, 1] = False                        # one fully masked row: probabilities 0
    _, cache = attention.forward(q, k, v, mask)
    s = torch.from_numpy(q @ k.swapaxes(-1, -2) / math.sqrt(3)).masked_fill(~torch.from_numpy(mask), float("-inf"))
    want = torch.nan_to_num(torch.softmax(s, dim=-1)).numpy()
    got = attention.probabilities(cache)
    assert got.shape == lead + (T_q, T_k)
    assert rel_error(got, want) < RTOL_F64
    assert not got[0, 0, 1].any()


# ---------------------------------------------------------------- bad input

def _bad_calls():
    r = np.random.default_rng(1)
    q, k, v = random_qkv(r, (2,), 3, 4, 5, 6)
    out, lse = attention.forward_blocked(q, k, v)
    dout = np.ones_like(out)
    m = np.ones((3, 4), dtype=bool)
    return [
        ("q int", lambda: attention.forward(q.astype(np.int64), k, v),
         TypeError, "q: expected dtype float32 or float64, got int64"),
        ("k complex", lambda: attention.forward(q, k.astype(complex), v),
         TypeError, "k: expected dtype float32 or float64, got complex128"),
        ("v list", lambda: attention.forward(q, k, v.tolist()), TypeError, "v: expected a numpy.ndarray"),
        ("q rank 1", lambda: attention.forward(q[0, 0], k, v),
         ValueError, r"q: expected at least 2 dimension\(s\), got shape \(5,\)"),
        ("mixed dtypes", lambda: attention.forward(q.astype(np.float32), k, v),
         TypeError, "expected one float dtype.*q: float32, k: float64"),
        ("lead mismatch", lambda: attention.forward(q, np.concatenate([k, k]), v),
         ValueError, r"k: expected shape \(2, \*, 5\), got \(4, 4, 5\)"),
        ("lead broadcast", lambda: attention.forward(q, k[:1], v),
         ValueError, r"k: expected shape \(2, \*, 5\), got \(1, 4, 5\)"),
        ("k rank", lambda: attention.forward(q, k[0], v), ValueError, r"k: expected shape \(2, \*, 5\), got \(4, 5\)"),
        ("d_k mismatch", lambda: attention.forward(q, k[..., :4], v),
         ValueError, r"k: expected shape \(2, \*, 5\), got \(2, 4, 4\)"),
        ("T_k mismatch", lambda: attention.forward(q, k, v[:, :3]),
         ValueError, r"v: expected shape \(2, 4, \*\), got \(2, 3, 6\)"),
        ("d_k zero", lambda: attention.forward(q[..., :0], k[..., :0], v), ValueError, r"q: expected d_k >= 1"),
        ("mask dtype", lambda: attention.forward(q, k, v, m.astype(np.float64)),
         TypeError, "mask: expected a boolean numpy.ndarray.*got float64"),
        ("mask list", lambda: attention.forward(q, k, v, m.tolist()),
         TypeError, "mask: expected a boolean numpy.ndarray.*got list"),
        ("mask shape", lambda: attention.forward(q, k, v, np.ones((3, 5), bool)),
         ValueError, r"mask: expected a shape broadcastable to \(2, 3, 4\), got \(3, 5\)"),
        ("mask grows", lambda: attention.forward(q, k, v, np.ones((2, 2, 3, 4), bool)),
         ValueError, r"broadcastable to \(2, 3, 4\), got \(2, 2, 3, 4\)"),
        ("dout shape", lambda: attention.backward(dout[:, :2], attention.forward(q, k, v)[1]),
         ValueError, r"dout: expected shape \(2, 3, 6\), got \(2, 2, 6\)"),
        ("dout dtype", lambda: attention.backward(dout.astype(np.float32), attention.forward(q, k, v)[1]),
         TypeError, r"dout: expected dtype float64 \(that of the forward pass\), got float32"),
        ("block 0", lambda: attention.forward_blocked(q, k, v, block_size=0),
         ValueError, "block_size: expected an int >= 1, got 0"),
        ("block float", lambda: attention.forward_blocked(q, k, v, block_size=2.0),
         TypeError, "block_size: expected an int >= 1, got float"),
        ("block bool", lambda: attention.forward_blocked(q, k, v, block_size=True),
         TypeError, "block_size: expected an int >= 1, got bool"),
        ("blocked mask", lambda: attention.forward_blocked(q, k, v, np.ones((4, 3), bool)),
         ValueError, "mask: expected a shape broadcastable"),
        ("lse shape", lambda: attention.backward_blocked(dout, q, k, v, out, lse[:, :2]),
         ValueError, r"lse: expected shape \(2, 3\), got \(2, 2\)"),
        ("out shape", lambda: attention.backward_blocked(dout, q, k, v, out[..., :2], lse),
         ValueError, r"out: expected shape \(2, 3, 6\), got \(2, 3, 2\)"),
        ("lse dtype", lambda: attention.backward_blocked(dout, q, k, v, out, lse.astype(np.float32)),
         TypeError, "lse: float32"),
        ("causal negative", lambda: attention.causal_mask(-1, 3),
         ValueError, "T_q: expected an int >= 0, got -1"),
        ("causal float", lambda: attention.causal_mask(2, 3.0),
         TypeError, "T_k: expected an int >= 0, got float"),
    ]


@pytest.mark.parametrize("name, call, error, message", _bad_calls(), ids=[c[0] for c in _bad_calls()])
def test_bad_input_raises_a_clear_error(name, call, error, message):
    with pytest.raises(error, match=message):
        call()
