"""reference/ops/swiglu.py against finite differences, torch's silu, Hugging Face's LlamaMLP, extreme gates, bad inputs."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

from reference.gradcheck import check_grads, rel_error
from reference.ops import swiglu

# float64 against torch float64: the same products and sums in other orders, sums of at most 64 terms: ~1e-15
# relative; 1e-12 leaves a margin and catches a wrong term (>= 1e-3).
TOL64 = 1e-12
# float32 against torch float32: a few float32 roundings per element and sums of <= 64 products: ~1e-6; 1e-5
# leaves a margin and still catches a wrong term (>= 1e-2).
TOL32 = 1e-5


def run(x, Wg, Wu, Wd, dy):
    y, cache = swiglu.forward(x, Wg, Wu, Wd)
    return (y,) + swiglu.backward(dy, cache)


def random_ffn(rng, C, F, dtype=np.float64):
    return [(rng.standard_normal(s) / np.sqrt(s[0])).astype(dtype) for s in ((C, F), (C, F), (F, C))]


def hf_mlp(Wg, Wu, Wd, x, dy):
    """Hugging Face's LlamaMLP loaded with our weights (its nn.Linear weights are our matrices transposed)."""
    C, F = Wg.shape
    config = LlamaConfig(hidden_size=C, intermediate_size=F, num_attention_heads=1, head_dim=2,
                         hidden_act="silu", mlp_bias=False)           # head_dim: only RoPE validation reads it
    mlp = LlamaMLP(config)
    mlp = mlp.to(torch.float64 if x.dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for lin, W in ((mlp.gate_proj, Wg), (mlp.up_proj, Wu), (mlp.down_proj, Wd)):
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
    xt = torch.tensor(x, requires_grad=True)
    yt = mlp(xt)
    yt.backward(torch.from_numpy(dy))
    return (yt.detach().numpy(), xt.grad.numpy(), mlp.gate_proj.weight.grad.numpy().T,
            mlp.up_proj.weight.grad.numpy().T, mlp.down_proj.weight.grad.numpy().T)


@pytest.mark.parametrize("shape, F", [((1, 1, 4), 3), ((2, 3, 5), 7), ((4, 2), 1)])
def test_swiglu_matches_finite_differences(shape, F, rng):
    x = rng.standard_normal(shape)
    Wg, Wu, Wd = random_ffn(rng, shape[-1], F)
    dy = rng.standard_normal(shape)

    def loss():
        return float(np.sum(dy * swiglu.forward(x, Wg, Wu, Wd)[0]))

    _, dx, dWg, dWu, dWd = run(x, Wg, Wu, Wd, dy)
    check_grads(loss, {"x": x, "Wg": Wg, "Wu": Wu, "Wd": Wd}, {"x": dx, "Wg": dWg, "Wu": dWu, "Wd": dWd})


def test_gate_matches_finite_differences(rng):
    a, b, dh = (rng.standard_normal((3, 6)) * 3 for _ in range(3))

    def loss():
        return float(np.sum(dh * swiglu.gate_forward(a, b)[0]))

    _, cache = swiglu.gate_forward(a, b)
    da, db = swiglu.gate_backward(dh, cache)
    check_grads(loss, {"a": a, "b": b}, {"a": da, "b": db})


@pytest.mark.parametrize("dtype, tol", [(np.float64, TOL64), (np.float32, TOL32)])
def test_swiglu_matches_hugging_face_llama_mlp(dtype, tol, rng):
    C, F = 32, 64
    x = rng.standard_normal((2, 7, C)).astype(dtype)
    Wg, Wu, Wd = random_ffn(rng, C, F, dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    for a, b in zip(run(x, Wg, Wu, Wd, dy), hf_mlp(Wg, Wu, Wd, x, dy)):
        assert a.dtype == dtype
        assert rel_error(a, b) < tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gate_extreme_values_match_torch_silu(dtype):
    # Far in the negative tail exp(-a) overflows: sigma = 0 and silu = -0, as in torch; +-inf and NaN propagate
    # as in torch (silu(-inf) = -inf / inf = NaN).
    a = np.array([-1e4, -800.0, -100.0, -30.0, 0.0, 30.0, 800.0, np.inf, -np.inf, np.nan], dtype=dtype)
    b = np.full_like(a, 2.0)
    dh = np.ones_like(a)
    with np.errstate(invalid="ignore"):
        h, cache = swiglu.gate_forward(a, b)
        da, db = swiglu.gate_backward(dh, cache)
    at = torch.tensor(a, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    ht = torch.nn.functional.silu(at) * bt
    ht.backward(torch.from_numpy(dh))
    for ours, theirs in ((h, ht), (da, at.grad), (db, bt.grad)):
        theirs = theirs.detach().numpy()
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
        ok = ~np.isnan(theirs)
        np.testing.assert_allclose(ours[ok], theirs[ok], rtol=1e-6 if dtype == np.float32 else 1e-14, atol=0)


@given(lead=st.lists(st.integers(0, 3), min_size=0, max_size=2), C=st.integers(1, 6), F=st.integers(1, 6),
       seed=st.integers(0, 2**16))
def test_swiglu_random_shapes_match_hugging_face(lead, C, F, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*lead, C))
    Wg, Wu, Wd = random_ffn(rng, C, F)
    dy = rng.standard_normal(x.shape)
    for a, b in zip(run(x, Wg, Wu, Wd, dy), hf_mlp(Wg, Wu, Wd, x, dy)):
        assert a.shape == b.shape
        assert np.abs(a - b).max(initial=0) <= TOL64 * max(1.0, np.abs(b).max(initial=0))


def test_swiglu_bad_inputs():
    x = np.zeros((2, 4))
    Wg, Wu, Wd = np.zeros((4, 6)), np.zeros((4, 6)), np.zeros((6, 4))
    with pytest.raises(ValueError, match=r"W_gate: expected shape \(4, \*\), got \(3, 6\)"):
        swiglu.forward(x, np.zeros((3, 6)), Wu, Wd)
    with pytest.raises(ValueError, match=r"W_up: expected shape \(4, 6\), got \(4, 5\)"):
        swiglu.forward(x, Wg, np.zeros((4, 5)), Wd)
    with pytest.raises(ValueError, match=r"W_down: expected shape \(6, 4\), got \(4, 6\)"):
        swiglu.forward(x, Wg, Wu, Wd.T)
    with pytest.raises(TypeError, match=r"expected one float dtype for all inputs, got x: float32, W_gate: float64"):
        swiglu.forward(x.astype(np.float32), Wg, Wu, Wd)
    with pytest.raises(ValueError, match=r"x: expected at least 1 dimension\(s\), got shape \(\)"):
        swiglu.forward(np.array(1.0), Wg, Wu, Wd)
    with pytest.raises(ValueError, match=r"b: expected shape \(2, 3\), got \(3, 2\)"):
        swiglu.gate_forward(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match=r"b: expected dtype float32 or float64, got int64"):
        swiglu.gate_forward(np.zeros((2, 3)), np.zeros((2, 3), np.int64))
    _, cache = swiglu.forward(x, Wg, Wu, Wd)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4\), got \(2, 6\)"):
        swiglu.backward(np.zeros((2, 6)), cache)
    with pytest.raises(TypeError, match=r"expected one float dtype for all inputs, got dh: float32, a: float64"):
        swiglu.gate_backward(np.zeros((2, 6), np.float32), cache.gate)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 1e-6)])
def test_fast_pair_equals_readable_pair(dtype, tol, rng):
    # the same products, one of them over the concatenated [W_gate | W_up] and in row blocks: float64 agrees to
    # ~1e-16 relative, float32 to a few ulps (~1e-7) of each array's largest entry
    x = rng.standard_normal((3, 5, 16)).astype(dtype)
    Wg, Wu, Wd = random_ffn(rng, 16, 24, dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, cache = swiglu.forward_fast(x, Wg, Wu, Wd)
    fast = (y,) + swiglu.backward_fast(dy, cache)
    for name, a, b in zip(("y", "dx", "dW_gate", "dW_up", "dW_down"), fast, run(x, Wg, Wu, Wd, dy)):
        assert a.dtype == dtype and a.shape == b.shape, name
        assert rel_error(a, b) < tol, name
    with pytest.raises(ValueError, match="W_down"):
        swiglu.forward_fast(x, Wg, Wu, Wd[:-1])
