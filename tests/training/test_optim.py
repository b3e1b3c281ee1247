"""Optimizers, schedules and clipping (reference/training/optim.py) against torch.optim, step by step."""
import math

import numpy as np
import pytest
import torch

from reference.training import optim

SHAPES = {"wte": (7, 4), "blocks": [{"attn": {"Wq": (4, 4), "bq": (4,)}, "ln1": {"gamma": (4,), "beta": (4,)}}] * 2,
          "ln_f": {"gamma": (4,), "beta": (4,)}}


def make_tree(shapes, rng, dtype):
    if isinstance(shapes, dict):
        return {k: make_tree(v, rng, dtype) for k, v in shapes.items()}
    if isinstance(shapes, list):
        return [make_tree(v, rng, dtype) for v in shapes]
    return rng.standard_normal(shapes).astype(dtype)


def leaves(tree, path=""):
    """(path, leaf) in the optimizer's walk order: dict insertion order, list order."""
    if isinstance(tree, dict):
        return [x for k, v in tree.items() for x in leaves(v, f"{path}/{k}" if path else k)]
    if isinstance(tree, list):
        return [x for i, v in enumerate(tree) for x in leaves(v, f"{path}/{i}" if path else str(i))]
    return [(path, tree)]


# name, our keyword arguments, torch optimizer class and its keyword arguments (apart from lr and the decay)
CASES = [
    ("sgd", {}, torch.optim.SGD, {}),
    ("sgd", {"weight_decay": 0.1}, torch.optim.SGD, {}),
    ("momentum", {"mu": 0.9}, torch.optim.SGD, {"momentum": 0.9}),
    ("momentum", {"mu": 0.8, "nesterov": True, "weight_decay": 0.05}, torch.optim.SGD,
     {"momentum": 0.8, "nesterov": True}),
    ("adam", {"betas": (0.9, 0.98), "eps": 1e-9}, torch.optim.Adam, {"betas": (0.9, 0.98), "eps": 1e-9}),
    ("adam", {"weight_decay": 0.1}, torch.optim.Adam, {}),
    ("adamw", {"weight_decay": 0.1}, torch.optim.AdamW, {}),
    ("adamw", {"weight_decay": 0.1, "decay_mask": optim.decay_matrices}, torch.optim.AdamW, {}),
]

# Tolerances, relative to parameters of size ~1 (absolute and relative bounds alike):
# - float64: both sides evaluate the same formulas; they differ only in the order of a few roundings per step
#   (torch's lerp for m, our fused in-place ops), ~1e-16 each. After 6 steps that is ~1e-15; 1e-12 leaves room
#   and would still catch any wrong term (they show at the size of lr * grad, ~1e-2).
# - float32: the same reordering at float32 precision, ~6e-8 per operation; Adam divides by sqrt(v), which can
#   magnify a rounding of v by ~2x. Measured max error 2.4e-7 after 6 steps (float64: 4.4e-16); 2e-6 bounds it.
TOL = {np.float64: 1e-12, np.float32: 2e-6}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, kwargs, torch_cls, torch_kwargs", CASES)
def test_optimizer_matches_torch_step_by_step(name, kwargs, torch_cls, torch_kwargs, dtype, rng):
    init, step = optim.OPTIMIZERS[name]
    params = make_tree(SHAPES, rng, dtype)
    wd = kwargs.get("weight_decay", 0.0)
    mask = kwargs.get("decay_mask")
    flat = leaves(params)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for _, p in flat]
    decays = [mask is None or mask(path, p) for path, p in flat]
    groups = [{"params": [t for t, d in zip(tparams, decays) if d], "weight_decay": wd},
              {"params": [t for t, d in zip(tparams, decays) if not d], "weight_decay": 0.0}]
    opt = torch_cls([g for g in groups if g["params"]], lr=0.0, **torch_kwargs)
    state = init(params)
    tol = TOL[dtype]
    for s in range(1, 7):
        lr = optim.warmup_cosine(s, max_lr=0.05, warmup=2, total=6, min_lr=0.005)
        grads = make_tree(SHAPES, rng, dtype)
        grads_before = [g.copy() for _, g in leaves(grads)]
        for t, (_, g) in zip(tparams, leaves(grads)):
            t.grad = torch.from_numpy(g.copy())
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        params, state = step(params, grads, state, lr, **kwargs)
        assert state["step"] == s
        for (path, p), t, g0, (_, g) in zip(leaves(params), tparams, grads_before, leaves(grads)):
            assert p.dtype == dtype
            np.testing.assert_allclose(p, t.detach().numpy(), rtol=tol, atol=tol, err_msg=f"{path} at step {s}")
            np.testing.assert_array_equal(g, g0)                  # grads are not modified
    if name in ("adam", "adamw"):                                 # the moments agree too
        for (_, m), (_, v), t in zip(leaves(state["m"]), leaves(state["v"]), tparams):
            np.testing.assert_allclose(m, opt.state[t]["exp_avg"].numpy(), rtol=tol, atol=tol)
            np.testing.assert_allclose(v, opt.state[t]["exp_avg_sq"].numpy(), rtol=tol, atol=tol)
    if name == "momentum":
        for (_, v), t in zip(leaves(state["velocity"]), tparams):
            np.testing.assert_allclose(v, opt.state[t]["momentum_buffer"].numpy(), rtol=tol, atol=tol)


