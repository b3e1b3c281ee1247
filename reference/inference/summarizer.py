r"""Extractive summarisation with the NumPy BERT: pick the most central sentences, print them in their order.

An encoder such as BERT maps text to vectors; it does not generate text. So the summary here is *extractive*: it
selects sentences of the document. (An *abstractive* summary, new sentences, needs a decoder that generates token
by token, a sequence-to-sequence model such as ``reference/models/transformer.py``'s encoder-decoder, or the decoder-only
LM of ``reference/models/gpt.py`` with ``reference/inference/decoding.py``.)

1. Split the text into sentences with :data:`SENTENCE` (see :func:`split_sentences`).
2. Embed each sentence: unit vectors :math:`e_i` from :func:`reference.models.bert.embed_sentences` (all-MiniLM-L6-v2).
3. Score each sentence by how central it is:

   - ``centroid``: cosine to the document's mean vector, :math:`s_i = e_i^\top c / \lVert c\rVert`,
     :math:`c = \frac1N \sum_j e_j`;
   - ``textrank`` (Mihalcea and Tarau, 2004): PageRank on the graph whose edge weights are the cosine
     similarities :math:`w_{ij} = \max(e_i^\top e_j, 0)`, :math:`w_{ii} = 0`. With the row-normalised transition
     matrix :math:`P_{ij} = w_{ij} / \sum_k w_{ik}` and damping :math:`d = 0.85`, the scores are the fixed point
     of :math:`r = \frac{1-d}{N}\mathbf 1 + d\, P^\top r`, found by power iteration.

4. Keep the ``k`` best (ties: the earlier sentence) and return them in their original order.

The command line is ``python -m reference.summarize`` (``reference/summarize.py``).
"""
import re

import numpy as np

from reference.models import bert

METHODS = ("centroid", "textrank")

SENTENCE = re.compile(
    r"""\S.*?                                     # a sentence starts at a non-space and runs, lazily, up to
        (?: [.!?]+ ["'”’)\]]* (?=\s|$)           # . ! ? (with closing quotes/brackets) before whitespace or the end,
          | [。！？]+ [”’」』)\]]*                  # or a CJK full stop / ! / ? (CJK puts no space after them),
          | (?=\n[^\S\n]*\n)                       # or a blank line (a paragraph break ends a heading),
          | $ )                                    # or the end of the text
    """,
    re.S | re.X)


def split_sentences(text):
    """Text -> sentences, each with its runs of whitespace collapsed to one space.

    A sentence ends at ``.``, ``!`` or ``?`` (possibly repeated, and followed by closing quotes or brackets) when
    whitespace or the end of the text follows, at ``。！？`` directly, or at a blank line. So ``3.14`` and
    ``example.com`` do not split a sentence; abbreviations followed by a space (``e.g. this``, ``Dr. Smith``) do,
    a known limit of a regex splitter.
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    return [" ".join(m.group(0).split()) for m in SENTENCE.finditer(text)]


def textrank(S, damping=0.85, tol=1e-12, max_iter=1000):
    r"""PageRank scores on a similarity graph, by power iteration.

    Parameters
    ----------
    S : (N, N) float array, similarities; negative entries and the diagonal are ignored (set to 0).
    damping : float in [0, 1)
    tol : float
        Stop when :math:`\lVert r_{t+1} - r_t\rVert_1 < \mathrm{tol}`; the error then shrinks by ``damping`` each step.
    max_iter : int

    Returns
    -------
    r : (N,) float64, positive, sums to 1. A sentence with no positive edge (a dangling node) spreads its rank
    uniformly, as in PageRank.
    """
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"S: expected a square (N, N) similarity matrix, got shape {S.shape}")
    if not 0 <= damping < 1:
        raise ValueError(f"damping: expected a value in [0, 1), got {damping}")
    N = S.shape[0]
    if N == 0:
        return np.zeros(0)
    W = np.maximum(S, 0.0)                                       # (N, N) edge weights
    np.fill_diagonal(W, 0.0)
    out = W.sum(axis=1, keepdims=True)                           # (N, 1) weighted out-degree
    P = np.where(out > 0, W / np.where(out > 0, out, 1.0), 1.0 / N)   # (N, N) row-stochastic
    r = np.full(N, 1.0 / N)                                      # (N,)
    for _ in range(max_iter):
        r_next = (1 - damping) / N + damping * (P.T @ r)          # (N,)
        if np.abs(r_next - r).sum() < tol:
            return r_next
        r = r_next
    return r


def centrality(E, method="textrank"):
    """Centrality score of each row of ``E`` (N, C), unit sentence vectors; higher is more central. -> (N,)."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    E = np.asarray(E, dtype=np.float64)
    if method == "centroid":
        c = E.mean(axis=0)                                       # (C,)
        return E @ c / max(np.linalg.norm(c), 1e-12)            # (N,)
    return textrank(E @ E.T)


def summarize(text, k=3, method="textrank", params=None, config=None):
    """The ``k`` most central sentences of ``text``, in their original order (all of them if there are <= k).

    ``params, config`` default to the installed all-MiniLM-L6-v2 (see :func:`reference.models.bert.embed_sentences`).
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    sentences = split_sentences(text)
    if len(sentences) <= k:
        return sentences
    scores = centrality(bert.embed_sentences(sentences, params, config), method)
    best = np.argsort(-scores, kind="stable")[:k]               # ties: the earlier sentence wins
    return [sentences[i] for i in sorted(best)]
