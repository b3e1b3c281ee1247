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

At real sizes
-------------
A 5 MB text has about 37 000 sentences, so three things are bounded:

- **Embedding** runs in batches of at most :data:`TOKEN_BUDGET` tokens (batch size times its longest sentence),
  with the sentences sorted by length so that a batch holds sentences of similar lengths and little padding. The
  encoder's memory then depends on the budget, not on the text, and a progress bar counts the sentences.
- **TextRank** builds the dense N x N similarity matrix only up to :data:`DENSE_MAX` sentences (2 000: a 32 MB
  float64 matrix). Above that, :func:`textrank_sparse` keeps for each sentence its :data:`NEIGHBOURS` most similar
  sentences, computed :data:`BLOCK` rows at a time, and runs PageRank on that sparse graph: memory O(N k) instead
  of O(N^2). With ``k >= N - 1`` it is exactly the dense TextRank (tested); with fewer neighbours it is the usual
  k-nearest-neighbour approximation of the graph.
- The **centroid** score is O(N C) at any size.

``bench/summarize.py`` measures the time and peak memory at 50 KB, 500 KB and 5 MB (``bench/results/summarize.json``):
on one core of a busy machine, 52 s, 438 s and 58 min (embedding is 99 % of it), with peak memory 650, 706 and
828 MB, the process and the model included.

Languages
---------
all-MiniLM-L6-v2 has BERT's English uncased WordPiece vocabulary. On Chinese text most characters are ``[UNK]``
(67 % of the tokens of the material's sections 1 and 2), and the embeddings of such sentences say little about them.
So :func:`summarize_detailed` first measures the unknown-token rate (on up to :data:`UNK_SAMPLE` sentences spread over
the text). Above :data:`UNK_THRESHOLD` (5 %) it warns and scores with a language-independent method instead:
:func:`char_ngram_centroid`, the cosine of each sentence's character n-gram TF-IDF vector to the document's mean
vector. It needs no vocabulary and no word segmentation, so it works on Chinese, whose words are not separated by
spaces. The result says which scorer produced the summary.
"""
import math
import re
import warnings
from collections import Counter
from typing import NamedTuple

import numpy as np

from reference.models import bert

METHODS = ("centroid", "textrank")
SCORERS = ("auto", "minilm", "char-ngram")
TOKEN_BUDGET = 2048          # tokens per embedding batch (rows x longest row, padding included)
DENSE_MAX = 2000             # TextRank on the dense similarity matrix up to this many sentences
NEIGHBOURS = 32              # above it, each sentence keeps this many most similar sentences
BLOCK = 128                  # rows of the similarity matrix computed at a time in textrank_sparse
UNK_THRESHOLD = 0.05         # above this fraction of [UNK] tokens, "auto" falls back to char n-grams
UNK_SAMPLE = 2000            # sentences on which the [UNK] rate is measured (spread evenly over the text)
NGRAMS = (1, 2, 3)           # character n-gram lengths of the fallback scorer

SENTENCE = re.compile(
    r"""\S.*?                                     # a sentence starts at a non-space and runs, lazily, up to
        (?: [.!?]+ ["'”’)\]]* (?=\s|$)           # . ! ? (with closing quotes/brackets) before whitespace or the end,
          | [。！？]+ [”’」』)\]]*                  # or a CJK full stop / ! / ? (CJK puts no space after them),
          | (?=\n[^\S\n]*\n)                       # or a blank line (a paragraph break ends a heading),
          | $ )                                    # or the end of the text
    """,
    re.S | re.X)
ENUMERATOR = re.compile(r"\(?(?:\d{1,3}|[a-z]|[ivx]{1,5})[.)]", re.I)    # "2.", "(b)", "iv.", "3)"


def split_sentences(text):
    """Text -> sentences, each with its runs of whitespace collapsed to one space.

    A sentence ends at ``.``, ``!`` or ``?`` (possibly repeated, and followed by closing quotes or brackets) when
    whitespace or the end of the text follows, at ``。！？`` directly, or at a blank line. So ``3.14`` and
    ``example.com`` do not split a sentence; abbreviations followed by a space (``e.g. this``, ``Dr. Smith``) do,
    a known limit of a regex splitter. A list number on its own (``2.``, ``iv.``, ``(b)``, ``3)``) is not a
    sentence: it is joined to the sentence that follows it.
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    sentences = []
    for m in SENTENCE.finditer(text):
        sentence = " ".join(m.group(0).split())
        if sentences and ENUMERATOR.fullmatch(sentences[-1]):
            sentences[-1] += " " + sentence
        else:
            sentences.append(sentence)
    return sentences


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


