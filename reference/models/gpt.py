"""A decoder-only Transformer language model (GPT-2 layout) built from the reference ops, with its backward pass.

Names as in llm.c: B batch, T sequence length, C = d_model, H heads, d_k = C / H, V vocabulary, L layers::

    x_0   = wte[ids] + P[positions]                               (B, T, C)   token + position embeddings
    for each of the L blocks (pre-LN):                            block_forward
        x = x + Attn( LN1(x) )                                    causal multi-head self-attention
        x = x + FFN( LN2(x) )                                     FFN(h) = gelu_tanh(h W1 + b1) W2 + b2
    logits = LN_f(x_L) wte^T                                      (B, T, V)   output head tied to the embedding

P is the position table (:func:`position_table`): the learned ``wpe`` or the fixed sinusoids. Every equation lives
in its own op (``embedding``, ``layernorm``, ``linear``, ``attention``, ``ffn``; the model calls their fast variants);
this file only wires them together and, in the backward functions, walks the same wiring in reverse. Two places
receive a gradient from two paths and add them: the residual stream (``dx`` flows through the skip and through the
branch) and the tied matrix ``wte`` (used by the lookup and by the output head).

One block is one pair of functions, :func:`block_forward` and :func:`block_backward`, built from two parts that can
be swapped one at a time: the attention sublayer (:func:`attention_forward`/:func:`attention_backward`) and the
feed-forward op. The three projections Q, K, V are kept as three parameters (``Wq``, ``Wk``, ``Wv``), as in the
material, and run as one fused matmul ``LN1(x) [Wq | Wk | Wv]`` (GPT-2's ``c_attn``): one big GEMM is faster than
three small ones.

Decoding with a KV cache runs through the same blocks: :func:`forward` takes the keys and values of earlier
positions (``past``), their ``positions`` and a ``mask``, and :func:`kv` reads the keys and values of every
position back from its cache (``reference/inference/decoding.py`` builds on these).
"""
import dataclasses
from typing import NamedTuple

import numpy as np

from reference import tree
from reference._checks import check_choice, check_float, check_ids, check_int
from reference.ops import activations, attention, cross_entropy, embedding, ffn, layernorm, linear, positional
from reference.training import init

POSITIONALS = ("learned", "sinusoidal")


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Shape of the model. ``d_ff = 4 * d_model`` and ``d_k = d_model / n_head``, as in GPT-2.

    Invalid values raise ``ValueError`` (``TypeError`` for a value of the wrong kind) at construction, so a bad
    config fails before any array is made.
    """

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    d_model: int
    positional: str = "learned"
    activation: str = "gelu_tanh"               # a name in reference.ops.activations.ACTIVATIONS
    ln_eps: float = 1e-5

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name}: expected a positive integer, got {value!r}")
        if self.d_model % self.n_head != 0:
            raise ValueError(f"GPTConfig: d_model={self.d_model} is not divisible by n_head={self.n_head}; "
                             f"each head needs d_k = d_model / n_head channels")
        check_choice("GPTConfig.positional", self.positional, POSITIONALS)
        check_choice("GPTConfig.activation", self.activation, tuple(activations.ACTIVATIONS))
        if not self.ln_eps > 0:
            raise ValueError(f"GPTConfig.ln_eps: expected a positive float, got {self.ln_eps!r}")

    @property
    def d_ff(self):
        return 4 * self.d_model

    @property
    def d_k(self):
        return self.d_model // self.n_head


# ---------------------------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------------------------

def init_params(config, rng, dtype=np.float32):
    r"""GPT-2 initialisation: every matrix ~ N(0, 0.02^2), biases 0, LayerNorm gains 1.

    The two projections that write into the residual stream (``Wo`` and ``W2``) get std
    :math:`0.02 / \sqrt{2L}`: each block adds two such terms to the stream, so after L blocks the stream's variance
    grows by a constant instead of by a factor of L (GPT-2 paper, section 2.3).

    Parameters
    ----------
    config : GPTConfig
    rng : numpy.random.Generator
    dtype : float32 or float64

    Returns
    -------
    params : dict, the nested structure described in :func:`forward`.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"init_params: expected dtype float32 or float64, got {dtype}")
    C, V, F, L = config.d_model, config.vocab_size, config.d_ff, config.n_layer

    def normal(shape):
        return init.normal(shape, rng, std=0.02, dtype=dtype)

    def resid(shape):
        return init.scaled_residual(shape, rng, L, std=0.02, dtype=dtype)

    def zeros(n):
        return np.zeros(n, dtype=dtype)

    def ln():
        return {"gamma": np.ones(C, dtype=dtype), "beta": zeros(C)}

    params = {"wte": normal((V, C))}
    if config.positional == "learned":
        params["wpe"] = normal((config.block_size, C))
    params["blocks"] = [
        {"ln1": ln(),
         "attn": {"Wq": normal((C, C)), "Wk": normal((C, C)), "Wv": normal((C, C)), "Wo": resid((C, C)),
                  "bq": zeros(C), "bk": zeros(C), "bv": zeros(C), "bo": zeros(C)},
         "ln2": ln(),
         "ffn": {"W1": normal((C, F)), "b1": zeros(F), "W2": resid((F, C)), "b2": zeros(C)}}
        for _ in range(L)]
    params["ln_f"] = ln()
    return params


