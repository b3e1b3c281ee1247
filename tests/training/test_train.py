"""reference/train.py, the training program: exact resume, fail-fast configuration errors, and the files a run
writes. Budget: about 10 s on one core. The corpus is cut to its first 100 000 characters (Genesis 1 to 4) so that
tokenising it is instant; the tiny config trains for a handful of steps."""
import json
import os
import signal

import numpy as np
import pytest

from reference import tokenizers, train, tree
from reference.models import gpt
from reference.training import checkpoint, data, run_dir
from tests.training.test_run_dir import unwritable_folders

N_CHARS = 100_000


@pytest.fixture(scope="module")
def corpus_head():
    return data.load_corpus()[:N_CHARS]


@pytest.fixture
def small_corpus(monkeypatch, corpus_head):
    monkeypatch.setattr(train.data, "load_corpus", lambda: corpus_head)


def tiny_args(tmp_path, out, *extra):
    return ["--config", "tiny", "--steps", "8", "--eval-interval", "4", "--no-progress",
            "--out", str(tmp_path / out), "--figure", str(tmp_path / f"{out}.png"), *extra]


def test_resume_is_bit_identical(tmp_path, small_corpus):
    """8 steps in one go == 3 steps, stop, resume for 5: same parameters, optimizer state and losses, bit for bit.
    Step 3 is not an evaluation step, so the resume starts mid-interval."""
    train.main(tiny_args(tmp_path, "whole"))
    train.main(tiny_args(tmp_path, "split", "--stop-at", "3"))
    assert checkpoint.load(tmp_path / "split" / "checkpoint.npz")["step"] == 3
    train.main(tiny_args(tmp_path, "resumed", "--resume", str(tmp_path / "split" / "checkpoint.npz")))
    a = checkpoint.load(tmp_path / "whole" / "checkpoint.npz")
    b = checkpoint.load(tmp_path / "resumed" / "checkpoint.npz")
    assert a["step"] == b["step"] == 8
    for part in ("params", "opt_state"):
        fa, fb = tree.flatten(a[part]), tree.flatten(b[part])
        assert fa.keys() == fb.keys()
        for name in fa:
            assert np.array_equal(fa[name], fb[name]), f"{part}: {name} differs after resume"
    assert a["history"] == b["history"]
    assert a["rng"] == b["rng"]


def test_tiny_run_writes_checkpoint_figure_and_log(tmp_path, small_corpus, capsys):
    assert train.main(tiny_args(tmp_path, "run")) is None      # the console script exits with main's value
    out = tmp_path / "run"
    ckpt = checkpoint.load(out / "checkpoint.npz")
    assert ckpt["step"] == 8 and ckpt["run"]["config"] == "tiny"
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "log.json").read_text(encoding="utf-8"))
    assert [s for s, *_ in saved["train"]] == list(range(1, 9))
    assert [s for s, _ in saved["val"]] == [4, 8]
    assert all(np.isfinite(l) for _, l, *_ in saved["train"])
    # the learning rate follows warm-up (5 steps in "tiny") then cosine down to 10 % of the peak at step 8
    lrs = [lr for _, _, lr, _ in saved["train"]]
    assert lrs[0] == pytest.approx(3e-3 / 5) and lrs[4] == pytest.approx(3e-3) and lrs[7] == pytest.approx(3e-4)
    assert len(saved["samples"]) == len(train.SAMPLE_PROMPTS)
    assert all(s.startswith(p) for s, p in zip(saved["samples"], train.SAMPLE_PROMPTS))
    printed = capsys.readouterr()
    assert "validation loss" in printed.out + printed.err and saved["samples"][0] in printed.out


def test_bpe_run_stores_its_tokenizer(tmp_path, small_corpus):
    train.main(tiny_args(tmp_path, "bpe", "--tokenizer", "bpe", "--steps", "2"))
    ckpt = checkpoint.load(tmp_path / "bpe" / "checkpoint.npz")
    tok = tokenizers.from_json(ckpt["tokenizer"])
    assert isinstance(tok, tokenizers.ByteBPE) and tok.vocab_size == train.DEFAULTS["bpe_vocab"]
    assert ckpt["params"]["wte"].shape == (tok.vocab_size, train.CONFIGS["tiny"]["d_model"])


@pytest.mark.parametrize("flags, message", [
    (["--d-model", "30", "--n-head", "4"], "d_model=30 is not divisible by n_head=4"),
    (["--lr", "0"], "learning rate must be a positive number"),
    (["--lr", "-0.001"], "learning rate must be a positive number"),
    (["--n-layer", "0"], "n-layer: expected a positive integer"),
    (["--stop-at", "99"], "--stop-at 99"),
])
def test_bad_config_fails_before_training(tmp_path, small_corpus, capsys, flags, message):
    with pytest.raises(SystemExit) as exc:
        train.main(tiny_args(tmp_path, "bad", *flags))
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()             # nothing was written: it stopped before training


