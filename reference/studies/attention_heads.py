r"""What the heads of a trained GPT attend to: the attention weights of every layer and head, and numbers per head.

:func:`attention_weights` runs :mod:`reference.models.gpt`'s forward pass step by step with the same ops (pre-LN
blocks, causal multi-head attention, GELU FFN) and keeps each block's attention probabilities
:math:`P = \mathrm{softmax}(QK^\top/\sqrt{d_k} + \text{mask})` of shape (B, H, T, T); it also returns the logits,
which ``tests/studies/test_attention_heads.py`` holds equal to ``gpt.forward``'s.

:func:`head_statistics` turns the weights into numbers that name what a head does, each a mean over the query
positions :math:`i \ge 1` (position 0 can only attend to itself) and over the batch:

- ``previous``: :math:`P_{i,i-1}`, the weight on the token just before (a "previous-token head" puts most of its
  weight there);
- ``first``: :math:`P_{i,0}`, the weight on the first position of the window (heads with nothing to look for often
  park their weight on the start: an "attention sink");
- ``self``: :math:`P_{i,i}`;
- ``distance``: :math:`\sum_j P_{i,j}(i - j)`, how far back the head looks on average;
- ``entropy``: :math:`-\sum_j P_{i,j}\log P_{i,j}` in nats, with ``uniform_entropy`` :math:`\log(i+1)` beside it
  (the most spread a causal row can be): a low ratio means a sharp head;
- ``same_token`` (when ``ids`` are given): the weight on earlier positions holding the same token as the query,
  beside ``same_token_chance``, the share of visible positions that do (the weight a head blind to content would
  give them);
- ``on_spaces``, ``on_last_space`` (when ``space_id`` is given too): the weight on all spaces, and on the most
  recent space (the start of the word being written), beside ``space_fraction``, the share of visible positions
  that are spaces.
"""
import numpy as np

from reference.ops import attention, embedding, ffn, layernorm, multihead


def attention_weights(params, config, ids):
    """Attention probabilities of every block, and the logits, for token ids (B, T).

    Returns
    -------
    weights : list of L ndarrays (B, H, T, T), rows summing to 1, zero above the diagonal
    logits : ndarray (B, T, V), equal to ``gpt.forward(params, config, ids)[0]``
    """
    if config.positional != "learned":
        raise ValueError(f"config.positional: expected 'learned' (the book's GPT), got {config.positional!r}")
    T = ids.shape[1]
    if T > config.block_size:
        raise ValueError(f"ids: sequence length T={T} exceeds the model's block_size={config.block_size}")
    tok, _ = embedding.forward(ids, params["wte"])                       # (B, T, C)
    x = tok + params["wpe"][:T]                                          # (B, T, C)
    mask = attention.causal_mask(T, T)                                   # (T, T)
    weights = []
    for p in params["blocks"]:
        h, _ = layernorm.forward(x, p["ln1"]["gamma"], p["ln1"]["beta"], eps=config.ln_eps)
        y, cache = multihead.forward(h, h, p["attn"], config.n_head, mask=mask)
        weights.append(multihead.attention_probs(cache).copy())         # (B, H, T, T), not a view into the cache
        x = x + y
        h, _ = layernorm.forward(x, p["ln2"]["gamma"], p["ln2"]["beta"], eps=config.ln_eps)
        m = p["ffn"]
        x = x + ffn.forward(h, m["W1"], m["b1"], m["W2"], m["b2"], activation=config.activation)[0]
    xf, _ = layernorm.forward(x, params["ln_f"]["gamma"], params["ln_f"]["beta"], eps=config.ln_eps)
    return weights, xf @ params["wte"].T


def head_statistics(P, ids=None, space_id=None):
    r"""Per-head means of the quantities in the module docstring, for weights ``P`` (B, H, T, T) of one layer.

    Parameters
    ----------
    P : ndarray (B, H, T, T), causal attention probabilities, T >= 2
    ids : int ndarray (B, T), optional; the tokens, for ``same_token`` (and the space statistics)
    space_id : int, optional; the id of the space, for ``on_spaces`` and ``on_last_space``

    Returns
    -------
    dict of ndarrays (H,)
    """
    B, H, T, _ = P.shape
    if T < 2:
        raise ValueError(f"P: expected T >= 2 (position 0 has no previous token), got T = {T}")
    i = np.arange(1, T)                                                  # (T - 1,) query positions
    P64 = P.astype(np.float64)
    rows = P64[:, :, 1:, :]                                              # (B, H, T - 1, T)
    back = i[:, None] - np.arange(T)[None, :]                            # (T - 1, T) i - j
    visible = back >= 0                                                  # (T - 1, T) keys a query can see
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(rows > 0, rows * np.log(rows), 0.0)
    stats = {
        "previous": P64[:, :, i, i - 1].mean(axis=(0, 2)),
        "first": P64[:, :, 1:, 0].mean(axis=(0, 2)),
        "self": P64[:, :, i, i].mean(axis=(0, 2)),
        "distance": (rows * np.where(visible, back, 0)).sum(-1).mean(axis=(0, 2)),
        "entropy": -plogp.sum(-1).mean(axis=(0, 2)),
        "uniform_entropy": np.full(H, np.log(i + 1).mean()),
    }
    if ids is None:
        return stats

    def mass_and_chance(keys):
        """Mean weight on the keys marked True (B, T - 1, T), and the share of visible keys marked (no content)."""
        k = keys.astype(np.float64)
        return (np.einsum("bhij,bij->bhi", rows, k).mean(axis=(0, 2)),
                np.full(H, ((k * visible).sum(-1) / visible.sum(-1)).mean()))

    same = (ids[:, 1:, None] == ids[:, None, :]) & (back > 0)            # (B, T - 1, T) same token, strictly earlier
    stats["same_token"], stats["same_token_chance"] = mass_and_chance(same)
    if space_id is not None:
        space = np.broadcast_to((ids == space_id)[:, None, :], same.shape) & visible    # (B, T - 1, T)
        stats["on_spaces"], stats["space_fraction"] = mass_and_chance(space)
        # the most recent space at or before each query: the start of the word being written
        last = np.where(space, np.arange(T), -1).max(-1)                # (B, T - 1), -1 = none yet
        last_space = (np.arange(T) == last[..., None]) & (last[..., None] >= 0)
        stats["on_last_space"], _ = mass_and_chance(last_space)
    return stats
