"""Checks of reference/studies/depth.py: deep stacks with and without residuals and LayerNorm, and their gradients by layer.

Finite differences (float64, random upstream gradient) through a two-block stack of every variant; the post-LN and
pre-LN blocks against reference/models/layers.py's encoder layer; dtypes and bad arguments; and the behaviour measured at
initialisation (chapter 9), asserted with margins read off the measurements quoted in each test.
Budget: under 20 s on one core (the finite differences take most of it).
"""
import numpy as np
import pytest

from reference.gradcheck import check_grads, numerical_grad
from reference.models import layers
from reference.ops import layernorm
from reference.studies import depth

B, T, C, H, D_FF = 2, 3, 4, 2, 8


def flatten(tree, prefix=""):
    """{"blocks": [{"attn": {"Wq": arr}}]} -> {"blocks.0.attn.Wq": arr}, the same array objects."""
    out = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for k, v in items:
        if isinstance(v, (dict, list)):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def randomised(params, rng):
    """Every bias, gain and shift (the 1-D arrays) away from its init value, so that a dropped term shows."""
    for a in flatten(params).values():
        if a.ndim == 1:
            a += 0.3 * rng.standard_normal(a.shape)
    return params


@pytest.mark.parametrize("variant", depth.VARIANTS)
def test_stack_matches_finite_differences(variant, rng):
    # GELU, not ReLU: a central difference that straddles ReLU's kink is off by O(1); GELU is smooth everywhere.
    params = randomised(depth.init_stack(variant, 2, C, rng, n_head=H, d_ff=D_FF), rng)
    x = rng.standard_normal((B, T, C))
    G = rng.standard_normal((B, T, C))                                   # random upstream gradient

    def f():
        return float(np.sum(depth.stack_forward(x, params, variant, H, activation="gelu")[0] * G))

    _, cache = depth.stack_forward(x, params, variant, H, activation="gelu")
    dx, grads, dxs = depth.stack_backward(G, cache)
    flat_p, flat_g = flatten(params), flatten(grads)
    assert set(flat_g) == set(flat_p)
    assert len(dxs) == 3 and dxs[0] is dx
    # The key bias's true gradient is exactly 0 (it adds one number to a whole row of scores, which softmax
    # ignores): the analytic side is round-off (~1e-15), finite differences ~eps |f| / h ~ 1e-9; checked absolutely.
    for name in [n for n in flat_p if n.endswith("bk")]:
        assert np.abs(flat_g[name]).max() < 1e-12, name
        assert np.abs(numerical_grad(f, flat_p.pop(name))).max() < 1e-8, name
        del flat_g[name]
    check_grads(f, {"x": x, **flat_p}, {"x": dx, **flat_g})


@pytest.mark.parametrize("variant", depth.VARIANTS)
def test_gradient_at_each_block_input(variant, rng):
    # dxs[l] is the gradient at x_l: perturbing x_1 (the first block's output) along a direction v changes the loss
    # by <dxs[1], v> to first order. The central difference is off by O(h^2) ~ 1e-12 (truncation) plus
    # eps |f| / h ~ 1e-9 (round-off, |f| ~ 5); a wrong gradient is off by O(|dxs[1]| |v|) ~ 20. The bound
    # 1e-8 |dxs[1]| |v| ~ 2e-7 sits between, and does not depend on <dxs[1], v> happening to be small.
    params = randomised(depth.init_stack(variant, 2, C, rng, n_head=H, d_ff=D_FF), rng)
    x = rng.standard_normal((B, T, C))
    G = rng.standard_normal((B, T, C))
    _, cache = depth.stack_forward(x, params, variant, H, activation="gelu")
    _, _, dxs = depth.stack_backward(G, cache)
    x1 = cache[0][1]
    top = {"blocks": params["blocks"][1:], **({"ln_f": params["ln_f"]} if variant == "pre_ln" else {})}
    v = rng.standard_normal(x1.shape)
    h = 1e-6
    fp = np.sum(depth.stack_forward(x1 + h * v, top, variant, H, activation="gelu")[0] * G)
    fm = np.sum(depth.stack_forward(x1 - h * v, top, variant, H, activation="gelu")[0] * G)
    err = abs((fp - fm) / (2 * h) - float(np.sum(dxs[1] * v)))
    assert err < 1e-8 * np.linalg.norm(dxs[1]) * np.linalg.norm(v)