def textrank_sparse(E, k=NEIGHBOURS, damping=0.85, tol=1e-12, max_iter=1000, block=BLOCK):
    r"""TextRank on the graph that keeps each sentence's ``k`` most similar sentences: memory O(N k), not O(N^2).

    Parameters
    ----------
    E : (N, C) unit sentence vectors (similarities :math:`e_i^\top e_j`, computed ``block`` rows at a time)
    k : int, neighbours kept per sentence (edges :math:`i \to j` with the k largest positive similarities)
    damping, tol, max_iter : as in :func:`textrank`

    Returns
    -------
    r : (N,) float64. With ``k >= N - 1`` it equals ``textrank(E @ E.T)`` (every positive edge is kept).
    """
    E = np.asarray(E)
    if E.ndim != 2:
        raise ValueError(f"E: expected (N, C) sentence vectors, got shape {E.shape}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    N = E.shape[0]
    if N == 0:
        return np.zeros(0)
    k = min(k, N - 1)
    rows, cols, vals = [], [], []
    for i0 in range(0, N, block):
        S = (E[i0:i0 + block] @ E.T).astype(np.float64, copy=False)     # (b, N), one block of rows
        b = S.shape[0]
        S[np.arange(b), np.arange(i0, i0 + b)] = -np.inf                 # no self-loops
        if k < N - 1:
            nbr = np.argpartition(S, N - k, axis=1)[:, N - k:]           # (b, k) the k most similar
        else:
            nbr = np.broadcast_to(np.arange(N), (b, N))
        w = np.take_along_axis(S, nbr, axis=1)                           # (b, k)
        keep = w > 0                                                     # only positive similarities are edges
        rows.append(np.broadcast_to(np.arange(i0, i0 + b)[:, None], nbr.shape)[keep])
        cols.append(nbr[keep])
        vals.append(w[keep])
    rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)   # (n_edges,)
    out = np.bincount(rows, weights=vals, minlength=N)                   # (N,) weighted out-degree
    dangling = out == 0                                                  # no positive edge: spread uniformly
    p = vals / out[rows]                                                 # (n_edges,) P_ij, rows sum to 1
    r = np.full(N, 1.0 / N)
    for _ in range(max_iter):
        spread = np.bincount(cols, weights=p * r[rows], minlength=N) + r[dangling].sum() / N   # (P^T r)
        r_next = (1 - damping) / N + damping * spread
        if np.abs(r_next - r).sum() < tol:
            return r_next
        r = r_next
    return r


