"""Data parallelism and gradient accumulation (reference/training/data_parallel.py): the flat gradient layout, the
row split, K micro-batches against one batch of K B rows, and real two-process runs under torchrun against one
process, resumed under the launcher, and restarted after a rank is killed.

The multi-process tests launch ``torchrun --standalone --nproc_per_node=2`` on the tiny config (a few seconds each,
mostly importing torch in every process; marked slow)."""
import json

import numpy as np
import pytest

from reference import train, tree
from reference.models import gpt
from reference.training import checkpoint, data_parallel, distributed
from test_train import corpus_head, small_corpus, tiny_args  # noqa: F401  (fixtures and flags shared)
from torchrun_tiny import launch

CONFIG = gpt.GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, d_model=16)


def test_flat_layout_round_trip():
    params = gpt.init_params(CONFIG, np.random.default_rng(0))
    layout = data_parallel.flat_layout(params)
    assert layout.size == gpt.n_params(params) and layout.names[0] == "wte"
    flat = data_parallel.to_flat(params, layout, np.full(layout.size + 3, np.nan, np.float32))
    assert np.isnan(flat[layout.size:]).all()                            # padding untouched
    view = data_parallel.tree_view(flat, layout)
    assert all(np.array_equal(a, b) for a, b in zip(tree.flatten(view).values(), tree.flatten(params).values()))
    view["blocks"][1]["ffn"]["b2"][0] = 7.0                                # a view: writes reach the flat vector
    assert 7.0 in flat


def test_rows_split_the_batch_and_refuse_unequal_shares():
    assert [data_parallel.rank_rows(8, r, 4) for r in range(4)] == [slice(0, 2), slice(2, 4), slice(4, 6),
                                                                       slice(6, 8)]
    with pytest.raises(ValueError, match="--batch-size 6 is not divisible by the world size 4"):
        data_parallel.rank_rows(6, 0, 4)


def test_an_indivisible_batch_is_refused_before_training(tmp_path, small_corpus, monkeypatch, capsys):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)              # as if launched on 3 ranks
    with pytest.raises(SystemExit) as exc:
        train.main(tiny_args(tmp_path, "bad"))                            # tiny: --batch-size 8
    assert exc.value.code == 2
    assert "--batch-size 8 is not divisible by the world size 3" in capsys.readouterr().err


def test_k_micro_batches_give_the_gradient_of_one_batch(rng):
    params = gpt.init_params(CONFIG, np.random.default_rng(0))
    x, y = (rng.integers(0, CONFIG.vocab_size, (8, CONFIG.block_size)) for _ in range(2))
    loss1, g1 = data_parallel.loss_and_grads(params, CONFIG, x, y, grad_accum=1)
    loss4, g4 = data_parallel.loss_and_grads(params, CONFIG, x, y, grad_accum=4)
    # the same sums in another order: float32 round-off, a few ulps of the loss and of the largest gradient
    assert loss4 == pytest.approx(loss1, rel=1e-6)
    assert np.abs(g4 - g1).max() <= 1e-6 * np.abs(g1).max()
    with pytest.raises(ValueError, match="8 rows cannot form grad_accum=3 equal micro-batches"):
        data_parallel.loss_and_grads(params, CONFIG, x, y, grad_accum=3)


def _curve(log, i):
    return np.array([row[i] for row in log["train"]])


def _log(path):
    return json.loads((path / "log.json").read_text(encoding="utf-8"))


def test_grad_accum_run_equals_the_larger_batch(tmp_path, small_corpus):
    # --batch-size 2 --grad-accum 4 draws the same 8 rows per step as --batch-size 8 (one draw of K B rows)
    train.main(tiny_args(tmp_path, "big", "--batch-size", "8"))
    train.main(tiny_args(tmp_path, "acc", "--batch-size", "2", "--grad-accum", "4"))
    big, acc = _log(tmp_path / "big"), _log(tmp_path / "acc")
    # 8 steps of AdamW carry the round-off of the first gradients along: measured 1.2e-7 relative on the losses
    np.testing.assert_allclose(_curve(acc, 1), _curve(big, 1), rtol=1e-5)
    np.testing.assert_allclose(_curve(acc, 3), _curve(big, 3), rtol=1e-4)       # gradient norms
    assert acc["run"]["grad_accum"] == 4 and acc["batch_per_rank"] == 2


# ---------------------------------------------------------------------------------------------------------------
# Real runs on two processes
# ---------------------------------------------------------------------------------------------------------------

FLAGS = ["--config", "tiny", "--steps", "12", "--eval-interval", "4", "--no-progress"]


def _flags(tmp_path, out, *extra):
    return [*FLAGS, "--out", str(tmp_path / out), "--figure", str(tmp_path / f"{out}.png"), *extra]


def _launch_ok(*args, **kwargs):
    done = launch(*args, **kwargs)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two-rank runs: one uninterrupted, one stopped at step 6 and resumed under the launcher."""
    tmp = tmp_path_factory.mktemp("dp")
    _launch_ok(2, _flags(tmp, "whole"))
    _launch_ok(2, _flags(tmp, "split", "--stop-at", "6"))
    _launch_ok(2, _flags(tmp, "resumed", "--resume", str(tmp / "split" / "checkpoint.npz")))
    return tmp


@pytest.mark.slow
def test_two_ranks_train_as_one_process(runs, tmp_path, small_corpus):
    train.main(_flags(tmp_path, "one"))
    one, two = _log(tmp_path / "one"), _log(runs / "whole")
    assert two["world_size"] == 2 and two["batch_per_rank"] == 4 and one["world_size"] == 1
    # each rank's mean over 4 rows, averaged, is the mean over 8 rows, up to float32 round-off (measured 8e-8 on
    # the losses and 7e-8 on the gradient norms over 20 steps); AdamW carries it along, hence 1e-5
    np.testing.assert_allclose(_curve(two, 1), _curve(one, 1), rtol=1e-5)
    np.testing.assert_allclose(_curve(two, 3), _curve(one, 3), rtol=1e-5)
    assert two["replicas_identical"]                                     # the ranks hold the same bits
    # rank 0 alone wrote: one checkpoint, one log, one figure
    assert sorted(p.name for p in (runs / "whole").iterdir()) == ["checkpoint.npz", "log.json"]
    assert (runs / "whole.png").exists()


@pytest.mark.slow
def test_resume_under_the_launcher_is_exact(runs):
    a, b = (checkpoint.load(runs / d / "checkpoint.npz") for d in ("whole", "resumed"))
    assert a["step"] == b["step"] == 12 and a["history"] == b["history"]
    for part in ("params", "opt_state"):
        assert all(np.array_equal(x, y) for x, y in zip(tree.flatten(a[part]).values(),
                                                         tree.flatten(b[part]).values()))


@pytest.mark.slow
def test_a_killed_rank_restarts_the_group_which_resumes_and_finishes_alike(runs, tmp_path):
    # rank 1 dies by SIGKILL at step 7 (the checkpoint of step 4 is on disk); torchrun stops rank 0, starts both
    # again, and they continue from step 4
    done = _launch_ok(2, _flags(tmp_path, "fault"), max_restarts=1, env={"KILL_RANK_AT": "1:7"})
    assert "exitcode: -9" in done.stderr                                 # torchrun saw the SIGKILL
    assert "step 4 of 12" in done.stdout                                 # the second start resumed at step 4
    whole, fault = _log(runs / "whole"), _log(tmp_path / "fault")
    assert fault["train"] == whole["train"] and fault["val"] == whole["val"]   # bit for bit
