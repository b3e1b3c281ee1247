r"""Decoding for the GPT of ``reference/models/gpt.py``: a KV cache, then greedy, sampling and beam search on top of it.

The material's three steps of inference are: preprocess (tokenise the prompt), forward (the model gives the
next-token distribution, again and again), postprocess (turn ids back into text, drop special tokens). This file
is the middle and the last step.

KV cache
--------
In a causal model the keys and values of a position never change once computed: later tokens cannot influence
earlier ones. So instead of re-running the whole sequence for every new token (cost per step O(T) projections and
O(T^2) attention), the model keeps, per layer, the K and V of all past positions and, for each new token, computes
only its own q, k, v, appends k and v, and attends over the cache (cost per step O(1) projections, O(T) attention):

.. math:: K_{1..t} = [K_{1..t-1};\ k_t], \quad V_{1..t} = [V_{1..t-1};\ v_t], \quad
          o_t = \mathrm{softmax}\!\left(q_t K_{1..t}^\top / \sqrt{d_k}\right) V_{1..t}

:func:`forward_cached` does this for any number of new tokens at once: the prompt in one call (*prefill*), then one
token per call (*decode steps*). Its logits equal ``gpt.forward`` on the whole sequence to float64 round-off; the
tests assert that at every step.

Batches of prompts of different lengths are **left-padded** (pads first, so every row's next token goes in the same
column) with an ``attention_mask`` (False = padding). Two things make padded rows exact:

- **key-padding mask**: no query attends to a padding key;
- **per-row position ids**: a row's real tokens get positions 0, 1, 2, ... counted from its own first real token,
  as if the row were alone and unpadded. (Using the column index instead would shift the positions of the shorter
  prompts by their padding, a silent change of the model's input: a frequent bug in educational KV-cache code.)
  Padding tokens get position 0; their outputs are never used, and no real query attends to them.

The per-row logits therefore equal ``gpt.forward`` run on that row's unpadded tokens alone. The same holds for
every configuration of ``gpt.py``: with RoPE the per-row positions set each key's rotation (so cached keys are stored
rotated, and a new query at position t rotates by t), and with grouped-query attention the cache holds only the
n_kv_head heads of K and V (``gpt.kv_bytes_per_token``; ``tests/models/test_gpt_modern.py`` checks both).

The cache is a plain value (:class:`KVCache`): :func:`forward_cached` returns a new one, built by concatenation,
and never modifies the one it is given.

Decoding strategies
-------------------
- greedy: :math:`\arg\max` of the logits (``temperature=0``);
- temperature :math:`\tau`: sample from :math:`\mathrm{softmax}(z/\tau)`;
- top-k: keep the k largest logits (all those tied with the k-th are kept), renormalise;
- top-p (nucleus, Holtzman et al. 2020): keep the smallest set of most likely tokens whose probability reaches p;
- beam search with a length penalty: keep the ``beam_width`` best partial sequences by total log-probability;
  a finished hypothesis of n generated tokens scores :math:`\sum \log p / n^{\alpha}` (Wu et al. 2016 use a
  similar normaliser; :math:`\alpha = 0` ranks by total log-probability, which favours short outputs).

Sampling draws from a ``numpy.random.Generator`` (``rng``: a seed or a Generator), so the same seed gives the same
text.
"""
import dataclasses
import math

import numpy as np

from reference._checks import check_float, check_id_list, check_ids
from reference.models import gpt
from reference.ops import attention, softmax


