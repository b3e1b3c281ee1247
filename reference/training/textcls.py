r"""Two text-classification tasks built from the King James Bible, with deterministic splits (material §2.4).

Both tasks give the traditional model (logistic regression on a bag of words, ``reference/models/logreg.py``) and the
small Transformer (``reference/models/classifier.py``) exactly the same tokens: lower-case words (``[a-z]+``, punctuation
and digits dropped), the first ``max_len`` of each verse, mapped to ids by a vocabulary built from the training
pool only.

- :func:`book_task`: which of a handful of books a verse comes from (default Genesis, Psalms, Proverbs, Matthew,
  Romans: narrative, poetry, wisdom sayings, gospel, epistle). A bag of words carries most of this signal
  ("thou", "lord", "jesus", "faith" ...).
- :func:`order_task`: is this verse written forwards (label 0) or with its words in reverse order (label 1)?
  A verse and its reversal have the same bag of words, so no function of the bag can tell them apart. The dev and
  test sets hold *both* orientations of every verse, so any bag-of-words classifier gives each pair the same
  answer and scores exactly 50 %. Verses whose word sequence is a palindrome (one word, or "a b a") have no
  order to detect and are left out.

The split is by verse: a seeded permutation of the verses puts the first ``n_test`` in the test set, the next
``n_dev`` in the dev set (for choosing hyperparameters), and the rest in the training pool. ``train_subset(n,
seed)`` draws n examples from that pool; subsets of one seed are nested (the first n of one permutation).

Vocabulary ids: 0 is padding (``PAD``), 1 is any word outside the vocabulary (``UNK``), then the pool's words by
decreasing count (ties alphabetically) with count >= ``min_count``, up to ``vocab_size`` ids in all.
"""
import collections
import dataclasses
import re
import sqlite3
from pathlib import Path

import numpy as np

from reference.training import data

PAD, UNK = 0, 1
DEFAULT_BOOKS = ("Genesis", "Psalms", "Proverbs", "Matthew", "Romans")
_WORD = re.compile(r"[a-z]+")
_VERSE_MARK = re.compile(r"(?:^|(?<=\s))\d+:\d+ ")   # the reference "C:V " that data.load_corpus splits at


def load_labelled_verses(path=None):
    """Every verse of the corpus with the name of its book.

    The verse texts are ``data.load_corpus(path).splitlines()`` (so the file's sha256 is checked there); the book
    of each verse is read from the same SQLite rows, split at the same references, and the two lists are checked
    to agree verse by verse.

    Parameters
    ----------
    path : str or pathlib.Path, optional
        The SQLite file; by default ``data.corpus_path()``.

    Returns
    -------
    verses : list of str
        31 102 verses in canonical order.
    books : list of str
        The book's short name ("Genesis", ..., "Revelation") for each verse.
    """
    verses = data.load_corpus(path).splitlines()
    path = data.corpus_path() if path is None else Path(path)
    con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT k.ShortName, b.Passage1, b.Passage2 FROM Bible b JOIN Books k "
                           "ON b.TestamentID = k.TestamentID AND b.BookID = k.BookID "
                           "ORDER BY b.TestamentID, b.BookID, b.ChapterID, b.VerseID").fetchall()
    finally:
        con.close()
    books, texts = [], []
    for book, passage1, passage2 in rows:
        for verse in _VERSE_MARK.split(passage1 + " " + (passage2 or ""))[1:]:
            books.append(book)
            texts.append(" ".join(verse.split()))
    if texts != verses:
        raise data.CorpusError("the verses read with their books differ from data.load_corpus(): "
                               f"{len(texts)} vs {len(verses)} verses")
    return verses, books


def tokenize(text):
    """Lower-case words of ``text``: ``"And God said, Let there be light"`` -> ``["and", "god", "said", ...]``."""
    return _WORD.findall(text.lower())


def build_vocab(token_lists, vocab_size, min_count=1):
    """The vocabulary (a list; a word's id is its index): ``PAD``, ``UNK``, then words by decreasing count.

    Parameters
    ----------
    token_lists : iterable of list of str
    vocab_size : int >= 2
        Total number of ids, including ``PAD`` and ``UNK``.
    min_count : int >= 1
        Words seen fewer times are left out (they map to ``UNK``).

    Returns
    -------
    list of str, length <= vocab_size
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 2:
        raise ValueError(f"vocab_size: expected an int >= 2 (PAD and UNK), got {vocab_size!r}")
    counts = collections.Counter(w for tokens in token_lists for w in tokens)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return ["<pad>", "<unk>"] + words[:vocab_size - 2]


def encode(token_lists, vocab, max_len):
    """Ids of the first ``max_len`` words of each list, padded with ``PAD``, and the mask of real tokens.

    Returns
    -------
    ids : ndarray (N, max_len) int64
    mask : ndarray (N, max_len) bool
        True = a real token, False = padding.
    """
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise ValueError(f"max_len: expected a positive int, got {max_len!r}")
    index = {w: i for i, w in enumerate(vocab)}
    ids = np.full((len(token_lists), max_len), PAD, dtype=np.int64)    # (N, T)
    mask = np.zeros((len(token_lists), max_len), dtype=bool)           # (N, T)
    for n, tokens in enumerate(token_lists):
        row = [index.get(w, UNK) for w in tokens[:max_len]]
        ids[n, :len(row)] = row
        mask[n, :len(row)] = True
    return ids, mask


@dataclasses.dataclass(frozen=True)
class Split:
    """Encoded examples: ``ids`` (N, T) int64, ``mask`` (N, T) bool, ``y`` (N,) int64, and the token lists."""

    ids: np.ndarray
    mask: np.ndarray
    y: np.ndarray
    tokens: list

    def __len__(self):
        return len(self.y)

    def take(self, index):
        """The examples at ``index`` (an int array), as a new Split."""
        return Split(self.ids[index], self.mask[index], self.y[index], [self.tokens[i] for i in index])


@dataclasses.dataclass(frozen=True)
class TextTask:
    """A classification task: class names, the vocabulary, and the train pool, dev and test splits."""

    name: str
    class_names: tuple
    vocab: list
    max_len: int
    pool: Split
    dev: Split
    test: Split

    def train_subset(self, n, seed=0):
        """``n`` examples of the training pool: the first n of the pool permuted by ``seed`` (nested in n)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(self.pool):
            raise ValueError(f"n: expected an int in [1, {len(self.pool)}] (the training pool), got {n!r}")
        order = np.random.default_rng(seed).permutation(len(self.pool))
        return self.pool.take(order[:n])