def centrality(E, method="textrank"):
    """Centrality score of each row of ``E`` (N, C), unit sentence vectors; higher is more central. -> (N,).

    TextRank uses the dense similarity matrix up to :data:`DENSE_MAX` rows, :func:`textrank_sparse` above.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    E = np.asarray(E, dtype=np.float64)
    if method == "centroid":
        c = E.mean(axis=0)                                       # (C,)
        return E @ c / max(np.linalg.norm(c), 1e-12)            # (N,)
    if E.shape[0] > DENSE_MAX:
        return textrank_sparse(E)
    return textrank(E @ E.T)


# ---------------------------------------------------------------------------------------------------------------
# Embedding at any size, and how much of the text the vocabulary knows
# ---------------------------------------------------------------------------------------------------------------

def unk_rate(sentences, wordpiece=None, sample=UNK_SAMPLE):
    """Fraction of the WordPiece tokens that are ``[UNK]``, over up to ``sample`` sentences spread evenly over the
    text (all of them if there are fewer). 0.0 for a text without tokens."""
    wordpiece = wordpiece or bert.tokenizer()
    if len(sentences) > sample:
        sentences = [sentences[i] for i in np.linspace(0, len(sentences) - 1, sample).astype(int)]
    n = unk = 0
    for s in sentences:
        tokens = wordpiece.tokenize(s)
        n += len(tokens)
        unk += tokens.count("[UNK]")
    return unk / n if n else 0.0


def embed(sentences, params=None, config=None, wordpiece=None, token_budget=TOKEN_BUDGET, progress=False):
    """Unit sentence vectors (N, C) float32, as :func:`reference.models.bert.embed_sentences`, in bounded batches.

    Sentences are taken shortest first and grouped so that a batch's rows times its longest row stays within
    ``token_budget`` tokens (a sentence longer than the budget goes alone); each is tokenized when its batch is
    built, so only one batch of ids exists at a time. A sentence longer than the model's ``max_seq_length`` keeps
    its first tokens, as in ``embed_sentences``; one warning counts them.
    """
    if (params is None) != (config is None):
        raise ValueError("params and config: pass both (from bert.from_pretrained) or neither (the default model)")
    if params is None:
        params, config = _default_model()
    wordpiece = wordpiece or bert.tokenizer()
    if not isinstance(token_budget, int) or token_budget < 1:
        raise ValueError(f"token_budget: expected a positive int, got {token_budget!r}")
    N, max_len = len(sentences), config.max_seq_length
    out = np.zeros((N, config.d_model), dtype=np.float32)             # (N, C)
    order = sorted(range(N), key=lambda i: len(sentences[i]))             # characters: a proxy for tokens
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=N, unit="sentence", desc="embedding", leave=False)
    truncated = 0
    batch, rows, longest = [], [], 0

    def flush():
        T = max(len(r) for r in batch)
        ids = np.full((len(batch), T), wordpiece.pad_id, dtype=np.int64)  # (b, T)
        mask = np.zeros((len(batch), T), dtype=np.int64)                  # (b, T)
        for j, r in enumerate(batch):
            ids[j, :len(r)] = r
            mask[j, :len(r)] = 1
        hidden, _ = bert.forward(params, config, ids, mask)               # (b, T, C)
        out[rows] = bert.l2_normalize(bert.mean_pool(hidden, mask))
        if bar is not None:
            bar.update(len(batch))

    for i in order:
        r = wordpiece.encode(sentences[i])
        if len(r) > max_len:
            truncated += 1
            r = r[:max_len - 1] + [wordpiece.sep_id]
        if batch and (len(batch) + 1) * max(longest, len(r)) > token_budget:
            flush()
            batch, rows, longest = [], [], 0
        batch.append(r)
        rows.append(i)
        longest = max(longest, len(r))
    if batch:
        flush()
    if bar is not None:
        bar.close()
    if truncated:
        warnings.warn(f"{truncated} sentence(s) had more than the model's maximum of {max_len} tokens and were "
                      f"truncated to their first {max_len - 2} tokens plus [CLS]/[SEP]", stacklevel=2)
    return out


_DEFAULT = {}


def _default_model():
    if "model" not in _DEFAULT:
        _DEFAULT["model"] = bert.from_pretrained()
    return _DEFAULT["model"]


# ---------------------------------------------------------------------------------------------------------------
# The language-independent scorer
# ---------------------------------------------------------------------------------------------------------------

def char_ngrams(sentence, ns=NGRAMS):
    """Counts of the character n-grams of ``sentence`` (spaces collapsed), for each n in ``ns``."""
    s = " ".join(sentence.split())
    grams = Counter()
    for n in ns:
        grams.update(s[i:i + n] for i in range(len(s) - n + 1))
    return grams


def char_ngram_centroid(sentences, ns=NGRAMS):
    r"""Centrality by character n-gram TF-IDF: the cosine of each sentence's vector to the document's mean vector.

    A sentence's vector has one entry per character n-gram g (n in ``ns``):
    :math:`w_g = (1 + \log \mathrm{tf}_g)\,\mathrm{idf}_g` with :math:`\mathrm{idf}_g = \log\frac{1 + N}{1 +
    \mathrm{df}_g} + 1` (N sentences, :math:`\mathrm{df}_g` of them contain g), scaled to unit length. Then, as the
    ``centroid`` score, :math:`s_i = v_i^\top c / \lVert c\rVert` with :math:`c = \frac1N \sum_j v_j`. Vectors
    are sparse (dicts), so memory is linear in the text.

    Returns
    -------
    (N,) float64 scores (0 for a sentence without characters).
    """
    grams = [char_ngrams(s, ns) for s in sentences]
    N = len(grams)
    df = Counter()
    for g in grams:
        df.update(g.keys())
    idf = {g: math.log((1 + N) / (1 + d)) + 1 for g, d in df.items()}
    vectors = []
    centroid = Counter()
    for g in grams:
        v = {t: (1 + math.log(c)) * idf[t] for t, c in g.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        v = {t: x / norm for t, x in v.items()}
        vectors.append(v)
        for t, x in v.items():
            centroid[t] += x / N
    c_norm = math.sqrt(sum(x * x for x in centroid.values())) or 1.0
    return np.array([sum(x * centroid[t] for t, x in v.items()) / c_norm for v in vectors], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------------
# The summary
# ---------------------------------------------------------------------------------------------------------------

class Summary(NamedTuple):
    """What :func:`summarize_detailed` returns."""

    sentences: list            # the chosen sentences, in their original order
    scorer: str                # what scored them, e.g. "MiniLM textrank" or "char n-gram TF-IDF centroid"
    unk_rate: float            # fraction of [UNK] WordPiece tokens (measured unless scorer="char-ngram": then nan)
    n_sentences: int           # sentences in the text


def summarize_detailed(text, k=3, method="textrank", params=None, config=None, scorer="auto", progress=False):
    """The ``k`` most central sentences of ``text`` in their order, with the scorer that chose them.

    Parameters
    ----------
    text : str
    k : int
    method : "textrank" or "centroid", for the MiniLM scorer
    params, config : the BERT; default the installed all-MiniLM-L6-v2
    scorer : "auto" (MiniLM, unless more than :data:`UNK_THRESHOLD` of the tokens are [UNK]: then char n-grams,
        with a warning), "minilm" or "char-ngram"
    progress : bool, a progress bar over the embedded sentences

    Returns
    -------
    Summary
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if scorer not in SCORERS:
        raise ValueError(f"scorer: expected one of {SCORERS}, got {scorer!r}")
    sentences = split_sentences(text)
    rate = float("nan") if scorer == "char-ngram" else unk_rate(sentences)
    if scorer == "auto":
        scorer = "minilm"
        if rate > UNK_THRESHOLD:
            warnings.warn(f"{rate:.0%} of the text's tokens are unknown to MiniLM's English vocabulary ([UNK]; the "
                          f"threshold is {UNK_THRESHOLD:.0%}): scoring with character n-gram TF-IDF instead",
                          stacklevel=2)
            scorer = "char-ngram"
    name = f"MiniLM {method}" if scorer == "minilm" else "char n-gram TF-IDF centroid"
    if len(sentences) <= k:
        return Summary(sentences, name, rate, len(sentences))
    if scorer == "minilm":
        scores = centrality(embed(sentences, params, config, progress=progress), method)
    else:
        scores = char_ngram_centroid(sentences)
    best = np.argsort(-scores, kind="stable")[:k]               # ties: the earlier sentence wins
    return Summary([sentences[i] for i in sorted(best)], name, rate, len(sentences))


def summarize(text, k=3, method="textrank", params=None, config=None, scorer="auto", progress=False):
    """The ``k`` most central sentences of ``text``, in their original order (all of them if there are <= k).

    ``params, config`` default to the installed all-MiniLM-L6-v2. See :func:`summarize_detailed` for ``scorer``
    (by default MiniLM, or character n-grams with a warning when the vocabulary does not know the language).
    """
    return summarize_detailed(text, k, method, params, config, scorer, progress).sentences
