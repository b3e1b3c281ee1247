r"""Worked solutions to the exercises of chapter 8 ("A worked example, made correct").

``tests/book/test_solutions_08.py`` checks each one.
"""
import numpy as np

from reference.inference import summarizer
from reference.models import bert


def mmr_select(E, k, lam=0.7):
    r"""Exercise 1: maximal marginal relevance (Carbonell and Goldstein, 1998) over unit sentence vectors.

    Relevance is the centroid score of ``reference/inference/summarizer.py``, :math:`s_i = e_i^\top c / \lVert c\rVert`.
    Sentences are picked one at a time; the next is

    .. math:: \arg\max_{i \notin S}\ \lambda\, s_i - (1 - \lambda) \max_{j \in S} e_i^\top e_j

    (the redundancy term is 0 while S is empty). :math:`\lambda = 1` is the centroid ranking; a smaller
    :math:`\lambda` penalises a sentence that repeats one already picked, and a duplicate (cosine 1) pays the most.

    Parameters
    ----------
    E : (N, C) unit vectors
    k : int, sentences to pick
    lam : float in [0, 1]

    Returns
    -------
    list of int, the picked indices in their original order (ties: the earlier sentence).
    """
    if not 0 <= lam <= 1:
        raise ValueError(f"lam: expected a value in [0, 1], got {lam!r}")
    E = np.asarray(E, dtype=np.float64)
    N = E.shape[0]
    relevance = summarizer.centrality(E, "centroid")                         # (N,)
    S = E @ E.T                                                             # (N, N) cosines
    picked = []
    redundancy = np.zeros(N)                                                # (N,) max cosine to the picked
    for _ in range(min(k, N)):
        gain = lam * relevance - (1 - lam) * redundancy                     # (N,)
        gain[picked] = -np.inf
        i = int(np.argmax(gain))                                            # first maximum: the earlier sentence
        picked.append(i)
        redundancy = np.maximum(redundancy, S[i])
    return sorted(picked)


def attention_entropy(attentions, attention_mask):
    r"""Exercise 2: mean entropy (nats) of each head's attention rows over the real query tokens, (L, H).

    :math:`H_{row} = -\sum_j a_j \log a_j` over the keys (padding keys have :math:`a_j = 0` and add nothing).
    A head that spreads a row uniformly over n real tokens has entropy :math:`\log n`; a head that puts all of it
    on one token has 0. Rows of padding queries are left out of the mean.

    Parameters
    ----------
    attentions : list of L arrays (B, H, T, T), rows summing to 1 (``bert.forward(..., return_attentions=True)``)
    attention_mask : (B, T), 1/True for real tokens
    """
    m = np.asarray(attention_mask).astype(bool)                             # (B, T)
    out = []
    for a in attentions:
        a = np.asarray(a, dtype=np.float64)
        plogp = np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0)   # (B, H, T, T), 0 log 0 = 0
        ent = -plogp.sum(axis=-1)                                           # (B, H, T) one per query row
        w = m[:, None, :].astype(np.float64)                                # (B, 1, T) real query rows
        out.append((ent * w).sum(axis=(0, 2)) / m.sum())                  # (H,)
    return np.stack(out)                                                    # (L, H)


def sentence_entropy(sentence, params=None, config=None):
    """Exercise 2, applied: attention_entropy of MiniLM's heads on one sentence, and its token count."""
    if params is None:
        params, config = bert.from_pretrained()
    ids = np.array([bert.tokenizer().encode(sentence)])                    # (1, T)
    _, _, att = bert.forward(params, config, ids, return_attentions=True)
    return attention_entropy(att, np.ones_like(ids)), ids.shape[1]


def semantic_search(query, sentences, params=None, config=None):
    """Exercise 3: the sentences ranked by cosine similarity to ``query`` (unit embeddings, so a dot product).

    Returns ``(order, scores)``: indices best first, and the cosine of each sentence (in the input order).
    """
    E = bert.embed_sentences([query] + list(sentences), params, config)    # (1 + N, C)
    scores = E[1:] @ E[0]                                                   # (N,)
    return np.argsort(-scores, kind="stable"), scores
