"""reference/train.py with today's decoder: the Llama and Mixtral configs train, checkpoint and resume bit for bit,
and the checkpoint reads back as the same architecture. Budget: a few seconds (the corpus cut as in test_train.py)."""
import numpy as np
import pytest

from reference import train, tree
from reference.models import gpt
from reference.training import checkpoint, precision, trained
from tests.training.test_train import corpus_head, small_corpus  # noqa: F401 -- pytest fixtures


def args(tmp_path, config, out, *extra):
    return ["--config", config, "--steps", "6", "--eval-interval", "3", "--no-progress",
            "--out", str(tmp_path / out), "--figure", str(tmp_path / f"{out}.png"), *extra]


@pytest.mark.parametrize("config", ["llama-tiny", "mixtral-tiny"])
def test_modern_configs_resume_bit_identically(tmp_path, small_corpus, config):  # noqa: F811
    train.main(args(tmp_path, config, "whole"))
    train.main(args(tmp_path, config, "split", "--stop-at", "2"))
    train.main(args(tmp_path, config, "resumed", "--resume", str(tmp_path / "split" / "checkpoint.npz")))
    a = checkpoint.load(tmp_path / "whole" / "checkpoint.npz")
    b = checkpoint.load(tmp_path / "resumed" / "checkpoint.npz")
    for part in ("params", "opt_state"):
        fa, fb = tree.flatten(a[part]), tree.flatten(b[part])
        assert fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa), part
    assert a["history"] == b["history"]
    model = trained.load(tmp_path / "whole" / "checkpoint.npz")
    c = model.config
    assert (c.norm, c.positional, c.ffn, c.n_kv_head, c.bias, c.tie_embeddings) == \
        ("rmsnorm", "rope", "swiglu", 2, False, False)
    assert "lm_head" in model.params and model.params["blocks"][0]["attn"]["Wk"].shape == (32, 16)
    assert c.n_expert == (4 if config == "mixtral-tiny" else 0)


def test_a_gpt2_run_carries_no_architecture_settings():
    """Checkpoints of the GPT-2 configs (and every one written before the modern decoder) read back as GPT-2."""
    run = dict(train.DEFAULTS, **train.CONFIGS["tiny"])
    assert not set(trained.ARCHITECTURE) & set(run)
    assert train.model_config(run, 50) == gpt.GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4,
                                                        d_model=32)


def test_mixed_precision_adds_the_load_balancing_loss(rng):
    """fp16 and bf16 train a mixture of experts on the same objective as fp32: cross-entropy + coef * L_aux."""
    run = dict(train.DEFAULTS, **train.CONFIGS["mixtral-tiny"])
    config = train.model_config(run, 40)
    params = gpt.init_params(config, rng)
    ids = rng.integers(0, 40, size=(4, 32))
    loss32, _ = precision.loss_and_grads(params, config, ids, ids, "fp32")
    for name, scale in (("fp16", 1024.0), ("bf16", 1.0)):
        loss, grads = precision.loss_and_grads(params, config, ids, ids, name, scale)
        # the 16-bit runs round the logits (bf16: 2^-8 relative, on logits of size ~0.1 at init); the aux term is
        # 0.02 x ~2 = 0.04, so leaving it out would miss by 10x this bound
        assert abs(loss - loss32) < 4e-3 and precision.all_finite(grads), name
