r"""A small sequence-to-sequence task for the paper's encoder-decoder: reverse a string of digits.

The task is chosen because its answer is an alignment that can be seen: target position :math:`t` of a reversed
string of length :math:`n` copies source position :math:`n - 1 - t`, so a model that has learned it should show an
anti-diagonal in its cross-attention. It needs no corpus and no tokenizer, and exact-match accuracy on held-out
strings says plainly whether the model learned the rule or memorised examples.

Ids (one vocabulary for source and target, :data:`VOCAB_SIZE` = 13)::

    PAD = 0, BOS = 1, EOS = 2, digit k = 3 + k

A batch of pairs ``(src, tgt)`` (lists of digits) becomes, with S and T the longest source and target plus one::

    src_ids   (B, S)  digits, then EOS, then PAD          src_mask (B, S)  True = a real token (EOS included)
    tgt_in    (B, T)  BOS, then the target's digits, PAD  tgt_mask (B, T)  True = a real token
    tgt_out   (B, T)  the target's digits, then EOS, then IGNORE: the next-token labels of teacher forcing

``tgt_in`` is ``tgt_out`` shifted right by one behind a BOS, so position t of the decoder sees the target's tokens
before t and predicts token t (teacher forcing). Padding positions of ``tgt_out`` hold :data:`IGNORE`, for
``cross_entropy.forward(..., ignore_index=IGNORE)`` and ``label_smoothing.forward(..., ignore_index=IGNORE)``.
"""
import numpy as np

PAD, BOS, EOS = 0, 1, 2
DIGIT0 = 3
VOCAB_SIZE = DIGIT0 + 10
IGNORE = -1


def reversal_pairs(n, min_len, max_len, rng, exclude=()):
    """``n`` distinct random digit strings of length in [min_len, max_len] and their reversals.

    Parameters
    ----------
    n : int >= 0
    min_len, max_len : 1 <= min_len <= max_len
    rng : numpy.random.Generator
    exclude : collection of tuples; strings never to return (the training set, when drawing a test set)

    Returns
    -------
    list of (src, tgt) tuples of ints in 0..9, ``tgt == src[::-1]``
    """
    if not (isinstance(min_len, (int, np.integer)) and isinstance(max_len, (int, np.integer))
            and 1 <= min_len <= max_len):
        raise ValueError(f"min_len, max_len: expected 1 <= min_len <= max_len, got {min_len!r}, {max_len!r}")
    available = sum(10 ** k for k in range(min_len, max_len + 1)) - len(set(exclude))
    if not 0 <= n <= available:
        raise ValueError(f"n: expected 0 <= n <= {available} distinct strings of length {min_len}..{max_len}, got {n}")
    seen, pairs = set(exclude), []
    while len(pairs) < n:
        length = int(rng.integers(min_len, max_len + 1))
        src = tuple(int(d) for d in rng.integers(0, 10, size=length))
        if src not in seen:
            seen.add(src)
            pairs.append((src, src[::-1]))
    return pairs


def make_batch(pairs):
    """Padded id arrays for teacher forcing (module docstring): src_ids, src_mask, tgt_in, tgt_out, tgt_mask."""
    if not pairs:
        raise ValueError("pairs: expected at least one (src, tgt) pair")
    B = len(pairs)
    S = max(len(s) for s, _ in pairs) + 1                           # + EOS
    T = max(len(t) for _, t in pairs) + 1                           # + BOS (in) or EOS (out)
    src_ids = np.full((B, S), PAD, dtype=np.int64)
    tgt_in = np.full((B, T), PAD, dtype=np.int64)
    tgt_out = np.full((B, T), IGNORE, dtype=np.int64)
    for b, (src, tgt) in enumerate(pairs):
        src_ids[b, :len(src)] = np.asarray(src, dtype=np.int64) + DIGIT0
        src_ids[b, len(src)] = EOS
        tgt_in[b, 0] = BOS
        tgt_in[b, 1:len(tgt) + 1] = np.asarray(tgt, dtype=np.int64) + DIGIT0
        tgt_out[b, :len(tgt)] = np.asarray(tgt, dtype=np.int64) + DIGIT0
        tgt_out[b, len(tgt)] = EOS
    return src_ids, src_ids != PAD, tgt_in, tgt_in != PAD, tgt_out


def decode_digits(ids):
    """The digits of one generated sequence of ids, up to (not including) the first EOS; other specials dropped."""
    out = []
    for i in np.asarray(ids).tolist():
        if i == EOS:
            break
        if i >= DIGIT0:
            out.append(i - DIGIT0)
    return tuple(out)


def exact_match(predicted, pairs):
    """The fraction of pairs whose predicted digit string (a tuple per pair) equals the target exactly."""
    if len(predicted) != len(pairs):
        raise ValueError(f"predicted: expected {len(pairs)} sequences, one per pair, got {len(predicted)}")
    return float(np.mean([tuple(p) == tuple(t) for p, (_, t) in zip(predicted, pairs)])) if pairs else 0.0
