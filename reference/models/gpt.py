"""A decoder-only Transformer language model, GPT-2 and the Llama family from one configuration, with its backward pass.

Names as in llm.c: B batch, T sequence length, C = d_model, H heads, d_k = C / H, V vocabulary, L layers::

    x_0   = wte[ids] + P[positions]                               (B, T, C)   token + position embeddings
    for each of the L blocks (pre-norm):                          block_forward
        x = x + Attn( N1(x) )                                     causal multi-head self-attention
        x = x + FFN( N2(x) )                                      FFN(h) = gelu_tanh(h W1 + b1) W2 + b2
    logits = N_f(x_L) wte^T                                       (B, T, V)   output head tied to the embedding

That is GPT-2 (:class:`GPTConfig`'s defaults). Five switches turn the same wiring into today's decoders (Llama,
Mistral, Qwen, Mixtral), one change of the 2017 block each (chapter 12 measures them one at a time):

==================  =====================================  ===============================================
config              GPT-2 (default)                        Llama family
==================  =====================================  ===============================================
``norm``            ``"layernorm"``: N = LayerNorm         ``"rmsnorm"``: N(x) = gamma x / rms(x)
``positional``      ``"learned"`` (or ``"sinusoidal"``):   ``"rope"``: no table; q and k rotated by their
                    P added to x_0                         position inside every attention layer
``ffn``             ``"mlp"``: act(h W1 + b1) W2 + b2      ``"swiglu"``: (silu(h W_gate) * h W_up) W_down
``n_kv_head``       = ``n_head``                           < ``n_head``: grouped-query attention
``n_expert``        0 (dense)                              > 0: ``top_k`` of ``n_expert`` SwiGLU experts
                                                           (Mixtral), load-balancing loss ``aux_loss_coef``
==================  =====================================  ===============================================

plus ``bias`` (GPT-2's biases in the attention and MLP projections; Llama has none), ``tie_embeddings`` (GPT-2
reuses ``wte`` as the output head; Llama learns a separate ``lm_head`` (V, C), logits = N_f(x_L) lm_head^T) and
``embed_scale`` (the 2017 paper multiplies the token embeddings by sqrt(d_model) before adding the sinusoids, its
section 3.4: x_0 = s wte[ids] + P; GPT-2 and Llama use 1).

Every equation lives in its own op (``embedding``, ``layernorm``, ``rmsnorm``, ``linear``, ``rope``, ``attention``,
``gqa``, ``ffn``, ``swiglu``, ``moe``; the model calls their fast variants where they exist); this file only wires
them together and, in the backward functions, walks the same wiring in reverse. Two places receive a gradient from
two paths and add them: the residual stream (``dx`` flows through the skip and through the branch) and, when tied,
the matrix ``wte`` (used by the lookup and by the output head).

One block is one pair of functions, :func:`block_forward` and :func:`block_backward`, built from parts that are
swapped one at a time: the norm (:func:`norm_forward`), the attention sublayer
(:func:`attention_forward`/:func:`attention_backward`) and the feed-forward sublayer (:func:`ffn_forward`). The
three projections Q, K, V are kept as three parameters (``Wq``, ``Wk``, ``Wv``), as in the material, and run as one
fused matmul ``N1(x) [Wq | Wk | Wv]`` (GPT-2's ``c_attn``): one big GEMM is faster than three small ones. With
grouped-query attention ``Wk`` and ``Wv`` are (C, n_kv_head d_k).

Decoding with a KV cache runs through the same blocks: :func:`forward` takes the keys and values of earlier
positions (``past``), their ``positions`` and a ``mask``, and :func:`kv` reads the keys and values of every
position back from its cache (``reference/inference/decoding.py`` builds on these). The cache holds n_kv_head heads
per layer, and with RoPE the keys are stored already rotated by their own positions.

:func:`from_hf_gpt2`, :func:`from_hf_llama` and :func:`from_hf_mixtral` read Hugging Face weights into params and
config (the tests hold the logits and gradients equal to ``transformers``'); :func:`to_hf_gpt2` and
:func:`to_hf_llama` write them back (``reference/export.py``).
"""
import dataclasses
from typing import NamedTuple, Optional

import numpy as np

from reference import tree
from reference._checks import check_choice, check_float, check_ids, check_int
from reference.ops import (activations, attention, cross_entropy, embedding, ffn, gqa, layernorm, linear, moe,
                           positional, rmsnorm, rope, swiglu)
from reference.training import init

