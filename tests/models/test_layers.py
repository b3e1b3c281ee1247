"""Checks of reference/models/layers.py: the encoder and decoder layers, post-LN and pre-LN, with and without dropout.

Finite differences (float64) for every input and every parameter; PyTorch's own nn.TransformerEncoderLayer and
nn.TransformerDecoderLayer (same weights copied in) as the oracle for the forward and every gradient, in float64
and float32; dropout replayed by hand where the paper puts it, and its gradients by finite differences with the
masks fixed; bad arguments. Budget: under 10 s on one core.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.gradcheck import check_grads, numerical_grad, rel_error
from reference.models import layers
from reference.ops import attention, dropout, ffn, layernorm, multihead

B, T, S, C, H, D_FF = 2, 4, 5, 8, 2, 12

# float64 against torch float64: the same operations in a different order; round-off of a few 1e-16 per op
# through a dozen ops with O(1) condition numbers stays far below 1e-10, while a wrong term is O(1).
RTOL_TORCH64 = 1e-10
# float32 against torch float32: unit round-off 6e-8; LayerNorm divides by a std ~1 and the sums are at most
# d_ff = 12 long, so errors of a few 1e-7 relative to the largest entry are expected; 1e-5 leaves a margin of
# ~20 and still catches any wrong term (which is O(1) relative).
RTOL_TORCH32 = 1e-5


def attn_params(rng, C=C, dtype=np.float64):
    return {name: (rng.standard_normal(shape) * scale).astype(dtype)
            for name, shape, scale in [("Wq", (C, C), C**-0.5), ("Wk", (C, C), C**-0.5), ("Wv", (C, C), C**-0.5),
                                       ("Wo", (C, C), C**-0.5), ("bq", (C,), 0.1), ("bk", (C,), 0.1),
                                       ("bv", (C,), 0.1), ("bo", (C,), 0.1)]}


def ln_params(rng, C=C, dtype=np.float64):
    # gamma away from 1 and beta away from 0, so that a dropped gamma or beta shows.
    return {"gamma": (1.0 + 0.3 * rng.standard_normal(C)).astype(dtype),
            "beta": (0.3 * rng.standard_normal(C)).astype(dtype)}


def ffn_params(rng, C=C, d_ff=D_FF, dtype=np.float64):
    return {"W1": (rng.standard_normal((C, d_ff)) * C**-0.5).astype(dtype),
            "b1": (0.1 * rng.standard_normal(d_ff)).astype(dtype),
            "W2": (rng.standard_normal((d_ff, C)) * d_ff**-0.5).astype(dtype),
            "b2": (0.1 * rng.standard_normal(C)).astype(dtype)}


def encoder_params(rng, dtype=np.float64, C=C, d_ff=D_FF):
    return {"attn": attn_params(rng, C, dtype), "ln1": ln_params(rng, C, dtype),
            "ffn": ffn_params(rng, C, d_ff, dtype), "ln2": ln_params(rng, C, dtype)}


def decoder_params(rng, dtype=np.float64, C=C, d_ff=D_FF):
    return {"attn": attn_params(rng, C, dtype), "ln1": ln_params(rng, C, dtype),
            "cross_attn": attn_params(rng, C, dtype), "ln2": ln_params(rng, C, dtype),
            "ffn": ffn_params(rng, C, d_ff, dtype), "ln3": ln_params(rng, C, dtype)}


def flatten(tree, prefix=""):
    """{"a": {"b": arr}} -> {"a.b": arr} (the same array objects, so perturbing them perturbs the tree)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def masks():
    """Source padding (batch 1 ends in one pad), target padding (batch 0 ends in one pad), causal self-mask.

    No query row is fully masked, because PyTorch returns NaN there while we return 0.
    """
    src_pad = np.ones((B, S), dtype=bool)
    src_pad[1, -1] = False
    tgt_pad = np.ones((B, T), dtype=bool)
    tgt_pad[0, -1] = False
    self_mask = attention.causal_mask(T, T)[None, None] & tgt_pad[:, None, None, :]   # (B, 1, T, T)
    return src_pad, tgt_pad, self_mask


