"""reference/ops/gqa.py against finite differences, Hugging Face's repeat_kv + eager attention, torch's SDPA with
enable_gqa, the per-head sum in the backward, and the copy-free fast path."""
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from transformers.models.llama.modeling_llama import eager_attention_forward, repeat_kv

from reference.gradcheck import check_grads, rel_error
from reference.ops import attention, gqa

# float64 against torch float64: softmax and two products of <= 16 terms, summed in other orders: ~1e-15; 1e-12
# leaves a margin and still catches a wrong head mapping or a missing sum (errors >= 1e-2).
TOL64 = 1e-12
# float32 against torch float32: a few float32 ulps (6e-8) per term over sums of <= 16 terms: ~1e-6; 2e-5 (as in
# tests/ops/test_attention.py) is above that and far below a real error.
TOL32 = 2e-5


def random_qkv(rng, B, H, H_kv, T_q, T_k, d, dtype=np.float64):
    q = rng.standard_normal((B, H, T_q, d)).astype(dtype)
    k = rng.standard_normal((B, H_kv, T_k, d)).astype(dtype)
    v = rng.standard_normal((B, H_kv, T_k, d)).astype(dtype)
    return q, k, v


def run(q, k, v, mask, dout, fast=False):
    fwd, bwd = (gqa.forward_fast, gqa.backward_fast) if fast else (gqa.forward, gqa.backward)
    out, cache = fwd(q, k, v, mask)
    return (out,) + bwd(dout, cache)


def hf_gqa(q, k, v, mask, dout):
    """Hugging Face's eager attention (repeat_kv inside) with its additive mask, and gradients by autograd.

    Its softmax runs in float32 (``softmax(..., dtype=torch.float32)``) even for float64 inputs: a float32 oracle."""
    G = q.shape[1] // k.shape[1]
    module = types.SimpleNamespace(num_key_value_groups=G, training=False)
    qt, kt, vt = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    dtype = qt.dtype
    add = torch.where(torch.from_numpy(mask), torch.zeros((), dtype=dtype), torch.finfo(dtype).min)
    out, _ = eager_attention_forward(module, qt, kt, vt, add, scaling=1 / math.sqrt(q.shape[-1]))
    out = out.transpose(1, 2)                               # it returns (B, T, H, d); ours is (B, H, T, d)
    out.backward(torch.from_numpy(dout))
    return out.detach().numpy(), qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


def sdpa_gqa(q, k, v, mask, dout):
    """torch's own grouped-query attention (no copies of K/V), and gradients by autograd."""
    qt, kt, vt = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=torch.from_numpy(mask), enable_gqa=True)
    out.backward(torch.from_numpy(dout))
    return out.detach().numpy(), qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("H, H_kv", [(4, 2), (3, 1), (2, 2)])
def test_gqa_matches_finite_differences(H, H_kv, fast, rng):
    q, k, v = random_qkv(rng, 2, H, H_kv, 3, 5, 4)
    mask = attention.causal_mask(3, 5)
    dout = rng.standard_normal(q.shape)

    def loss():
        fwd = gqa.forward_fast if fast else gqa.forward
        return float(np.sum(dout * fwd(q, k, v, mask)[0]))

    _, dq, dk, dv = run(q, k, v, mask, dout, fast)
    check_grads(loss, {"q": q, "k": k, "v": v}, {"q": dq, "k": dk, "v": dv})


@pytest.mark.parametrize("oracle", [hf_gqa, sdpa_gqa])
@pytest.mark.parametrize("dtype, tol", [(np.float64, TOL64), (np.float32, TOL32)])
@pytest.mark.parametrize("T_q, T_k", [(6, 6), (2, 7)])      # training, and decoding 2 tokens after a cache of 5
def test_gqa_matches_torch(T_q, T_k, dtype, tol, oracle, rng):
    q, k, v = random_qkv(rng, 2, 6, 2, T_q, T_k, 8, dtype)
    mask = attention.causal_mask(T_q, T_k)
    dout = rng.standard_normal(q.shape).astype(dtype)
    theirs = oracle(q, k, v, mask, dout)
    if oracle is hf_gqa:
        tol = TOL32                                          # its eager softmax runs in float32 whatever the input
    for fast in (False, True):
        for a, b in zip(run(q, k, v, mask, dout, fast), theirs):
            assert a.dtype == dtype
            assert rel_error(a, b) < tol


def test_repeat_kv_matches_hugging_face(rng):
    k = rng.standard_normal((2, 3, 4, 5))
    np.testing.assert_array_equal(gqa.repeat_kv(k, 4), repeat_kv(torch.from_numpy(k), 4).numpy())