def n_params(params):
    """Number of scalars in ``params``; the tied head adds nothing, it is ``wte``."""
    return int(sum(a.size for a in tree.flatten(params).values()))


def position_table(params, config, dtype):
    """The (block_size, C) position table P: the learned ``wpe``, or the fixed sinusoids in ``dtype``."""
    if config.positional == "learned":
        return params["wpe"]
    return positional.sinusoidal(config.block_size, config.d_model, dtype=np.float64).astype(dtype)


def _check_params(params, config):
    """Every array in ``params`` has the shape ``config`` implies and one float dtype; returns that dtype."""
    C, V, F = config.d_model, config.vocab_size, config.d_ff
    dtype = check_float("params['wte']", params["wte"]).dtype
    expected = {"wte": (V, C), "ln_f.gamma": (C,), "ln_f.beta": (C,)}
    if config.positional == "learned":
        expected["wpe"] = (config.block_size, C)
    for i in range(config.n_layer):
        p = f"blocks.{i}."
        expected.update({p + "ln1.gamma": (C,), p + "ln1.beta": (C,), p + "ln2.gamma": (C,), p + "ln2.beta": (C,),
                         p + "ffn.W1": (C, F), p + "ffn.b1": (F,), p + "ffn.W2": (F, C), p + "ffn.b2": (C,)})
        expected.update({p + f"attn.W{n}": (C, C) for n in "qkvo"})
        expected.update({p + f"attn.b{n}": (C,) for n in "qkvo"})
    flat = tree.flatten(params)
    if set(flat) != set(expected):
        missing, extra = sorted(set(expected) - set(flat)), sorted(set(flat) - set(expected))
        raise ValueError(f"params do not match the config: missing {missing}, unexpected {extra}")
    for name, shape in expected.items():
        a = check_float(f"params['{name}']", flat[name])
        if a.shape != shape:
            raise ValueError(f"params['{name}']: expected shape {shape} from the config, got {a.shape}")
        if a.dtype != dtype:
            raise TypeError(f"params['{name}']: expected dtype {dtype} (the dtype of wte), got {a.dtype}")
    return dtype


# ---------------------------------------------------------------------------------------------------------------
# One block: the attention sublayer, the feed-forward sublayer, each pre-LN with a residual
# ---------------------------------------------------------------------------------------------------------------

class KV(NamedTuple):
    """The keys and values of one layer, every position so far: (B, H, T, d_k) each."""

    k: np.ndarray
    v: np.ndarray


class AttentionSublayerCache(NamedTuple):
    qkv: linear.LinearCache                     # qkv = h [Wq | Wk | Wv] + [bq | bk | bv]
    attn: attention.AttentionCache              # heads = Attention(q, [past k; k], [past v; v])
    out: linear.LinearCache                     # y = Concat(heads) Wo + bo


class BlockCache(NamedTuple):
    ln1: tuple                                  # the LayerNorm caches
    attn: AttentionSublayerCache
    ln2: tuple
    ffn: ffn.FfnCache