@pytest.mark.parametrize("variant, norm", [("post_ln", "post"), ("pre_ln", "pre")])
def test_blocks_are_the_encoder_layer(variant, norm, rng):
    # The same operations in the same order: agreement to round-off (1e-13 relative in float64).
    params = randomised(depth.init_stack(variant, 1, C, rng, n_head=H, d_ff=D_FF), rng)
    p = params["blocks"][0]
    layer_params = {"attn": p["attn"], "ln1": p["ln1"], "ffn": p["ffn"], "ln2": p["ln2"]}
    x = rng.standard_normal((B, T, C))
    y, cache = depth.stack_forward(x, params, variant, H)
    y_layer, cache_layer = layers.encoder_layer_forward(x, layer_params, H, norm=norm, activation="relu")
    x1 = cache[0][1]                                                       # before the pre-LN stack's ln_f
    np.testing.assert_allclose(x1, y_layer, rtol=1e-13, atol=1e-13)
    if variant == "pre_ln":
        y_f, _ = layernorm.forward(y_layer, params["ln_f"]["gamma"], params["ln_f"]["beta"])
        np.testing.assert_allclose(y, y_f, rtol=1e-13, atol=1e-13)
    G = rng.standard_normal(y.shape)
    dx, grads, dxs = depth.stack_backward(G, cache)
    dx_layer, g_layer = layers.encoder_layer_backward(dxs[1], cache_layer)
    np.testing.assert_allclose(dx, dx_layer, rtol=1e-12, atol=1e-12)
    g = grads["blocks"][0]
    mine = flatten({"attn": g["attn"], "ln1": g["ln1"], "ffn": g["ffn"], "ln2": g["ln2"]})
    theirs = flatten(g_layer)
    assert set(mine) == set(theirs)
    for name in mine:
        np.testing.assert_allclose(mine[name], theirs[name], rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("variant", depth.VARIANTS)
def test_float32_stays_float32(variant, rng):
    params = depth.init_stack(variant, 2, C, rng, n_head=H, dtype=np.float32)
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    y, cache = depth.stack_forward(x, params, variant, H)
    dx, grads, dxs = depth.stack_backward(np.ones_like(y), cache)
    assert y.dtype == dx.dtype == np.float32
    assert all(a.dtype == np.float32 for a in flatten(grads).values())
    assert all(d.dtype == np.float32 for d in dxs)


def test_init_stack_structure(rng):
    for variant in depth.VARIANTS:
        params = depth.init_stack(variant, 3, 8, rng, n_head=2)
        assert len(params["blocks"]) == 3
        has_ln = variant in ("ln", "post_ln", "pre_ln")
        assert ("ln1" in params["blocks"][0]) == has_ln
        assert ("ln_f" in params) == (variant == "pre_ln")
        assert params["blocks"][0]["ffn"]["W1"].shape == (8, 32)
    gpt2 = depth.init_stack("pre_ln", 8, 64, rng, init_scheme="gpt2")["blocks"][0]
    # std 0.02 and 0.02 / sqrt(2 L) = 0.005: 4096 draws estimate a std to ~1.1 %, so 5 % bounds cannot fail by chance
    assert np.std(gpt2["attn"]["Wq"]) == pytest.approx(0.02, rel=0.05)
    assert np.std(gpt2["attn"]["Wo"]) == pytest.approx(0.005, rel=0.05)


def test_bad_arguments(rng):
    with pytest.raises(ValueError, match="variant"):
        depth.init_stack("sandwich", 2, 8, rng)
    with pytest.raises(ValueError, match="divisible"):
        depth.init_stack("plain", 2, 6, rng, n_head=4)
    with pytest.raises(ValueError, match="init_scheme"):
        depth.init_stack("plain", 2, 8, rng, init_scheme="he")
    with pytest.raises(ValueError, match="depth"):
        depth.init_stack("plain", 0, 8, rng)
    params = depth.init_stack("post_ln", 2, 8, rng, n_head=2)
    with pytest.raises(ValueError, match=r"\(B, T, C\)"):
        depth.stack_forward(np.zeros((3, 8)), params, "post_ln", 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        depth.stack_forward(np.zeros((1, 3, 8), dtype=np.int64), params, "post_ln", 2)
    with pytest.raises(ValueError, match="expected keys"):
        depth.stack_forward(np.zeros((1, 3, 8)), params, "plain", 2)       # post-LN params, plain wiring
    with pytest.raises(ValueError, match="ln_f"):
        depth.stack_forward(np.zeros((1, 3, 8)), params, "pre_ln", 2)
    y, cache = depth.stack_forward(np.zeros((1, 3, 8)), params, "post_ln", 2)
    with pytest.raises(ValueError, match="dy"):
        depth.stack_backward(np.zeros((1, 3, 7)), cache)


# ---------------------------------------------------------------------------------------------------------------
# What the measurement shows (chapter 9.2). Ratios are ||dL/dx_0|| / ||dL/dx_L||: the gradient at the input over the
# gradient arriving at the top, depth 24, width 32, Xavier init, B=2, T=8. Measured over seeds 0-2 while writing this:
#   plain 7.5e-8 .. 1.2e-7   ln 0.26 .. 8.2   residual 9e5 .. 6e7   post_ln 0.25 .. 3.5   pre_ln 5.2 .. 7.2
# and with GPT-2's init: plain ~1e-129, residual / post_ln / pre_ln within 4 % of 1.
# The bounds below sit an order of magnitude or more outside those ranges, and far from the other variants.

def ratio(variant, rng, depth_=24, init_scheme="xavier", **kw):
    r = depth.gradient_norms_by_layer(variant, depth_, 32, rng, batch=2, seq_len=8, init_scheme=init_scheme, **kw)
    return r["activation"][0] / r["activation"][-1], r


def test_plain_stack_gradients_vanish(rng):
    r24, res = ratio("plain", rng)
    r12, _ = ratio("plain", rng, depth_=12)
    assert r24 < 1e-5 and r12 < 1e-2
    assert r24 < r12 ** 1.5                      # geometric in depth: twice the depth, about the square
    assert res["forward_rms"][-1] < 1e-4         # the signal itself dies on the way up


def test_residual_stack_without_norm_explodes(rng):
    r24, res = ratio("residual", rng)
    assert r24 > 1e4
    assert res["forward_rms"][-1] > 100          # x + S(x) adds variance in every sublayer
    # measured 15x: the top blocks' weight gradients multiply a small upstream gradient by huge activations
    assert res["params"][0] > 3 * res["params"][-1]


@pytest.mark.parametrize("variant", ["ln", "post_ln", "pre_ln"])
def test_layernorm_keeps_the_gradient_within_an_order_of_magnitude_or_two(variant, rng):
    r24, res = ratio(variant, rng)
    assert 1e-2 < r24 < 1e2
    if variant != "pre_ln":
        assert res["forward_rms"][-1] == pytest.approx(1.0, rel=1e-3)   # LN output: unit rms (gamma 1, beta 0)


def test_pre_ln_gradient_grows_mildly_towards_the_input(rng):
    # The stream grows with depth, and each LN divides its gradient by the stream's std: lower blocks get more.
    r24, res = ratio("pre_ln", rng)
    assert 1.5 < r24 < 50
    assert res["params"][0] > res["params"][-1]


def test_gpt2_init_residual_stacks_are_near_identity(rng):
    # Weights of std 0.02 make every sublayer's output tiny: the skip carries the gradient through unchanged,
    # and without a skip nothing is left of it (below float32's smallest number after 24 blocks).
    for variant in ("residual", "post_ln", "pre_ln"):
        r24, _ = ratio(variant, rng, init_scheme="gpt2")
        assert r24 == pytest.approx(1.0, abs=0.2), variant
    r24, _ = ratio("plain", rng, init_scheme="gpt2")
    assert r24 < 1e-50
    r32, _ = ratio("plain", rng, init_scheme="gpt2", dtype=np.float32)
    assert r32 == 0.0                            # vanished for real: float32 underflows to exactly zero


def test_gradient_norms_shapes(rng):
    r = depth.gradient_norms_by_layer("post_ln", 5, 8, rng, n_head=2, batch=1, seq_len=4)
    assert r["activation"].shape == (6,) and r["params"].shape == (5,) and r["forward_rms"].shape == (6,)
    # the gradient arriving at the top is G ~ N(0, 1) of B*T*C = 32 entries: its norm is near sqrt(32)
    assert 2.0 < r["activation"][-1] < 9.0