# ---------------------------------------------------------------------------------------------------------------
# Finite differences (tolerance RTOL_FD from reference/gradcheck.py: float64 central differences, h = 1e-6).

def is_key_bias(name):
    """The key bias's true gradient is exactly 0: q . (k + bk) = q . k + q . bk adds one number to a whole row of
    scores, which softmax ignores. A relative error between two round-off noises means nothing, so bk is checked
    in absolute terms instead: the analytic side is a sum of cancelling O(1) terms (round-off ~1e-15), finite
    differences give eps * |f| / h ~ 1e-9 for |f| ~ 10."""
    return name.endswith("bk")


def check_layer_grads(f, inputs, analytic):
    for name in filter(is_key_bias, inputs):
        assert np.abs(analytic[name]).max() < 1e-12, name
        assert np.abs(numerical_grad(f, inputs[name])).max() < 1e-8, name
    rest = [name for name in inputs if not is_key_bias(name)]
    check_grads(f, {n: inputs[n] for n in rest}, {n: analytic[n] for n in rest})


@pytest.mark.parametrize("norm, activation", [("post", "relu"), ("pre", "relu"), ("post", "gelu")])
def test_encoder_layer_matches_finite_differences(norm, activation, rng):
    x = rng.standard_normal((B, S, C))
    params = encoder_params(rng)
    src_pad, _, _ = masks()
    mask = src_pad[:, None, None, :]                                   # (B, 1, 1, S)
    G = rng.standard_normal((B, S, C))                                 # random upstream gradient

    def f():
        return float(np.sum(layers.encoder_layer_forward(x, params, H, mask, norm=norm, activation=activation)[0] * G))

    y, cache = layers.encoder_layer_forward(x, params, H, mask, norm=norm, activation=activation)
    dx, dparams = layers.encoder_layer_backward(G, cache)
    inputs = {"x": x, **flatten(params)}
    analytic = {"x": dx, **flatten(dparams)}
    assert set(flatten(dparams)) == set(flatten(params))
    check_layer_grads(f, inputs, analytic)


@pytest.mark.parametrize("norm, activation", [("post", "relu"), ("pre", "relu"), ("pre", "gelu")])
def test_decoder_layer_matches_finite_differences(norm, activation, rng):
    x = rng.standard_normal((B, T, C))
    memory = rng.standard_normal((B, S, C))
    params = decoder_params(rng)
    src_pad, _, self_mask = masks()
    cross_mask = src_pad[:, None, None, :]                             # (B, 1, 1, S)
    G = rng.standard_normal((B, T, C))

    def run():
        return layers.decoder_layer_forward(x, memory, params, H, self_mask, cross_mask, norm=norm,
                                            activation=activation)

    def f():
        return float(np.sum(run()[0] * G))

    y, cache = run()
    dx, dmemory, dparams = layers.decoder_layer_backward(G, cache)
    assert set(flatten(dparams)) == set(flatten(params))
    check_layer_grads(f, {"x": x, "memory": memory, **flatten(params)},
                {"x": dx, "memory": dmemory, **flatten(dparams)})


# ---------------------------------------------------------------------------------------------------------------
# PyTorch oracle: torch's own layers with our weights copied in.

def load_mha(mha, p):
    """Copy {Wq, Wk, Wv, Wo, bq, bk, bv, bo} into nn.MultiheadAttention.

    torch packs the three input projections into in_proj_weight (3C, C) in nn.Linear's (out, in) layout, i.e.
    the transposes of our (in, out) matrices stacked as [Wq^T; Wk^T; Wv^T].
    """
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    mha.in_proj_weight.copy_(t(np.concatenate([p["Wq"].T, p["Wk"].T, p["Wv"].T], axis=0)))
    mha.in_proj_bias.copy_(t(np.concatenate([p["bq"], p["bk"], p["bv"]])))
    mha.out_proj.weight.copy_(t(p["Wo"].T))
    mha.out_proj.bias.copy_(t(p["bo"]))


