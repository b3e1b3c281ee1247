"""The worked solutions of chapter 5's exercises (chapters/solutions/05_traditional_vs_large.py)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from reference.training import textcls

_PATH = Path(__file__).resolve().parents[2] / "chapters" / "solutions" / "05_traditional_vs_large.py"
_spec = importlib.util.spec_from_file_location("solutions_05", _PATH)  # the file name starts with a digit
sol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sol)


@pytest.fixture(scope="module")
def verses():
    return textcls.load_labelled_verses()


@pytest.fixture(scope="module")
def order(verses):
    return textcls.order_task(verses=verses)


def test_transformer_without_positions_is_blind_to_order(order):
    gap, acc = sol.blind_transformer_on_pairs(order)
    assert gap < 1e-10          # float64: the same sums in another order, ~1e-15 measured
    assert acc == 0.5           # each pair gets one answer for its two labels


def test_bigram_features_tell_a_verse_from_its_reversal(order):
    train = order.train_subset(50)
    V = len(order.vocab)
    index = sol.bigram_index(train, V)
    X = sol.bigram_features(train, V, index).dense()
    assert np.array_equal(X[:, :V].sum(axis=1), train.mask.sum(axis=1))           # every word counted once
    pairs = (train.mask[:, :-1] & train.mask[:, 1:]).sum(axis=1)
    assert np.array_equal(X[:, V:].sum(axis=1), pairs)                            # every pair of training is known
    half = len(order.test) // 2
    X_test = sol.bigram_features(order.test, V, index).dense()
    assert not np.array_equal(X_test[:half], X_test[half:])


def test_bigram_logistic_regression_learns_the_order_task(order):
    acc, n_features = sol.bigram_logreg_on_order_task(order)
    assert n_features > len(order.vocab)
    assert acc > 0.9            # measured 0.963 with 3000 training verses; the bag of words alone: exactly 0.5


def test_top_words_of_each_book(verses):
    top = sol.top_words(textcls.book_task(verses=verses))
    assert list(top) == list(textcls.DEFAULT_BOOKS)
    assert "jesus" in top["Matthew"] and "joseph" in top["Genesis"] and "selah" in top["Psalms"]
    assert "law" in top["Romans"] and "wisdom" in top["Proverbs"]
