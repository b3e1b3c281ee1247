"""reference/studies/counting.py: parameter counts agree with the reference's own models; GPT-3's 175 B is reproduced."""
import numpy as np
import pytest

from reference.models import gpt
from reference.studies import counting


@pytest.mark.parametrize("n_layer,d_model,n_head,block,vocab", [(1, 8, 2, 4, 11), (3, 32, 4, 16, 50), (2, 48, 6, 7, 65)])
def test_param_count_matches_an_actual_model(n_layer, d_model, n_head, block, vocab):
    config = gpt.GPTConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=n_head, d_model=d_model)
    params = gpt.init_params(config, np.random.default_rng(0))
    shape = counting.DecoderShape(n_layer=n_layer, d_model=d_model, n_head=n_head, n_ctx=block, vocab_size=vocab)
    assert counting.param_count(shape)["total"] == gpt.n_params(params)  # exact: a count, not an estimate


def test_gpt3_is_about_175_billion():
    counts = counting.param_count(counting.GPT3_175B)
    assert counts["approx_12Ld2"] == 12 * 96 * 12288**2 == 173_946_175_488
    assert round(counts["total"] / 1e9, 1) == 174.6
    # The 12 L d^2 rule leaves out embeddings and biases: 0.4 % here, which is why "175 B" is a rounding of 174.6 B.
    assert 0 < 1 - counts["approx_12Ld2"] / counts["total"] < 0.005


def test_gpt2_small_matches_its_published_124m():
    assert round(counting.param_count(counting.GPT2_SMALL)["total"] / 1e6) == 124


def test_training_flops_and_memory():
    n = 1_000_000
    assert counting.training_flops(n, 10) == 6e7
    mixed = counting.training_memory(n, weights="bfloat16", master_weights="float32")
    assert mixed["total"] == 16 * n  # 2 (bf16 weights) + 2 (bf16 grads) + 4 + 4 (Adam) + 4 (master)
    assert counting.training_memory(n)["total"] == 16 * n  # fp32: 4 + 4 + 4 + 4
    with pytest.raises(ValueError, match="unknown precision"):
        counting.training_memory(n, weights="float8")
    with pytest.raises(ValueError, match="positive"):
        counting.training_flops(0, 10)


def test_flops_per_token_is_about_2n():
    shape = counting.GPT3_175B
    f = counting.flops_per_token(shape)
    n = counting.param_count(shape)["blocks"]
    assert 2 * n < f < 2.1 * n  # attention and the head add a few percent at context 2048


def test_bad_shape_raises():
    with pytest.raises(ValueError, match="not divisible"):
        counting.DecoderShape(n_layer=2, d_model=10, n_head=3, n_ctx=8, vocab_size=5)
    with pytest.raises(ValueError, match="positive integer"):
        counting.DecoderShape(n_layer=0, d_model=8, n_head=2, n_ctx=8, vocab_size=5)
