"""Checks of reference/models/transformer.py, the encoder-decoder Transformer.

Finite differences (float64) on a tiny config for every parameter array (a random subset of the entries of the
big ones, see ``check_grads_subset``); the same model composed from PyTorch's own layers as the oracle for the
logits and every gradient; masks (causal, padding) and positions doing what they claim; dropout in training (the
documented composition, finite differences with the masks fixed, evaluation untouched); encode/decode and the
cross-attention maps; init; bad configs and inputs. Budget: under 20 s on one core.
"""
import dataclasses
import math

import numpy as np
import pytest
import torch

from reference.gradcheck import RTOL_FD, numerical_grad, rel_error
from reference.models import layers, transformer
from reference.models.transformer import TransformerConfig
from reference.ops import attention, dropout, layernorm, positional
from reference.training import init
from tests.models.test_layers import (
    flatten,
    is_key_bias,
    torch_decoder_grads,
    torch_decoder_layer,
    torch_encoder_grads,
    torch_encoder_layer,
)

TINY = dict(src_vocab_size=11, tgt_vocab_size=13, d_model=8, n_head=2, n_layer=2, d_ff=12)
B, S, T = 2, 5, 4

# float64 against torch float64, see tests/models/test_layers.py: a wrong term is O(1), round-off ~1e-15.
RTOL_TORCH64 = 1e-10


def tiny_config(**overrides):
    return TransformerConfig(**{**TINY, **overrides})


def perturbed_params(config, rng, dtype=np.float64):
    """init_params, then every bias, beta and gamma moved off its 0 or 1, so that a gradient that only holds at
    zero biases (or unit gamma) cannot pass."""
    params = transformer.init_params(config, rng, dtype)
    for a in flatten_layer(params).values():
        if a.ndim == 1:
            a += (0.2 * rng.standard_normal(a.shape)).astype(dtype)
    return params


def flatten_layer(params):
    """Like flatten, with list indices in the names: {"encoder": [{"ln1": {...}}]} -> {"encoder.0.ln1.gamma": ...}."""
    out = {}
    for k, v in params.items():
        if isinstance(v, list):
            for i, layer in enumerate(v):
                out.update({f"{k}.{i}.{n}": a for n, a in flatten(layer).items()})
        elif isinstance(v, dict):
            out.update({f"{k}.{n}": a for n, a in flatten(v).items()})
        else:
            out[k] = v
    return out


def data(rng, config):
    src = rng.integers(0, config.src_vocab_size, size=(B, S))
    tgt = rng.integers(0, config.tgt_vocab_size, size=(B, T))
    src_pad = np.ones((B, S), dtype=bool)
    src_pad[1, -2:] = False
    tgt_pad = np.ones((B, T), dtype=bool)
    tgt_pad[0, -1] = False
    return src, tgt, src_pad, tgt_pad


# ---------------------------------------------------------------------------------------------------------------
# Finite differences on a random subset of entries.

def check_grads_subset(f, inputs, analytic, rng, k=5, rtol=RTOL_FD):
    """Like tests/gradcheck.check_grads, but for an array of more than ``k`` entries only ``k`` random entries
    are differentiated numerically (each costs two forward passes of the whole model).

    Why a subset still catches a wrong term: a mistake in a backward formula (a missing transpose, a dropped
    residual path, a forgotten 1/sqrt(d_k), a missing sum over the decoder layers' uses of memory, a tied
    gradient with one use missing) changes the gradient of almost every entry of the arrays it touches, so
    any k = 5 entries show it. Mistakes that hit only a few entries are index mistakes, and they live where
    entries are selected: the embeddings (which rows) and the masks (which positions). The embeddings are
    therefore checked in full, and the padding and causal masks are checked by the forward tests below.
    """
    for name, x in inputs.items():
        idx = np.arange(x.size) if (x.size <= k or name.endswith("_emb")) else \
            rng.choice(x.size, size=k, replace=False)
        num = numerical_grad(f, x, indices=idx)
        if is_key_bias(name):                                        # a true 0: see tests/models/test_layers.py
            assert np.abs(analytic[name]).max() < 1e-12 and np.abs(num).max() < 1e-8, name
            continue
        err = rel_error(analytic[name].reshape(-1)[idx], num)
        assert err < rtol, f"d/d{name}: relative error {err:.2e} >= {rtol:.0e} on entries {idx}"


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_model_matches_finite_differences(norm, rng):
    config = tiny_config(norm=norm)
    params = perturbed_params(config, rng)
    src, tgt, src_pad, tgt_pad = data(rng, config)
    G = rng.standard_normal((B, T, config.tgt_vocab_size))           # random upstream gradient

    def f():
        return float(np.sum(transformer.forward(params, config, src, tgt, src_pad, tgt_pad)[0] * G))

    logits, cache = transformer.forward(params, config, src, tgt, src_pad, tgt_pad)
    grads = transformer.backward(G, cache)
    inputs, analytic = flatten_layer(params), flatten_layer(grads)
    assert set(inputs) == set(analytic)
    assert ("ln_f_enc.gamma" in inputs) == (norm == "pre")
    check_grads_subset(f, inputs, analytic, rng)