def mha_grads(mha):
    gw, gb = mha.in_proj_weight.grad.numpy(), mha.in_proj_bias.grad.numpy()
    C = gw.shape[1]
    return {"Wq": gw[:C].T, "Wk": gw[C:2 * C].T, "Wv": gw[2 * C:].T, "Wo": mha.out_proj.weight.grad.numpy().T,
            "bq": gb[:C], "bk": gb[C:2 * C], "bv": gb[2 * C:], "bo": mha.out_proj.bias.grad.numpy()}


def load_ln(ln, p):
    ln.weight.copy_(torch.from_numpy(p["gamma"]))
    ln.bias.copy_(torch.from_numpy(p["beta"]))


def ln_grads(ln):
    return {"gamma": ln.weight.grad.numpy(), "beta": ln.bias.grad.numpy()}


def load_ffn(layer, p):
    layer.linear1.weight.copy_(torch.from_numpy(np.ascontiguousarray(p["W1"].T)))
    layer.linear1.bias.copy_(torch.from_numpy(p["b1"]))
    layer.linear2.weight.copy_(torch.from_numpy(np.ascontiguousarray(p["W2"].T)))
    layer.linear2.bias.copy_(torch.from_numpy(p["b2"]))


def ffn_grads(layer):
    return {"W1": layer.linear1.weight.grad.numpy().T, "b1": layer.linear1.bias.grad.numpy(),
            "W2": layer.linear2.weight.grad.numpy().T, "b2": layer.linear2.bias.grad.numpy()}


TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def torch_encoder_layer(params, norm, activation, dtype, eps=1e-5, n_head=H):
    C, d_ff = params["ffn"]["W1"].shape
    layer = torch.nn.TransformerEncoderLayer(C, n_head, dim_feedforward=d_ff, dropout=0.0,
                                             activation=activation, layer_norm_eps=eps, batch_first=True,
                                             norm_first=(norm == "pre"), dtype=TORCH_DTYPE[dtype])
    with torch.no_grad():
        load_mha(layer.self_attn, params["attn"])
        load_ln(layer.norm1, params["ln1"])
        load_ffn(layer, params["ffn"])
        load_ln(layer.norm2, params["ln2"])
    return layer


def torch_encoder_grads(layer):
    return {"attn": mha_grads(layer.self_attn), "ln1": ln_grads(layer.norm1), "ffn": ffn_grads(layer),
            "ln2": ln_grads(layer.norm2)}


def torch_decoder_layer(params, norm, activation, dtype, eps=1e-5, n_head=H):
    C, d_ff = params["ffn"]["W1"].shape
    layer = torch.nn.TransformerDecoderLayer(C, n_head, dim_feedforward=d_ff, dropout=0.0,
                                             activation=activation, layer_norm_eps=eps, batch_first=True,
                                             norm_first=(norm == "pre"), dtype=TORCH_DTYPE[dtype])
    with torch.no_grad():
        load_mha(layer.self_attn, params["attn"])
        load_ln(layer.norm1, params["ln1"])
        load_mha(layer.multihead_attn, params["cross_attn"])
        load_ln(layer.norm2, params["ln2"])
        load_ffn(layer, params["ffn"])
        load_ln(layer.norm3, params["ln3"])
    return layer


def torch_decoder_grads(layer):
    return {"attn": mha_grads(layer.self_attn), "ln1": ln_grads(layer.norm1),
            "cross_attn": mha_grads(layer.multihead_attn), "ln2": ln_grads(layer.norm2), "ffn": ffn_grads(layer),
            "ln3": ln_grads(layer.norm3)}