@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys and values of every past position, per layer, for a batch of B rows.

    k, v : tuple of L arrays (B, n_kv_head, T_past, d_k); with RoPE the keys are stored rotated by their positions
    key_mask : (B, T_past) bool, False where the position is padding
    next_pos : (B,) int64, the position id the next real token of each row gets (its count of real tokens)
    """

    k: tuple
    v: tuple
    key_mask: np.ndarray
    next_pos: np.ndarray

    @property
    def length(self):
        """T_past: the number of columns (real or padding) in the cache."""
        return self.key_mask.shape[1]

    def select(self, rows):
        """The cache of the given rows (int array), in that order: for beam search, which reorders beams."""
        rows = np.asarray(rows)
        return KVCache(tuple(k[rows] for k in self.k), tuple(v[rows] for v in self.v),
                       self.key_mask[rows], self.next_pos[rows])


def forward_cached(params, config, ids, cache=None, attention_mask=None):
    r"""Logits for new tokens, attending to the cached past; returns the cache extended by them.

    The model's own :func:`reference.models.gpt.forward` does the work, through the same blocks as training: this
    function only gives it each row's positions and the mask (causal, and no padding key), and keeps the keys and
    values it returns.

    Parameters
    ----------
    params, config : the GPT's (``reference.models.gpt``)
    ids : int ndarray (B, T_new), the new tokens (the prompt at prefill, one token per decode step)
    cache : KVCache or None
        The past (B rows); ``None`` starts from an empty past (prefill).
    attention_mask : (B, T_new) bool, optional
        False marks padding among the new tokens; default all real.

    Returns
    -------
    logits : (B, T_new, V), the params' dtype. Rows at padding positions are meaningless.
    cache : KVCache, the past followed by the new tokens.
    """
    check_ids("ids", ids, config.vocab_size)
    if ids.ndim != 2:
        raise ValueError(f"ids: expected shape (B, T_new), got {ids.shape}")
    B, T_new = ids.shape
    if attention_mask is None:
        attention_mask = np.ones((B, T_new), dtype=bool)
    if not isinstance(attention_mask, np.ndarray) or attention_mask.dtype != np.bool_:
        raise TypeError("attention_mask: expected a boolean numpy.ndarray (False = padding)")
    if attention_mask.shape != (B, T_new):
        raise ValueError(f"attention_mask: expected shape {(B, T_new)} (that of ids), got {attention_mask.shape}")
    past = None
    if cache is None:
        cache = KVCache((), (), np.zeros((B, 0), dtype=bool), np.zeros(B, dtype=np.int64))
    else:
        if cache.key_mask.shape[0] != B:
            raise ValueError(f"cache: holds {cache.key_mask.shape[0]} rows, ids has {B}")
        past = [gpt.KV(k, v) for k, v in zip(cache.k, cache.v)]

    # per-row positions: real tokens continue the row's count, padding gets 0
    pos = cache.next_pos[:, None] + np.cumsum(attention_mask, axis=1) - 1      # (B, T_new)
    pos = np.where(attention_mask, pos, 0)
    if pos.size and pos.max() >= config.block_size:
        raise ValueError(f"position {pos.max()} is beyond the model's block_size={config.block_size}: a row would "
                         f"hold more than {config.block_size} real tokens")
    key_mask = np.concatenate([cache.key_mask, attention_mask], axis=1)         # (B, T_total)
    T_total = key_mask.shape[1]
    mask = attention.causal_mask(T_new, T_total)[None, None] & key_mask[:, None, None, :]   # (B, 1, T_new, T_total)
    logits, model_cache = gpt.forward(params, config, ids, past=past, positions=pos, mask=mask)
    kv = gpt.kv(model_cache)
    new_cache = KVCache(tuple(layer.k for layer in kv), tuple(layer.v for layer in kv), key_mask,
                        cache.next_pos + attention_mask.sum(axis=1))
    return logits, new_cache


def left_pad(prompts, pad_id=0):
    """Lists of ids of different lengths -> ``ids`` (B, T_max) int64 padded on the left, and its bool mask."""
    prompts = [list(p) for p in prompts]
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts: expected a non-empty list of non-empty token lists (the model needs at least "
                         "one token to predict the next)")
    T = max(len(p) for p in prompts)
    ids = np.full((len(prompts), T), pad_id, dtype=np.int64)                     # (B, T)
    mask = np.zeros((len(prompts), T), dtype=bool)                              # (B, T)
    for i, p in enumerate(prompts):
        ids[i, T - len(p):] = p
        mask[i, T - len(p):] = True
    return ids, mask


# ---------------------------------------------------------------------------------------------------------------
# From logits to a token
# ---------------------------------------------------------------------------------------------------------------

def check_sampling(temperature=1.0, top_k=None, top_p=None):
    """Check sampling settings before any work: ``temperature`` a finite number >= 0, ``top_k`` None or an int >= 1,
    ``top_p`` None or a number in (0, 1]. Raises TypeError/ValueError naming what was expected and what came."""
    t = _real("temperature", temperature)
    if not (math.isfinite(t) and t >= 0):
        raise ValueError(f"temperature: expected a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None:
        _positive_int("top_k", top_k)
    if top_p is not None:
        p = _real("top_p", top_p)
        if not 0 < p <= 1:
            raise ValueError(f"top_p: expected a number in (0, 1], got {top_p!r}")


def top_k_filter(logits, k):
    """Set every logit below the k-th largest of its row to -inf (ties with the k-th are kept). (B, V) -> (B, V)."""
    _positive_int("top_k", k)
    _check_logits(logits)
    if k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k, axis=-1)[..., -k, None]                      # (B, 1)
    return np.where(logits < kth, -np.inf, logits).astype(logits.dtype)


def top_p_filter(logits, p):
    r"""Nucleus filter: keep the most likely tokens, in order, until their probability reaches ``p``.

    A token is kept iff the probability of the tokens ranked strictly above it is below p, so the most likely
    token is always kept and the kept set is the smallest whose mass is >= p. (B, V) -> (B, V), others -inf.
    """
    check_sampling(top_p=p)
    _check_logits(logits)
    probs = _probabilities(logits)                                              # (B, V)
    order = np.argsort(-logits, axis=-1, kind="stable")                         # (B, V) most likely first
    sorted_probs = np.take_along_axis(probs, order, axis=-1)                    # (B, V)
    mass_above = np.cumsum(sorted_probs, axis=-1) - sorted_probs                # (B, V) exclusive cumsum
    keep_sorted = mass_above < p                                                # (B, V)
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return np.where(keep, logits, -np.inf).astype(logits.dtype)


def sample(logits, rng, temperature=1.0, top_k=None, top_p=None):
    r"""One token per row of ``logits`` (B, V): greedy when ``temperature == 0``, else sampled.

    Order: temperature, then top-k, then top-p (as in Hugging Face's defaults), then a draw by inverse CDF with
    one uniform number per row from ``rng``.

    The temperature divides the logits after their row maximum :math:`m` is subtracted, in float64:
    :math:`z = (\ell - m)/\tau`. That is the same distribution, and it cannot overflow: as :math:`\tau \to 0` the
    maximum stays at 0 and every other logit goes to :math:`-\infty`, so a tiny temperature gives the greedy
    token (shared evenly among exact ties), as the limit of :math:`\mathrm{softmax}(\ell/\tau)` does.
    A logit of :math:`+\infty` takes all the probability (shared among the :math:`+\infty` entries of its row);
    :math:`-\infty` has none. A NaN logit, or a row of :math:`-\infty` only, has no distribution: ValueError.

    Returns
    -------
    (B,) int64 token ids.
    """
    check_float("logits", logits, ndim_min=2)
    check_sampling(temperature, top_k, top_p)
    _check_logits(logits)
    if temperature == 0:
        return np.argmax(logits, axis=-1).astype(np.int64)
    with np.errstate(over="ignore"):                                            # -> -inf is the limit we want
        z = _minus_max(logits) / float(temperature)                             # (B, V), <= 0, max 0
    if top_k is not None:
        z = top_k_filter(z, top_k)
    if top_p is not None:
        z = top_p_filter(z, top_p)
    probs = _probabilities(z)                                                   # (B, V)
    cdf = np.cumsum(probs, axis=-1)                                             # (B, V)
    u = rng.random(probs.shape[0]) * cdf[:, -1]                                 # (B,)
    # the first token whose cdf exceeds u; a filtered token (prob 0) cannot be the first
    return np.argmax(cdf > u[:, None], axis=-1).astype(np.int64)


def _minus_max(z):
    """``z - max(z)`` per row in float64, where a row holding +inf becomes 0 at its +inf entries and -inf elsewhere
    (the limit of a logit growing without bound). (B, V) -> (B, V), maximum 0 in every row."""
    z = z.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)                                           # (B, 1), finite or +inf
    top = np.isposinf(m)                                                        # (B, 1) rows with a +inf logit
    return np.where(top, np.where(np.isposinf(z), 0.0, -np.inf), z - np.where(top, 0.0, m))


def _probabilities(z):
    """softmax over the last axis in float64, with +inf entries sharing all the mass. (B, V) -> (B, V)."""
    probs, _ = softmax.forward(_minus_max(z), axis=-1)
    return probs


def _check_logits(logits):
    """No NaN anywhere, and some token with a logit above -inf in every row."""
    bad = np.isnan(logits).any(axis=-1)
    if bad.any():
        raise ValueError(f"logits: expected no NaN, got NaN in row(s) {np.argwhere(bad).tolist()[:5]}; a NaN logit "
                         f"gives no distribution to sample from (is the model diverged?)")
    empty = np.isneginf(logits).all(axis=-1)
    if logits.shape[-1] == 0 or empty.any():
        raise ValueError(f"logits: expected each row to have a logit above -inf, got rows that are all -inf "
                         f"{np.argwhere(empty).tolist()[:5]}: no token has any probability")


def _real(name, x):
    """A real number (int or float, Python or NumPy; not bool, not str) as a float."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(x).__name__} {x!r}")
    return float(x)


