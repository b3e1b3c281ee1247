"""reference/ops/moe.py against finite differences, Hugging Face's MixtralSparseMoeBlock and load_balancing_loss_func,
the discontinuity of the expert choice, and bad inputs."""
import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock, load_balancing_loss_func

from reference.gradcheck import check_grads, numerical_grad, rel_error
from reference.ops import moe, swiglu

# Hugging Face's router computes its softmax and top-k weights in float32 whatever the input (router_logits.float()),
# so it is a float32 oracle: its weights carry ~6e-8 relative error, and the outputs and gradients are sums of a
# few dozen products of them. 1e-5 is ~100 float32 roundings; a wrong weight, expert or missing term errs by >= 1e-2.
TOL_HF = 1e-5


def random_moe(rng, C, E, F, dtype=np.float64):
    W_router = rng.standard_normal((C, E)).astype(dtype)
    W_gate = (rng.standard_normal((E, C, F)) / np.sqrt(C)).astype(dtype)
    W_up = (rng.standard_normal((E, C, F)) / np.sqrt(C)).astype(dtype)
    W_down = (rng.standard_normal((E, F, C)) / np.sqrt(F)).astype(dtype)
    return W_router, W_gate, W_up, W_down


def hf_block(params, top_k, dtype):
    """MixtralSparseMoeBlock holding our weights (its matrices are our matrices transposed, gate over up)."""
    W_router, W_gate, W_up, W_down = params
    E, C, F = W_gate.shape
    config = MixtralConfig(hidden_size=C, intermediate_size=F, num_local_experts=E, num_experts_per_tok=top_k,
                           num_attention_heads=1, num_key_value_heads=1, head_dim=2)   # head_dim: RoPE validation
    config._experts_implementation = "eager"                 # the plain loop over experts, no dispatch
    block = MixtralSparseMoeBlock(config).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        block.gate.weight.copy_(torch.from_numpy(W_router.T.copy()))
        block.experts.gate_up_proj.copy_(torch.from_numpy(np.concatenate([W_gate, W_up], axis=2).transpose(0, 2, 1).copy()))
        block.experts.down_proj.copy_(torch.from_numpy(W_down.transpose(0, 2, 1).copy()))
    return block


def hf_run(params, top_k, x, dy):
    """y, the gradients (in our layout) and the chosen experts, from Hugging Face's block and autograd."""
    block = hf_block(params, top_k, x.dtype)
    xt = torch.tensor(x, requires_grad=True)
    y = block(xt)
    y.backward(torch.from_numpy(dy))
    F = params[1].shape[2]
    gu = block.experts.gate_up_proj.grad.numpy().transpose(0, 2, 1)   # (E, C, 2F)
    grads = (xt.grad.numpy(), block.gate.weight.grad.numpy().T, gu[..., :F], gu[..., F:],
             block.experts.down_proj.grad.numpy().transpose(0, 2, 1))
    with torch.no_grad():
        chosen = block.gate(xt.reshape(-1, x.shape[-1]))[2].numpy()
    return y.detach().numpy(), grads, chosen


def run(x, params, top_k, dy, dlogits=None):
    y, cache = moe.forward(x, *params, top_k=top_k)
    return y, moe.backward(dy, cache, dlogits), cache


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_moe_matches_finite_differences(top_k, rng):
    # Random weights put every routing tie far from the 1e-6 steps, so the expert choice is constant under them.
    x = rng.standard_normal((2, 3, 4))
    params = random_moe(rng, C=4, E=4, F=3)
    dy = rng.standard_normal(x.shape)

    def loss():
        return float(np.sum(dy * moe.forward(x, *params, top_k=top_k)[0]))

    _, grads, _ = run(x, params, top_k, dy)
    names = ("x", "W_router", "W_gate", "W_up", "W_down")
    check_grads(loss, dict(zip(names, (x,) + params)), dict(zip(names, grads)))


