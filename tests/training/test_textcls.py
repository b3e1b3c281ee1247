"""The verse-classification tasks (reference/training/textcls.py): book labels, deterministic splits, the order task's pairs."""
import numpy as np
import pytest

from reference.models import logreg
from reference.training import data, textcls


@pytest.fixture(scope="module")
def verses():
    return textcls.load_labelled_verses()


def test_every_verse_has_its_book(verses):
    texts, books = verses
    assert len(texts) == len(books) == data.N_VERSES
    assert (books[0], books[-1]) == ("Genesis", "Revelation")
    assert texts[0].startswith("In the beginning God created")
    assert books.count("Psalms") == 2461 and books.count("Romans") == 433   # KJV verse counts of the two books
    assert len(set(books)) == 66


def test_tokenize_and_encode():
    assert textcls.tokenize("And God said, Let there be light: 3:4") == ["and", "god", "said", "let", "there", "be",
                                                                          "light"]
    vocab = textcls.build_vocab([["a", "b", "a"], ["c", "a", "b"]], vocab_size=4)
    assert vocab == ["<pad>", "<unk>", "a", "b"]
    ids, mask = textcls.encode([["b", "c", "a"], ["a"]], vocab, max_len=2)
    assert ids.tolist() == [[3, textcls.UNK], [2, textcls.PAD]]
    assert mask.tolist() == [[True, True], [True, False]]


def test_book_task_split_sizes_and_determinism(verses):
    task = textcls.book_task(verses=verses)
    again = textcls.book_task(verses=verses)
    assert np.array_equal(task.test.ids, again.test.ids) and np.array_equal(task.pool.y, again.pool.y)
    n = len(task.pool) + len(task.dev) + len(task.test)
    assert n == sum(verses[1].count(b) for b in textcls.DEFAULT_BOOKS)
    assert len(task.test) == round(0.2 * n) and len(task.dev) == round(0.1 * n)
    small, large = task.train_subset(10, seed=3), task.train_subset(50, seed=3)
    assert small.tokens == large.tokens[:10]                 # nested subsets
    assert task.train_subset(10, seed=4).tokens != small.tokens
    with pytest.raises(ValueError, match="training pool"):
        task.train_subset(len(task.pool) + 1)
    with pytest.raises(ValueError, match="unknown"):
        textcls.book_task(books=("Genesis", "Hezekiah"), verses=verses)


def test_order_task_pairs_defeat_any_bag_of_words(verses):
    task = textcls.order_task(n_test=50, n_dev=20, verses=verses)
    assert len(task.test) == 100 and len(task.dev) == 40
    half = len(task.test) // 2
    assert task.test.y.tolist() == [0] * half + [1] * half
    assert all(a[::-1] == b for a, b in zip(task.test.tokens[:half], task.test.tokens[half:]))
    X = logreg.bag_of_words(task.test.ids, task.test.mask, len(task.vocab)).dense()
    assert np.array_equal(X[:half], X[half:])                 # a verse and its reversal: the same bag
    assert all(t != t[::-1] for t in task.pool.tokens)        # no palindromes
    assert 0.45 < task.pool.y.mean() < 0.55                   # orientations drawn at random