def test_adamw_decay_is_decoupled_from_the_moments(rng):
    # With zero gradients, AdamW only shrinks p by (1 - lr * wd); Adam's L2 decay goes through m / sqrt(v)
    # and moves p by about lr (a normalised step), whatever the size of wd * p.
    p0 = rng.standard_normal((3, 3))
    zero = {"W": np.zeros((3, 3))}
    pw, _ = optim.adamw_step({"W": p0.copy()}, zero, optim.adamw_init({"W": p0}), lr=0.1, weight_decay=0.5)
    np.testing.assert_allclose(pw["W"], p0 * (1 - 0.1 * 0.5), rtol=1e-15)
    pa, _ = optim.adam_step({"W": p0.copy()}, zero, optim.adam_init({"W": p0}), lr=0.1, weight_decay=0.5)
    # First Adam step: m / sqrt(v) (bias-corrected) = g / (|g| + eps) with g = 0.5 p, a step of lr * sign(p)
    # up to lr * eps / |g|, below 1e-6 for these |p| > 1e-2.
    assert np.abs(p0).min() > 1e-2
    np.testing.assert_allclose(pa["W"], p0 - 0.1 * np.sign(p0), rtol=0, atol=1e-6)


def test_float32_stays_float32_even_with_numpy_float64_scalars(rng):
    params = make_tree(SHAPES, rng, np.float32)
    grads = make_tree(SHAPES, rng, np.float32)
    for name, (init, step) in optim.OPTIMIZERS.items():
        state = init(params)
        params, state = step(params, grads, state, np.float64(1e-3))
        trees = [params] + [state[k] for k in ("velocity", "m", "v") if k in state]
        assert all(x.dtype == np.float32 for tree in trees for _, x in leaves(tree)), name


def test_decay_matrices_mask():
    w, b = np.zeros((4, 4)), np.zeros(4)
    assert optim.decay_matrices("blocks/0/attn/Wq", w) and optim.decay_matrices("blocks/3/mlp/W2", w)
    assert not optim.decay_matrices("blocks/0/attn/bq", b)
    assert not optim.decay_matrices("ln_f/gamma", b)
    assert not optim.decay_matrices("wte", w) and not optim.decay_matrices("wpe", w)


