"""reference/compression/qat.py: the QAT loss is the fake-quantized model's loss, its gradients are the straight-through ones
(exact for the unquantized leaves, checked by finite differences; the weight gradient at W_hat, zeroed outside the
clipping range), the deployed model equals the last fake-quantized one, and the fine-tune loop. Budget: ~2 s.
"""
import numpy as np
import pytest

from reference import tree
from reference.compression import qat, quantize
from reference.gradcheck import RTOL_FD, numerical_grad, rel_error
from reference.models import gpt

CFG = gpt.GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=8)


def tiny_gpt(rng, dtype=np.float64):
    """A random tiny GPT with every parameter perturbed away from its init (biases and gains included)."""
    params = gpt.init_params(CFG, rng, dtype=dtype)
    return tree.unflatten({n: (a + 0.1 * rng.standard_normal(a.shape)).astype(dtype)
                          for n, a in tree.flatten(params).items()})


def batch(rng, B=2, T=8):
    return rng.integers(0, CFG.vocab_size, size=(B, T)), rng.integers(0, CFG.vocab_size, size=(B, T))


@pytest.mark.parametrize("bits, group_size", [(4, 4), (8, None)])
def test_loss_and_weight_grads_are_those_of_the_fake_quantized_model(bits, group_size, rng):
    params = tiny_gpt(rng)
    x, y = batch(rng)
    loss, grads = qat.loss_and_grads(params, CFG, x, y, bits=bits, group_size=group_size)
    deployed, report = quantize.quantize_params(params, bits=bits, group_size=group_size)
    ref_loss, ref_grads = gpt.loss_and_grads(deployed, CFG, x, y)
    # Same quantizer, same float ops in the same order: bit-identical, so exact equality.
    assert float(loss) == float(ref_loss)
    flat, ref = tree.flatten(grads), tree.flatten(ref_grads)
    assert set(report["tensors"]) == {n for n, W in tree.flatten(params).items() if quantize.default_predicate(n, W)}
    for name in flat:
        # clip=None: every weight is inside its range, so the STE passes dL/dW_hat through unchanged.
        np.testing.assert_array_equal(flat[name], ref[name])


def test_unquantized_leaves_match_finite_differences(rng):
    # The scales depend on the matrices alone, so the loss is smooth in the embeddings, biases and LayerNorm
    # parameters, and their QAT gradient is the exact one. float64 central differences: see reference/gradcheck.py.
    # (bv, not bq: the query bias's gradient is ~1e-4, where the round-off eps * |L| / h ~ 5e-10 is already 5e-6
    # of it; the leaves below have gradients of order 1e-2 and more.)
    params = tiny_gpt(rng)
    x, y = batch(rng)
    _, grads = qat.loss_and_grads(params, CFG, x, y, bits=4, group_size=4)
    flat, gflat = tree.flatten(params), tree.flatten(grads)
    for name in ("wte", "wpe", "blocks.0.attn.bv", "blocks.1.ffn.b1", "blocks.1.ln2.gamma", "ln_f.beta"):
        num = numerical_grad(lambda: float(qat.loss_and_grads(params, CFG, x, y, bits=4, group_size=4)[0]),
                             flat[name])
        assert rel_error(gflat[name], num) < RTOL_FD, name


def test_clipped_weights_get_no_gradient(rng):
    params = tiny_gpt(rng)
    x, y = batch(rng)
    W = tree.flatten(params)["blocks.0.ffn.W1"]
    _, grads = qat.loss_and_grads(params, CFG, x, y, bits=4, clip=90.0)
    _, ref_grads = gpt.loss_and_grads(qat.fake_quant_params(params, bits=4, clip=90.0)[0], CFG, x, y)
    g, ref = tree.flatten(grads)["blocks.0.ffn.W1"], tree.flatten(ref_grads)["blocks.0.ffn.W1"]
    inside = np.abs(W) <= np.percentile(np.abs(W), 90.0)
    assert 0 < (~inside).sum() < W.size
    np.testing.assert_array_equal(g[~inside], 0.0)
    np.testing.assert_array_equal(g[inside], ref[inside])


def test_finetune_updates_a_copy_and_qat_lowers_the_quantized_loss(rng):
    params = tiny_gpt(rng, np.float32)
    before = {n: a.copy() for n, a in tree.flatten(params).items()}
    text = np.tile(np.arange(CFG.vocab_size), 60)                              # a periodic "language"
    tuned, history = qat.finetune(params, CFG, text, steps=30, bits=4, group_size=4, lr=1e-2)
    for n, a in tree.flatten(params).items():
        np.testing.assert_array_equal(a, before[n])                            # the input is untouched
    assert len(history) == 30 and history[-1] < history[0] - 0.5              # a periodic text is easy to learn
    float_tuned, float_history = qat.finetune(params, CFG, text, steps=30, quantized=False, lr=1e-2)
    assert float_history[0] != history[0]                                      # float vs fake-quantized start
    assert tree.flatten(float_tuned)["wte"].dtype == np.float32


def test_bad_inputs(rng):
    params = tiny_gpt(rng)
    text = np.arange(50) % CFG.vocab_size
    with pytest.raises(ValueError, match="steps: expected a positive integer"):
        qat.finetune(params, CFG, text, steps=0)
    with pytest.raises(ValueError, match="group_size: expected a positive divisor"):
        qat.loss_and_grads(params, CFG, *batch(rng), bits=4, group_size=3)
    _, caches = qat.fake_quant_params(params, bits=8)
    grads = tree.flatten(gpt.loss_and_grads(params, CFG, *batch(rng))[1])
    del grads["blocks.0.attn.Wq"]
    with pytest.raises(ValueError, match=r"missing \['blocks.0.attn.Wq'\]"):
        qat.fake_quant_params_backward(tree.unflatten(grads), caches)
