r"""Worked solutions to the exercises of chapter 4 ("Inference: from a prompt to text").

``tests/book/test_solutions_04.py`` checks each one against ``reference/inference/decoding.py``.
"""
import numpy as np

from reference.inference import decoding as gen
from reference.ops import softmax


def kv_cache_bytes(config, batch, n_tokens, dtype=np.float32):
    r"""Exercise 1: bytes of a KV cache for ``batch`` sequences of ``n_tokens`` tokens.

    Every layer keeps a key and a value of width :math:`H \cdot d_k = d_{model}` per token and sequence:

    .. math:: 2 \cdot L \cdot d_{model} \cdot T \cdot B \cdot \text{bytes per number}

    (the boolean padding mask, :math:`B \cdot T` bytes, and the positions, :math:`8B` bytes, are left out: they do
    not grow with the model). For chapter 4's "small" model (L = 4, d = 128), 32 sequences of 128 tokens in
    float32 take 2 * 4 * 128 * 128 * 32 * 4 = 16 MiB.
    """
    return 2 * config.n_layer * config.d_model * n_tokens * batch * np.dtype(dtype).itemsize


def cache_array_bytes(cache):
    """The bytes actually held by the keys and values of a :class:`reference.inference.decoding.KVCache`."""
    return sum(k.nbytes + v.nbytes for k, v in zip(cache.k, cache.v))


def greedy_three_ways(params, config, prompt, n_new, tiny_p=1e-9, tiny_temperature=1e-6):
    r"""Exercise 2: greedy decoding, and the three sampling settings that reduce to it.

    - ``top_k=1`` keeps the largest logit only (and any exact tie with it): the draw has one candidate.
    - ``top_p`` below the top token's probability keeps the top token only, since a token is kept iff the mass
      ranked above it is below p, and every other token has at least the top token's mass above it.
    - temperature :math:`\tau \to 0`: :math:`\mathrm{softmax}(z/\tau)` tends to the one-hot argmax, but for any
      :math:`\tau > 0` a second logit within a few :math:`\tau` of the first still has a real probability
      (:math:`e^{-\Delta/\tau}`), so this one can disagree with greedy when two logits nearly tie.

    Returns a dict of token lists keyed by ``"greedy"``, ``"top_k=1"``, ``"top_p"``, ``"temperature"``.
    """
    runs = {"greedy": dict(temperature=0), "top_k=1": dict(temperature=1.0, top_k=1),
            "top_p": dict(temperature=1.0, top_p=tiny_p), "temperature": dict(temperature=tiny_temperature)}
    return {name: gen.generate(params, config, [prompt], n_new, rng=0, **kw)[0] for name, kw in runs.items()}


def min_p_filter(logits, min_p):
    r"""Exercise 3: min-p filter. Keep token i iff :math:`p_i \ge p_{min} \max_j p_j`; others get :math:`-\infty`.

    In logits: :math:`p_i / p_{max} = e^{z_i - z_{max}}`, so the test is :math:`z_i \ge z_{max} + \log p_{min}`,
    which needs no softmax. The most likely token always passes (:math:`p_{max} \ge p_{min} p_{max}`).

    Unlike top-p, the threshold scales with the model's confidence: when the top token has probability 0.9,
    min-p = 0.1 drops everything below 0.09, a tiny set; when the distribution is flat (top token 0.02), it keeps
    every token above 0.002, a large set. Top-p with p = 0.9 in the flat case must collect 90 % of the mass,
    which can mean thousands of unlikely tokens; in the confident case it keeps the top token alone.

    Parameters
    ----------
    logits : (B, V) float array
    min_p : float in [0, 1]

    Returns
    -------
    (B, V), the logits' dtype.
    """
    if not 0 <= min_p <= 1:
        raise ValueError(f"min_p: expected a value in [0, 1], got {min_p!r}")
    if min_p == 0:
        return logits
    z_max = logits.max(axis=-1, keepdims=True)                                   # (B, 1)
    keep = logits >= z_max + np.log(min_p)                                       # (B, V)
    return np.where(keep, logits, -np.inf).astype(logits.dtype)


def min_p_by_probabilities(logits, min_p):
    """The same filter computed the slow way, from the probabilities (for checking :func:`min_p_filter`)."""
    p, _ = softmax.forward(logits.astype(np.float64), axis=-1)                  # (B, V)
    keep = p >= min_p * p.max(axis=-1, keepdims=True)
    return np.where(keep, logits, -np.inf).astype(logits.dtype)