def test_optimizer_errors(rng):
    params = {"a": rng.standard_normal(3), "b": [rng.standard_normal(2)]}
    state = optim.adamw_init(params)
    with pytest.raises(ValueError, match=r"grads at '': expected a dict with keys \['a', 'b'\], got \['a'\]"):
        optim.adamw_step(params, {"a": np.zeros(3)}, state, 1e-3)
    with pytest.raises(ValueError, match="grads at 'b': expected a list of length 1, got length 2"):
        optim.adamw_step(params, {"a": np.zeros(3), "b": [np.zeros(2)] * 2}, state, 1e-3)
    with pytest.raises(ValueError, match=r"grads at 'b/0': expected float64 \(2,\) like the parameter, got float32"):
        optim.adamw_step(params, {"a": np.zeros(3), "b": [np.zeros(2, np.float32)]}, state, 1e-3)
    with pytest.raises(TypeError, match="grads at 'a': expected a numpy.ndarray"):
        optim.sgd_step(params, {"a": [0.0] * 3, "b": [np.zeros(2)]}, optim.sgd_init(params), 1e-3)
    with pytest.raises(ValueError, match="lr: expected a finite number"):
        optim.sgd_step(params, params, optim.sgd_init(params), -1.0)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        optim.adam_step(params, params, optim.adam_init(params), 1e-3, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="params at 'a'"):
        optim.adam_init({"a": np.zeros(3, dtype=np.int64)})


# --- schedules ------------------------------------------------------------------------------------------------


def test_noam_known_values_and_shape():
    # The paper's setting, d_model = 512 and warmup = 4000: the peak is (512 * 4000) ** -0.5 at step 4000.
    assert math.isclose(optim.noam(4000, 512, 4000), 6.987712429686844e-04, rel_tol=1e-15)
    assert math.isclose(optim.noam(1, 512, 4000), 512 ** -0.5 * 4000 ** -1.5, rel_tol=1e-15)
    lrs = [optim.noam(s, 512, 4000) for s in range(1, 20001)]
    assert int(np.argmax(lrs)) + 1 == 4000
    assert math.isclose(lrs[1] / lrs[0], 2.0, rel_tol=1e-15)                  # linear warm-up
    assert math.isclose(lrs[16000 - 1] / lrs[4000 - 1], 0.5, rel_tol=1e-15)   # then ~ 1 / sqrt(step)


def test_noam_through_torch_lambdalr():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: optim.noam(e + 1, 64, 10))   # torch counts from 0
    for s in range(1, 31):
        assert opt.param_groups[0]["lr"] == optim.noam(s, 64, 10)
        opt.step()
        sched.step()


def test_warmup_cosine_matches_torch_linear_then_cosine():
    max_lr, min_lr, w, total = 3e-3, 3e-4, 10, 50
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=max_lr)
    lin = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / w, end_factor=1.0, total_iters=w - 1)
    for s in range(1, w + 1):
        assert math.isclose(optim.warmup_cosine(s, max_lr, w, total, min_lr), opt.param_groups[0]["lr"],
                            rel_tol=1e-12)    # torch reaches the same value by a product of ratios
        opt.step()
        lin.step()
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=max_lr)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - w, eta_min=min_lr)
    for s in range(w, total + 1):
        assert math.isclose(optim.warmup_cosine(s, max_lr, w, total, min_lr), opt.param_groups[0]["lr"],
                            rel_tol=1e-12)    # torch's recursive form, exact up to rounding
        opt.step()
        cos.step()


def test_warmup_cosine_formula_points_and_errors():
    f = optim.warmup_cosine
    assert f(1, 1.0, 4, 12) == 0.25 and f(4, 1.0, 4, 12) == 1.0
    assert math.isclose(f(8, 1.0, 4, 12, 0.2), 0.6, rel_tol=1e-15)            # halfway down the cosine
    assert f(12, 1.0, 4, 12, 0.2) == f(1000, 1.0, 4, 12, 0.2) == 0.2
    assert f(1, 1.0, 0, 12) == pytest.approx(0.5 * (1 + math.cos(math.pi / 12)), rel=1e-15)
    with pytest.raises(ValueError, match="step: expected an integer >= 1"):
        f(0, 1.0, 4, 12)
    with pytest.raises(ValueError, match="warmup <= total"):
        f(1, 1.0, 13, 12)
    with pytest.raises(ValueError, match="min_lr <= max_lr"):
        f(1, 1.0, 4, 12, 2.0)
    with pytest.raises(ValueError, match="step: expected an integer >= 1"):
        optim.noam(0, 512, 4000)


