"""reference/training/memory.py: the memory estimate that lets the training command refuse impossible sizes."""
import tracemalloc

import numpy as np
import pytest

from reference.models import gpt
from reference.training import memory


@pytest.mark.parametrize("B, T, C, L, H, V", [(4, 64, 64, 2, 4, 300), (2, 128, 32, 1, 2, 1024)])
def test_estimate_is_close_to_the_measured_peak(B, T, C, L, H, V):
    run = dict(batch_size=B, block_size=T, d_model=C, n_layer=L, n_head=H, positional="learned")
    config = gpt.GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, d_model=C)
    params = gpt.init_params(config, np.random.default_rng(0))
    ids = np.random.default_rng(1).integers(0, V, size=(B, T))
    tracemalloc.start()
    try:
        gpt.loss_and_grads(params, config, ids, ids)
        peak = tracemalloc.get_traced_memory()[1]          # gradients plus activations, the step's own memory
    finally:
        tracemalloc.stop()
    est = memory.estimate(run, V)
    assert est["params"] == 4 * gpt.n_params(params)
    # the coefficients were fitted to six other shapes within 15 %; a missed term (the T^2 attention, the logits)
    # would be off by a factor of 2 or more at these shapes
    assert 0.75 < (est["grads"] + est["activations"]) / peak < 1.25


def test_parts_and_messages():
    run = dict(batch_size=1, block_size=8, d_model=99999999, n_layer=1, n_head=1)
    est = memory.estimate(run, 320)
    assert est["total"] == sum(v for k, v in est.items() if k != "total")
    assert est["adam_m"] == est["adam_v"] == est["params"] > 12 * 99999999**2 * 4 * 0.99
    assert memory.gib(3 * 2**30) == "3 GiB" and memory.gib(2**80) == "1.13e+15 GiB"
    total, avail = memory.available()
    assert total is None or total > 0