# ---------------------------------------------------------------------------------------------------------------
# PyTorch oracle: the same model composed from torch's TransformerEncoderLayer / TransformerDecoderLayer.

def torch_sinusoidal(n, d):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(same), written again from the paper."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    div = torch.pow(10000.0, torch.arange(0, d, 2, dtype=torch.float64) / d)
    pe = torch.zeros(n, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos / div)
    pe[:, 1::2] = torch.cos(pos / div)
    return pe


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_model_matches_torch(norm, rng):
    config = tiny_config(norm=norm)
    params = perturbed_params(config, rng)
    src, tgt, src_pad, tgt_pad = data(rng, config)
    G = rng.standard_normal((B, T, config.tgt_vocab_size))
    logits, cache = transformer.forward(params, config, src, tgt, src_pad, tgt_pad)
    grads = transformer.backward(G, cache)

    C = config.d_model
    enc = [torch_encoder_layer(p, norm, "relu", np.float64, n_head=config.n_head) for p in params["encoder"]]
    dec = [torch_decoder_layer(p, norm, "relu", np.float64, n_head=config.n_head) for p in params["decoder"]]
    E_src = torch.from_numpy(params["wte_src"].copy()).requires_grad_()
    E_tgt = torch.from_numpy(params["wte_tgt"].copy()).requires_grad_()
    lns = {}
    for name in ("ln_f_enc", "ln_f_dec"):
        if name in params:
            lns[name] = torch.nn.LayerNorm(C, eps=config.ln_eps, dtype=torch.float64)
            with torch.no_grad():
                lns[name].weight.copy_(torch.from_numpy(params[name]["gamma"]))
                lns[name].bias.copy_(torch.from_numpy(params[name]["beta"]))
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)           # True = masked, torch's way
    src_kpm, tgt_kpm = torch.from_numpy(~src_pad), torch.from_numpy(~tgt_pad)

    x = E_src[torch.from_numpy(src)] * math.sqrt(C) + torch_sinusoidal(S, C)
    for layer in enc:
        x = layer(x, src_key_padding_mask=src_kpm)
    if norm == "pre":
        x = lns["ln_f_enc"](x)
    h = E_tgt[torch.from_numpy(tgt)] * math.sqrt(C) + torch_sinusoidal(T, C)
    for layer in dec:
        h = layer(h, x, tgt_mask=causal, tgt_key_padding_mask=tgt_kpm, memory_key_padding_mask=src_kpm)
    if norm == "pre":
        h = lns["ln_f_dec"](h)
    logits_t = h @ E_tgt.T
    logits_t.backward(torch.from_numpy(G))

    assert rel_error(logits, logits_t.detach().numpy()) < RTOL_TORCH64
    expected = {"wte_src": E_src.grad.numpy(), "wte_tgt": E_tgt.grad.numpy(),
                "encoder": [torch_encoder_grads(layer) for layer in enc],
                "decoder": [torch_decoder_grads(layer) for layer in dec]}
    for name, ln in lns.items():
        expected[name] = {"gamma": ln.weight.grad.numpy(), "beta": ln.bias.grad.numpy()}
    ours, theirs = flatten_layer(grads), flatten_layer(expected)
    assert set(ours) == set(theirs)
    for name in ours:
        if is_key_bias(name):                                        # a true 0: see tests/models/test_layers.py
            assert max(np.abs(ours[name]).max(), np.abs(theirs[name]).max()) < RTOL_TORCH64, name
            continue
        err = rel_error(ours[name], theirs[name])
        assert err < RTOL_TORCH64, f"d{name}: relative error {err:.2e}"


