"""The GPT with its blocks passed in (reference/training/blockwise.py): with gpt's own blocks it computes gpt.forward's
and gpt.backward's numbers bit for bit, and it refuses what it does not implement."""
import dataclasses

import numpy as np
import pytest

from reference import tree
from reference.models import gpt
from reference.training import blockwise


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_stored_blocks_are_gpt_bit_for_bit(dtype, positional, rng):
    config = gpt.GPTConfig(vocab_size=65, block_size=16, n_layer=3, n_head=4, d_model=32, positional=positional)
    params = gpt.init_params(config, np.random.default_rng(0), dtype=dtype)
    x, y = (rng.integers(0, 65, (3, 12)) for _ in range(2))              # T = 12 < block_size: wpe rows unused
    loss0, g0 = gpt.loss_and_grads(params, config, x, y)
    loss1, g1 = blockwise.loss_and_grads(params, config, x, y)
    # the same ops on the same numbers in the same order: exactly equal, not merely close
    assert loss1 == loss0 and loss1.dtype == dtype
    f0, f1 = tree.flatten(g0), tree.flatten(g1)
    assert f0.keys() == f1.keys()
    assert all(np.array_equal(f0[k], f1[k]) and f0[k].dtype == f1[k].dtype for k in f0)


def test_refuses_what_it_does_not_implement():
    config = gpt.GPTConfig(vocab_size=65, block_size=8, n_layer=1, n_head=2, d_model=8)
    params = gpt.init_params(config, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"expected shape \(B, T\) with T <= block_size=8"):
        blockwise.forward(params, config, np.zeros((1, 9), np.int64))
    # a configurable GPT (another norm, say) is named, not run wrongly
    Modern = dataclasses.make_dataclass("Modern", [("norm", str, dataclasses.field(default="layernorm"))],
                                        bases=(gpt.GPTConfig,), frozen=True)
    blockwise.require_gpt2(Modern(65, 8, 1, 2, 8), "here")                  # the default: the GPT-2 block
    with pytest.raises(ValueError, match="here supports the GPT-2 block only .* norm='rmsnorm'"):
        blockwise.require_gpt2(Modern(65, 8, 1, 2, 8, norm="rmsnorm"), "here")
    with pytest.raises(TypeError, match="expected a gpt.GPTConfig"):
        blockwise.require_gpt2({"n_layer": 1}, "here")