def test_moe_with_the_aux_loss_matches_finite_differences(rng):
    # The training objective of a Mixtral layer: sum(dy * y) + coef * L_aux, differentiated through both.
    x = rng.standard_normal((5, 4))
    params = random_moe(rng, C=4, E=3, F=2)
    dy, coef = rng.standard_normal(x.shape), 0.7

    def loss():
        y, cache = moe.forward(x, *params, top_k=2)
        return float(np.sum(dy * y) + coef * moe.aux_loss_forward(cache.logits, 2)[0])

    y, cache = moe.forward(x, *params, top_k=2)
    _, aux_cache = moe.aux_loss_forward(cache.logits, 2)
    grads = moe.backward(dy, cache, dlogits=moe.aux_loss_backward(coef, aux_cache))
    names = ("x", "W_router", "W_gate", "W_up", "W_down")
    check_grads(loss, dict(zip(names, (x,) + params)), dict(zip(names, grads)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_matches_hugging_face_mixtral_block(top_k, dtype, rng):
    x = rng.standard_normal((3, 7, 16)).astype(dtype)
    params = random_moe(rng, C=16, E=5, F=12, dtype=dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y, grads, cache = run(x, params, top_k, dy)
    y_hf, grads_hf, chosen = hf_run(params, top_k, x, dy)
    np.testing.assert_array_equal(cache.routing.experts, chosen)
    for a, b in zip((y,) + grads, (y_hf,) + grads_hf):
        assert a.dtype == dtype
        # on the scale of the O(1) values: with top_k = 1 the router gets no gradient (w = 1), exactly 0 here and
        # float32 rounding noise (~1e-8) there
        assert np.abs(a - b).max() <= TOL_HF * max(1.0, np.abs(b).max())


def test_moe_counts_tokens_per_expert(rng):
    x = rng.standard_normal((4, 6, 8))
    params = random_moe(rng, C=8, E=6, F=4)
    _, cache = moe.forward(x, *params, top_k=2)
    counts = cache.routing.counts
    assert counts.sum() == 24 * 2 and counts.shape == (6,)
    for e in range(6):
        assert counts[e] == np.sum(cache.routing.experts == e) == len(cache.experts[e].rows)


def test_router_weights_are_the_softmax_of_the_chosen_logits(rng):
    logits = rng.standard_normal((10, 6))
    r = moe.router_forward(logits, 3)
    chosen = np.take_along_axis(logits, r.experts, axis=1)
    z = np.exp(chosen - chosen.max(axis=1, keepdims=True))
    np.testing.assert_allclose(r.weights, z / z.sum(axis=1, keepdims=True), rtol=1e-14)
    assert np.all(np.diff(np.take_along_axis(r.probs, r.experts, axis=1), axis=1) <= 0)   # most probable first
    # so the unchosen logits get no gradient: exactly 0 analytically, ~1e-17 after rounding
    dlogits = moe.router_backward(rng.standard_normal((10, 3)), r)
    unchosen = np.ones_like(logits, dtype=bool)
    np.put_along_axis(unchosen, r.experts, False, axis=1)
    assert np.abs(dlogits[unchosen]).max() < 1e-15 and np.abs(dlogits[~unchosen]).min() > 0


def test_the_expert_choice_has_no_gradient(rng):
    # One token, E = 4, top-2. The router logits move along t: l(t) = l0 + t (0, 1, -1, 0), with l0 = (1, 0, 0.5, -2),
    # so expert 0 is always first and experts 2 and 1 swap second place at t* = 0.25.
    C, E, F = 4, 4, 3
    x = rng.standard_normal(C)
    _, W_gate, W_up, W_down = random_moe(rng, C, E, F)
    n = x / (x @ x)                                          # x @ outer(n, l) = l

    def y_at(t):
        W_router = np.outer(n, np.array([1.0, 0.0, 0.5, -2.0]) + t * np.array([0.0, 1.0, -1.0, 0.0]))
        return moe.forward(x[None], W_router, W_gate, W_up, W_down, top_k=2)[0][0]

    # At the swap the output jumps by w (SwiGLU_1(x) - SwiGLU_2(x)), w = the weight both carry at the tie:
    # the central difference (y(t*+h) - y(t*-h)) / 2h grows as 1/h instead of converging.
    out = [swiglu.forward(x[None], W_gate[e], W_up[e], W_down[e])[0][0] for e in (1, 2)]
    w_tie = 1 / (1 + np.exp(1.0 - 0.25))                    # the second slot's share of softmax(1, 0.25)
    expected_jump = w_tie * (out[0] - out[1])
    for h in (1e-2, 1e-5, 1e-8):
        jump = y_at(0.25 + h) - y_at(0.25 - h)
        # the jump stays O(1) (up to O(h) from the smooth part): no derivative at the swap
        assert np.abs(jump - expected_jump).max() < 10 * h * max(1.0, np.abs(expected_jump).max())
    assert np.abs(expected_jump).max() > 1e-2
    # Away from the swap the choice is constant and the analytic gradient (through the weights) matches.
    t0, dy = 0.0, rng.standard_normal(C)
    W_router = np.outer(n, np.array([1.0, 0.0, 0.5, -2.0]) + t0 * np.array([0.0, 1.0, -1.0, 0.0]))
    y, cache = moe.forward(x[None], W_router, W_gate, W_up, W_down, top_k=2)
    dW_router = moe.backward(dy[None], cache)[1]
    dt_analytic = np.sum(dW_router * np.outer(n, [0.0, 1.0, -1.0, 0.0]))
    t = np.array([t0])
    dt_numeric = numerical_grad(lambda: float(dy @ y_at(t[0])), t)[0]
    assert abs(dt_analytic - dt_numeric) < 1e-7 * max(1.0, abs(dt_numeric))


def test_aux_loss_matches_hugging_face(rng):
    # Two layers' router logits: transformers averages f and P over all rows of both before the product, which is
    # our loss on the stacked logits. Its counts and sums are float32 (histc): 1e-6 relative.
    layers = [rng.standard_normal((12, 5)) * 2 for _ in range(2)]
    stacked = np.concatenate(layers)
    loss, cache = moe.aux_loss_forward(stacked, 2)
    ts = tuple(torch.tensor(l, requires_grad=True) for l in layers)
    loss_hf = load_balancing_loss_func(ts, num_experts=5, top_k=2)
    loss_hf.backward()
    assert abs(loss - loss_hf.item()) < 1e-6 * loss
    dlogits = moe.aux_loss_backward(1.0, cache)
    assert rel_error(dlogits, np.concatenate([t.grad.numpy() for t in ts])) < 1e-6
    # the product of averages is not the average of the per-layer losses
    per_layer = np.mean([moe.aux_loss_forward(l, 2)[0] for l in layers])
    assert abs(per_layer - loss) > 1e-3


def test_aux_loss_matches_finite_differences_and_is_k_when_balanced(rng):
    logits = rng.standard_normal((7, 4))
    loss, cache = moe.aux_loss_forward(logits, 2)
    check_grads(lambda: float(moe.aux_loss_forward(logits, 2)[0]), {"logits": logits},
                {"logits": moe.aux_loss_backward(1.0, cache)})
    # perfectly even routing: every expert chosen by half the tokens with mean probability 1/4 -> L = k = 2
    even = np.log(np.array([[4, 3, 2, 1], [1, 2, 3, 4], [2, 1, 4, 3], [3, 4, 1, 2]], dtype=np.float64))
    p = np.exp(even) / np.exp(even).sum(1, keepdims=True)
    assert np.allclose(p.mean(0), 0.25)
    assert moe.aux_loss_forward(even, 2)[0] == pytest.approx(2.0, rel=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_moe_keeps_the_dtype(dtype, rng):
    x = rng.standard_normal((3, 4)).astype(dtype)
    params = random_moe(rng, C=4, E=3, F=2, dtype=dtype)
    y, grads, cache = run(x, params, 2, np.ones_like(x))
    loss, aux = moe.aux_loss_forward(cache.logits, 2)
    for a in (y, *grads, cache.routing.weights, loss, moe.aux_loss_backward(1.0, aux)):
        assert a.dtype == dtype


@given(N=st.integers(1, 6), C=st.integers(1, 5), E=st.integers(1, 5), F=st.integers(1, 4), data=st.data(),
       seed=st.integers(0, 2**16))
def test_moe_random_shapes_match_hugging_face(N, C, E, F, data, seed):
    rng = np.random.default_rng(seed)
    top_k = data.draw(st.integers(1, E))
    x = rng.standard_normal((1, N, C))
    params = random_moe(rng, C, E, F)
    dy = rng.standard_normal(x.shape)
    y, grads, cache = run(x, params, top_k, dy)
    y_hf, grads_hf, chosen = hf_run(params, top_k, x, dy)
    # its float32 router may order a near-tie differently; that is a different (equally valid) choice, not an error
    assume(np.array_equal(np.sort(cache.routing.experts, 1), np.sort(chosen, 1)))
    for a, b in zip((y,) + grads, (y_hf,) + grads_hf):
        assert a.shape == b.shape
        assert np.abs(a - b).max(initial=0) <= TOL_HF * max(1.0, np.abs(b).max(initial=0))


def test_moe_bad_inputs(rng):
    x = np.zeros((2, 4))
    W_router, W_gate, W_up, W_down = random_moe(rng, C=4, E=3, F=2)
    with pytest.raises(ValueError, match=r"W_router: expected shape \(4, \*\), got \(3, 3\)"):
        moe.forward(x, W_router[:3], W_gate, W_up, W_down)
    with pytest.raises(ValueError, match=r"W_gate: expected shape \(3, 4, \*\), got \(2, 4, 2\)"):
        moe.forward(x, W_router, W_gate[:2], W_up, W_down)
    with pytest.raises(ValueError, match=r"W_up: expected shape \(3, 4, 2\), got \(3, 4, 1\)"):
        moe.forward(x, W_router, W_gate, W_up[..., :1], W_down)
    with pytest.raises(ValueError, match=r"W_down: expected shape \(3, 2, 4\), got \(3, 4, 2\)"):
        moe.forward(x, W_router, W_gate, W_up, W_down.transpose(0, 2, 1))
    with pytest.raises(ValueError, match=r"top_k: expected 1 <= top_k <= 3 \(the number of experts\), got 4"):
        moe.forward(x, W_router, W_gate, W_up, W_down, top_k=4)
    with pytest.raises(TypeError, match=r"top_k: expected an int, got float"):
        moe.forward(x, W_router, W_gate, W_up, W_down, top_k=2.0)
    with pytest.raises(TypeError, match=r"expected one float dtype for all inputs, got x: float32, W_router: float64"):
        moe.forward(x.astype(np.float32), W_router, W_gate, W_up, W_down)
    with pytest.raises(ValueError, match=r"logits: expected shape \(N, E\), got \(2, 3, 4\)"):
        moe.router_forward(np.zeros((2, 3, 4)), 1)
    with pytest.raises(ValueError, match=r"logits: expected at least one row to average over, got shape \(0, 3\)"):
        moe.aux_loss_forward(np.zeros((0, 3)), 1)
    _, cache = moe.forward(x, W_router, W_gate, W_up, W_down)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4\), got \(4, 2\)"):
        moe.backward(np.zeros((4, 2)), cache)
    with pytest.raises(ValueError, match=r"dlogits: expected shape \(2, 3\), got \(3, 2\)"):
        moe.backward(np.zeros((2, 4)), cache, dlogits=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"dweights: expected shape \(2, 2\), got \(2, 3\)"):
        moe.router_backward(np.zeros((2, 3)), cache.routing)