# ---------------------------------------------------------------------------------------------------------------
# Masks and positions.

def test_swapping_two_source_tokens_changes_the_output(rng):
    # Attention alone is permutation-equivariant; only the positional encoding tells position 0 from position 3.
    config = tiny_config()
    params = transformer.init_params(config, rng)
    src = np.array([[1, 2, 3, 4, 5]])
    tgt = np.array([[0, 6, 7, 8]])
    swapped = src[:, [3, 1, 2, 0, 4]]
    a, _ = transformer.forward(params, config, src, tgt)
    b, _ = transformer.forward(params, config, swapped, tgt)
    assert rel_error(a, b) > 1e-2


def test_decoder_is_causal(rng):
    # Changing target token t changes no logits at positions < t, and does change position t.
    config = tiny_config()
    params = perturbed_params(config, rng)
    src, tgt, _, _ = data(rng, config)
    a, _ = transformer.forward(params, config, src, tgt)
    tgt2 = tgt.copy()
    tgt2[:, 2] = (tgt2[:, 2] + 1) % config.tgt_vocab_size
    b, _ = transformer.forward(params, config, src, tgt2)
    np.testing.assert_array_equal(a[:, :2], b[:, :2])
    assert rel_error(a[:, 2:], b[:, 2:]) > 1e-3


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_padded_positions_do_not_leak(norm, rng):
    # Tokens under a False pad mask can be anything: the logits of the real positions do not move.
    config = tiny_config(norm=norm)
    params = perturbed_params(config, rng)
    src, tgt, src_pad, tgt_pad = data(rng, config)
    a, _ = transformer.forward(params, config, src, tgt, src_pad, tgt_pad)
    src2, tgt2 = src.copy(), tgt.copy()
    src2[~src_pad] = (src2[~src_pad] + 1) % config.src_vocab_size
    tgt2[~tgt_pad] = (tgt2[~tgt_pad] + 1) % config.tgt_vocab_size
    b, _ = transformer.forward(params, config, src2, tgt2, src_pad, tgt_pad)
    real = tgt_pad                                                   # (B, T) query rows that are real tokens
    np.testing.assert_allclose(a[real], b[real], rtol=0, atol=1e-12)
    # Without the masks the same change does show: the test above is not vacuous.
    c, _ = transformer.forward(params, config, src, tgt)
    d, _ = transformer.forward(params, config, src2, tgt2)
    assert rel_error(c[real], d[real]) > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# Dropout in training, encode/decode, cross-attention.