# --- clipping -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-14), (np.float32, 1e-6)])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])     # clipped, and left alone
def test_clip_grad_norm_matches_torch(max_norm, dtype, tol, rng):
    # float64: the same sum of squares, summed in another order, ~1e-16 relative; float32: the per-leaf sums
    # of squares are float32 dot products (~1e-7 relative each).
    grads = make_tree(SHAPES, rng, dtype)
    before = [g.copy() for _, g in leaves(grads)]
    tgrads = [torch.tensor(g.copy(), requires_grad=True) for _, g in leaves(grads)]
    for t in tgrads:
        t.grad = t.detach().clone()
    tnorm = torch.nn.utils.clip_grad_norm_(tgrads, max_norm)
    grads, norm = optim.clip_grad_norm(grads, max_norm)
    assert isinstance(norm, float) and math.isclose(norm, float(tnorm), rel_tol=tol)
    for (_, g), t in zip(leaves(grads), tgrads):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=tol, atol=tol)
    if norm < max_norm:                                   # left exactly as they were
        for (_, g), g0 in zip(leaves(grads), before):
            np.testing.assert_array_equal(g, g0)
    else:                                                 # scaled to the norm max_norm (up to torch's 1e-6)
        new_norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for _, g in leaves(grads)))
        assert math.isclose(new_norm, max_norm, rel_tol=1e-5)


def test_clip_grad_norm_errors():
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_grad_norm({"a": np.ones(2)}, 0.0)
    with pytest.raises(TypeError, match="grads at 'b/0': expected a numpy.ndarray"):
        optim.clip_grad_norm({"a": np.ones(2), "b": [1.0]}, 1.0)


# adamw_step_fast against adamw_step: the same update per element, with the bias corrections applied in another
# order ((lr / bc1) m against lr (m / bc1)), so they agree to a few roundings per step: float64 1e-13 after 5 steps,
# float32 2e-6 (as against torch above, sqrt(v) can double a rounding of v). Parameters larger than one chunk (split
# into chunks, some over threads), a non-contiguous parameter (the fallback) and the decay mask are all exercised.
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("workers", [1, 3])
def test_adamw_fast_equals_adamw(dtype, workers, rng, monkeypatch):
    from reference import _threads
    monkeypatch.setattr(optim, "_MIN_PARALLEL", 0)
    shapes = {"wte": (300, 70), "blocks": [{"attn": {"Wq": (70, 70), "bq": (70,)}}] * 2, "ln_f": {"gamma": (70,)}}
    params = make_tree(shapes, rng, dtype)
    params["blocks"][1]["attn"]["Wq"] = np.asfortranarray(params["blocks"][1]["attn"]["Wq"])   # not C-contiguous
    fast_params = make_tree(shapes, rng, dtype)
    for (_, a), (_, b) in zip(leaves(fast_params), leaves(params)):
        a[...] = b
    fast_params["blocks"][1]["attn"]["Wq"] = np.asfortranarray(fast_params["blocks"][1]["attn"]["Wq"])
    state, state_fast = optim.adamw_init(params), optim.adamw_init(fast_params)
    kw = dict(lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, decay_mask=optim.decay_matrices)
    for _ in range(5):
        grads = make_tree(shapes, rng, dtype)
        optim.adamw_step(params, grads, state, **kw)
        with _threads.using(workers):
            optim.adamw_step_fast(fast_params, grads, state_fast, **kw)
    assert state_fast["step"] == state["step"] == 5
    tol = 1e-13 if dtype == np.float64 else 2e-6
    for (path, a), (_, b) in zip(leaves(fast_params), leaves(params)):
        assert a.dtype == dtype and np.abs(a - b).max() <= tol, path
    for tree_fast, tree in ((state_fast["m"], state["m"]), (state_fast["v"], state["v"])):
        for (path, a), (_, b) in zip(leaves(tree_fast), leaves(tree)):
            assert np.abs(a - b).max() <= tol * max(1.0, np.abs(b).max()), path
