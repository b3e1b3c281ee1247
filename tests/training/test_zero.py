"""ZeRO stage 1 (reference/training/zero.py): shards, the sharded AdamW state, and a two-rank run under torchrun whose
training equals one process, with half the optimizer bytes per rank, and whose checkpoint resumes without ZeRO."""
import json
import math

import numpy as np
import pytest

from reference import train, tree
from reference.models import gpt
from reference.training import data_parallel, optim, zero
from test_train import corpus_head, small_corpus  # noqa: F401  (fixtures shared)
from torchrun_tiny import launch

CONFIG = gpt.GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, d_model=16)


def test_shards_cover_the_padded_vector_once():
    # N = 10 on W = 4: shards of ceil(10 / 4) = 3, the last one 1 real element and 2 of padding
    assert [zero.shard_range(10, r, 4) for r in range(4)] == [(0, 3), (3, 6), (6, 9), (9, 12)]
    layout = data_parallel.FlatLayout(("a", "b"), ((2, 2), (6,)), (0, 4), 10)
    assert zero._pieces(layout, 3, 6) == {"a": (0, 1), "b": (1, 3)}       # a[3] and b[0:2]
    assert zero._pieces(layout, 9, 12) == {"b": (0, 1)}                    # b[5], then padding


def test_one_rank_update_equals_adamw(rng):
    # one process: the shard is everything, so ZeRO's step is optim.adamw_step after the same clipping
    params = gpt.init_params(CONFIG, np.random.default_rng(0))
    twin = tree.unflatten({k: v.copy() for k, v in tree.flatten(params).items()})
    x, y = (rng.integers(0, CONFIG.vocab_size, (4, CONFIG.block_size)) for _ in range(2))
    _, flat = data_parallel.loss_and_grads(params, CONFIG, x, y)
    hyper = dict(max_norm=0.5, betas=(0.9, 0.95), weight_decay=0.1)          # 0.5: the clipping is active
    state = zero.init(params)
    full = optim.adamw_init(twin)
    for _ in range(3):
        n_zero = zero.update(params, flat.copy(), state, 1e-2, **hyper)
        n_full = data_parallel.update(twin, flat.copy(), full, 1e-2, **hyper)
        # the squares are summed per parameter in one, over the whole vector in the other, by np.vdot, which
        # accumulates float32 in float32: a few ulps apart (measured 8.5e-9)
        assert n_zero == pytest.approx(n_full, rel=1e-6) and n_full > 0.5
    # AdamW works elementwise, on the same numbers but for clip coefficients a few ulps apart
    for a, b in zip(tree.flatten(params).values(), tree.flatten(twin).values()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    back = zero.full_state(params, state)
    assert back["step"] == full["step"] == 3
    for a, b in zip(tree.flatten(back["m"]).values(), tree.flatten(full["m"]).values()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)
    # a checkpoint's full state comes back as the same shard
    again = zero.init(params, back)
    assert np.array_equal(again["m"], state["m"]) and np.array_equal(again["v"], state["v"])
    assert zero.optimizer_bytes(state) == zero.optimizer_bytes(full) == 8 * gpt.n_params(params)


def _log(path):
    return json.loads((path / "log.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_zero_on_two_ranks_trains_as_one_process_and_its_checkpoint_resumes_without_it(tmp_path, small_corpus):
    flags = ["--config", "tiny", "--steps", "12", "--eval-interval", "4", "--no-progress", "--batch-size", "4",
             "--grad-accum", "2"]
    out = lambda name: ["--out", str(tmp_path / name), "--figure", str(tmp_path / f"{name}.png")]   # noqa: E731
    done = launch(2, [*flags, *out("zero"), "--zero", "1", "--stop-at", "6"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    train.main([*flags, *out("one")])
    train.main([*flags, *out("resumed"), "--resume", str(tmp_path / "zero" / "checkpoint.npz"), "--stop-at", "12"])
    one, two, resumed = _log(tmp_path / "one"), _log(tmp_path / "zero"), _log(tmp_path / "resumed")
    assert two["world_size"] == 2 and two["batch_per_rank"] == 2 and two["zero"] == 1
    # each rank keeps the moments of half the parameters (N is even here: no padding)
    assert two["optimizer_bytes_per_rank"] * 2 == one["optimizer_bytes_per_rank"] == 8 * one["n_params"]
    # steps 1-6 on two ranks with ZeRO, 7-12 in one process from its checkpoint: the training of one process, to
    # float32 round-off carried along by AdamW (measured 1e-7); a wrong shard or gather would be off by far more
    losses = np.array([row[1] for row in one["train"]])
    np.testing.assert_allclose([row[1] for row in resumed["train"]], losses, rtol=1e-5)
    np.testing.assert_allclose([row[3] for row in resumed["train"]], [row[3] for row in one["train"]], rtol=1e-5)
    assert [row[0] for row in resumed["train"]] == list(range(1, 13)) and math.isfinite(losses[-1])