@pytest.mark.parametrize("norm", ["post", "pre"])
def test_training_mode_with_dropout_matches_finite_differences(norm, rng):
    # A fresh generator with the same seed in every call draws the same masks: the model is then one fixed
    # function, and its backward (through every dropout, the embeddings' included) must match finite differences.
    config = tiny_config(norm=norm, p_drop=0.3)
    params = perturbed_params(config, rng)
    src, tgt, src_pad, tgt_pad = data(rng, config)
    G = rng.standard_normal((B, T, config.tgt_vocab_size))

    def run():
        return transformer.forward(params, config, src, tgt, src_pad, tgt_pad, training=True,
                                   rng=np.random.default_rng(21))

    logits, cache = run()
    grads = transformer.backward(G, cache)
    assert cache.encoder.embed[2] is not None and cache.decoder.layers[0].ffn.drop is not None
    check_grads_subset(lambda: float(np.sum(run()[0] * G)), flatten_layer(params), flatten_layer(grads), rng)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_training_mode_is_the_documented_composition(norm, rng):
    # The module docstring's order of the masks: source embeddings, the encoder's layers, target embeddings, the
    # decoder's layers, all from one generator. Written out with the layers and dropout.forward, the logits are
    # the same to round-off (the same ops in the same order; 1e-12 leaves room).
    config = tiny_config(norm=norm, p_drop=0.2)
    params = perturbed_params(config, rng)
    src, tgt, src_pad, tgt_pad = data(rng, config)
    logits, _ = transformer.forward(params, config, src, tgt, src_pad, tgt_pad, training=True,
                                    rng=np.random.default_rng(5))
    gen, C, p = np.random.default_rng(5), config.d_model, config.p_drop
    opts = dict(norm=norm, eps=config.ln_eps, activation=config.activation, p_drop=p, rng=gen)
    key_mask = src_pad[:, None, None, :]
    x = dropout.forward(math.sqrt(C) * params["wte_src"][src] + positional.sinusoidal(S, C), p, rng=gen)[0]
    for lp in params["encoder"]:
        x = layers.encoder_layer_forward(x, lp, config.n_head, key_mask, **opts)[0]
    if norm == "pre":
        x = layernorm.forward(x, params["ln_f_enc"]["gamma"], params["ln_f_enc"]["beta"], config.ln_eps)[0]
    self_mask = attention.causal_mask(T, T)[None, None] & tgt_pad[:, None, None, :]
    h = dropout.forward(math.sqrt(C) * params["wte_tgt"][tgt] + positional.sinusoidal(T, C), p, rng=gen)[0]
    for lp in params["decoder"]:
        h = layers.decoder_layer_forward(h, x, lp, config.n_head, self_mask, key_mask, **opts)[0]
    if norm == "pre":
        h = layernorm.forward(h, params["ln_f_dec"]["gamma"], params["ln_f_dec"]["beta"], config.ln_eps)[0]
    assert rel_error(logits, h @ params["wte_tgt"].T) < 1e-12


def test_evaluation_mode_is_deterministic_and_training_mode_is_not(rng):
    config = tiny_config(p_drop=0.1)
    params = perturbed_params(config, rng)
    src, tgt, src_pad, tgt_pad = data(rng, config)
    evaluation, _ = transformer.forward(params, config, src, tgt, src_pad, tgt_pad)
    # p_drop = 0 in training, and any p_drop in evaluation: the same numbers, bit for bit
    no_drop, _ = transformer.forward(params, dataclasses.replace(config, p_drop=0.0), src, tgt, src_pad, tgt_pad,
                                     training=True)
    np.testing.assert_array_equal(evaluation, no_drop)
    a, _ = transformer.forward(params, config, src, tgt, src_pad, tgt_pad, training=True, rng=np.random.default_rng(1))
    b, _ = transformer.forward(params, config, src, tgt, src_pad, tgt_pad, training=True, rng=np.random.default_rng(2))
    assert rel_error(a, evaluation) > 1e-3 and rel_error(a, b) > 1e-3


def test_encode_then_decode_is_forward_and_cross_attention_reads_the_source(rng):
    config = tiny_config()
    params = perturbed_params(config, rng)
    src, tgt, src_pad, tgt_pad = data(rng, config)
    logits, cache = transformer.forward(params, config, src, tgt, src_pad, tgt_pad)
    memory, _ = transformer.encode(params, config, src, src_pad)
    logits2, dec_cache = transformer.decode(params, config, memory, tgt, src_pad, tgt_pad)
    np.testing.assert_array_equal(logits, logits2)
    maps = transformer.cross_attention(cache)
    assert len(maps) == config.n_layer
    for P, P2 in zip(maps, transformer.cross_attention(dec_cache)):
        assert P.shape == (B, config.n_head, T, S)
        np.testing.assert_array_equal(P, P2)
        np.testing.assert_allclose(P.sum(-1), 1.0, rtol=0, atol=1e-12)          # rows are distributions
        assert np.all(P[1, :, :, ~src_pad[1]] == 0)                              # padded source keys get nothing
    maps[0][...] = 0                                                             # a copy: the cache is intact
    assert transformer.cross_attention(cache)[0].sum() > 0