def _split_order(n_items, n_test, n_dev, seed):
    if n_test < 1 or n_dev < 1 or n_test + n_dev >= n_items:
        raise ValueError(f"n_test and n_dev: expected >= 1 each and n_test + n_dev < {n_items} (the verses), "
                         f"got n_test={n_test}, n_dev={n_dev}")
    order = np.random.default_rng(seed).permutation(n_items)
    return order[:n_test], order[n_test:n_test + n_dev], order[n_test + n_dev:]


def _make_split(token_lists, labels, vocab, max_len):
    ids, mask = encode(token_lists, vocab, max_len)
    return Split(ids, mask, np.asarray(labels, dtype=np.int64), list(token_lists))


def book_task(books=DEFAULT_BOOKS, max_len=32, vocab_size=2000, test_fraction=0.2, dev_fraction=0.1, seed=0,
              verses=None):
    """Which book does a verse come from?

    Parameters
    ----------
    books : sequence of str
        Book short names (``Books.ShortName`` in the database); the label is the position in this sequence.
    max_len : int
        Words kept per verse (the first ones).
    vocab_size : int
        Ids in all, including PAD and UNK; words of the training pool seen at least twice.
    test_fraction, dev_fraction : float
        Shares of the verses (of the chosen books) held out for test and dev.
    seed : int
        The permutation that splits the verses.
    verses : (list of str, list of str), optional
        The output of :func:`load_labelled_verses`, to avoid reading the corpus again.

    Returns
    -------
    TextTask
    """
    all_verses, all_books = load_labelled_verses() if verses is None else verses
    known = set(all_books)
    unknown = [b for b in books if b not in known]
    if unknown or len(set(books)) != len(books) or len(books) < 2:
        raise ValueError(f"books: expected at least two distinct book names of the corpus, got {list(books)} "
                         f"(unknown: {unknown})")
    label = {b: k for k, b in enumerate(books)}
    chosen = [(tokenize(v), label[b]) for v, b in zip(all_verses, all_books) if b in label]
    chosen = [(t, k) for t, k in chosen if t]                    # a verse needs at least one word
    n = len(chosen)
    test_i, dev_i, pool_i = _split_order(n, int(round(n * test_fraction)), int(round(n * dev_fraction)), seed)
    vocab = build_vocab([chosen[i][0] for i in pool_i], vocab_size, min_count=2)

    def split(index):
        return _make_split([chosen[i][0] for i in index], [chosen[i][1] for i in index], vocab, max_len)

    return TextTask("book", tuple(books), vocab, max_len, split(pool_i), split(dev_i), split(test_i))


def order_task(max_len=24, vocab_size=2000, n_test=2000, n_dev=500, seed=0, verses=None):
    """Is a verse forwards (0) or reversed (1)? Dev and test hold both orientations of each of their verses.

    Every verse of the corpus, truncated to its first ``max_len`` words, that is not a palindrome. Training-pool
    verses get one orientation each, drawn with ``seed`` (so a training example never has its mirror image in
    the pool).

    Returns
    -------
    TextTask
        ``len(dev) == 2 * n_dev`` and ``len(test) == 2 * n_test``.
    """
    all_verses, _ = load_labelled_verses() if verses is None else verses
    seqs = [t[:max_len] for t in map(tokenize, all_verses)]
    seqs = [t for t in seqs if t != t[::-1]]
    test_i, dev_i, pool_i = _split_order(len(seqs), n_test, n_dev, seed)
    vocab = build_vocab([seqs[i] for i in pool_i], vocab_size, min_count=2)

    def both(index):
        tokens = [seqs[i] for i in index] + [seqs[i][::-1] for i in index]
        return _make_split(tokens, [0] * len(index) + [1] * len(index), vocab, max_len)

    flip = np.random.default_rng(seed + 1).integers(0, 2, size=len(pool_i))   # (n_pool,) 1 = reversed
    pool_tokens = [seqs[i][::-1] if f else seqs[i] for i, f in zip(pool_i, flip)]
    pool = _make_split(pool_tokens, flip, vocab, max_len)
    return TextTask("order", ("forwards", "reversed"), vocab, max_len, pool, both(dev_i), both(test_i))
