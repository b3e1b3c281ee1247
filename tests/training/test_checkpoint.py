"""Checkpoints (reference/training/checkpoint.py): exact round trips, atomic writes, refusal of damaged files."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from reference.tokenizers import ByteBPE
from reference.training import checkpoint

ROOT = Path(__file__).resolve().parents[2]


def make_payload(rng, step=7):
    params = {"wte": rng.standard_normal((11, 4)).astype(np.float32),
              "blocks": [{"attn": {"Wq": rng.standard_normal((4, 4)).astype(np.float32),
                                   "bq": np.zeros(4, np.float32)}} for _ in range(2)],
              "ln_f": {"gamma": np.ones(4), "beta": np.full(4, -0.0)}}
    odd = rng.standard_normal((5, 6))
    return {
        "params": params,
        "opt_state": {"step": step, "m": {"w": rng.standard_normal(3)}, "v": {"w": rng.random(3)}},
        "step": step,
        "config": {"vocab_size": 11, "d_model": 4, "positional": "learned", "ln_eps": 1e-5, "dropout": None,
                   "tied": True, "betas": (0.9, 0.95), "layers": [1, [2.5, "x"]]},
        "tokenizer": ByteBPE.train("in the beginning the earth ", 270, progress=False).to_json(),
        "rng": checkpoint.rng_to_json(rng),
        "odd_arrays": {"fortran": np.asfortranarray(odd), "strided": odd[::2, 1::3], "empty": np.zeros((0, 3)),
                       "zero_d": np.array(3.5, np.float32), "ids": np.arange(6, dtype=np.uint16),
                       "special": np.array([np.nan, -np.inf, np.inf, -0.0, 5e-324]), "mask": np.eye(2, dtype=bool),
                       "np_scalar": np.int64(-3), "np_float": np.float32(0.1)},
    }


def assert_identical(a, b, path="payload"):
    """Same nesting, same Python types, arrays with the same dtype, shape and bytes."""
    assert type(a) is type(b), f"{path}: {type(a)} vs {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_identical(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}/{i}")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), path   # bit-identical
    else:
        assert a == b, path


def test_round_trip_is_exact(rng, tmp_path):
    payload = make_payload(rng)
    path = checkpoint.save(tmp_path / "ckpt.npz", payload)
    loaded = checkpoint.load(path)
    assert_identical(payload, loaded)
    assert loaded["params"]["wte"].flags.writeable                 # the optimizer updates loaded params in place
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]              # no temporary file left behind


def test_file_is_an_npz_with_flat_path_keys(rng, tmp_path):
    payload = make_payload(rng)
    checkpoint.save(tmp_path / "c.npz", payload)
    with np.load(tmp_path / "c.npz") as npz:
        np.testing.assert_array_equal(npz["params/blocks/1/attn/Wq"], payload["params"]["blocks"][1]["attn"]["Wq"])
        assert "params/wte" in npz.files and "opt_state/m/w" in npz.files


def test_rng_continues_identically(tmp_path):
    rng = np.random.default_rng(123)
    rng.standard_normal(17)                                          # advance it somewhere
    checkpoint.save(tmp_path / "r.npz", {"rng": checkpoint.rng_to_json(rng)})
    expected = (rng.random(5), rng.integers(0, 1000, size=7), rng.standard_normal(3))
    restored = checkpoint.rng_from_json(checkpoint.load(tmp_path / "r.npz")["rng"])
    got = (restored.random(5), restored.integers(0, 1000, size=7), restored.standard_normal(3))
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)
    mt = np.random.Generator(np.random.MT19937(5))                 # a bit generator with an array in its state
    again = checkpoint.rng_from_json(checkpoint.rng_to_json(mt))
    np.testing.assert_array_equal(mt.random(4), again.random(4))


def test_saving_again_replaces_the_checkpoint(rng, tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, make_payload(rng, step=1))
    second = make_payload(rng, step=2)
    checkpoint.save(path, second)
    assert_identical(checkpoint.load(path), second)


def test_torn_write_leaves_the_previous_checkpoint_usable(rng, tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    good = make_payload(rng, step=1)
    checkpoint.save(path, good)
    calls = []

    def torn_write_array(fp, array, **kwargs):
        # The third array is cut off halfway through its bytes, as if the process died there.
        calls.append(1)
        if len(calls) == 3:
            fp.write(array.tobytes()[: array.nbytes // 2])
            raise KeyboardInterrupt("simulated kill during the save")
        return write_array(fp, array, **kwargs)

    write_array = checkpoint.write_array
    monkeypatch.setattr(checkpoint, "write_array", torn_write_array)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, make_payload(rng, step=2))
    assert len(calls) == 3
    assert_identical(checkpoint.load(path), good)
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]                  # the torn temporary file was removed


def test_a_real_kill_during_the_save_loses_nothing(rng, tmp_path):
    # A SIGKILL runs no cleanup: the half-written temporary file stays, but the target is untouched.
    path = tmp_path / "c.npz"
    good = make_payload(rng, step=1)
    checkpoint.save(path, good)
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from reference.training import checkpoint

        def killed_midway(fp, array, **kwargs):
            fp.write(b"\\x93NUMPY partial")
            fp.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        checkpoint.write_array = killed_midway
        checkpoint.save({str(path)!r}, {{"params": {{"W": np.ones((300, 300))}}}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    leftovers = [p for p in os.listdir(tmp_path) if p != "c.npz"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".c.npz.") and leftovers[0].endswith(".tmp")
    assert_identical(checkpoint.load(path), good)
    newer = make_payload(rng, step=2)
    checkpoint.save(path, newer)                                     # and the next save works
    assert_identical(checkpoint.load(path), newer)
    assert os.listdir(tmp_path) == ["c.npz"]                         # and removed the dead process's temporary


def test_a_temporary_of_a_live_process_is_kept(rng, tmp_path):
    # another process (pid 1 always exists) may be writing its own temporary: only dead processes' files go
    live = tmp_path / ".c.npz.1.0123abcd.tmp"
    live.write_bytes(b"partial")
    checkpoint.save(tmp_path / "c.npz", make_payload(rng))
    assert sorted(os.listdir(tmp_path)) == [".c.npz.1.0123abcd.tmp", "c.npz"]


def test_truncated_files_are_refused(rng, tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, make_payload(rng))
    data = path.read_bytes()
    for size in (0, 50, 86, len(data) // 3, len(data) - 64, len(data) - 1):
        bad = tmp_path / f"cut_{size}.npz"
        bad.write_bytes(data[:size])
        with pytest.raises(checkpoint.CheckpointError, match=rf"checkpoint {bad} is truncated"):
            checkpoint.load(bad)


def test_any_flipped_bit_is_refused(rng, tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, make_payload(rng))
    data = path.read_bytes()
    # 40 positions spread over the whole file: zip headers, the manifest, array bytes, the directory, the checksum.
    positions = np.unique(np.linspace(0, len(data) - 1, 40).astype(int))
    bad = tmp_path / "flipped.npz"
    for pos in positions:
        for bit in (0, 7):
            flipped = bytearray(data)
            flipped[pos] ^= 1 << bit
            bad.write_bytes(bytes(flipped))
            with pytest.raises(checkpoint.CheckpointError, match=rf"checkpoint {bad} is truncated or corrupted"):
                checkpoint.load(bad)


def test_an_ordinary_npz_is_not_a_checkpoint(tmp_path):
    # said as such, not as "truncated or corrupted" (which would send the user looking for an earlier copy)
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.ones(3))
    with pytest.raises(checkpoint.CheckpointError, match=r"plain.npz is a zip archive .* holding a.npy, not a "
                                                         r"lm-primer-checkpoint file"):
        checkpoint.load(path)
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a checkpoint at all; " * 5)
    with pytest.raises(checkpoint.CheckpointError, match="notes.txt is not a lm-primer-checkpoint file: it is not a zip"):
        checkpoint.load(text)


def test_a_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match=r"is a folder; expected a checkpoint file such as .*"
                                                         r"checkpoint.npz"):
        checkpoint.load(tmp_path)


def test_file_mode_follows_the_umask(rng, tmp_path):
    # mkstemp would create 0600 whatever the umask; a checkpoint is a file like the log beside it
    old = os.umask(0o022)
    try:
        checkpoint.save(tmp_path / "a.npz", make_payload(rng))
        os.umask(0o027)
        checkpoint.save(tmp_path / "b.npz", make_payload(rng))
    finally:
        os.umask(old)
    assert (tmp_path / "a.npz").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.npz").stat().st_mode & 0o777 == 0o640


def test_saving_through_a_symlink_writes_its_target(rng, tmp_path):
    (tmp_path / "store").mkdir()
    target = tmp_path / "store" / "real.npz"
    checkpoint.save(target, make_payload(rng, step=1))
    link = tmp_path / "latest.npz"
    link.symlink_to(target)
    newer = make_payload(rng, step=2)
    checkpoint.save(link, newer)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert_identical(checkpoint.load(target), newer)
    assert sorted(os.listdir(tmp_path / "store")) == ["real.npz"]


def test_payload_errors(tmp_path):
    with pytest.raises(TypeError, match="payload: expected a dict"):
        checkpoint.save(tmp_path / "c.npz", [np.ones(2)])
    with pytest.raises(TypeError, match="payload at 'params': expected str keys, got int"):
        checkpoint.save(tmp_path / "c.npz", {"params": {0: np.ones(2)}})
    with pytest.raises(ValueError, match="contain no '/', got 'a/b'"):
        checkpoint.save(tmp_path / "c.npz", {"a/b": 1})
    with pytest.raises(TypeError, match="payload at 'x': object arrays"):
        checkpoint.save(tmp_path / "c.npz", {"x": np.array([{}], dtype=object)})
    with pytest.raises(TypeError, match="payload at 'x/0': expected a dict, list, tuple"):
        checkpoint.save(tmp_path / "c.npz", {"x": [{1, 2}]})
    assert os.listdir(tmp_path) == []                                # nothing written for a bad payload
    with pytest.raises(ValueError, match="bit generator"):
        checkpoint.rng_from_json(json.dumps({"bit_generator": "Mystery"}))
    with pytest.raises(TypeError, match="Generator"):
        checkpoint.rng_to_json(np.random.RandomState(0))