def test_missing_corpus_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "corpus_path", lambda: tmp_path / "nowhere" / "Bible.db")
    with pytest.raises(SystemExit):
        train.main(tiny_args(tmp_path, "bad"))
    assert "Bible.db not found" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_resume_refuses_a_larger_block_size_or_another_model(tmp_path, small_corpus, capsys):
    train.main(tiny_args(tmp_path, "run", "--stop-at", "2"))
    ckpt = str(tmp_path / "run" / "checkpoint.npz")
    with pytest.raises(SystemExit):
        train.main(tiny_args(tmp_path, "more", "--resume", ckpt, "--block-size", "64"))
    assert "larger than the checkpoint's positional table (32 rows)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(tiny_args(tmp_path, "more", "--resume", ckpt, "--d-model", "64"))
    assert "differs from the checkpoint's 32" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(tiny_args(tmp_path, "more", "--resume", ckpt) + ["--config", "small"])
    assert "--config small differs from the checkpoint's tiny" in capsys.readouterr().err
    (tmp_path / "torn.npz").write_bytes((tmp_path / "run" / "checkpoint.npz").read_bytes()[:-100])
    with pytest.raises(SystemExit):
        train.main(tiny_args(tmp_path, "more", "--resume", str(tmp_path / "torn.npz")))
    assert "truncated or corrupted" in capsys.readouterr().err
    assert not (tmp_path / "more").exists()


# ---------------------------------------------------------------------------------------------------------------
# Nothing lost, nothing late: the run folder, the paths and the settings are checked before the first step
# ---------------------------------------------------------------------------------------------------------------

def fails_with(capsys, argv, message):
    """``train.main(argv)`` exits with status 2 and prints ``message`` in one line, no traceback."""
    with pytest.raises(SystemExit) as exc:
        train.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and err.startswith("lm-primer-train: error: "), err
    return err