def test_dropout_and_decode_bad_arguments_raise(rng):
    with pytest.raises(ValueError, match=r"p_drop: expected a number in \[0, 1\)"):
        tiny_config(p_drop=1.0)
    config = tiny_config(p_drop=0.1)
    params = transformer.init_params(config, rng)
    src, tgt, _, _ = data(rng, config)
    with pytest.raises(ValueError, match="needs a numpy.random.Generator"):
        transformer.forward(params, config, src, tgt, training=True)
    with pytest.raises(TypeError, match="training: expected a bool"):
        transformer.forward(params, config, src, tgt, training=1)
    memory, _ = transformer.encode(params, config, src)
    with pytest.raises(ValueError, match="memory: expected shape"):
        transformer.decode(params, config, memory[:1], tgt)
    with pytest.raises(TypeError, match="TransformerCache or DecoderCache"):
        transformer.cross_attention(())


# ---------------------------------------------------------------------------------------------------------------
# Init, dtypes.

def test_init_params_structure_and_statistics(rng):
    config = TransformerConfig(src_vocab_size=300, tgt_vocab_size=200, d_model=64, n_head=4, n_layer=1, d_ff=256)
    params = transformer.init_params(config, rng)
    C = config.d_model
    enc, dec = params["encoder"][0], params["decoder"][0]
    assert set(params) == {"wte_src", "wte_tgt", "encoder", "decoder"}
    assert set(enc) == {"attn", "ln1", "ffn", "ln2"}
    assert set(dec) == {"attn", "ln1", "cross_attn", "ln2", "ffn", "ln3"}
    # Variance of n draws, 6-sigma band (see tests/training/test_init.py): normal sqrt(2/n), uniform sqrt(0.8/n).
    for W, var, kurt in [(params["wte_src"], 1 / C, 3.0), (params["wte_tgt"], 1 / C, 3.0),
                         (enc["attn"]["Wq"], 2 / (2 * C), 1.8), (dec["cross_attn"]["Wo"], 2 / (2 * C), 1.8),
                         (enc["ffn"]["W1"], 2 / (C + config.d_ff), 1.8),
                         (dec["ffn"]["W2"], 2 / (C + config.d_ff), 1.8)]:
        assert abs(W.var() / var - 1) < 6 * math.sqrt((kurt - 1) / W.size)
    for name, a in flatten_layer(params).items():
        if name.endswith(("bq", "bk", "bv", "bo", "b1", "b2", "beta")):
            assert not a.any(), name
        if name.endswith("gamma"):
            assert np.all(a == 1), name
    assert {"ln_f_enc", "ln_f_dec"} <= set(transformer.init_params(dataclasses.replace(config, norm="pre"), rng))


def test_float32_model_keeps_float32_and_tracks_float64():
    config = tiny_config()
    p64 = transformer.init_params(config, np.random.default_rng(3), np.float64)
    p32 = transformer.init_params(config, np.random.default_rng(3), np.float32)
    src, tgt, src_pad, tgt_pad = data(np.random.default_rng(4), config)
    G = np.random.default_rng(5).standard_normal((B, T, config.tgt_vocab_size))
    l64, c64 = transformer.forward(p64, config, src, tgt, src_pad, tgt_pad)
    l32, c32 = transformer.forward(p32, config, src, tgt, src_pad, tgt_pad)
    g64 = flatten_layer(transformer.backward(G, c64))
    g32 = flatten_layer(transformer.backward(G.astype(np.float32), c32))
    assert l32.dtype == np.float32 and all(g.dtype == np.float32 for g in g32.values())
    # Same weights up to float32 rounding; 4 layers of LN, softmax and short matmuls amplify the 6e-8 unit
    # round-off by at most a few hundred, so 1e-4 (relative to each array's largest entry) holds with margin.
    assert rel_error(l32, l64) < 1e-4
    for name in g64:
        if is_key_bias(name):
            continue                                                 # round-off around a true 0 on both sides
        assert rel_error(g32[name], g64[name]) < 1e-4, name


# ---------------------------------------------------------------------------------------------------------------
# Bad configs and inputs.

