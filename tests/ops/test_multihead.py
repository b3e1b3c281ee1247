"""Checks for reference/ops/multihead.py: finite differences, torch's own multi-head attention, random shapes, errors.

Two torch oracles: ``torch.nn.functional.multi_head_attention_forward`` (torch's layout and its opposite mask
convention, True = blocked, so a convention slip on our side would show), and an eager re-statement for the shapes
and bias subsets that function does not take (batch 0, some biases only, fully masked rows).
"""
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference.gradcheck import check_grads, numerical_grad
from reference import _threads
from reference.ops import attention, multihead
from tests.ops.test_attention import torch_masked_softmax

# float64 against float64: rounding is ~1e-16 per operation over sums of at most a few dozen terms; 1e-12 leaves
# two orders of margin and still catches any wrong term (>= 1e-3).
RTOL_F64 = 1e-12
# float32 against torch float32: a few float32 ulps (6e-8) per operation through five chained products (three
# projections, attention, output projection) of <= 16 terms each, i.e. ~1e-6 relative; 2e-5 is above that and
# far below a real error (>= 1e-2).
RTOL_F32 = 2e-5
# finite differences of the self-attention function: the shared bound of reference/gradcheck.py (see its docstring).
RTOL_FD = 1e-6


def rel_error(a, b):
    """max |a - b| relative to max(|b|, 1): inputs are O(1), so an exactly-zero true value (reached by cancelling
    sums) leaves ~1e-17 of rounding, which is no error (see tests/ops/test_attention.py)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape mismatch: {a.shape} vs {b.shape}"
    if a.size == 0:
        return 0.0
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1.0))


def make_params(rng, C, biases=multihead.BIASES, dtype=np.float64):
    params = {name: (rng.standard_normal((C, C)) / math.sqrt(C)).astype(dtype) for name in multihead.WEIGHTS}
    params.update({name: rng.standard_normal(C).astype(dtype) for name in biases})
    return params


def make_mask(kind, rng, B, H, T_q, T_k):
    if kind == "none":
        return None
    if kind == "causal":
        return attention.causal_mask(T_q, T_k)                       # (T_q, T_k), same for every batch and head
    if kind == "padding":
        keep = np.ones((B, 1, 1, T_k), dtype=bool)                    # (B, 1, 1, T_k) padded keys hidden
        keep[0, ..., T_k // 2:] = False
        return keep
    mask = rng.random((B, H, T_q, T_k)) < 0.7
    mask[..., 0] = True                                              # torch's own MHA gives NaN on fully masked rows
    return mask


def torch_mha_functional(x_q, x_kv, params, H, mask, dy):
    """torch.nn.functional.multi_head_attention_forward; every bias present or none. Returns y, grads, probs."""
    B, T_q, C = x_q.shape
    T_k = x_kv.shape[1]
    t = {name: torch.from_numpy(a.copy()).requires_grad_() for name, a in params.items()}
    tx_q = torch.from_numpy(x_q.copy()).requires_grad_()
    tx_kv = torch.from_numpy(x_kv.copy()).requires_grad_()
    has_bias = "bq" in params
    in_bias = torch.cat([t["bq"], t["bk"], t["bv"]]) if has_bias else None
    blocked = None
    if mask is not None:
        blocked = ~torch.from_numpy(np.broadcast_to(mask, (B, H, T_q, T_k)).reshape(B * H, T_q, T_k).copy())
    y, probs = torch.nn.functional.multi_head_attention_forward(
        tx_q.transpose(0, 1), tx_kv.transpose(0, 1), tx_kv.transpose(0, 1), C, H,
        None, in_bias, None, None, False, 0.0, t["Wo"].T, t["bo"] if has_bias else None,
        training=False, need_weights=True, attn_mask=blocked, use_separate_proj_weight=True,
        q_proj_weight=t["Wq"].T, k_proj_weight=t["Wk"].T, v_proj_weight=t["Wv"].T, average_attn_weights=False)
    y = y.transpose(0, 1)                                            # (B, T_q, C)
    y.backward(torch.from_numpy(dy))
    grads = {name: t[name].grad.numpy() for name in params}
    return y.detach().numpy(), tx_q.grad.numpy(), tx_kv.grad.numpy(), grads, probs.detach().numpy()


def torch_mha_eager(x_q, x_kv, params, H, mask, dy):
    """Multi-head attention in torch eager ops, any bias subset; fully masked rows give 0 before Wo."""
    B, T_q, C = x_q.shape
    T_k, d_k = x_kv.shape[1], C // H
    t = {name: torch.from_numpy(a.copy()).requires_grad_() for name, a in params.items()}
    tx_q = torch.from_numpy(x_q.copy()).requires_grad_()
    tx_kv = torch.from_numpy(x_kv.copy()).requires_grad_()

    def project(x, W, b):
        return x @ t[W] + t[b] if b in t else x @ t[W]

    q = project(tx_q, "Wq", "bq").reshape(B, T_q, H, d_k).transpose(1, 2)     # (B, H, T_q, d_k)
    k = project(tx_kv, "Wk", "bk").reshape(B, T_k, H, d_k).transpose(1, 2)    # (B, H, T_k, d_k)
    v = project(tx_kv, "Wv", "bv").reshape(B, T_k, H, d_k).transpose(1, 2)
    p = torch_masked_softmax(q @ k.transpose(-1, -2) / math.sqrt(d_k), mask)
    y = project((p @ v).transpose(1, 2).reshape(B, T_q, C), "Wo", "bo")
    y.backward(torch.from_numpy(dy))
    grads = {name: t[name].grad.numpy() for name in params}
    return y.detach().numpy(), tx_q.grad.numpy(), tx_kv.grad.numpy(), grads


def run_reference(x_q, x_kv, params, H, mask, dy):
    y, cache = multihead.forward(x_q, x_kv, params, H, mask)
    dx_q, dx_kv, grads = multihead.backward(dy, cache)
    return y, dx_q, dx_kv, grads, cache


def assert_all_close(got, want, rtol):
    y, dx_q, dx_kv, grads = got
    y_t, dx_q_t, dx_kv_t, grads_t = want
    assert set(grads) == set(grads_t)
    pairs = [("y", y, y_t), ("dx_q", dx_q, dx_q_t), ("dx_kv", dx_kv, dx_kv_t)]
    pairs += [("d" + name, grads[name], grads_t[name]) for name in grads]
    for name, a, b in pairs:
        assert a.dtype == y.dtype, f"{name}: dtype {a.dtype}, expected {y.dtype}"
        assert rel_error(a, b) < rtol, f"{name}: relative error {rel_error(a, b):.1e}"


# ---------------------------------------------------------------- finite differences

@pytest.mark.parametrize("biases", [multihead.BIASES, (), ("bk", "bo")])
@pytest.mark.parametrize("kind", ["none", "causal", "random"])
def test_gradients_match_finite_differences(biases, kind, rng):
    B, T_q, T_k, C, H = 2, 3, 4, 4, 2
    x_q = rng.standard_normal((B, T_q, C))
    x_kv = rng.standard_normal((B, T_k, C))
    params = make_params(rng, C, biases)
    mask = make_mask(kind, rng, B, H, T_q, T_k)
    g = rng.standard_normal((B, T_q, C))        # random upstream gradient: every output entry matters

    def loss():
        return float(np.sum(multihead.forward(x_q, x_kv, params, H, mask)[0] * g))

    _, dx_q, dx_kv, grads, _ = run_reference(x_q, x_kv, params, H, mask, g)
    assert set(grads) == set(params)
    checked = [name for name in params if name != "bk"]
    check_grads(loss, {"x_q": x_q, "x_kv": x_kv, **{name: params[name] for name in checked}},
                {"x_q": dx_q, "x_kv": dx_kv, **{name: grads[name] for name in checked}})
    if "bk" in params:
        # the key bias adds q . bk to a whole row of scores, which softmax ignores: its true gradient is exactly 0,
        # so a relative error means nothing; both sides must be at their rounding floor (analytic ~1e-16 of the
        # O(1) terms that cancel, finite differences ~eps * |loss| / h ~ 1e-10)
        assert np.abs(grads["bk"]).max() < 1e-13
        assert np.abs(numerical_grad(loss, params["bk"])).max() < 1e-8


def test_self_attention_gradients_add_up(rng):
    # x is both the query input and the key/value input: dx = dx_q + dx_kv, each part right on its own
    B, T, C, H = 2, 4, 6, 3
    x = rng.standard_normal((B, T, C))
    params = make_params(rng, C)
    mask = attention.causal_mask(T, T)
    g = rng.standard_normal((B, T, C))
    _, dx_q, dx_kv, _, _ = run_reference(x, x, params, H, mask, g)
    x_q, x_kv = x.copy(), x.copy()               # perturbed one at a time below

    def loss_self():
        return float(np.sum(multihead.forward(x, x, params, H, mask)[0] * g))

    def loss_split():
        return float(np.sum(multihead.forward(x_q, x_kv, params, H, mask)[0] * g))

    check_grads(loss_split, {"x_q": x_q, "x_kv": x_kv}, {"x_q": dx_q, "x_kv": dx_kv})
    num = numerical_grad(loss_self, x)
    assert rel_error(dx_q + dx_kv, num) < RTOL_FD
    assert rel_error(dx_q, num) > 1e-2 and rel_error(dx_kv, num) > 1e-2   # neither part alone is the gradient


# ---------------------------------------------------------------- torch oracles

@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("kind", ["none", "causal", "padding", "random"])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, RTOL_F64), (np.float32, RTOL_F32)])
def test_matches_torch_multi_head_attention(with_bias, kind, dtype, rtol, rng):
    B, T_q, T_k, C, H = 2, 5, 7, 8, 2
    x_q = rng.standard_normal((B, T_q, C)).astype(dtype)
    x_kv = rng.standard_normal((B, T_k, C)).astype(dtype)
    params = make_params(rng, C, multihead.BIASES if with_bias else (), dtype)
    mask = make_mask(kind, rng, B, H, T_q, T_k)
    dy = rng.standard_normal((B, T_q, C)).astype(dtype)
    y, dx_q, dx_kv, grads, cache = run_reference(x_q, x_kv, params, H, mask, dy)
    *want, probs = torch_mha_functional(x_q, x_kv, params, H, mask, dy)
    assert y.dtype == dtype                      # and assert_all_close checks every gradient has y's dtype
    assert_all_close((y, dx_q, dx_kv, grads), want, rtol)
    assert rel_error(multihead.attention_probs(cache), probs) < rtol


@pytest.mark.parametrize("dtype, rtol", [(np.float64, RTOL_F64), (np.float32, RTOL_F32)])
def test_self_attention_matches_torch(dtype, rtol, rng):
    B, T, C, H = 2, 6, 8, 4
    x = rng.standard_normal((B, T, C)).astype(dtype)
    params = make_params(rng, C, dtype=dtype)
    dy = rng.standard_normal((B, T, C)).astype(dtype)
    y, dx_q, dx_kv, grads, _ = run_reference(x, x, params, H, attention.causal_mask(T, T), dy)
    y_t, _, _, grads_t = torch_mha_eager(x, x, params, H, attention.causal_mask(T, T), dy)
    tx = torch.from_numpy(x.copy()).requires_grad_()   # torch's gradient of x used once as both inputs
    torch.nn.functional.multi_head_attention_forward(
        tx.transpose(0, 1), tx.transpose(0, 1), tx.transpose(0, 1), C, H, None,
        torch.from_numpy(np.concatenate([params["bq"], params["bk"], params["bv"]])), None, None, False, 0.0,
        torch.from_numpy(params["Wo"].T.copy()), torch.from_numpy(params["bo"]), training=False, need_weights=False,
        attn_mask=~torch.from_numpy(attention.causal_mask(T, T)), use_separate_proj_weight=True,
        q_proj_weight=torch.from_numpy(params["Wq"].T.copy()), k_proj_weight=torch.from_numpy(params["Wk"].T.copy()),
        v_proj_weight=torch.from_numpy(params["Wv"].T.copy()))[0].transpose(0, 1).backward(torch.from_numpy(dy))
    assert rel_error(y, y_t) < rtol
    assert rel_error(dx_q + dx_kv, tx.grad.numpy()) < rtol
    for name in grads:
        assert rel_error(grads[name], grads_t[name]) < rtol


# ---------------------------------------------------------------- random shapes

@given(B=st.integers(0, 2), T_q=st.integers(1, 5), T_k=st.integers(1, 5), H=st.integers(1, 3), d_k=st.integers(1, 3),
       biases=st.lists(st.sampled_from(multihead.BIASES), unique=True),
       kind=st.sampled_from(["none", "causal", "padding", "random"]), seed=st.integers(0, 2**16))
def test_random_shapes_match_torch(B, T_q, T_k, H, d_k, biases, kind, seed):
    rng = np.random.default_rng(seed)
    C = H * d_k
    x_q = rng.standard_normal((B, T_q, C))
    x_kv = rng.standard_normal((B, T_k, C))
    params = make_params(rng, C, tuple(biases))
    mask = make_mask(kind, rng, B, H, T_q, T_k) if B > 0 or kind != "padding" else None
    dy = rng.standard_normal((B, T_q, C))
    y, dx_q, dx_kv, grads, _ = run_reference(x_q, x_kv, params, H, mask, dy)
    assert y.shape == (B, T_q, C) and dx_kv.shape == (B, T_k, C)
    assert_all_close((y, dx_q, dx_kv, grads), torch_mha_eager(x_q, x_kv, params, H, mask, dy), RTOL_F64)


# ---------------------------------------------------------------- masks, dtypes, probabilities

def test_fully_masked_rows_give_the_output_bias_and_no_nan(rng):
    B, T_q, T_k, C, H = 2, 4, 3, 6, 2
    x_q = rng.standard_normal((B, T_q, C)).astype(np.float32)
    x_kv = rng.standard_normal((B, T_k, C)).astype(np.float32)
    params = make_params(rng, C, dtype=np.float32)
    mask = attention.causal_mask(T_q, T_k)       # T_q > T_k: the first query sees no key
    dy = rng.standard_normal((B, T_q, C)).astype(np.float32)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        y, dx_q, dx_kv, grads, cache = run_reference(x_q, x_kv, params, H, mask, dy)
    for x in (y, dx_q, dx_kv, *grads.values()):
        assert np.isfinite(x).all()
    np.testing.assert_array_equal(y[:, 0], np.broadcast_to(params["bo"], (B, C)))
    assert not dx_q[:, 0].any()
    assert not multihead.attention_probs(cache)[:, :, 0].any()
    assert_all_close((y, dx_q, dx_kv, grads), torch_mha_eager(x_q, x_kv, params, H, mask, dy), RTOL_F32)


def test_attention_probs_are_per_head_distributions(rng):
    B, T_q, T_k, C, H = 2, 3, 5, 6, 3
    x_q, x_kv = rng.standard_normal((B, T_q, C)), rng.standard_normal((B, T_k, C))
    _, cache = multihead.forward(x_q, x_kv, make_params(rng, C), H)
    probs = multihead.attention_probs(cache)
    assert probs.shape == (B, H, T_q, T_k)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-14)
    assert (probs > 0).all()


def test_output_projection_is_one_matrix_over_all_heads(rng):
    # the erratum in the docstring: Concat(heads) Wo = sum_i head_i Wo[rows of head i]; each head reaches every
    # output column, so zeroing head 0's row block of Wo changes every column of y, not just head 0's columns
    B, T, C, H = 1, 3, 6, 2
    x = rng.standard_normal((B, T, C))
    params = make_params(rng, C, ())
    y, _ = multihead.forward(x, x, params, H)
    cut = dict(params, Wo=params["Wo"].copy())
    cut["Wo"][: C // H] = 0
    y_cut, _ = multihead.forward(x, x, cut, H)
    assert (np.abs(y - y_cut) > 1e-6).all()


# ---------------------------------------------------------------- bad input

def _bad_calls():
    r = np.random.default_rng(1)
    B, T_q, T_k, C, H = 2, 3, 4, 6, 2
    x_q, x_kv = r.standard_normal((B, T_q, C)), r.standard_normal((B, T_k, C))
    p = make_params(r, C)
    fwd = multihead.forward
    cache = fwd(x_q, x_kv, p, H)[1]
    return [
        ("heads not dividing", lambda: fwd(x_q, x_kv, p, 4),
         ValueError, "n_head: expected a positive divisor of d_model = 6, got 4"),
        ("heads zero", lambda: fwd(x_q, x_kv, p, 0), ValueError, "n_head: expected an int >= 1, got 0"),
        ("heads float", lambda: fwd(x_q, x_kv, p, 2.0), TypeError, "n_head: expected an int >= 1, got float"),
        ("x_kv width", lambda: fwd(x_q, x_kv[..., :4], p, H),
         ValueError, r"x_kv: expected shape \(2, \*, 6\), got \(2, 4, 4\)"),
        ("x_kv batch", lambda: fwd(x_q, x_kv[:1], p, H),
         ValueError, r"x_kv: expected shape \(2, \*, 6\), got \(1, 4, 6\)"),
        ("W shape", lambda: fwd(x_q, x_kv, dict(p, Wk=p["Wk"][:, :4]), H),
         ValueError, r"Wk: expected shape \(6, 6\), got \(6, 4\)"),
        ("b shape", lambda: fwd(x_q, x_kv, dict(p, bo=p["bo"][:5]), H),
         ValueError, r"bo: expected shape \(6,\), got \(5,\)"),
        ("x_q rank 2", lambda: fwd(x_q[0], x_kv, p, H),
         ValueError, r"x_q: expected shape \(\*, \*, \*\), got \(3, 6\)"),
        ("x_kv rank 4", lambda: fwd(x_q, x_kv[None], p, H),
         ValueError, r"x_kv: expected shape \(2, \*, 6\), got \(1, 2, 4, 6\)"),
        ("d_model zero", lambda: fwd(x_q[..., :0], x_kv[..., :0], p, H), ValueError, "x_q: expected d_model >= 1"),
        ("x_q int", lambda: fwd(x_q.astype(np.int32), x_kv, p, H),
         TypeError, "x_q: expected dtype float32 or float64, got int32"),
        ("x_kv complex", lambda: fwd(x_q, x_kv.astype(np.complex64), p, H),
         TypeError, "x_kv: expected dtype float32 or float64, got complex64"),
        ("W int", lambda: fwd(x_q, x_kv, dict(p, Wq=p["Wq"].astype(int)), H),
         TypeError, "Wq: expected dtype float32 or float64, got int64"),
        ("mixed dtype", lambda: fwd(x_q, x_kv, dict(p, Wv=p["Wv"].astype(np.float32)), H),
         TypeError, "expected one float dtype.*Wv: float32"),
        ("params list", lambda: fwd(x_q, x_kv, list(p.values()), H), TypeError, "params: expected a dict"),
        ("params missing", lambda: fwd(x_q, x_kv, {n: p[n] for n in ("Wq", "Wk", "Wv")}, H),
         ValueError, r"params: expected keys Wq, Wk, Wv, Wo.*missing \['Wo'\]"),
        ("params unknown", lambda: fwd(x_q, x_kv, dict(p, W_o=p["Wo"]), H),
         ValueError, r"unknown \['W_o'\]"),
        ("mask dtype", lambda: fwd(x_q, x_kv, p, H, np.ones((T_q, T_k))),
         TypeError, "mask: expected a boolean numpy.ndarray.*got float64"),
        ("mask shape", lambda: fwd(x_q, x_kv, p, H, np.ones((T_k, T_q), bool)),
         ValueError, r"mask: expected shape \(T_q, T_k\) = \(3, 4\) or \(B, H, T_q, T_k\) = \(2, 2, 3, 4\), any axis "
                     r"of them 1 to broadcast; got \(4, 3\)"),
        ("mask heads", lambda: fwd(x_q, x_kv, p, H, np.ones((B, 3, T_q, T_k), bool)),
         ValueError, r"\(B, H, T_q, T_k\) = \(2, 2, 3, 4\), any axis of them 1 to broadcast; got \(2, 3, 3, 4\)"),
        # a 3-d (B, T_q, T_k) padding mask would broadcast against the heads axis: refused, whatever B and H are
        ("mask 3-d", lambda: fwd(x_q, x_kv, p, H, np.ones((B, T_q, T_k), bool)),
         ValueError, r"mask: expected shape \(T_q, T_k\).*got \(2, 3, 4\)"),
        ("dy shape", lambda: multihead.backward(np.ones((B, T_k, C)), cache),
         ValueError, r"dy: expected shape \(2, 3, 6\), got \(2, 4, 6\)"),
        ("dy dtype", lambda: multihead.backward(np.ones((B, T_q, C), np.float32), cache),
         TypeError, r"dy: expected dtype float64 \(that of the forward pass\), got float32"),
    ]


@pytest.mark.parametrize("name, call, error, message", _bad_calls(), ids=[c[0] for c in _bad_calls()])
def test_bad_input_raises_a_clear_error(name, call, error, message):
    with pytest.raises(error, match=message):
        call()


# forward_fast/backward_fast against forward/backward: the same ops wired the same way, each fast op equal to its
# readable twin to a few ulps (tests/ops/test_linear.py, test_attention.py), so RTOL_F64 holds.
@pytest.mark.parametrize("kind", ["none", "causal", "padding", "random"])
@pytest.mark.parametrize("biases", [multihead.BIASES, ()])
@pytest.mark.parametrize("workers", [1, 2])
def test_fast_equals_readable(kind, biases, workers, rng):
    B, T_q, T_k, C, H = 2, 5, 7, 12, 3
    x_q, x_kv = rng.standard_normal((B, T_q, C)), rng.standard_normal((B, T_k, C))
    params = make_params(rng, C, biases)
    mask = make_mask(kind, rng, B, H, T_q, T_k)
    dy = rng.standard_normal((B, T_q, C))
    want = run_reference(x_q, x_kv, params, H, mask, dy)[:4]
    with _threads.using(workers):
        y, cache = multihead.forward_fast(x_q, x_kv, params, H, mask)
        got = (y,) + multihead.backward_fast(dy, cache)
    assert_all_close(got, want, RTOL_F64)