def test_a_fresh_run_does_not_replace_a_checkpoint(tmp_path, small_corpus, capsys):
    train.main(tiny_args(tmp_path, "run", "--stop-at", "3"))
    before = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    fails_with(capsys, tiny_args(tmp_path, "run", "--stop-at", "2"), "already holds a checkpoint; continue it with "
                                                                     "--resume")
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == before
    ckpt = str(tmp_path / "run" / "checkpoint.npz")
    train.main(tiny_args(tmp_path, "run", "--resume", ckpt, "--stop-at", "4"))       # continuing it is fine
    assert checkpoint.load(ckpt)["step"] == 4
    train.main(tiny_args(tmp_path, "run", "--stop-at", "2", "--overwrite"))           # and so is saying so
    assert checkpoint.load(ckpt)["step"] == 2
    assert not (tmp_path / "run" / ".lock").exists()


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path, small_corpus, capsys):
    with run_dir.RunLock(tmp_path / "run"):                      # as a concurrent run would hold it
        fails_with(capsys, tiny_args(tmp_path, "run"), "is in use by another training run")
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_bad_paths_fail_before_training(tmp_path, small_corpus, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    fails_with(capsys, tiny_args(tmp_path, "x")[:-4] + ["--out", str(a_file)], "is a file; expected a folder")
    fails_with(capsys, tiny_args(tmp_path, "x")[:-4] + ["--out", str(a_file / "run")], "is a file, not a folder")
    args = tiny_args(tmp_path, "run")
    fails_with(capsys, args + ["--figure", str(tmp_path / "fig.txt")], "expected a file name ending in one of")
    fails_with(capsys, args + ["--figure", str(a_file / "fig.png")], "is a file, not a folder")
    for folder in unwritable_folders(tmp_path):
        fails_with(capsys, args + ["--out", str(folder / "run")], "cannot create files in")
        fails_with(capsys, args + ["--figure", str(folder / "fig.png")], "cannot create files in")
    assert sorted(os.listdir(tmp_path)) == sorted(["file"] + (["locked"] if (tmp_path / "locked").exists() else []))


def test_figure_in_a_folder(tmp_path, small_corpus, capsys):
    (tmp_path / "figs").mkdir()
    train.main(tiny_args(tmp_path, "run", "--steps", "2") + ["--figure", str(tmp_path / "figs")])
    assert (tmp_path / "figs" / train.FIGURE_NAME).read_bytes()[:4] == b"\x89PNG"
    assert f"{tmp_path / 'figs' / train.FIGURE_NAME}" in capsys.readouterr().out


def test_bad_resume_targets_and_settings_are_one_line_errors(tmp_path, small_corpus, capsys):
    train.main(tiny_args(tmp_path, "run", "--stop-at", "2"))
    ckpt = tmp_path / "run" / "checkpoint.npz"
    fails_with(capsys, tiny_args(tmp_path, "more", "--resume", str(tmp_path / "run")), "is a folder")
    np.savez(tmp_path / "plain.npz", a=np.ones(2))
    fails_with(capsys, tiny_args(tmp_path, "more", "--resume", str(tmp_path / "plain.npz")), "not a lm-primer")
    payload = checkpoint.load(ckpt)
    payload["run"]["d_model"] = 64                              # settings that no longer match the weights
    checkpoint.save(tmp_path / "lying.npz", payload)
    fails_with(capsys, tiny_args(tmp_path, "more", "--resume", str(tmp_path / "lying.npz")),
               "its weights do not match its own settings")
    fails_with(capsys, tiny_args(tmp_path, "more", "--resume", str(ckpt), "--steps", "1"),
               "is at step 2, and the run has --steps 1: nothing to do")
    fails_with(capsys, tiny_args(tmp_path, "more", "--resume", str(ckpt), "--stop-at", "2"),
               "--stop-at 2: expected a step in [3, 8]")
    fails_with(capsys, tiny_args(tmp_path, "more", "--seed", "-1"), "seed: expected an integer >= 0, got -1")
    model_only = {k: payload[k] for k in ("params", "run", "tokenizer", "step")}
    model_only["run"]["d_model"] = 32
    checkpoint.save(tmp_path / "model_only.npz", model_only)      # what a generate or export test would write
    fails_with(capsys, tiny_args(tmp_path, "more", "--resume", str(tmp_path / "model_only.npz")),
               "holds a model but not the training state needed to continue it exactly (no opt_state, rng, history)")
    assert not (tmp_path / "more").exists()


def test_impossible_sizes_are_refused_with_the_memory_they_need(tmp_path, small_corpus, capsys):
    err = fails_with(capsys, tiny_args(tmp_path, "huge", "--d-model", "99999999", "--n-head", "1"),
                     "this run needs about")
    assert "GiB" in err and "this machine has" in err
    assert not (tmp_path / "huge").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_at_the_end_of_the_step_with_checkpoint_and_log(tmp_path, small_corpus, capsys,
                                                                        monkeypatch, sig):
    step_fn = train.train_step

    def signalled_at_step_3(params, opt_state, config, run, x, y, step, *rest):
        if step == 3:
            os.kill(os.getpid(), sig)                             # mid-step, as Ctrl-C would come
        return step_fn(params, opt_state, config, run, x, y, step, *rest)

    monkeypatch.setattr(train, "train_step", signalled_at_step_3)
    with pytest.raises(SystemExit) as exc:
        train.main(tiny_args(tmp_path, "run"))
    assert exc.value.code == 128 + sig
    err = capsys.readouterr().err
    ckpt = tmp_path / "run" / "checkpoint.npz"
    assert f"stopped by {signal.Signals(sig).name} after step 3 of 8; continue with: python -m reference.train " \
           f"--resume {ckpt}" in err
    assert checkpoint.load(ckpt)["step"] == 3
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["step"] == 3 and log["stopped_by"] == signal.Signals(sig).name and "samples" not in log
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler     # handlers restored
    monkeypatch.setattr(train, "train_step", step_fn)
    train.main(tiny_args(tmp_path, "run", "--resume", str(ckpt)))           # and it continues
    assert checkpoint.load(ckpt)["step"] == 8


def test_ctrl_c_before_the_first_step_leaves_nothing(tmp_path, small_corpus, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "build_data", interrupted)
    with pytest.raises(SystemExit) as exc:
        train.main(tiny_args(tmp_path, "run"))
    assert exc.value.code == 130
    assert "interrupted before the first step; nothing was written" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_allocation_that_fails_anyway_is_one_line(tmp_path, small_corpus, capsys, monkeypatch):
    # the estimate passed, but the allocator said no (overcommit limits, other processes): no traceback either
    def refused(*args, **kwargs):
        raise MemoryError("Unable to allocate 9.00 GiB for an array with shape (99999, 99999)")

    monkeypatch.setattr(train.gpt, "init_params", refused)
    fails_with(capsys, tiny_args(tmp_path, "run"), "out of memory: Unable to allocate 9.00 GiB")
