"""reference/studies/regularisation.py: with LayerNorm and without dropout it is gpt.forward/backward; its gradients
without LayerNorm and with dropout pass finite differences; the training loop runs."""
import numpy as np
import pytest

from reference import tree
from reference.gradcheck import numerical_grad, rel_error
from reference.models import gpt
from reference.studies import regularisation

CFG = gpt.GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, d_model=8)


def test_with_layernorm_and_no_dropout_it_is_the_book_gpt(rng):
    params = regularisation.init_params(CFG, rng)
    ids = rng.integers(0, 11, size=(2, 6))
    logits, cache = regularisation.forward(params, CFG, ids)
    ref_logits, ref_cache = gpt.forward(params, CFG, ids)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-12)       # float64, the same ops
    dlogits = rng.standard_normal(logits.shape)
    ours, ref = tree.flatten(regularisation.backward(dlogits, cache)), tree.flatten(gpt.backward(dlogits, ref_cache))
    assert set(ours) == set(ref)
    # gpt fuses Q, K, V into one product: sums in another order, ~1e-15 relative; the key bias's gradient is 0 up to
    # round-off (~1e-17) on both sides, hence the absolute floor
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k], rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("use_layernorm, p_drop", [(False, 0.0), (False, 0.3), (True, 0.3)])
def test_gradients_match_finite_differences(use_layernorm, p_drop, rng):
    params = regularisation.init_params(CFG, rng, use_layernorm=use_layernorm)
    for a in tree.flatten(params).values():         # weights of order 1: attention far from uniform, no tiny gradient
        a += 0.5 * rng.standard_normal(a.shape)
    ids = rng.integers(0, 11, size=(2, 6))
    g = rng.standard_normal((2, 6, 11))

    def loss():                                     # the same dropout masks at every call: a fresh seeded generator
        return float((regularisation.forward(params, CFG, ids, p_drop, np.random.default_rng(5))[0] * g).sum())

    _, cache = regularisation.forward(params, CFG, ids, p_drop, np.random.default_rng(5))
    grads = tree.flatten(regularisation.backward(g, cache))
    flat = tree.flatten(params)
    assert ("ln_f.gamma" in flat) == use_layernorm
    checked = ["wte", "wpe", "blocks.0.attn.Wq", "blocks.1.ffn.W2", "blocks.1.attn.bv"]
    checked += ["blocks.0.ln1.gamma", "ln_f.beta"] if use_layernorm else []
    for key in checked:
        # float64 central differences: a right gradient agrees to ~1e-8 (reference/gradcheck.py)
        assert rel_error(grads[key], numerical_grad(loss, flat[key])) < 1e-6, key


def test_dropout_changes_the_output_and_layernorm_does_not(rng):
    params = regularisation.init_params(CFG, rng)
    ids = rng.integers(0, 11, size=(2, 6))
    assert regularisation.mode_difference(params, CFG, ids, 0.0) == 0.0
    assert regularisation.mode_difference(params, CFG, ids, 0.5) > 0.01


def test_train_variant_runs_every_variant():
    text = np.tile(np.arange(11), 40)                # a text the model can learn: 0 1 2 ... 10 0 1 ...
    for v in regularisation.VARIANTS:
        r = regularisation.train_variant(v, CFG, text[:300], text[300:], steps=12, batch_size=4, eval_windows=8,
                                         eval_every=6)
        assert [s for s, _, _ in r["curve"]] == [0, 6, 12]
        assert r["train"] < r["curve"][0][1] and np.isfinite(r["gap"])
        assert ("ln_f" in r["params"]) == (not v.startswith("none"))
    with pytest.raises(ValueError, match="variant: expected one of"):
        regularisation.train_variant("batchnorm", CFG, text, text, steps=1)