POSITIONALS = ("learned", "sinusoidal", "rope")
NORMS = ("layernorm", "rmsnorm")
FFNS = ("mlp", "swiglu")


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Shape and architecture of the model; the defaults are GPT-2 (see the module docstring for the switches).

    ``d_k = d_model / n_head``. ``d_ff`` (the feed-forward width, of each expert with MoE) defaults to
    ``4 * d_model`` and ``n_kv_head`` to ``n_head``; both are resolved at construction, so
    ``dataclasses.replace(config, d_model=...)`` keeps the old ``d_ff`` unless it is given too. ``ln_eps`` is the
    eps of whichever norm is used. Invalid values raise ``ValueError`` (``TypeError`` for a value of the wrong kind)
    at construction, so a bad config fails before any array is made.
    """

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    d_model: int
    positional: str = "learned"                 # "learned", "sinusoidal" (P added to x_0) or "rope"
    activation: str = "gelu_tanh"               # the MLP's, a name in reference.ops.activations.ACTIVATIONS
    ln_eps: float = 1e-5
    norm: str = "layernorm"                     # or "rmsnorm"
    ffn: str = "mlp"                            # or "swiglu"
    d_ff: Optional[int] = None                  # None: 4 d_model
    n_kv_head: Optional[int] = None             # None: n_head (multi-head); 1: multi-query
    rope_theta: float = 10000.0                 # RoPE's base Theta (Hugging Face's rope_theta)
    bias: bool = True                           # biases in the attention and MLP projections
    tie_embeddings: bool = True                 # False: a separate lm_head (V, C)
    embed_scale: float = 1.0                    # x_0 = embed_scale wte[ids] + P (the 2017 paper: sqrt(d_model))
    n_expert: int = 0                           # 0: dense; > 0: mixture of SwiGLU experts (needs ffn="swiglu")
    top_k: int = 2                              # experts per token
    aux_loss_coef: float = 0.0                  # weight of the load-balancing loss in loss_and_grads

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model"):
            _check_positive_int(name, getattr(self, name))
        if self.d_model % self.n_head != 0:
            raise ValueError(f"GPTConfig: d_model={self.d_model} is not divisible by n_head={self.n_head}; "
                             f"each head needs d_k = d_model / n_head channels")
        check_choice("GPTConfig.positional", self.positional, POSITIONALS)
        check_choice("GPTConfig.activation", self.activation, tuple(activations.ACTIVATIONS))
        check_choice("GPTConfig.norm", self.norm, NORMS)
        check_choice("GPTConfig.ffn", self.ffn, FFNS)
        for name in ("ln_eps", "rope_theta", "embed_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not (value > 0 and np.isfinite(value)):
                raise ValueError(f"GPTConfig.{name}: expected a positive float, got {value!r}")
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        if self.n_kv_head is None:
            object.__setattr__(self, "n_kv_head", self.n_head)
        _check_positive_int("d_ff", self.d_ff)
        _check_positive_int("n_kv_head", self.n_kv_head)
        if self.n_head % self.n_kv_head:
            raise ValueError(f"GPTConfig: n_kv_head={self.n_kv_head} does not divide n_head={self.n_head}; each "
                             f"K/V head serves n_head / n_kv_head query heads")
        if self.positional == "rope" and self.d_k % 2:
            raise ValueError(f"GPTConfig: RoPE rotates channel pairs, so d_k = d_model / n_head must be even, "
                             f"got {self.d_k}")
        for name in ("bias", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"GPTConfig.{name}: expected a bool, got {getattr(self, name)!r}")
        if isinstance(self.n_expert, bool) or not isinstance(self.n_expert, (int, np.integer)) or self.n_expert < 0:
            raise ValueError(f"GPTConfig.n_expert: expected an integer >= 0 (0 = dense), got {self.n_expert!r}")
        if self.n_expert:
            if self.ffn != "swiglu":
                raise ValueError(f"GPTConfig: n_expert={self.n_expert} needs ffn='swiglu' (the experts are SwiGLU "
                                 f"networks, as in Mixtral), got ffn={self.ffn!r}")
            _check_positive_int("top_k", self.top_k)
            if self.top_k > self.n_expert:
                raise ValueError(f"GPTConfig.top_k: expected 1 <= top_k <= n_expert={self.n_expert}, "
                                 f"got {self.top_k}")
        if not (isinstance(self.aux_loss_coef, (int, float, np.integer, np.floating))
                and not isinstance(self.aux_loss_coef, bool) and 0 <= self.aux_loss_coef < np.inf):
            raise ValueError(f"GPTConfig.aux_loss_coef: expected a finite number >= 0, got {self.aux_loss_coef!r}")

    @property
    def d_k(self):
        return self.d_model // self.n_head


def _check_positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"GPTConfig.{name}: expected a positive integer, got {value!r}")


# ---------------------------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------------------------

def param_shapes(config):
    """``{flat name: shape}`` of every parameter the config implies, in the order of :func:`init_params`."""
    C, V, F, E = config.d_model, config.vocab_size, config.d_ff, config.n_expert
    KV = config.n_kv_head * config.d_k                                  # K/V width: C without GQA
    shapes = {"wte": (V, C)}
    if config.positional == "learned":
        shapes["wpe"] = (config.block_size, C)

    def norm(prefix):
        return {prefix + "gamma": (C,), **({prefix + "beta": (C,)} if config.norm == "layernorm" else {})}

    for i in range(config.n_layer):
        p = f"blocks.{i}."
        shapes.update(norm(p + "ln1."))
        a = p + "attn."
        shapes.update({a + "Wq": (C, C), a + "Wk": (C, KV), a + "Wv": (C, KV), a + "Wo": (C, C)})
        if config.bias:
            shapes.update({a + "bq": (C,), a + "bk": (KV,), a + "bv": (KV,), a + "bo": (C,)})
        shapes.update(norm(p + "ln2."))
        f = p + "ffn."
        if config.ffn == "mlp":
            shapes.update({f + "W1": (C, F), **({f + "b1": (F,)} if config.bias else {}),
                           f + "W2": (F, C), **({f + "b2": (C,)} if config.bias else {})})
        elif E == 0:
            shapes.update({f + "W_gate": (C, F), f + "W_up": (C, F), f + "W_down": (F, C)})
        else:
            shapes.update({f + "W_router": (C, E), f + "W_gate": (E, C, F), f + "W_up": (E, C, F),
                           f + "W_down": (E, F, C)})
    shapes.update(norm("ln_f."))
    if not config.tie_embeddings:
        shapes["lm_head"] = (V, C)
    return shapes


def init_params(config, rng, dtype=np.float32):
    r"""GPT-2 initialisation: every matrix ~ N(0, 0.02^2), biases 0, norm gains 1 (LayerNorm shifts 0).

    The projections that write into the residual stream (``Wo``, and ``W2``/``W_down``, every expert's) get std
    :math:`0.02 / \sqrt{2L}`: each block adds two such terms to the stream, so after L blocks the stream's variance
    grows by a constant instead of by a factor of L (GPT-2 paper, section 2.3). The same scheme for every
    architecture, so that chapter 12's comparisons change one thing at a time.

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
    L = config.n_layer
    flat = {}
    for name, shape in param_shapes(config).items():                  # draws in this order: wte, wpe, blocks
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "gamma":
            flat[name] = np.ones(shape, dtype=dtype)
        elif leaf == "beta" or leaf.startswith("b"):
            flat[name] = np.zeros(shape, dtype=dtype)
        elif leaf in ("Wo", "W2", "W_down"):
            flat[name] = init.scaled_residual(shape, rng, L, std=0.02, dtype=dtype)
        else:
            flat[name] = init.normal(shape, rng, std=0.02, dtype=dtype)
    return tree.unflatten(flat)


def n_params(params):
    """Number of scalars in ``params``; a tied head adds nothing, it is ``wte``."""
    return int(sum(a.size for a in tree.flatten(params).values()))


def n_active_params(config):
    """Parameters that act on each token: all of them for a dense model; with experts, only ``top_k`` of the
    ``n_expert`` experts' weights count (the router counts in full)."""
    shapes = param_shapes(config)
    total = sum(int(np.prod(s)) for s in shapes.values())
    if config.n_expert:
        experts = sum(int(np.prod(s)) for n, s in shapes.items() if n.split(".")[-1] in ("W_gate", "W_up", "W_down"))
        total -= experts - experts * config.top_k // config.n_expert
    return total


def kv_bytes_per_token(config, itemsize=4):
    """Bytes the KV cache holds per token: K and V, every layer, n_kv_head heads of d_k each."""
    return 2 * config.n_layer * config.n_kv_head * config.d_k * itemsize


def position_table(params, config, dtype):
    """The (block_size, C) position table P: the learned ``wpe``, or the fixed sinusoids in ``dtype``.

    RoPE models have none (their positions act inside attention): ``None``."""
    if config.positional == "learned":
        return params["wpe"]
    if config.positional == "rope":
        return None
    return positional.sinusoidal(config.block_size, config.d_model, dtype=np.float64).astype(dtype)


def _check_params(params, config):
    """Every array in ``params`` has the shape ``config`` implies and one float dtype; returns that dtype."""
    dtype = check_float("params['wte']", params["wte"]).dtype
    expected = param_shapes(config)
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
# One block: the attention sublayer, the feed-forward sublayer, each pre-norm with a residual
# ---------------------------------------------------------------------------------------------------------------

class KV(NamedTuple):
    """The keys and values of one layer, every position so far: (B, n_kv_head, T, d_k) each (keys rotated, RoPE)."""

    k: np.ndarray
    v: np.ndarray


class AttentionSublayerCache(NamedTuple):
    qkv: linear.LinearCache                     # qkv = h [Wq | Wk | Wv] + [bq | bk | bv]
    attn: tuple                                 # heads = Attention(q, [past k; k], [past v; v]): attention's
    #                                             AttentionCache, or gqa.Cache when n_kv_head < n_head
    out: linear.LinearCache                     # y = Concat(heads) Wo + bo
    rope: Optional[tuple] = None                # (rope.Cache of q, of k) with RoPE
    kv: Optional[KV] = None                     # the keys and values of all positions (views, not copies)


class BlockCache(NamedTuple):
    ln1: tuple                                  # the norm caches (LayerNorm's or RMSNorm's)
    attn: AttentionSublayerCache
    ln2: tuple
    ffn: tuple                                  # ffn.FfnCache, swiglu.FastCache or moe.Cache


def norm_forward(x, p, config):
    """``N(x)``: LayerNorm (``p = {gamma, beta}``) or RMSNorm (``p = {gamma}``) over the last axis."""
    if config.norm == "layernorm":
        return layernorm.forward_fast(x, p["gamma"], p["beta"], config.ln_eps)
    return rmsnorm.forward(x, p["gamma"], config.ln_eps)


def norm_backward(dy, cache):
    """Gradients of :func:`norm_forward`: ``(dx, {gamma[, beta]})``."""
    if isinstance(cache, rmsnorm.Cache):
        dx, dgamma = rmsnorm.backward(dy, cache)
        return dx, {"gamma": dgamma}
    dx, dgamma, dbeta = layernorm.backward_fast(dy, cache)
    return dx, {"gamma": dgamma, "beta": dbeta}


def attention_forward(h, p, config, mask, past=None, positions=None):
    """Causal self-attention on ``h`` (B, T, C), Q/K/V from one fused matmul; grouped-query when n_kv_head < n_head.

    ``past`` (a :class:`KV` of (B, n_kv_head, T_past, d_k) arrays, or None) holds the keys and values of earlier
    positions; the new ones are appended to them. ``mask`` (bool) broadcasts to (B, H, T, T_past + T).
    ``positions`` ((T,) or (B, T) ints) are the new tokens' positions, used by RoPE only (default
    ``T_past + arange(T)``): q and k are rotated after the heads are split, before k joins the cache.

    Returns ``(y (B, T, C), cache, KV of all T_past + T positions)``.
    """
    B, T, C = h.shape
    H, H_kv, d = config.n_head, config.n_kv_head, config.d_k
    W_qkv = np.concatenate([p["Wq"], p["Wk"], p["Wv"]], axis=1)   # (C, C + 2 H_kv d)
    b_qkv = np.concatenate([p["bq"], p["bk"], p["bv"]]) if config.bias else None
    qkv, qkv_cache = linear.forward_fast(h, W_qkv, b_qkv)         # (B, T, C + 2 H_kv d)
    if H_kv == H:
        # split the channels into (Q|K|V, head, d_k) and move heads next to batch
        q, k, v = qkv.reshape(B, T, 3, H, d).transpose(2, 0, 3, 1, 4)   # each (B, H, T, d_k)
    else:
        q = qkv[..., :C].reshape(B, T, H, d).transpose(0, 2, 1, 3)              # (B, H, T, d_k)
        k, v = qkv[..., C:].reshape(B, T, 2, H_kv, d).transpose(2, 0, 3, 1, 4)  # each (B, H_kv, T, d_k)
    rope_caches = None
    if config.positional == "rope":
        T_past = 0 if past is None else past.k.shape[2]
        pos = T_past + np.arange(T) if positions is None else positions
        pos = pos if pos.ndim == 1 else pos[:, None, :]               # (T,) or (B, 1, T): the same for every head
        q, q_cache = rope.forward(q, pos, config.rope_theta)          # R_m q
        k, k_cache = rope.forward(k, pos, config.rope_theta)          # R_n k: cached rotated
        rope_caches = (q_cache, k_cache)
    if past is not None:
        k = np.concatenate([past.k, k], axis=2)                   # (B, H_kv, T_past + T, d_k)
        v = np.concatenate([past.v, v], axis=2)
    if H_kv == H:
        heads, attn_cache = attention.forward_fast(q, k, v, mask)  # (B, H, T, d_k)
        kv = KV(attn_cache.k, attn_cache.v)
    else:
        heads, attn_cache = gqa.forward_fast(q, k, v, mask)        # (B, H, T, d_k), K/V heads shared by groups
        kv = KV(attn_cache.attention.k, attn_cache.attention.v)
    a = heads.transpose(0, 2, 1, 3).reshape(B, T, C)              # (B, T, C) heads concatenated
    y, out_cache = linear.forward_fast(a, p["Wo"], p["bo"] if config.bias else None)   # (B, T, C)
    return y, AttentionSublayerCache(qkv_cache, attn_cache, out_cache, rope_caches, kv), kv


def attention_backward(dy, cache):
    """Gradients of :func:`attention_forward`: dL/dh and the attention parameters' gradients.

    The keys and values of ``past`` are constants here: their gradients are dropped.
    """
    B, T, C = dy.shape
    grouped = isinstance(cache.attn, gqa.Cache)
    H, H_kv = (cache.attn.q_shape[1], cache.attn.k_shape[1]) if grouped else (cache.attn.qs.shape[1],) * 2
    d = C // H
    # forward: y = a Wo + bo
    da, dWo, dbo = linear.backward_fast(dy, cache.out)            # (B, T, C)
    # forward: a = concat_heads(attention(q, k, v))
    dheads = da.reshape(B, T, H, d).transpose(0, 2, 1, 3)         # (B, H, T, d_k)
    if grouped:   # dk, dv summed over the query heads of each group
        dq, dk, dv = gqa.backward_fast(dheads, cache.attn)        # dk, dv (B, H_kv, T_past + T, d_k)
    else:
        dq, dk, dv = attention.backward_fast(dheads, cache.attn)  # (B, H, T, d_k); dk, dv (B, H, T_past + T, d_k)
    T_past = dk.shape[2] - T
    dk, dv = dk[:, :, T_past:], dv[:, :, T_past:]                 # this call's keys and values: the last T
    if cache.rope is not None:
        # forward: q = R_m q, k = R_n k  ->  the inverse rotations
        dq = rope.backward(dq, cache.rope[0])
        dk = rope.backward(dk, cache.rope[1])
    # forward: q, k, v = split_heads(qkv)
    if H_kv == H:
        dqkv = np.empty((B, T, 3, H, d), dtype=dy.dtype)          # (B, T, 3, H, d_k)
        for i, g in enumerate((dq, dk, dv)):
            dqkv[:, :, i] = g.transpose(0, 2, 1, 3)               # (B, T, H, d_k)
    else:
        dqkv = np.empty((B, T, H + 2 * H_kv, d), dtype=dy.dtype)  # (B, T, H + 2 H_kv, d_k)
        dqkv[:, :, :H] = dq.transpose(0, 2, 1, 3)
        dqkv[:, :, H:H + H_kv] = dk.transpose(0, 2, 1, 3)
        dqkv[:, :, H + H_kv:] = dv.transpose(0, 2, 1, 3)
    # forward: qkv = h [Wq | Wk | Wv] + [bq | bk | bv]
    dh, dW_qkv, db_qkv = linear.backward_fast(dqkv.reshape(B, T, -1), cache.qkv)   # (B, T, C), (C, C + 2 KV)
    KV_width = H_kv * d
    dWq, dWk, dWv = (np.ascontiguousarray(w) for w in np.split(dW_qkv, [C, C + KV_width], axis=1))
    grads = {"Wq": dWq, "Wk": dWk, "Wv": dWv, "Wo": dWo}
    if db_qkv is not None:
        # dbk is 0 up to round-off: q . (k + bk) shifts a query's scores over all keys by the same q . bk, and the
        # softmax ignores a shift (the tests check this; GPT-2 keeps the bias anyway). With RoPE it is not 0: the
        # rotation makes q . R bk depend on the key's position.
        dbq, dbk, dbv = np.split(db_qkv, [C, C + KV_width])
        grads.update({"bq": dbq, "bk": dbk, "bv": dbv, "bo": dbo})
    return dh, grads


def ffn_forward(h, p, config):
    """The feed-forward sublayer: the MLP (``W1, b1, W2, b2``), SwiGLU (``W_gate, W_up, W_down``) or, with
    ``n_expert > 0``, the mixture of SwiGLU experts (``W_router`` and the experts' stacked weights)."""
    if config.ffn == "mlp":
        b1, b2 = (p["b1"], p["b2"]) if config.bias else (None, None)
        return ffn.forward_fast(h, p["W1"], b1, p["W2"], b2, config.activation)
    if config.n_expert == 0:
        return swiglu.forward_fast(h, p["W_gate"], p["W_up"], p["W_down"])
    return moe.forward(h, p["W_router"], p["W_gate"], p["W_up"], p["W_down"], config.top_k)


def ffn_backward(dy, cache, drouter=None):
    """Gradients of :func:`ffn_forward`: ``(dh, grads)``. ``drouter`` (N, E): a gradient on the router logits from
    the load-balancing loss (MoE only)."""
    if isinstance(cache, ffn.FfnCache):
        dh, dW1, db1, dW2, db2 = ffn.backward_fast(dy, cache)
        grads = {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}
        return dh, {k: v for k, v in grads.items() if v is not None}
    if isinstance(cache, swiglu.FastCache):
        dh, dW_gate, dW_up, dW_down = swiglu.backward_fast(dy, cache)
        return dh, {"W_gate": dW_gate, "W_up": dW_up, "W_down": dW_down}
    dh, dW_router, dW_gate, dW_up, dW_down = moe.backward(dy, cache, drouter)
    return dh, {"W_router": dW_router, "W_gate": dW_gate, "W_up": dW_up, "W_down": dW_down}


def block_forward(x, p, config, mask=None, past=None, positions=None):
    """One pre-norm block: ``x + Attn(N1(x))``, then ``+ FFN(N2(.))``.

    Parameters
    ----------
    x : (B, T, C) the residual stream (not changed)
    p : the block's params, ``{"ln1", "attn", "ln2", "ffn"}``
    config : GPTConfig
    mask : bool, broadcastable to (B, H, T, T_past + T); None: causal (:func:`attention.causal_mask`)
    past : KV or None, the keys and values of T_past earlier positions
    positions : (T,) or (B, T) ints, the tokens' positions (RoPE only; default ``T_past + arange(T)``)

    Returns
    -------
    y : (B, T, C)
    cache : BlockCache, for :func:`block_backward`
    kv : KV of all T_past + T positions
    """
    if mask is None:
        mask = attention.causal_mask(x.shape[1], x.shape[1] + (0 if past is None else past.k.shape[2]))
    h, ln1_cache = norm_forward(x, p["ln1"], config)
    a, attn_cache, kv = attention_forward(h, p["attn"], config, mask, past, positions)
    x = x + a                                                       # a new array: the norm cache holds the old x
    h, ln2_cache = norm_forward(x, p["ln2"], config)
    m, ffn_cache = ffn_forward(h, p["ffn"], config)
    return x + m, BlockCache(ln1_cache, attn_cache, ln2_cache, ffn_cache), kv


def block_backward(dy, cache, drouter=None):
    """Gradients of :func:`block_forward`: ``(dx (B, T, C), grads with the nesting of the block's params)``.

    ``drouter``: the load-balancing loss's gradient on this block's router logits (MoE only)."""
    # forward: y = x + FFN(N2(x))   (dy reaches x through the skip and through the branch)
    dh, dffn = ffn_backward(dy, cache.ffn, drouter)
    dh, dln2 = norm_backward(dh, cache.ln2)
    dx = dy + dh
    # forward: x = x_in + Attn(N1(x_in))
    dh, dattn = attention_backward(dx, cache.attn)
    dh, dln1 = norm_backward(dh, cache.ln1)
    dx += dh
    return dx, {"ln1": dln1, "attn": dattn, "ln2": dln2, "ffn": dffn}


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------

class GPTCache(NamedTuple):
    config: GPTConfig
    emb: embedding.EmbeddingCache
    positions: np.ndarray                       # (T,) or (B, T) the position of every token
    blocks: list                                # a BlockCache per layer
    ln_f: tuple
    head: linear.LinearCache                    # logits = xf wte^T (or lm_head^T), xf = N_f(x_L)
    aux: Optional[tuple] = None                 # MoE: (load-balancing loss, moe.AuxCache) over all layers


def forward(params, config, ids, *, past=None, positions=None, mask=None):
    r"""Logits of the next token at every position.

    Parameters
    ----------
    params : dict
        GPT-2: ``{"wte": (V, C), "wpe": (block_size, C) [learned positions only], "blocks": [{"ln1": {gamma,
        beta}, "attn": {Wq, Wk, Wv, Wo (C, C), bq, bk, bv, bo (C,)}, "ln2": {gamma, beta},
        "ffn": {W1 (C, 4C), b1 (4C,), W2 (4C, C), b2 (C,)}} x n_layer], "ln_f": {gamma, beta}}``; the other
        architectures as :func:`param_shapes` lists them (RMSNorm: ``{gamma}``; GQA: ``Wk, Wv (C, n_kv_head d_k)``;
        SwiGLU: ``ffn = {W_gate, W_up (C, d_ff), W_down (d_ff, C)}``; MoE: ``ffn = {W_router (C, E), W_gate, W_up
        (E, C, d_ff), W_down (E, d_ff, C)}``; untied: ``lm_head (V, C)``). All float32 or all float64.
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
        :math:`\mathrm{logits} = \mathrm{N}_f(x_L)\, W_{te}^\top`
    cache : GPTCache, what :func:`backward` needs; :func:`kv` reads the keys and values from it, :func:`aux_loss`
        the load-balancing loss of an MoE model.
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
    if config.embed_scale != 1:
        tok *= dtype.type(config.embed_scale)                        # a fresh array: the lookup copied the rows
    if config.positional == "rope":
        x = tok                                                      # positions act inside attention
        rope_positions = positions
    else:
        x = tok + position_table(params, config, dtype)[positions]   # (B, T, C)
        rope_positions = None
    block_caches = []
    for layer, p in enumerate(params["blocks"]):
        x, c, _ = block_forward(x, p, config, mask, None if past is None else past[layer], rope_positions)
        block_caches.append(c)
    xf, lnf_cache = norm_forward(x, params["ln_f"], config)
    head = params["wte"] if config.tie_embeddings else params["lm_head"]
    logits, head_cache = linear.forward_fast(xf, head.T)             # (B, T, V) output head: xf wte^T
    aux = None
    if config.n_expert:
        router_logits = np.concatenate([c.ffn.logits for c in block_caches])   # (L B T, E) every layer's rows
        aux = moe.aux_loss_forward(router_logits, config.top_k)
    return logits, GPTCache(config, emb_cache, positions, block_caches, lnf_cache, head_cache, aux)


def kv(cache):
    """The keys and values of every layer after a :func:`forward` (past and new positions): a tuple of :class:`KV`."""
    return tuple(c.attn.kv for c in cache.blocks)


def aux_loss(cache):
    r"""The load-balancing loss :math:`L_{aux} = E \sum_e f_e P_e` of an MoE model's :func:`forward`, over the router
    logits of all layers (``moe.aux_loss_forward``); 0 for a dense model."""
    return cache.aux[0] if cache.aux is not None else cache.head.x.dtype.type(0)


def backward(dlogits, cache, d_aux=0.0):
    """Gradients of every parameter, given dL/dlogits.

    Parameters
    ----------
    dlogits : (B, T, V), the dtype of the params
    cache : GPTCache, from :func:`forward`
    d_aux : float
        dL/dL_aux, the weight of the load-balancing loss in L (MoE models; :func:`loss_and_grads` passes
        ``config.aux_loss_coef``). 0: the gradient of whatever gave ``dlogits`` alone.

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
    # forward: logits = xf wte^T   (tied: the head's share of dwte)
    dxf, dhead_T, _ = linear.backward_fast(dlogits, cache.head)     # (B, T, C), (C, V)
    dhead = np.ascontiguousarray(dhead_T.T)                          # (V, C)
    # forward: xf = N_f(x)
    dx, dln_f = norm_backward(dxf, cache.ln_f)                       # (B, T, C)
    drouter = [None] * config.n_layer
    if cache.aux is not None and d_aux:
        # forward: L_aux over the router logits of all layers stacked: split its gradient back into the layers
        drouter = np.split(moe.aux_loss_backward(d_aux, cache.aux[1]), config.n_layer)
    block_grads = []
    for c, dr in zip(reversed(cache.blocks), reversed(drouter)):
        dx, g = block_backward(dx, c, dr)
        block_grads.append(g)
    block_grads.reverse()
    # forward: x_0 = wte[ids] + P[positions]   (tied: the lookup's share of dwte adds to the head's)
    dtok = dx if config.embed_scale == 1 else dx * dx.dtype.type(config.embed_scale)   # x_0 = s wte[ids] + P
    dwte = embedding.backward(dtok, cache.emb)                       # (V, C)
    if config.tie_embeddings:
        dhead += dwte
        dwte = dhead
    grads = {"wte": dwte}
    if config.positional == "learned":
        dwpe = np.zeros((config.block_size, C), dtype=xf.dtype)      # positions never used: zero gradient
        positions = np.broadcast_to(cache.positions, dx.shape[:2])   # (B, T)
        np.add.at(dwpe, positions.reshape(-1), dx.reshape(-1, C))    # a position used by several rows adds up
        grads["wpe"] = dwpe
    grads["blocks"] = block_grads
    grads["ln_f"] = dln_f
    if not config.tie_embeddings:
        grads["lm_head"] = dhead
    return grads


def loss_and_grads(params, config, ids, targets):
    """Mean next-token cross-entropy of ``ids`` against ``targets`` (both (B, T) int) and its gradients; with
    experts, plus ``config.aux_loss_coef`` times the load-balancing loss (as ``transformers``' Mixtral).

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
    if cache.aux is not None and config.aux_loss_coef:
        loss = loss + logits.dtype.type(config.aux_loss_coef) * cache.aux[0]
        return loss, backward(dlogits, cache, d_aux=config.aux_loss_coef)
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


# ---------------------------------------------------------------------------------------------------------------
# Loading Llama and Mixtral weights (Hugging Face layout)
# ---------------------------------------------------------------------------------------------------------------

def llama_config(hf_config):
    """The :class:`GPTConfig` of a Hugging Face ``LlamaConfig`` or ``MixtralConfig`` (``config.to_dict()``).

    Refuses, naming the setting, what this decoder does not compute: RoPE scaling (Llama 3.1's ``llama3``, YaRN,
    ...), a ``head_dim`` other than ``hidden_size / num_attention_heads``, biases, an activation other than SiLU,
    a sliding window shorter than the context.
    """
    c = dict(hf_config)
    kind = c.get("model_type")
    if kind not in ("llama", "mixtral"):
        raise ValueError(f"llama_config: model_type {kind!r}: expected 'llama' or 'mixtral'")
    C, H = c["hidden_size"], c["num_attention_heads"]
    rope_params = c.get("rope_parameters") or c.get("rope_scaling") or {}
    rope_type = rope_params.get("rope_type", rope_params.get("type", "default"))
    theta = rope_params.get("rope_theta", c.get("rope_theta", 10000.0))
    problems = []
    if rope_type != "default":
        problems.append(f"rope_type={rope_type!r} (only the plain RoPE of rope_type 'default')")
    if c.get("head_dim") not in (None, C // H):
        problems.append(f"head_dim={c['head_dim']} (expected hidden_size / num_attention_heads = {C // H})")
    for key in ("attention_bias", "mlp_bias"):
        if c.get(key):
            problems.append(f"{key}=True (Llama's projections have no biases here)")
    if c.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={c['hidden_act']!r} (SwiGLU uses silu)")
    window = c.get("sliding_window")
    if window is not None and window < c["max_position_embeddings"]:
        problems.append(f"sliding_window={window} (attention here sees the whole context)")
    if problems:
        raise ValueError(f"{kind} config not supported by reference.models.gpt: {'; '.join(problems)}")
    moe_args = {}
    if kind == "mixtral":
        moe_args = dict(n_expert=c["num_local_experts"], top_k=c["num_experts_per_tok"],
                        aux_loss_coef=float(c.get("router_aux_loss_coef", 0.0)))
    return GPTConfig(vocab_size=c["vocab_size"], block_size=c["max_position_embeddings"],
                     n_layer=c["num_hidden_layers"], n_head=H, d_model=C, positional="rope",
                     ln_eps=float(c.get("rms_norm_eps", 1e-6)), norm="rmsnorm", ffn="swiglu",
                     d_ff=c["intermediate_size"], n_kv_head=c.get("num_key_value_heads") or H,
                     rope_theta=float(theta), bias=False, tie_embeddings=bool(c.get("tie_word_embeddings", False)),
                     **moe_args)


def from_hf_llama(state_dict, hf_config):
    """Convert a Hugging Face ``LlamaForCausalLM`` state dict (numpy arrays) and its config dict into
    ``(params, config)``.

    ``torch.nn.Linear`` stores ``weight`` as (out, in) for ``y = x W^T``; here ``y = x W``, so every projection is
    transposed: ``Wq = q_proj.weight^T`` (C, C), ``Wk, Wv`` (C, n_kv_head d_k), ``Wo = o_proj.weight^T``,
    ``W_gate, W_up = gate_proj.weight^T, up_proj.weight^T`` (C, d_ff), ``W_down = down_proj.weight^T``. The norms'
    ``weight`` is gamma. ``embed_tokens.weight`` is ``wte`` (V, C) and ``lm_head.weight`` (V, C) keeps its layout
    (logits = xf lm_head^T). Hugging Face's RoPE is the rotate-half layout, ``rope.forward``'s default, so ``Wq``
    and ``Wk`` need no permutation (Meta's original checkpoints, interleaved, do: ``rope.interleave_permutation``).
    """
    config = llama_config(hf_config)
    return _from_hf_decoder(state_dict, config, "from_hf_llama", _take_llama_mlp), config


def from_hf_mixtral(state_dict, hf_config):
    """Convert a Hugging Face ``MixtralForCausalLM`` state dict (numpy arrays) and its config dict into
    ``(params, config)``.

    Attention and norms as :func:`from_hf_llama`. Each layer's ``mlp.gate.weight`` (E, C) is the router,
    ``W_router = gate.weight^T`` (C, E). The experts, in the names of the installed ``transformers`` (5.x), are
    stacked: ``mlp.experts.gate_up_proj`` (E, 2 d_ff, C) holds expert e's gate rows then its up rows, so
    ``W_gate[e] = gate_up_proj[e][:d_ff]^T`` and ``W_up[e] = gate_up_proj[e][d_ff:]^T`` (C, d_ff), and
    ``W_down[e] = down_proj[e]^T`` (d_ff, C). The per-expert names of older checkpoints
    (``block_sparse_moe.experts.{e}.w1/w3/w2``: gate, up, down; ``block_sparse_moe.gate``) are read too.
    """
    config = llama_config(hf_config)
    if not config.n_expert:
        raise ValueError("from_hf_mixtral: expected model_type 'mixtral' with num_local_experts")
    return _from_hf_decoder(state_dict, config, "from_hf_mixtral", _take_mixtral_mlp), config


def _take_llama_mlp(take, prefix, config, state_dict):
    """A Llama layer's SwiGLU weights, transposed to (in, out)."""
    return {"W_gate": take(prefix + "mlp.gate_proj.weight").T, "W_up": take(prefix + "mlp.up_proj.weight").T,
            "W_down": take(prefix + "mlp.down_proj.weight").T}


def _take_mixtral_mlp(take, prefix, config, state_dict):
    """A Mixtral layer's router and stacked experts, transposed to (in, out), from either naming."""
    F, E = config.d_ff, config.n_expert
    if prefix + "mlp.gate.weight" in state_dict:                                  # transformers >= 5
        gate_up = take(prefix + "mlp.experts.gate_up_proj")                       # (E, 2F, C)
        W_gate, W_up = gate_up[:, :F].transpose(0, 2, 1), gate_up[:, F:].transpose(0, 2, 1)   # (E, C, F) each
        W_down = take(prefix + "mlp.experts.down_proj").transpose(0, 2, 1)        # (E, C, F) -> (E, F, C)
        W_router = take(prefix + "mlp.gate.weight").T                             # (C, E)
    else:                                                                         # older per-expert names
        e_ = prefix + "block_sparse_moe.experts.{}.{}.weight"
        W_gate = np.stack([take(e_.format(e, "w1")).T for e in range(E)])
        W_up = np.stack([take(e_.format(e, "w3")).T for e in range(E)])
        W_down = np.stack([take(e_.format(e, "w2")).T for e in range(E)])
        W_router = take(prefix + "block_sparse_moe.gate.weight").T
    return {"W_router": W_router, "W_gate": W_gate, "W_up": W_up, "W_down": W_down}


def _from_hf_decoder(state_dict, config, name, take_mlp):
    """The params of a Llama-layout state dict: embeddings, per layer norms, attention and ``take_mlp``'s FFN."""
    sd = dict(state_dict)
    if "model.embed_tokens.weight" not in sd:
        raise ValueError(f"{name}: state_dict lacks 'model.embed_tokens.weight'; expected the parameter names of "
                         f"transformers' *ForCausalLM")
    wte = check_float("model.embed_tokens.weight", sd.pop("model.embed_tokens.weight"))
    sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}   # a buffer in old checkpoints

    def take(key):
        if key not in sd:
            raise ValueError(f"{name}: state_dict lacks {key!r}")
        return np.array(sd.pop(key), dtype=wte.dtype)

    blocks = []
    for i in range(config.n_layer):
        p = f"model.layers.{i}."
        mlp = take_mlp(take, p, config, sd)
        blocks.append({
            "ln1": {"gamma": take(p + "input_layernorm.weight")},
            "attn": {"Wq": take(p + "self_attn.q_proj.weight").T, "Wk": take(p + "self_attn.k_proj.weight").T,
                     "Wv": take(p + "self_attn.v_proj.weight").T, "Wo": take(p + "self_attn.o_proj.weight").T},
            "ln2": {"gamma": take(p + "post_attention_layernorm.weight")},
            "ffn": mlp})
    params = {"wte": np.array(wte), "blocks": blocks, "ln_f": {"gamma": take("model.norm.weight")}}
    head = sd.pop("lm_head.weight", None)
    if config.tie_embeddings:
        if head is not None and not np.array_equal(head, wte):
            raise ValueError(f"{name}: tie_word_embeddings is set but lm_head.weight differs from embed_tokens")
    else:
        if head is None:
            raise ValueError(f"{name}: state_dict lacks 'lm_head.weight' (tie_word_embeddings is False)")
        params["lm_head"] = np.array(head, dtype=wte.dtype)
    if sd:
        raise ValueError(f"{name}: unexpected keys {sorted(sd)[:8]}")
    params = tree.unflatten({k: np.ascontiguousarray(v) for k, v in tree.flatten(params).items()})
    _check_params(params, config)
    return params


def to_hf_llama(params, config):
    """Inverse of :func:`from_hf_llama` / :func:`from_hf_mixtral`: ``params`` -> numpy arrays keyed by
    ``LlamaForCausalLM`` (or, with experts, ``MixtralForCausalLM``) names, in the installed ``transformers``' layout.
    A tied head is left out (``tie_word_embeddings`` re-ties it on load)."""
    if (config.norm, config.positional, config.ffn, config.bias, config.embed_scale) != \
            ("rmsnorm", "rope", "swiglu", False, 1):
        raise ValueError(f"to_hf_llama: Llama is RMSNorm, RoPE, SwiGLU without biases or embedding scale; this config "
                         f"has norm={config.norm!r}, positional={config.positional!r}, ffn={config.ffn!r}, "
                         f"bias={config.bias}, embed_scale={config.embed_scale}")
    sd = {"model.embed_tokens.weight": params["wte"]}
    for i, p in enumerate(params["blocks"]):
        h = f"model.layers.{i}."
        a, f = p["attn"], p["ffn"]
        sd.update({h + "input_layernorm.weight": p["ln1"]["gamma"],
                   h + "self_attn.q_proj.weight": a["Wq"].T, h + "self_attn.k_proj.weight": a["Wk"].T,
                   h + "self_attn.v_proj.weight": a["Wv"].T, h + "self_attn.o_proj.weight": a["Wo"].T,
                   h + "post_attention_layernorm.weight": p["ln2"]["gamma"]})
        if config.n_expert:
            sd.update({h + "mlp.gate.weight": f["W_router"].T,
                       h + "mlp.experts.gate_up_proj": np.concatenate([f["W_gate"], f["W_up"]], axis=2)
                       .transpose(0, 2, 1),                                       # (E, 2F, C)
                       h + "mlp.experts.down_proj": f["W_down"].transpose(0, 2, 1)})   # (E, C, F)
        else:
            sd.update({h + "mlp.gate_proj.weight": f["W_gate"].T, h + "mlp.up_proj.weight": f["W_up"].T,
                       h + "mlp.down_proj.weight": f["W_down"].T})
    sd["model.norm.weight"] = params["ln_f"]["gamma"]
    if not config.tie_embeddings:
        sd["lm_head.weight"] = params["lm_head"]
    return {k: np.ascontiguousarray(v) for k, v in sd.items()}


def to_hf_llama_config(config, dtype="float32"):
    """The ``config.json`` dict of a Llama-family :class:`GPTConfig` (``LlamaConfig``, or ``MixtralConfig`` with
    experts), for :func:`to_hf_llama`'s weights."""
    hf = {"architectures": ["MixtralForCausalLM" if config.n_expert else "LlamaForCausalLM"],
          "model_type": "mixtral" if config.n_expert else "llama",
          "vocab_size": config.vocab_size, "hidden_size": config.d_model, "intermediate_size": config.d_ff,
          "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
          "num_key_value_heads": config.n_kv_head, "head_dim": config.d_k, "hidden_act": "silu",
          "max_position_embeddings": config.block_size, "rms_norm_eps": config.ln_eps,
          "rope_theta": config.rope_theta,
          "rope_parameters": {"rope_theta": config.rope_theta, "rope_type": "default"},
          "attention_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": config.tie_embeddings,
          "initializer_range": 0.02, "use_cache": True, "bos_token_id": None, "eos_token_id": None,
          "pad_token_id": None, "torch_dtype": dtype}
    if config.n_expert:
        hf.update(num_local_experts=config.n_expert, num_experts_per_tok=config.top_k,
                  router_aux_loss_coef=config.aux_loss_coef, output_router_logits=False, router_jitter_noise=0.0,
                  sliding_window=None)
    else:
        hf.update(mlp_bias=False, pretraining_tp=1)
    return hf