def _positive_int(name, x):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive int, got {type(x).__name__} {x!r}")
    if x < 1:
        raise ValueError(f"{name}: expected a positive int, got {x!r}")


def _check_prompts(prompts):
    """Lists of token ids (ints, not floats or bools), as ``left_pad`` needs them."""
    if isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__iter__"):
        raise TypeError(f"prompts: expected a list of lists of token ids, got {type(prompts).__name__}")
    return [check_id_list(f"prompts[{i}]", p) for i, p in enumerate(prompts)]


def _stop_set(stop_tokens):
    """``stop_tokens`` (None or an iterable of token ids) as a set of ints."""
    if stop_tokens is None:
        return set()
    return set(check_id_list("stop_tokens", stop_tokens))


# ---------------------------------------------------------------------------------------------------------------
# Generation loops
# ---------------------------------------------------------------------------------------------------------------

def _check_lengths(config, prompt_len, max_new_tokens):
    _positive_int("max_new_tokens", max_new_tokens)
    # the last generated token is never fed back, so the model reads at most prompt_len + max_new_tokens - 1
    if prompt_len + max_new_tokens - 1 > config.block_size:
        raise ValueError(f"a prompt of {prompt_len} tokens plus {max_new_tokens} new tokens needs "
                         f"{prompt_len + max_new_tokens - 1} positions; the model has block_size={config.block_size}")


