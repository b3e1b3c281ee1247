"""reference/generate.py, the generation command: the same tokens as decoding.generate, streamed; one-line errors."""
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reference import generate
from reference.inference import decoding
from reference.tokenizers import CharTokenizer
from reference.training import checkpoint
from tests.gpt_checkpoints import tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "checkpoint.npz"
    params, config, tok = tiny_checkpoint(path)
    return path, params, config, tok


def run_main(argv, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = generate.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_sample_is_streamed_and_equals_decoding_generate(ckpt, capsys):
    path, params, config, tok = ckpt
    code, out, err = run_main([str(path), "--prompt", "In the", "--max-new-tokens", "20", "--seed", "3",
                               "--temperature", "0.8", "--top-k", "10"], capsys)
    new = decoding.generate(params, config, [tok.encode("In the")], 20, temperature=0.8, top_k=10, rng=3)[0]
    assert code == 0 and out == "In the" + tok.decode(new) + "\n"
    assert "20 new tokens in" in err and "tokens/s (KV cache; first token after" in err
    assert "seed" not in err                                   # given, so not printed


def test_greedy_with_and_without_the_cache_and_several_samples(ckpt, capsys):
    path, params, config, tok = ckpt
    greedy = decoding.generate(params, config, [tok.encode("And")], 12, temperature=0)[0]
    for extra in ([], ["--no-cache"]):
        _, out, err = run_main([str(path), "--prompt", "And", "--max-new-tokens", "12", "--temperature", "0"]
                               + extra, capsys)
        assert out == "And" + tok.decode(greedy) + "\n"
    _, out, err = run_main([str(path), "--prompt", "And", "--max-new-tokens", "5", "--num-samples", "3"], capsys)
    assert out.count("=== sample ") == 3 and "(pass --seed " in err
    seed = int(err.split("--seed ")[1].split()[0])
    _, again, _ = run_main([str(path), "--prompt", "And", "--max-new-tokens", "5", "--num-samples", "3",
                            "--seed", str(seed)], capsys)
    assert again == out                                        # the printed seed reproduces the samples


def test_beam_search(ckpt, capsys):
    path, params, config, tok = ckpt
    hyps = decoding.beam_search(params, config, tok.encode("the"), 3, 6)
    _, out, _ = run_main([str(path), "--prompt", "the", "--beam-width", "3", "--max-new-tokens", "6",
                          "--num-samples", "2"], capsys)
    assert out == "".join(f"=== beam {i + 1} of {len(hyps)}, score {score:.4f} ===\nthe{tok.decode(tokens)}\n"
                          for i, (tokens, score) in enumerate(hyps[:2]))


def test_prompt_from_stdin(ckpt, capsys, monkeypatch):
    path, *_ = ckpt
    _, direct, _ = run_main([str(path), "--prompt", "In the", "--max-new-tokens", "8", "--temperature", "0"], capsys)
    _, piped, _ = run_main([str(path), "--prompt", "-", "--max-new-tokens", "8", "--temperature", "0"], capsys,
                           stdin="In the\n".encode(), monkeypatch=monkeypatch)
    assert piped == direct                                     # echo's newline is dropped


def test_streaming_holds_a_character_until_all_its_bytes_came():
    tok = CharTokenizer.train("ab")
    sink = io.StringIO()
    stream = generate.Streamer(tok, sink)
    ids = tok.encode("aé")                                     # 'é' is two byte-fallback ids
    stream.push(ids[0])
    stream.push(ids[1])
    assert sink.getvalue() == "a"                              # half of 'é' is not written as U+FFFD
    stream.push(ids[2])
    assert sink.getvalue() == "aé"
    stream.push(tok.encode("é")[0])                            # a dangling lead byte, then the end
    stream.close()
    assert sink.getvalue() == "aé\ufffd"


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "nan"], "--temperature: expected a finite number >= 0 (0 = greedy), got nan"),
    (["--temperature", "inf"], "--temperature: expected a finite number >= 0"),
    (["--temperature", "-0.5"], "--temperature: expected a finite number >= 0"),
    (["--top-p", "0"], "--top-p: expected a number in (0, 1], got 0.0"),
    (["--top-p", "nan"], "--top-p: expected a number in (0, 1], got nan"),
    (["--top-k", "0"], "--top-k: expected a positive int, got 0"),
    (["--top-k", "two"], "argument --top-k: invalid int value: 'two'"),
    (["--max-new-tokens", "0"], "--max-new-tokens: expected a positive integer, got 0"),
    (["--max-new-tokens", "40"], "--max-new-tokens 40: a prompt of 6 tokens leaves room for at most 27 new tokens"),
    (["--num-samples", "0"], "--num-samples: expected a positive integer, got 0"),
    (["--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    (["--beam-width", "0"], "--beam-width: expected a positive integer, got 0"),
    (["--beam-width", "2", "--temperature", "0.5"], "beam search is deterministic and always uses the cache; it "
                                                    "takes no --temperature"),
    (["--beam-width", "2", "--num-samples", "3"], "beam search keeps at most --beam-width 2 hypotheses"),
    (["--beam-width", "2", "--length-penalty", "nan"], "--length-penalty: expected a finite number, got nan"),
])
def test_bad_settings_are_one_line_errors(ckpt, capsys, flags, message):
    path, *_ = ckpt
    with pytest.raises(SystemExit) as exc:
        generate.main([str(path), "--prompt", "In the"] + flags)
    assert exc.value.code == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and out.err.startswith("python -m reference.generate: error: ")
    assert message in out.err, out.err


def test_bad_files_and_prompts_are_one_line_errors(ckpt, capsys, tmp_path):
    path, *_ = ckpt
    np.savez(tmp_path / "plain.npz", a=np.ones(2))
    checkpoint.save(tmp_path / "other.npz", {"weights": np.ones(2)})
    cases = [
        ([str(tmp_path / "missing.npz"), "--prompt", "x"], "cannot read"),
        ([str(tmp_path / "plain.npz"), "--prompt", "x"], "not a lm-primer-checkpoint file"),
        ([str(tmp_path / "other.npz"), "--prompt", "x"], "is not a training checkpoint of reference.train"),
        ([str(tmp_path), "--prompt", "x"], "is a folder"),
        ([str(path), "--prompt", ""], "expected a non-empty prompt"),
        ([str(path), "--prompt", "In the 你好"], "the model never saw '你', '好' in training"),
        ([str(path), "--prompt", "a" * 33], "33 tokens, longer than the model's context of 32 tokens"),
        ([str(path), "--prompt", "a\udce9"], "cannot be encoded"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            generate.main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_the_command_runs_as_a_module(ckpt):
    path, params, config, tok = ckpt
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "reference.generate", str(path), "--prompt", "-",
                           "--max-new-tokens", "10", "--temperature", "0"], input="the", capture_output=True,
                          text=True, env=env, cwd=ROOT)
    greedy = decoding.generate(params, config, [tok.encode("the")], 10, temperature=0)[0]
    assert done.returncode == 0 and done.stdout == "the" + tok.decode(greedy) + "\n"
    bad = subprocess.run([sys.executable, "-m", "reference.generate", str(path), "--prompt", "-"], input=b"\xff",
                         capture_output=True, env=env, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.decode().endswith("is not valid UTF-8: byte(s) ff at offset 0\n")
