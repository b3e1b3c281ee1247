r"""Greedy decoding for the encoder-decoder of ``reference/models/transformer.py``.

The source is encoded once; the decoder then runs on a growing target that starts with a start token (BOS), and
each step appends the most likely next token:

.. math:: m = \operatorname{Encoder}(x), \qquad y_{t+1} = \arg\max_v \operatorname{Decoder}(y_{0..t}, m)_{t, v},
          \qquad y_0 = \text{BOS}

until every row has produced the end token (EOS) or ``max_new_tokens`` tokens. This is the model of evaluation
(no dropout). Each step runs the decoder over the whole prefix again: for the short targets this is used for
(the digit-reversal task of ``reference/training/seq2seq.py``, at most a few dozen tokens) the repeated work is
small, and the code stays the model's own forward. (Chapter 4's KV cache removes it for the GPT.)

Because the decoder is causal, the last step's pass computes, at every position t, exactly what the step that
generated token t + 1 computed; its cross-attention is therefore the attention the model used while generating
(:func:`greedy` returns that pass's cache, for ``transformer.cross_attention``).

A row that has produced EOS keeps receiving argmax tokens until the others finish; they come after its EOS and
the caller cuts there (``seq2seq.decode_digits``). Nothing after EOS changes the tokens before it: causality again.
"""
import numpy as np

from reference._checks import check_count
from reference.models import transformer


def greedy(params, config, src_ids, bos, eos, max_new_tokens, src_pad_mask=None):
    """Greedy decoding of a batch of sources.

    Parameters
    ----------
    params : dict from ``transformer.init_params``
    config : transformer.TransformerConfig
    src_ids : int ndarray (B, S)
    bos, eos : int
        The target vocabulary's start and end tokens.
    max_new_tokens : int >= 1
        The most tokens generated per row (EOS included).
    src_pad_mask : bool ndarray (B, S), optional
        True = real source token.

    Returns
    -------
    tokens : int64 ndarray (B, n), n <= max_new_tokens
        The generated tokens, BOS not included; decoding stops as soon as every row holds an EOS.
    cache : transformer.DecoderCache
        The decoder's cache of the last step (inputs ``[BOS, tokens[:, :-1]]``): its cross-attention row t is the
        one that produced ``tokens[:, t]``.
    """
    for name, tok in (("bos", bos), ("eos", eos)):
        if isinstance(tok, (bool, np.bool_)) or not isinstance(tok, (int, np.integer)) \
                or not 0 <= tok < config.tgt_vocab_size:
            raise ValueError(f"{name}: expected a token id in [0, {config.tgt_vocab_size}), got {tok!r}")
    max_new_tokens = check_count("max_new_tokens", max_new_tokens, minimum=1)
    memory, _ = transformer.encode(params, config, src_ids, src_pad_mask)            # (B, S, C), once
    B = src_ids.shape[0]
    prefix = np.full((B, 1), bos, dtype=np.int64)                                     # (B, 1) BOS
    finished = np.zeros(B, dtype=bool)
    for _ in range(max_new_tokens):
        logits, cache = transformer.decode(params, config, memory, prefix, src_pad_mask)   # (B, t, V)
        nxt = logits[:, -1].argmax(axis=-1)                                           # (B,) the most likely token
        prefix = np.concatenate([prefix, nxt[:, None]], axis=1)
        finished |= nxt == eos
        if finished.all():
            break
    return prefix[:, 1:], cache
