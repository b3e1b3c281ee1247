"""reference/train.py, the training program: exact resume, fail-fast configuration errors, and the files a run
writes. Budget: about 10 s on one core. The corpus is cut to its first 100 000 characters (Genesis 1 to 4) so that
tokenising it is instant; the tiny config trains for a handful of steps."""
import json

import numpy as np
import pytest

from reference import tokenizers, train, tree
from reference.models import gpt
from reference.training import checkpoint, data

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
