"""Tensor parallelism (reference/training/tensor_parallel.py): shards and the full format, the norm's mask, refusals in
one process; then real runs under torchrun: gradients on 4 ranks (tp 4, and tp 2 x dp 2) against one process in
float32 and float64, training on 2 ranks (--tp 2) and on 4 (--tp 2 with data parallelism, ZeRO-1, recomputation
and accumulation) against one process, checkpoints resumed across splits, and every flag of the command launched."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reference import train, tree
from reference.models import gpt
from reference.training import blockwise, checkpoint, distributed
from reference.training import tensor_parallel as tp_
from test_train import corpus_head, small_corpus, tiny_args  # noqa: F401  (fixtures and flags shared)
from torchrun_tiny import ROOT, launch

CONFIG = gpt.GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=4, d_model=16)


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_shards_merge_back_to_the_full_model(tp):
    params = gpt.init_params(CONFIG, np.random.default_rng(0))
    shards = [tp_.shard(params, r, tp) for r in range(tp)]
    a, f = shards[-1]["blocks"][0]["attn"], shards[-1]["blocks"][0]["ffn"]
    C = CONFIG.d_model
    assert a["Wq"].shape == (C, C // tp) and a["bq"].shape == (C // tp,) and a["Wo"].shape == (C // tp, C)
    assert f["W1"].shape == (C, 4 * C // tp) and f["b1"].shape == (4 * C // tp,) and f["W2"].shape == (4 * C // tp, C)
    assert a["bo"].shape == f["b2"].shape == (C,) and shards[-1]["wte"].shape == params["wte"].shape
    # the last rank's heads are the last columns of Wq
    assert np.array_equal(a["Wq"], params["blocks"][0]["attn"]["Wq"][:, C - C // tp:])
    merged = tp_.merge(shards)
    assert all(np.array_equal(merged_a, full_a) for merged_a, full_a in
               zip(tree.flatten(merged).values(), tree.flatten(params).values()))
    assert list(tree.flatten(merged)) == list(tree.flatten(params))


def test_the_norm_counts_every_scalar_once(monkeypatch):
    params = gpt.init_params(CONFIG, np.random.default_rng(0))
    counted = 0
    for r in range(4):
        monkeypatch.setattr(distributed, "rank", lambda group="world", r=r: r)
        counted += int(tp_.owned_mask(tp_.shard(params, r, 4)).sum())
    assert counted == gpt.n_params(params)
    monkeypatch.setattr(distributed, "rank", lambda group="world": 0)
    assert tp_.owned_mask(params, size=gpt.n_params(params) + 3)[-3:].sum() == 0       # ZeRO's padding: not counted


def test_one_rank_blocks_compute_gpts_block(rng):
    # in one process f and g are identities and the shard is the model: the same block, with bo and b2 added after
    # the (here empty) sum instead of inside the matmul, so equal to float32 round-off
    params = gpt.init_params(CONFIG, np.random.default_rng(0))
    x, y = (rng.integers(0, 65, (4, 16)) for _ in range(2))
    loss0, g0 = blockwise.loss_and_grads(params, CONFIG, x, y)
    loss1, g1 = blockwise.loss_and_grads(params, CONFIG, x, y, tp_.BLOCKS)
    assert float(loss1) == pytest.approx(float(loss0), rel=1e-6)
    scale = max(float(np.abs(g).max()) for g in tree.flatten(g0).values())
    for name, g in tree.flatten(g0).items():
        np.testing.assert_allclose(tree.flatten(g1)[name], g, rtol=0, atol=1e-6 * scale, err_msg=name)


def test_refusals(tmp_path, small_corpus, monkeypatch, capsys):
    with pytest.raises(ValueError, match="the 4 heads cannot be split equally over 3 ranks"):
        tp_.check(CONFIG, 3)
    with pytest.raises(SystemExit) as exc:                                  # --tp 2 in one process
        train.main(tiny_args(tmp_path, "one", "--tp", "2"))
    assert exc.value.code == 2
    assert "--tp 2: the world of 1 rank(s) is not a multiple of it" in capsys.readouterr().err
    monkeypatch.setattr(distributed, "world_size", lambda group="world": 3)  # as if launched on 3 ranks
    with pytest.raises(SystemExit):
        train.main(tiny_args(tmp_path, "three", "--tp", "3", "--batch-size", "3"))
    assert "the 4 heads cannot be split equally over 3 ranks" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Real runs under torchrun
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_gradients_on_four_ranks_equal_one_process():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
                           str(Path(__file__).with_name("torchrun_tp_grads.py")), "4", "2"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for tp in (4, 2):
        for name in ("tp", "tp+recompute"):
            # float32: partial sums over ranks instead of one sum, a few ulps (measured 3e-7 of the largest
            # gradient); float64 shows the split is the same maths, to 1e-15 (measured 7e-16)
            f32, f64 = out[f"tp={tp} float32 {name}"], out[f"tp={tp} float64 {name}"]
            assert f32["shapes"] and f32["loss"] < 1e-6 and f32["grads"] < 2e-6
            assert f64["shapes"] and f64["loss"] < 1e-13 and f64["grads"] < 1e-13
        for dtype in ("float32", "float64"):
            assert out[f"tp={tp} {dtype} recompute exact"] and out[f"tp={tp} {dtype} whole identical"]
        # f and g: each backward is its forward's adjoint across ranks (float64 sums of 5 products: ~1e-16)
        assert max(out[f"tp={tp} adjoint gaps"]) < 1e-13


FLAGS = ["--config", "tiny", "--steps", "12", "--eval-interval", "4", "--no-progress"]


def _flags(tmp, out, *extra):
    return [*FLAGS, "--out", str(tmp / out), "--figure", str(tmp / f"{out}.png"), *extra]


def _launch_ok(*args, **kwargs):
    done = launch(*args, **kwargs)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _log(path):
    return json.loads((path / "log.json").read_text(encoding="utf-8"))


def _column(log, i):
    return np.array([row[i] for row in log["train"]])


def _assert_same_training(log, ref):
    # losses and gradient norms of one process to float32 round-off, carried along by AdamW over 12 steps
    # (measured: losses equal or 1e-7 apart, norms 2e-7); a wrong shard, sum or norm would be off by far more
    assert [row[0] for row in log["train"]] == [row[0] for row in ref["train"]]
    np.testing.assert_allclose(_column(log, 1), _column(ref, 1), rtol=1e-5)
    np.testing.assert_allclose(_column(log, 3), _column(ref, 3), rtol=1e-5)
    np.testing.assert_allclose([v for _, v in log["val"]], [v for _, v in ref["val"]], rtol=1e-5)


@pytest.mark.slow
def test_two_ranks_train_as_one_process_and_checkpoints_move_between_splits(tmp_path, small_corpus):
    train.main(_flags(tmp_path, "one"))
    train.main(_flags(tmp_path, "one_half", "--stop-at", "6"))
    _launch_ok(2, _flags(tmp_path, "tp", "--tp", "2", "--stop-at", "6"))                 # tp 2, steps 1-6
    train.main(_flags(tmp_path, "tp_then_one", "--resume", str(tmp_path / "tp" / "checkpoint.npz")))
    _launch_ok(2, _flags(tmp_path, "one_then_tp", "--tp", "2", "--recompute",
                         "--resume", str(tmp_path / "one_half" / "checkpoint.npz")))
    one, tp, tp_one, one_tp = (_log(tmp_path / d) for d in ("one", "tp", "tp_then_one", "one_then_tp"))
    assert tp["tp"] == 2 and tp["data_parallel"] == 1 and tp["batch_per_rank"] == 8
    assert tp["replicas_identical"]                  # the ranks' whole parameters: the same bits
    # half of each block's matrices per rank: fewer optimizer bytes (the tied embedding is whole on both)
    assert tp["optimizer_bytes_per_rank"] < one["optimizer_bytes_per_rank"]
    # the checkpoint is the full model: one process loads it, its weights have the full shapes
    saved = checkpoint.load(tmp_path / "tp" / "checkpoint.npz")
    assert saved["params"]["blocks"][0]["attn"]["Wq"].shape == (32, 32)
    assert saved["opt_state"]["m"]["blocks"][0]["ffn"]["W2"].shape == (128, 32)
    _assert_same_training(tp_one, one)               # steps 1-6 on two ranks, 7-12 in one process
    _assert_same_training(one_tp, one)               # steps 1-6 in one process, 7-12 on two ranks, recomputed


@pytest.mark.slow
def test_four_ranks_tp_times_dp_with_zero_recompute_and_accumulation(tmp_path, small_corpus):
    extra = ["--batch-size", "4", "--grad-accum", "2"]
    train.main(_flags(tmp_path, "one", *extra))
    _launch_ok(4, _flags(tmp_path, "grid", *extra, "--tp", "2", "--zero", "1", "--recompute"))
    one, grid = _log(tmp_path / "one"), _log(tmp_path / "grid")
    assert (grid["world_size"], grid["tp"], grid["data_parallel"], grid["batch_per_rank"]) == (4, 2, 2, 2)
    assert grid["replicas_identical"] and grid["recompute"] and grid["zero"] == 1
    _assert_same_training(grid, one)
    # a quarter of the moments of the split matrices, half of the whole ones: below half of one process's
    assert grid["optimizer_bytes_per_rank"] < one["optimizer_bytes_per_rank"] / 2
    assert grid["communication"]["all_reduce"]["calls"] > 0 and grid["communication"]["reduce_scatter"]["calls"] == 12


# Every flag of the training command, launched on two ranks (the promise in the README): the launches below together
# pass each of them; a new flag fails this test until it is added here.
EVERY_FLAG = [
    ["--config", "tiny", "--tokenizer", "char", "--d-model", "16", "--n-layer", "1", "--n-head", "2", "--block-size",
     "16", "--batch-size", "4", "--lr", "1e-3", "--seed", "3", "--steps", "4", "--eval-interval", "2", "--stop-at", "2",
     "--precision", "fp16", "--grad-accum", "2", "--zero", "1", "--tp", "2", "--recompute", "--overwrite",
     "--no-progress"],
    ["--resume", "{first}/checkpoint.npz", "--steps", "4", "--no-progress"],
    ["--config", "tiny", "--precision", "bf16", "--tp", "2", "--steps", "2", "--eval-interval", "2", "--no-progress"],
]


@pytest.mark.slow
def test_every_flag_runs_under_torchrun(tmp_path):
    given = {a for args in EVERY_FLAG for a in args if a.startswith("--")} | {"--out", "--figure"}
    flags = {"--" + dest.replace("_", "-") for dest in vars(train.parse_args([]))}
    assert flags - given == set(), f"launch these flags under torchrun here: {sorted(flags - given)}"
    first = tmp_path / "first"
    for i, args in enumerate(EVERY_FLAG):
        args = [a.format(first=first) for a in args]
        out = first if i < 2 else tmp_path / f"run{i}"
        done = _launch_ok(2, [*args, "--out", str(out), "--figure", str(tmp_path / f"run{i}.png")])
        assert "wrote" in done.stdout
    log = _log(first)
    assert log["step"] == 4 and log["tp"] == 1 and [row[0] for row in log["train"]] == [1, 2, 3, 4]
    assert np.isfinite(_column(log, 1)).all() and np.isfinite(_column(_log(tmp_path / "run2"), 1)).all()