def generate(params, config, prompts, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_tokens=(),
             rng=0, use_cache=True, pad_id=0, on_step=None):
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    Parameters
    ----------
    params, config : the GPT's
    prompts : list of lists of token ids (lengths may differ; they are left-padded into one batch)
    max_new_tokens : int
    temperature, top_k, top_p : see :func:`sample`; ``temperature=0`` is greedy decoding
    stop_tokens : iterable of int, or None
        A row stops after it emits one of these; the stop token ends its output. None or empty: no stop token.
    rng : int seed or numpy.random.Generator (the same seed gives the same output)
    use_cache : bool
        True: prefill once, then one :func:`forward_cached` step per token. False: recompute the whole
        sequence for every token (the slow baseline; same results).
    pad_id : int, the id written in padding positions (never attended to).
    on_step : callable, optional
        Called after every step with a list of B entries: the token each row received, or None for a row that had
        already stopped. For streaming text to a terminal as it is generated.

    Returns
    -------
    list of lists of int, the new tokens of each row (ending with the stop token if one was emitted).
    """
    check_sampling(temperature, top_k, top_p)
    prompts = _check_prompts(prompts)
    stop = _stop_set(stop_tokens)
    ids, mask = left_pad(prompts, pad_id)                                       # (B, T0)
    _check_lengths(config, ids.shape[1], max_new_tokens)
    rng = np.random.default_rng(rng)
    B = ids.shape[0]
    out = [[] for _ in range(B)]
    done = np.zeros(B, dtype=bool)
    logits, cache = forward_cached(params, config, ids, attention_mask=mask)
    for step in range(max_new_tokens):
        nxt = sample(logits[:, -1], rng, temperature, top_k, top_p)            # (B,)
        received = [None] * B
        for b in np.flatnonzero(~done):
            out[b].append(int(nxt[b]))
            received[b] = int(nxt[b])
            done[b] = int(nxt[b]) in stop
        if on_step is not None:
            on_step(received)
        if done.all() or step == max_new_tokens - 1:
            break
        # finished rows keep running (one batch) but their new tokens are masked out
        new_mask = ~done[:, None]                                                # (B, 1)
        if use_cache:
            logits, cache = forward_cached(params, config, nxt[:, None], cache, attention_mask=new_mask)
        else:
            ids = np.concatenate([ids, nxt[:, None]], axis=1)                    # (B, T)
            mask = np.concatenate([mask, new_mask], axis=1)                      # (B, T)
            logits, _ = forward_cached(params, config, ids, attention_mask=mask)
    return out


def beam_search(params, config, prompt, beam_width, max_new_tokens, length_penalty=1.0, stop_tokens=()):
    r"""Beam search for one prompt; returns the finished hypotheses, best first.

    Each step extends every live beam by every token, scores the candidates by total log-probability, and keeps
    the ``beam_width`` best that do not end in a stop token as the new beams (a candidate ending in a stop token
    becomes a finished hypothesis). It ends when no live beam is left or after ``max_new_tokens`` steps, when the
    live beams are finished as they are. A hypothesis of n new tokens (its stop token included) scores
    :math:`\sum_{i \le n} \log p_i / n^{\alpha}` with :math:`\alpha` = ``length_penalty`` (a finite number).
    Deterministic: ties go to the lower (beam, token) index. With ``beam_width >= V**max_new_tokens`` the search
    is exhaustive. ``stop_tokens``: an iterable of ids, or None for none.

    Returns
    -------
    list of ``(tokens, score)``, at most ``beam_width`` of them, best score first.
    """
    _positive_int("beam_width", beam_width)
    alpha = _real("length_penalty", length_penalty)
    if not math.isfinite(alpha):
        raise ValueError(f"length_penalty: expected a finite number, got {length_penalty!r}")
    prompt, = _check_prompts([prompt])
    stop = _stop_set(stop_tokens)
    ids, mask = left_pad([prompt])                                             # (1, T0)
    _check_lengths(config, ids.shape[1], max_new_tokens)
    logits, cache = forward_cached(params, config, ids, attention_mask=mask)
    beams, beam_logp = [[]], np.zeros(1)                                      # tokens and total log-prob per beam
    finished = []

    def score(tokens, logp):
        return float(logp / len(tokens) ** alpha)

    for step in range(max_new_tokens):
        z = logits[:, -1].astype(np.float64)                                    # (n_beams, V)
        _check_logits(z)
        logp = z - z.max(axis=-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(axis=-1, keepdims=True))          # (n_beams, V) log-softmax
        cand = (beam_logp[:, None] + logp).ravel()                              # (n_beams * V,)
        V = logp.shape[1]
        new_beams, new_logp, origin, new_tokens = [], [], [], []
        for flat in np.argsort(-cand, kind="stable"):
            b, t = divmod(int(flat), V)
            tokens = beams[b] + [t]
            if t in stop:
                finished.append((tokens, score(tokens, cand[flat])))
                continue
            new_beams.append(tokens)
            new_logp.append(cand[flat])
            origin.append(b)
            new_tokens.append(t)
            if len(new_beams) == beam_width:
                break
        if not new_beams:
            break
        beams, beam_logp = new_beams, np.array(new_logp)
        if step == max_new_tokens - 1:
            finished.extend((tokens, score(tokens, lp)) for tokens, lp in zip(beams, beam_logp))
            break
        cache = cache.select(np.array(origin))
        logits, cache = forward_cached(params, config, np.array(new_tokens)[:, None], cache)
    finished.sort(key=lambda h: -h[1])
    return finished[:beam_width]


def postprocess(ids, tokenizer, special_ids=()):
    """Token ids -> text: drop the special ids (stop, padding, ...) and decode with ``tokenizer.decode``."""
    special = _stop_set(special_ids)
    return tokenizer.decode([i for i in check_id_list("ids", ids) if i not in special])