def floored_error(a, b, floor):
    """max |a - b| / max(|a|, |b|, floor): with floor = 1 for O(1) inputs, a gradient that is 0 up to round-off
    (LayerNorm over C = 1 or 2 entries outputs a constant) counts as 0, not as a relative error of two noises."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), floor))


def assert_trees_close(ours, theirs, rtol, floor=0.0):
    ours, theirs = flatten(ours), flatten(theirs)
    assert set(ours) == set(theirs)
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype, name
        if is_key_bias(name):
            # both sides are round-off around a true 0 (see is_key_bias); the gradients here are O(1)
            assert max(np.abs(ours[name]).max(), np.abs(theirs[name]).max()) < rtol, name
            continue
        err = floored_error(ours[name], theirs[name], floor) if floor else rel_error(ours[name], theirs[name])
        assert err < rtol, f"d{name}: relative error {err:.2e} >= {rtol:.0e}"


@pytest.mark.parametrize("dtype, rtol", [(np.float64, RTOL_TORCH64), (np.float32, RTOL_TORCH32)])
@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_torch(norm, activation, dtype, rtol, rng):
    x = rng.standard_normal((B, S, C)).astype(dtype)
    G = rng.standard_normal((B, S, C)).astype(dtype)
    params = encoder_params(rng, dtype)
    src_pad, _, _ = masks()
    y, cache = layers.encoder_layer_forward(x, params, H, src_pad[:, None, None, :], norm=norm, activation=activation)
    dx, dparams = layers.encoder_layer_backward(G, cache)
    assert y.dtype == dtype and dx.dtype == dtype

    layer = torch_encoder_layer(params, norm, activation, dtype)
    xt = torch.from_numpy(x).requires_grad_()
    # torch's key_padding_mask marks the positions to ignore (True = pad): the opposite of our True = may attend.
    yt = layer(xt, src_key_padding_mask=torch.from_numpy(~src_pad))
    yt.backward(torch.from_numpy(G))
    assert rel_error(y, yt.detach().numpy()) < rtol
    assert rel_error(dx, xt.grad.numpy()) < rtol
    assert_trees_close(dparams, torch_encoder_grads(layer), rtol)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, RTOL_TORCH64), (np.float32, RTOL_TORCH32)])
@pytest.mark.parametrize("norm", ["post", "pre"])
def test_decoder_layer_matches_torch(norm, dtype, rtol, rng):
    x = rng.standard_normal((B, T, C)).astype(dtype)
    memory = rng.standard_normal((B, S, C)).astype(dtype)
    G = rng.standard_normal((B, T, C)).astype(dtype)
    params = decoder_params(rng, dtype)
    src_pad, tgt_pad, self_mask = masks()
    y, cache = layers.decoder_layer_forward(x, memory, params, H, self_mask, src_pad[:, None, None, :], norm=norm)
    dx, dmemory, dparams = layers.decoder_layer_backward(G, cache)
    assert y.dtype == dtype and dx.dtype == dtype and dmemory.dtype == dtype

    layer = torch_decoder_layer(params, norm, "relu", dtype)
    xt = torch.from_numpy(x).requires_grad_()
    mt = torch.from_numpy(memory).requires_grad_()
    yt = layer(xt, mt, tgt_mask=torch.from_numpy(~attention.causal_mask(T, T)),
               tgt_key_padding_mask=torch.from_numpy(~tgt_pad), memory_key_padding_mask=torch.from_numpy(~src_pad))
    yt.backward(torch.from_numpy(G))
    assert rel_error(y, yt.detach().numpy()) < rtol
    assert rel_error(dx, xt.grad.numpy()) < rtol
    assert rel_error(dmemory, mt.grad.numpy()) < rtol
    assert_trees_close(dparams, torch_decoder_grads(layer), rtol)


@given(B=st.integers(0, 2), T=st.integers(1, 4), S_=st.integers(1, 4), H_=st.integers(1, 3), d_k=st.integers(1, 3),
       d_ff=st.integers(1, 5), norm=st.sampled_from(["post", "pre"]), seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_decoder_layer_random_shapes_match_torch(B, T, S_, H_, d_k, d_ff, norm, seed):
    # batch 0 and 1, T = 1, T != S, d_k = 1, d_ff = 1; causal self-attention, cross-attention unmasked.
    rng = np.random.default_rng(seed)
    C_ = H_ * d_k
    x, memory = rng.standard_normal((B, T, C_)), rng.standard_normal((B, S_, C_))
    G = rng.standard_normal((B, T, C_))
    params = decoder_params(rng, C=C_, d_ff=d_ff)
    causal = attention.causal_mask(T, T)
    y, cache = layers.decoder_layer_forward(x, memory, params, H_, causal, norm=norm)
    dx, dmemory, dparams = layers.decoder_layer_backward(G, cache)
    assert y.shape == dx.shape == (B, T, C_) and dmemory.shape == (B, S_, C_)
    if B == 0:
        # no data: every parameter gradient is an exact zero of the right shape
        for name, g in flatten(dparams).items():
            assert g.shape == flatten(params)[name].shape and not g.any(), name
        return
    layer = torch_decoder_layer(params, norm, "relu", np.float64, n_head=H_)
    xt, mt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(memory).requires_grad_()
    yt = layer(xt, mt, tgt_mask=torch.from_numpy(~causal))
    yt.backward(torch.from_numpy(G))
    assert floored_error(y, yt.detach().numpy(), 1.0) < RTOL_TORCH64
    assert floored_error(dx, xt.grad.numpy(), 1.0) < RTOL_TORCH64
    assert floored_error(dmemory, mt.grad.numpy(), 1.0) < RTOL_TORCH64
    assert_trees_close(dparams, torch_decoder_grads(layer), RTOL_TORCH64, floor=1.0)


def test_post_and_pre_ln_differ_and_post_ln_output_is_normalised(rng):
    # post-LN ends in LN_2 with gamma = 1, beta = 0: every row has mean 0 and (biased) variance 1 - eps-ish;
    # pre-LN ends in a residual sum and does not. Together they pin which arrangement each option is.
    x = rng.standard_normal((B, S, C))
    params = encoder_params(rng)
    params["ln2"] = {"gamma": np.ones(C), "beta": np.zeros(C)}
    y_post, _ = layers.encoder_layer_forward(x, params, H, norm="post")
    y_pre, _ = layers.encoder_layer_forward(x, params, H, norm="pre")
    np.testing.assert_allclose(y_post.mean(-1), 0.0, atol=1e-12)
    # var = s / (s + eps) for a row of raw variance s ~ 1: within 1e-4 of 1.
    np.testing.assert_allclose(y_post.var(-1), 1.0, atol=1e-4)
    assert np.abs(y_pre.mean(-1)).max() > 1e-3
    assert rel_error(y_post, y_pre) > 1e-2


# ---------------------------------------------------------------------------------------------------------------
# Dropout inside the layers (the paper's §5.4: each sublayer's output, before the residual sum).

P_DROP = 0.3   # high enough that every (B, T, C) array of the tests has dropped and kept entries


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_dropout_layers_match_finite_differences(norm, rng):
    # The masks are drawn from a generator; a fresh generator with the same seed in every call replays them, so
    # the layer is a fixed (piecewise smooth) function for the finite differences, as dropout.backward assumes.
    x, memory = rng.standard_normal((B, T, C)), rng.standard_normal((B, S, C))
    enc, dec = encoder_params(rng), decoder_params(rng)
    _, _, self_mask = masks()
    G = rng.standard_normal((B, T, C))

    def run_enc():
        return layers.encoder_layer_forward(x, enc, H, norm=norm, p_drop=P_DROP, rng=np.random.default_rng(7))

    def run_dec():
        return layers.decoder_layer_forward(x, memory, dec, H, self_mask, norm=norm, p_drop=P_DROP,
                                            rng=np.random.default_rng(7))

    y, cache = run_enc()
    assert cache.self_attn.drop is not None and cache.ffn.drop is not None
    dx, dparams = layers.encoder_layer_backward(G, cache)
    check_layer_grads(lambda: float(np.sum(run_enc()[0] * G)), {"x": x, **flatten(enc)}, {"x": dx, **flatten(dparams)})
    y, cache = run_dec()
    dx, dmemory, dparams = layers.decoder_layer_backward(G, cache)
    check_layer_grads(lambda: float(np.sum(run_dec()[0] * G)), {"x": x, "memory": memory, **flatten(dec)},
                      {"x": dx, "memory": dmemory, **flatten(dparams)})


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_dropout_sits_on_each_sublayer_output_before_the_residual_sum(norm, rng):
    # The decoder layer written out from the single ops, with the three masks drawn as the layer draws them (one
    # (B, T, C) array each: self-attention, cross-attention, FFN): post-LN y = LN(x + Drop(S(x))), pre-LN
    # y = x + Drop(S(LN(x))). The same ops in the same order: equal to float64 round-off (1e-12 leaves room).
    x, memory = rng.standard_normal((B, T, C)), rng.standard_normal((B, S, C))
    p = decoder_params(rng)
    _, _, self_mask = masks()
    y, _ = layers.decoder_layer_forward(x, memory, p, H, self_mask, norm=norm, p_drop=P_DROP,
                                        rng=np.random.default_rng(11))
    replay = np.random.default_rng(11)
    sublayers = [lambda u: multihead.forward(u, u, p["attn"], H, self_mask)[0],
                 lambda u: multihead.forward(u, memory, p["cross_attn"], H)[0],
                 lambda u: ffn.forward(u, **p["ffn"])[0]]
    h = x
    for sub, ln in zip(sublayers, ("ln1", "ln2", "ln3")):
        mask = replay.random((B, T, C)) >= P_DROP                     # True = kept, as dropout.forward draws it
        gamma, beta = p[ln]["gamma"], p[ln]["beta"]
        if norm == "post":
            h = layernorm.forward(h + dropout.forward(sub(h), P_DROP, mask=mask)[0], gamma, beta)[0]
        else:
            h = h + dropout.forward(sub(layernorm.forward(h, gamma, beta)[0]), P_DROP, mask=mask)[0]
    assert rel_error(y, h) < 1e-12
    # and it is not the layer without dropout
    y0, _ = layers.decoder_layer_forward(x, memory, p, H, self_mask, norm=norm)
    assert rel_error(y, y0) > 1e-2


def test_p_drop_zero_is_the_layer_without_dropout(rng):
    # Evaluation (p_drop = 0) must compute exactly the deterministic layer, whatever rng is passed, and draw nothing.
    x = rng.standard_normal((B, S, C))
    enc = encoder_params(rng)
    gen = np.random.default_rng(3)
    before = gen.bit_generator.state
    y_eval, cache = layers.encoder_layer_forward(x, enc, H, p_drop=0.0, rng=gen)
    assert gen.bit_generator.state == before and cache.self_attn.drop is None
    np.testing.assert_array_equal(y_eval, layers.encoder_layer_forward(x, enc, H)[0])


def test_dropout_bad_arguments_raise(rng):
    x = rng.standard_normal((B, S, C))
    enc = encoder_params(rng)
    with pytest.raises(ValueError, match="exactly one of rng"):
        layers.encoder_layer_forward(x, enc, H, p_drop=0.1)                       # training needs a generator
    with pytest.raises(ValueError, match=r"p: expected a float in \[0, 1\]"):
        layers.encoder_layer_forward(x, enc, H, p_drop=1.5, rng=np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------------------------
# Bad arguments.

def test_bad_arguments_raise(rng):
    x = rng.standard_normal((B, T, C))
    memory = rng.standard_normal((B, S, C))
    enc, dec = encoder_params(rng), decoder_params(rng)
    with pytest.raises(ValueError, match="norm: expected one of"):
        layers.encoder_layer_forward(x, enc, H, norm="middle")
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, C\)"):
        layers.encoder_layer_forward(x[0], enc, H)
    with pytest.raises(TypeError, match="float32 or float64"):
        layers.encoder_layer_forward(x.astype(np.int64), enc, H)
    with pytest.raises(ValueError, match="params: expected a dict with keys"):
        layers.encoder_layer_forward(x, {"attn": enc["attn"]}, H)
    with pytest.raises(ValueError, match="params: expected a dict with keys"):
        layers.decoder_layer_forward(x, memory, enc, H)
    with pytest.raises(ValueError, match="memory: expected shape"):
        layers.decoder_layer_forward(x, memory[..., :C - 1], dec, H)
    with pytest.raises(ValueError, match="memory: expected shape"):
        layers.decoder_layer_forward(x, memory[:1], dec, H)
    with pytest.raises(ValueError):
        layers.encoder_layer_forward(x, enc, 3)                                  # 8 % 3 != 0
    with pytest.raises(TypeError):
        layers.encoder_layer_forward(x.astype(np.float32), enc, H)               # float32 x, float64 weights
    with pytest.raises(ValueError):
        layers.encoder_layer_forward(x, enc, H, mask=np.ones((B, T + 1), dtype=bool))