@pytest.mark.parametrize("overrides, match", [
    (dict(n_head=3), "not divisible by n_head"),
    (dict(n_head=True), "n_head: expected a positive integer"),
    (dict(n_layer=0), "n_layer: expected a positive integer"),
    (dict(d_ff=-4), "d_ff: expected a positive integer"),
    (dict(src_vocab_size=0), "src_vocab_size"),
    (dict(d_model=8.0), "d_model: expected a positive integer"),
    (dict(norm="sandwich"), "norm: expected one of"),
    (dict(activation="tanh"), "activation: expected one of"),
    (dict(ln_eps=0.0), "ln_eps"),
])
def test_bad_configs_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**overrides)


def test_bad_inputs_raise(rng):
    config = tiny_config()
    params = transformer.init_params(config, rng)
    src, tgt, src_pad, tgt_pad = data(rng, config)
    cases = [
        (TypeError, "src_ids: expected an integer",
         lambda: transformer.forward(params, config, src.astype(float), tgt)),
        (ValueError, r"tgt_ids: expected token ids in \[0, 13\)", lambda: transformer.forward(params, config, src, tgt + 13)),
        (ValueError, r"src_ids: expected shape \(B, T\)", lambda: transformer.forward(params, config, src[0], tgt)),
        (ValueError, "same batch size", lambda: transformer.forward(params, config, src[:1], tgt)),
        (TypeError, "src_pad_mask: expected a boolean", lambda: transformer.forward(params, config, src, tgt,
                                                                                      src_pad.astype(int))),
        (ValueError, r"tgt_pad_mask: expected shape \(2, 4\)", lambda: transformer.forward(params, config, src, tgt,
                                                                                           src_pad, tgt_pad[:, :3])),
        (TypeError, "config: expected a TransformerConfig", lambda: transformer.forward(params, dict(TINY), src, tgt)),
        (ValueError, r"params\['decoder'\]: expected 2 layers", lambda: transformer.forward(
            {**params, "decoder": params["decoder"][:1]}, config, src, tgt)),
        (ValueError, r"params\['wte_src'\]: expected shape \(11, 8\)", lambda: transformer.forward(
            {**params, "wte_src": params["wte_src"][:5]}, config, src, tgt)),
        (TypeError, "dtype: expected float32 or float64", lambda: transformer.init_params(config, rng, np.int32)),
        (TypeError, "numpy.random.Generator", lambda: transformer.init_params(config, 0)),
    ]
    for err, match, call in cases:
        with pytest.raises(err, match=match):
            call()


def test_init_schemes_are_the_documented_ones(rng):
    # init_params draws in a fixed order from init.py's schemes; replaying that order reproduces it exactly.
    config = tiny_config(n_layer=1)
    params = transformer.init_params(config, np.random.default_rng(9))
    replay = np.random.default_rng(9)
    C = config.d_model
    np.testing.assert_array_equal(params["wte_src"], init.normal((11, C), replay, std=C**-0.5))
    np.testing.assert_array_equal(params["wte_tgt"], init.normal((13, C), replay, std=C**-0.5))
    for name in ("Wq", "Wk", "Wv", "Wo"):
        np.testing.assert_array_equal(params["encoder"][0]["attn"][name], init.xavier_uniform((C, C), replay))


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_tied_logits_start_with_unit_variance(norm):
    # As documented in reference/models/transformer.py: h is LayerNorm-ed (|h|^2 ~ C) and E has Var 1/C, so h . E_v has
    # variance ~1. Measured 1.02 (post) and 1.05 (pre) on this config; the band [0.8, 1.25] allows for the finite
    # sample (4 x 32 positions, 1000 words), while a missing or doubled scale (std 1 or 1/C for E) is 100x off.
    config = TransformerConfig(src_vocab_size=1000, tgt_vocab_size=1000, d_model=128, n_head=4, n_layer=2,
                               d_ff=512, norm=norm)
    params = transformer.init_params(config, np.random.default_rng(0))
    ids = np.random.default_rng(1).integers(0, 1000, size=(2, 4, 32))
    logits, _ = transformer.forward(params, config, ids[0], ids[1])
    assert 0.8 < logits.var() < 1.25