def attention_forward(h, p, config, mask, past=None):
    """Causal multi-head self-attention on ``h`` (B, T, C), Q/K/V from one fused matmul.

    ``past`` (a :class:`KV` of (B, H, T_past, d_k) arrays, or None) holds the keys and values of earlier positions;
    the new ones are appended to them. ``mask`` (bool) broadcasts to (B, H, T, T_past + T).

    Returns ``(y (B, T, C), cache, KV of all T_past + T positions)``.
    """
    B, T, C = h.shape
    H = config.n_head
    W_qkv = np.concatenate([p["Wq"], p["Wk"], p["Wv"]], axis=1)   # (C, 3C)
    b_qkv = np.concatenate([p["bq"], p["bk"], p["bv"]])            # (3C,)
    qkv, qkv_cache = linear.forward_fast(h, W_qkv, b_qkv)         # (B, T, 3C)
    # split the channels into (Q|K|V, head, d_k) and move heads next to batch
    q, k, v = qkv.reshape(B, T, 3, H, C // H).transpose(2, 0, 3, 1, 4)   # each (B, H, T, d_k)
    if past is not None:
        k = np.concatenate([past.k, k], axis=2)                   # (B, H, T_past + T, d_k)
        v = np.concatenate([past.v, v], axis=2)
    heads, attn_cache = attention.forward_fast(q, k, v, mask)      # (B, H, T, d_k)
    a = heads.transpose(0, 2, 1, 3).reshape(B, T, C)              # (B, T, C) heads concatenated
    y, out_cache = linear.forward_fast(a, p["Wo"], p["bo"])       # (B, T, C)
    return y, AttentionSublayerCache(qkv_cache, attn_cache, out_cache), KV(attn_cache.k, attn_cache.v)


def attention_backward(dy, cache):
    """Gradients of :func:`attention_forward`: dL/dh and the eight attention parameters' gradients.

    The keys and values of ``past`` are constants here: their gradients are dropped.
    """
    B, T, C = dy.shape
    H = cache.attn.qs.shape[1]
    # forward: y = a Wo + bo
    da, dWo, dbo = linear.backward_fast(dy, cache.out)            # (B, T, C)
    # forward: a = concat_heads(attention(q, k, v))
    dheads = da.reshape(B, T, H, C // H).transpose(0, 2, 1, 3)    # (B, H, T, d_k)
    dq, dk, dv = attention.backward_fast(dheads, cache.attn)      # (B, H, T, d_k); dk, dv (B, H, T_past + T, d_k)
    T_past = dk.shape[2] - T
    # forward: q, k, v = split_heads(qkv)   (the last T keys and values are this call's)
    dqkv = np.empty((B, T, 3, H, C // H), dtype=dy.dtype)         # (B, T, 3, H, d_k)
    for i, d in enumerate((dq, dk[:, :, T_past:], dv[:, :, T_past:])):
        dqkv[:, :, i] = d.transpose(0, 2, 1, 3)                   # (B, T, H, d_k)
    # forward: qkv = h [Wq | Wk | Wv] + [bq | bk | bv]
    dh, dW_qkv, db_qkv = linear.backward_fast(dqkv.reshape(B, T, 3 * C), cache.qkv)   # (B, T, C), (C, 3C), (3C,)
    dWq, dWk, dWv = (np.ascontiguousarray(w) for w in np.split(dW_qkv, 3, axis=1))
    # dbk is 0 up to round-off: q . (k + bk) shifts a query's scores over all keys by the same q . bk, and the
    # softmax ignores a shift (the tests check this; GPT-2 keeps the bias anyway)
    dbq, dbk, dbv = np.split(db_qkv, 3)
    return dh, {"Wq": dWq, "Wk": dWk, "Wv": dWv, "Wo": dWo, "bq": dbq, "bk": dbk, "bv": dbv, "bo": dbo}


def block_forward(x, p, config, mask=None, past=None):
    """One pre-LN block: ``x + Attn(LN1(x))``, then ``+ FFN(LN2(.))``.

    Parameters
    ----------
    x : (B, T, C) the residual stream (not changed)
    p : the block's params, ``{"ln1", "attn", "ln2", "ffn"}``
    config : GPTConfig
    mask : bool, broadcastable to (B, H, T, T_past + T); None: causal (:func:`attention.causal_mask`)
    past : KV or None, the keys and values of T_past earlier positions

    Returns
    -------
    y : (B, T, C)
    cache : BlockCache, for :func:`block_backward`
    kv : KV of all T_past + T positions
    """
    if mask is None:
        mask = attention.causal_mask(x.shape[1], x.shape[1] + (0 if past is None else past.k.shape[2]))
    h, ln1_cache = layernorm.forward_fast(x, p["ln1"]["gamma"], p["ln1"]["beta"], config.ln_eps)
    a, attn_cache, kv = attention_forward(h, p["attn"], config, mask, past)
    x = x + a                                                       # a new array: the LN cache holds the old x
    h, ln2_cache = layernorm.forward_fast(x, p["ln2"]["gamma"], p["ln2"]["beta"], config.ln_eps)
    f = p["ffn"]
    m, ffn_cache = ffn.forward_fast(h, f["W1"], f["b1"], f["W2"], f["b2"], config.activation)
    return x + m, BlockCache(ln1_cache, attn_cache, ln2_cache, ffn_cache), kv


def block_backward(dy, cache):
    """Gradients of :func:`block_forward`: ``(dx (B, T, C), grads with the nesting of the block's params)``."""
    # forward: y = x + FFN(LN2(x))   (dy reaches x through the skip and through the branch)
    dh, dW1, db1, dW2, db2 = ffn.backward_fast(dy, cache.ffn)
    dh, dgamma2, dbeta2 = layernorm.backward_fast(dh, cache.ln2)
    dx = dy + dh
    # forward: x = x_in + Attn(LN1(x_in))
    dh, dattn = attention_backward(dx, cache.attn)
    dh, dgamma1, dbeta1 = layernorm.backward_fast(dh, cache.ln1)
    dx += dh
    return dx, {"ln1": {"gamma": dgamma1, "beta": dbeta1}, "attn": dattn, "ln2": {"gamma": dgamma2, "beta": dbeta2},
                "ffn": {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}}


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------

class GPTCache(NamedTuple):
    config: GPTConfig
    emb: embedding.EmbeddingCache
    positions: np.ndarray                       # (T,) or (B, T) the position of every token
    blocks: list                                # a BlockCache per layer
    ln_f: tuple
    head: linear.LinearCache                    # logits = xf wte^T, xf = LN_f(x_L)


def forward(params, config, ids, *, past=None, positions=None, mask=None):
    r"""Logits of the next token at every position.

    Parameters
    ----------
    params : dict
        ``{"wte": (V, C), "wpe": (block_size, C) [learned positions only], "blocks": [{"ln1": {gamma, beta},
        "attn": {Wq, Wk, Wv, Wo (C, C), bq, bk, bv, bo (C,)}, "ln2": {gamma, beta},
        "ffn": {W1 (C, 4C), b1 (4C,), W2 (4C, C), b2 (C,)}} x n_layer], "ln_f": {gamma, beta}}``,
        all float32 or all float64.
    config : GPTConfig
    ids : int ndarray (B, T), values in [0, V)
    past : sequence of n_layer :class:`KV`, optional
        Keys and values of T_past earlier positions (decoding with a KV cache); default none.
    positions : int ndarray (T,) or (B, T), optional
        Position of each token, < block_size; default ``0 .. T-1`` (which needs T <= block_size).
    mask : bool ndarray broadcastable to (B, H, T, T_past + T), optional
        True = may attend; default causal.

    Returns
    -------
    logits : (B, T, V), the dtype of the params.
        :math:`\mathrm{logits} = \mathrm{LN}_f(x_L)\, W_{te}^\top`
    cache : GPTCache, what :func:`backward` needs; :func:`kv` reads the keys and values from it.
    """
    dtype = _check_params(params, config)
    check_ids("ids", ids, config.vocab_size)
    if ids.ndim != 2:
        raise ValueError(f"ids: expected shape (B, T), got {ids.shape}")
    B, T = ids.shape
    if positions is None:
        if T > config.block_size:
            raise ValueError(f"ids: sequence length T={T} exceeds the model's block_size={config.block_size} "
                             f"(the positional table has {config.block_size} rows)")
        positions = np.arange(T)
    elif positions.size and (positions.min() < 0 or positions.max() >= config.block_size):
        raise ValueError(f"positions: expected values in [0, block_size={config.block_size}), "
                         f"got [{positions.min()}, {positions.max()}]")
    if past is not None and len(past) != config.n_layer:
        raise ValueError(f"past: expected {config.n_layer} layers of keys and values, got {len(past)}")

    tok, emb_cache = embedding.forward(ids, params["wte"])           # (B, T, C)
    x = tok + position_table(params, config, dtype)[positions]       # (B, T, C)
    block_caches = []
    for layer, p in enumerate(params["blocks"]):
        x, c, _ = block_forward(x, p, config, mask, None if past is None else past[layer])
        block_caches.append(c)
    xf, lnf_cache = layernorm.forward_fast(x, params["ln_f"]["gamma"], params["ln_f"]["beta"], config.ln_eps)
    logits, head_cache = linear.forward_fast(xf, params["wte"].T)    # (B, T, V) tied output head: xf wte^T
    return logits, GPTCache(config, emb_cache, positions, block_caches, lnf_cache, head_cache)


def kv(cache):
    """The keys and values of every layer after a :func:`forward` (past and new positions): a tuple of :class:`KV`."""
    return tuple(KV(c.attn.attn.k, c.attn.attn.v) for c in cache.blocks)


def backward(dlogits, cache):
    """Gradients of every parameter, given dL/dlogits.

    Parameters
    ----------
    dlogits : (B, T, V), the dtype of the params
    cache : GPTCache, from :func:`forward`

    Returns
    -------
    grads : dict with exactly the nesting and shapes of ``params``.
    """
    config, xf = cache.config, cache.head.x
    check_float("dlogits", dlogits)
    if dlogits.shape != xf.shape[:2] + (config.vocab_size,):
        raise ValueError(f"dlogits: expected shape {xf.shape[:2] + (config.vocab_size,)}, got {dlogits.shape}")
    if dlogits.dtype != xf.dtype:
        raise TypeError(f"dlogits: expected dtype {xf.dtype} (the params' dtype), got {dlogits.dtype}")
    C = config.d_model
    # forward: logits = xf wte^T   (the head's share of dwte)
    dxf, dwte_T, _ = linear.backward_fast(dlogits, cache.head)      # (B, T, C), (C, V)
    dwte = np.ascontiguousarray(dwte_T.T)                            # (V, C)
    # forward: xf = LN_f(x)
    dx, dgamma_f, dbeta_f = layernorm.backward_fast(dxf, cache.ln_f) # (B, T, C)
    block_grads = []
    for c in reversed(cache.blocks):
        dx, g = block_backward(dx, c)
        block_grads.append(g)
    block_grads.reverse()
    # forward: x_0 = wte[ids] + P[positions]   (the lookup's share of dwte adds to the head's)
    dwte += embedding.backward(dx, cache.emb)                        # (V, C)
    grads = {"wte": dwte}
    if config.positional == "learned":
        dwpe = np.zeros((config.block_size, C), dtype=xf.dtype)      # positions never used: zero gradient
        positions = np.broadcast_to(cache.positions, dx.shape[:2])   # (B, T)
        np.add.at(dwpe, positions.reshape(-1), dx.reshape(-1, C))    # a position used by several rows adds up
        grads["wpe"] = dwpe
    grads["blocks"] = block_grads
    grads["ln_f"] = {"gamma": dgamma_f, "beta": dbeta_f}
    return grads


def loss_and_grads(params, config, ids, targets):
    """Mean next-token cross-entropy of ``ids`` against ``targets`` (both (B, T) int) and its gradients.

    Returns
    -------
    loss : 0-d ndarray of the params' dtype
    grads : same nesting as ``params``
    """
    logits, cache = forward(params, config, ids)
    check_int("targets", targets)
    if targets.shape != ids.shape:
        raise ValueError(f"targets: expected the shape of ids {ids.shape}, got {targets.shape}")
    loss, ce_cache = cross_entropy.forward(logits, targets)
    dlogits = cross_entropy.backward(np.ones((), dtype=logits.dtype), ce_cache)
    return loss, backward(dlogits, cache)


# ---------------------------------------------------------------------------------------------------------------
# Loading GPT-2 weights (Hugging Face layout)
# ---------------------------------------------------------------------------------------------------------------

def from_hf_gpt2(state_dict, n_head):
    """Convert a Hugging Face ``GPT2LMHeadModel`` state dict (numpy arrays) into ``(params, config)``.

    GPT-2 stores its projections as ``Conv1D`` weights of shape (in, out), the layout ``y = x W`` here, so no
    transpose is needed; ``c_attn`` holds ``[Wq | Wk | Wv]`` side by side (C, 3C). GPT-2 uses the tanh
    approximation of GELU (``"gelu_new"``) and LayerNorm eps 1e-5, which is what the returned config says.
    ``lm_head.weight``, when present, must be ``wte`` (the head is tied); the causal-mask buffers
    (``attn.bias``, ``attn.masked_bias``) of older checkpoints are ignored.
    """
    sd = {k: v for k, v in state_dict.items()
          if not (k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"))}
    missing = [k for k in ("transformer.wte.weight", "transformer.wpe.weight") if k not in sd]
    if missing:
        raise ValueError(f"from_hf_gpt2: state_dict lacks {missing}; expected GPT2LMHeadModel parameter names")
    wte = check_float("transformer.wte.weight", sd.pop("transformer.wte.weight"))
    wpe = check_float("transformer.wpe.weight", sd.pop("transformer.wpe.weight"))
    head = sd.pop("lm_head.weight", None)
    if head is not None and not np.array_equal(head, wte):
        raise ValueError("from_hf_gpt2: lm_head.weight differs from transformer.wte.weight; this model ties them")
    n_layer = len({k.split(".")[2] for k in sd if k.startswith("transformer.h.")})
    config = GPTConfig(vocab_size=wte.shape[0], block_size=wpe.shape[0], n_layer=n_layer, n_head=n_head,
                       d_model=wte.shape[1], positional="learned", activation="gelu_tanh", ln_eps=1e-5)

    def take(name):
        if name not in sd:
            raise ValueError(f"from_hf_gpt2: state_dict lacks {name!r}")
        return np.array(sd.pop(name), dtype=wte.dtype)

    def ln(prefix):
        return {"gamma": take(prefix + ".weight"), "beta": take(prefix + ".bias")}

    blocks = []
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        Wq, Wk, Wv = np.split(take(p + "attn.c_attn.weight"), 3, axis=1)   # (C, C) each
        bq, bk, bv = np.split(take(p + "attn.c_attn.bias"), 3)              # (C,) each
        blocks.append({
            "ln1": ln(p + "ln_1"),
            "attn": {"Wq": np.ascontiguousarray(Wq), "Wk": np.ascontiguousarray(Wk), "Wv": np.ascontiguousarray(Wv),
                     "Wo": take(p + "attn.c_proj.weight"), "bq": bq, "bk": bk, "bv": bv,
                     "bo": take(p + "attn.c_proj.bias")},
            "ln2": ln(p + "ln_2"),
            "ffn": {"W1": take(p + "mlp.c_fc.weight"), "b1": take(p + "mlp.c_fc.bias"),
                    "W2": take(p + "mlp.c_proj.weight"), "b2": take(p + "mlp.c_proj.bias")}})
    params = {"wte": np.array(wte), "wpe": np.array(wpe), "blocks": blocks, "ln_f": ln("transformer.ln_f")}
    if sd:
        raise ValueError(f"from_hf_gpt2: unexpected keys {sorted(sd)}")
    _check_params(params, config)
    return params, config


def to_hf_gpt2(params):
    """Inverse of :func:`from_hf_gpt2`: ``params`` -> numpy arrays keyed by ``GPT2LMHeadModel`` names.

    ``c_attn`` is ``[Wq | Wk | Wv]`` (C, 3C). Only learned positions exist in GPT-2, so ``params`` needs ``wpe``.
    The tied ``lm_head.weight`` is left out (loading with ``strict=False`` re-ties it to ``wte``).
    """
    if "wpe" not in params:
        raise ValueError("to_hf_gpt2: GPT-2 has learned positions; params has no 'wpe' (sinusoidal config?)")
    sd = {"transformer.wte.weight": params["wte"], "transformer.wpe.weight": params["wpe"]}
    for i, p in enumerate(params["blocks"]):
        h = f"transformer.h.{i}."
        a, m = p["attn"], p["ffn"]
        sd.update({
            h + "ln_1.weight": p["ln1"]["gamma"], h + "ln_1.bias": p["ln1"]["beta"],
            h + "attn.c_attn.weight": np.concatenate([a["Wq"], a["Wk"], a["Wv"]], axis=1),
            h + "attn.c_attn.bias": np.concatenate([a["bq"], a["bk"], a["bv"]]),
            h + "attn.c_proj.weight": a["Wo"], h + "attn.c_proj.bias": a["bo"],
            h + "ln_2.weight": p["ln2"]["gamma"], h + "ln_2.bias": p["ln2"]["beta"],
            h + "mlp.c_fc.weight": m["W1"], h + "mlp.c_fc.bias": m["b1"],
            h + "mlp.c_proj.weight": m["W2"], h + "mlp.c_proj.bias": m["b2"]})
    sd["transformer.ln_f.weight"] = params["ln_f"]["gamma"]
    sd["transformer.ln_f.bias"] = params["ln_f"]["beta"]
    return sd