def test_gqa_backward_sums_the_query_heads_of_a_group(rng):
    # The definition, spelled out: the K/V gradient of group g is the sum of what plain attention on the repeated
    # K/V sends to the copies read by query heads gG .. gG + G - 1.
    H, H_kv, G = 6, 2, 3
    q, k, v = random_qkv(rng, 1, H, H_kv, 4, 4, 3)
    dout = rng.standard_normal(q.shape)
    _, cache = attention.forward(q, gqa.repeat_kv(k, G), gqa.repeat_kv(v, G))
    _, dk_rep, dv_rep = attention.backward(dout, cache)
    _, _, dk, dv = run(q, k, v, None, dout)
    for g in range(H_kv):
        np.testing.assert_allclose(dk[:, g], dk_rep[:, g * G:(g + 1) * G].sum(axis=1), rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(dv[:, g], dv_rep[:, g * G:(g + 1) * G].sum(axis=1), rtol=1e-14, atol=1e-15)


def test_gqa_with_one_group_per_head_is_attention(rng):
    q, k, v = random_qkv(rng, 2, 3, 3, 4, 5, 6)
    dout = rng.standard_normal(q.shape)
    out, cache = attention.forward(q, k, v)
    for a, b in zip(run(q, k, v, None, dout), (out,) + attention.backward(dout, cache)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype, tol", [(np.float64, TOL64), (np.float32, TOL32)])
@pytest.mark.parametrize("mask_shape", [None, (5, 7), (1, 7), (2, 1, 5, 7), (2, 6, 5, 7), (6, 1, 1)])
def test_gqa_fast_equals_readable(mask_shape, dtype, tol, rng):
    # Same products, grouped differently (one call per group instead of per head), so equal to rounding.
    q, k, v = random_qkv(rng, 2, 6, 3, 5, 7, 4, dtype)
    mask = None if mask_shape is None else rng.random(mask_shape) < 0.7
    if mask is not None:
        mask[..., 0] = True                                  # no fully masked rows needed here
    dout = rng.standard_normal(q.shape).astype(dtype)
    for a, b in zip(run(q, k, v, mask, dout, fast=True), run(q, k, v, mask, dout)):
        assert a.dtype == dtype and a.shape == b.shape
        assert rel_error(a, b) < tol


@given(B=st.integers(1, 2), H_kv=st.integers(1, 3), G=st.integers(1, 3), T_q=st.integers(1, 4),
       extra=st.integers(0, 3), d=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_gqa_random_shapes_match_sdpa(B, H_kv, G, T_q, extra, d, seed):
    rng = np.random.default_rng(seed)
    T_k = T_q + extra                                        # causal, bottom-right: no fully masked rows
    q, k, v = random_qkv(rng, B, H_kv * G, H_kv, T_q, T_k, d)
    mask = attention.causal_mask(T_q, T_k)
    dout = rng.standard_normal(q.shape)
    theirs = sdpa_gqa(q, k, v, mask, dout)
    for fast in (False, True):
        for a, b in zip(run(q, k, v, mask, dout, fast), theirs):
            assert a.shape == b.shape
            assert rel_error(a, b) < TOL64


def test_gqa_bad_inputs(rng):
    q, k, v = random_qkv(rng, 2, 4, 2, 3, 5, 8)
    with pytest.raises(ValueError, match=r"k: expected a number of K/V heads that divides the 4 query heads, got 3 "
                                         r"\(k shape \(2, 3, 5, 8\)\)"):
        gqa.forward(q, np.zeros((2, 3, 5, 8)), np.zeros((2, 3, 5, 8)))
    with pytest.raises(ValueError, match=r"k: expected shape \(2, \*, \*, 8\), got \(2, 2, 5, 6\)"):
        gqa.forward(q, k[..., :6], v)
    with pytest.raises(ValueError, match=r"v: expected shape \(2, 2, 5, \*\), got \(2, 1, 5, 8\)"):
        gqa.forward(q, k, v[:, :1])
    with pytest.raises(ValueError, match=r"q: expected at least 3 dimension\(s\), got shape \(3, 8\)"):
        gqa.forward(q[0, 0], k, v)
    with pytest.raises(TypeError, match=r"expected one float dtype for all inputs, got q: float32, k: float64, v: float64"):
        gqa.forward(q.astype(np.float32), k, v)
    with pytest.raises(ValueError, match=r"mask: expected a shape broadcastable to \(2, 4, 3, 5\), got \(3, 4\)"):
        gqa.forward(q, k, v, np.ones((3, 4), bool))
    for fwd, bwd in ((gqa.forward, gqa.backward), (gqa.forward_fast, gqa.backward_fast)):
        _, cache = fwd(q, k, v)
        with pytest.raises(ValueError, match=r"dout: expected shape \(2, 4, 3, 8\), got \(2, 2, 3, 8\)"):
            bwd(np.zeros((2, 2, 3, 8)), cache)
