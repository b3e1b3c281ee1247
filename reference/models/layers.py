r"""The Transformer's encoder and decoder layers, built from the single ops (material §3.1–3.3).

An encoder layer is two sublayers, a decoder layer three, each wrapped in a residual connection and a LayerNorm
("Add & Norm"). The material's §3.3 lists the steps without the residual connections; the paper has them:

- post-LN (the paper, default):  :math:`y = \operatorname{LN}(x + \operatorname{Sublayer}(x))`
- pre-LN (GPT-2 and most models since): :math:`y = x + \operatorname{Sublayer}(\operatorname{LN}(x))`

Encoder layer:  self-attention, then the position-wise FFN.
Decoder layer:  masked self-attention, then cross-attention (queries from the decoder, keys and values from the
encoder's output ``memory``), then the FFN.

Shapes: ``x`` (B, T, C) for the decoder input or encoder input, ``memory`` (B, S, C); C = d_model, H = n_head.
The layers call the fast variants of the ops (``multihead``, ``ffn``, ``layernorm``).

Parameters are nested dicts, and the gradients come back with the same nesting::

    encoder: {"attn": {Wq, Wk, Wv, Wo, [bq, bk, bv, bo]}, "ln1": {gamma, beta},
              "ffn": {W1, b1, W2, b2}, "ln2": {gamma, beta}}
    decoder: {"attn": ..., "ln1": ..., "cross_attn": ..., "ln2": ..., "ffn": ..., "ln3": ...}

In post-LN, ``ln1`` normalises after the first sublayer's residual sum; in pre-LN it normalises the first
sublayer's input (and so on for ``ln2`` and ``ln3``). A pre-LN stack needs one more LayerNorm after its last
layer; that belongs to the model (``reference/models/transformer.py``), not to the layer.

Dropout (``reference/ops/dropout.py``) sits where the paper puts it (§5.4, "Residual Dropout"): on the output of
each sublayer, before it is added to the sublayer's input and normalised,

- post-LN: :math:`y = \operatorname{LN}(x + \operatorname{Drop}(\operatorname{Sublayer}(x)))`
- pre-LN:  :math:`y = x + \operatorname{Drop}(\operatorname{Sublayer}(\operatorname{LN}(x)))`

It is on when the caller passes ``p_drop > 0`` (training) with a ``numpy.random.Generator`` ``rng``, which draws the
masks in a fixed order (self-attention, cross-attention, FFN); generators in the same state give the same masks,
so a finite-difference check can replay them. ``p_drop = 0`` (the default, and evaluation) skips dropout entirely:
the layer then computes exactly what it computed without it.
"""
from typing import NamedTuple

from reference._checks import check_float
from reference.ops import dropout, ffn, layernorm, multihead

NORMS = ("post", "pre")
ENCODER_KEYS = ("attn", "ln1", "ffn", "ln2")
DECODER_KEYS = ("attn", "ln1", "cross_attn", "ln2", "ffn", "ln3")


def _check_layer_args(x, params, keys, norm):
    check_float("x", x)
    if x.ndim != 3:
        raise ValueError(f"x: expected shape (B, T, C), got {x.shape}")
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
    if not isinstance(params, dict) or any(k not in params for k in keys):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a dict with keys {list(keys)}, got {got}")


class AddNormCache(NamedTuple):
    norm: str                                   # "post" or "pre"
    sub: tuple                                  # the sublayer's cache (a MultiheadCache or an FFN cache)
    drop: tuple                                 # dropout's (mask, scale), or None when p_drop = 0
    ln: tuple                                   # the LayerNorm's cache


class EncoderLayerCache(NamedTuple):
    self_attn: AddNormCache
    ffn: AddNormCache


class DecoderLayerCache(NamedTuple):
    self_attn: AddNormCache
    cross_attn: AddNormCache                    # ``multihead.attention_probs(cache.cross_attn.sub)``: the alignment
    ffn: AddNormCache


# ---------------------------------------------------------------------------------------------------------------
# Add & Norm around one sublayer. ``sublayer(u) -> (s, cache)`` and ``sublayer_backward(ds, cache) -> (du, extra)``,
# where ``extra`` is whatever else the sublayer's backward returns (its parameter gradients, and for
# cross-attention also d memory).

def _add_norm_forward(x, sublayer, ln, norm, eps, p_drop, rng):
    """post: y = LN(x + Drop(S(x)));  pre: y = x + Drop(S(LN(x))).   x, y: (B, T, C)."""
    if norm == "post":
        s, c_sub = sublayer(x)                                        # (B, T, C)
        s, c_drop = _dropout_forward(s, p_drop, rng)
        y, c_ln = layernorm.forward_fast(x + s, ln["gamma"], ln["beta"], eps)
    else:
        u, c_ln = layernorm.forward_fast(x, ln["gamma"], ln["beta"], eps)  # (B, T, C)
        s, c_sub = sublayer(u)                                        # (B, T, C)
        s, c_drop = _dropout_forward(s, p_drop, rng)
        y = x + s
    return y, AddNormCache(norm, c_sub, c_drop, c_ln)


def _add_norm_backward(dy, cache, sublayer_backward):
    """Returns (dx, extra, dln) for the forward above."""
    norm, c_sub, c_drop, c_ln = cache
    if norm == "post":
        # forward: y = LN(r), r = x + Drop(S(x))
        dr, dgamma, dbeta = layernorm.backward_fast(dy, c_ln)              # (B, T, C)
        ds_dx, extra = sublayer_backward(_dropout_backward(dr, c_drop), c_sub)
        dx = dr + ds_dx                       # the residual path and the path through the sublayer
    else:
        # forward: y = x + Drop(S(u)), u = LN(x)
        du, extra = sublayer_backward(_dropout_backward(dy, c_drop), c_sub)   # (B, T, C)
        dx_ln, dgamma, dbeta = layernorm.backward_fast(du, c_ln)
        dx = dy + dx_ln                       # the residual path and the path through LN and the sublayer
    return dx, extra, {"gamma": dgamma, "beta": dbeta}


def _dropout_forward(s, p_drop, rng):
    """Drop(s) in training (``p_drop > 0``); with ``p_drop = 0`` s itself, untouched, and no cache."""
    if p_drop == 0:
        return s, None
    return dropout.forward(s, p_drop, rng=rng)


def _dropout_backward(ds, c_drop):
    return ds if c_drop is None else dropout.backward(ds, c_drop)


# The three sublayers.

def _self_attention(p, n_head, mask):
    def fwd(u):
        return multihead.forward_fast(u, u, p, n_head, mask)
    return fwd


def _self_attention_backward(ds, cache):
    # forward: s = MHA(u, u): u is both the queries' and the keys'/values' input, so its gradient is the sum.
    du_q, du_kv, dp = multihead.backward_fast(ds, cache)
    return du_q + du_kv, dp


def _cross_attention(p, n_head, memory, mask):
    def fwd(u):
        return multihead.forward_fast(u, memory, p, n_head, mask)
    return fwd


def _cross_attention_backward(ds, cache):
    # forward: s = MHA(u, memory)
    du, dmemory, dp = multihead.backward_fast(ds, cache)
    return du, (dmemory, dp)


def _feed_forward(p, activation):
    def fwd(u):
        return ffn.forward_fast(u, p["W1"], p["b1"], p["W2"], p["b2"], activation)
    return fwd


def _feed_forward_backward(ds, cache):
    # forward: s = act(u W1 + b1) W2 + b2
    du, dW1, db1, dW2, db2 = ffn.backward_fast(ds, cache)
    return du, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


# ---------------------------------------------------------------------------------------------------------------

def encoder_layer_forward(x, params, n_head, mask=None, norm="post", eps=1e-5, activation="relu", p_drop=0.0,
                          rng=None):
    r"""One encoder layer: self-attention and FFN, each with Add & Norm.

    post-LN (paper):

    .. math::
        h = \operatorname{LN}_1(x + \operatorname{Drop}(\operatorname{MHA}(x, x, x))), \qquad
        y = \operatorname{LN}_2(h + \operatorname{Drop}(\operatorname{FFN}(h)))

    pre-LN:

    .. math::
        h = x + \operatorname{MHA}(\operatorname{LN}_1(x), \dots), \qquad
        y = h + \operatorname{FFN}(\operatorname{LN}_2(h))

    Parameters
    ----------
    x : ndarray (B, T, C), float32 or float64
    params : dict
        ``{"attn", "ln1", "ffn", "ln2"}`` (see the module docstring).
    n_head : int
    mask : bool ndarray (T, T) or (B, H, T, T), axes of size 1 broadcast, optional (see ``multihead``)
        True = may attend; e.g. a source padding mask ``pad[:, None, None, :]``.
    norm : {"post", "pre"}
    eps : float
        LayerNorm epsilon.
    activation : {"relu", "gelu", "gelu_tanh"}
        The FFN's nonlinearity (the paper uses ReLU).
    p_drop : float in [0, 1]
        Dropout on each sublayer's output (module docstring); 0 (evaluation) turns it off.
    rng : numpy.random.Generator, required when ``p_drop > 0``
        Draws the dropout masks: the self-attention's, then the FFN's.

    Returns
    -------
    y : ndarray (B, T, C), x's dtype
    cache : EncoderLayerCache
    """
    _check_layer_args(x, params, ENCODER_KEYS, norm)
    drop = (p_drop, rng)
    h, c1 = _add_norm_forward(x, _self_attention(params["attn"], n_head, mask), params["ln1"], norm, eps, *drop)
    y, c2 = _add_norm_forward(h, _feed_forward(params["ffn"], activation), params["ln2"], norm, eps, *drop)
    return y, EncoderLayerCache(c1, c2)


def encoder_layer_backward(dy, cache):
    """Gradients of :func:`encoder_layer_forward`.

    Parameters
    ----------
    dy : ndarray (B, T, C)
    cache : from the forward

    Returns
    -------
    dx : ndarray (B, T, C)
    dparams : dict with the nesting of ``params``
    """
    c1, c2 = cache
    # forward: y = AddNorm_2(h, Drop(FFN))
    dh, dffn, dln2 = _add_norm_backward(dy, c2, _feed_forward_backward)
    # forward: h = AddNorm_1(x, MHA(., .))
    dx, dattn, dln1 = _add_norm_backward(dh, c1, _self_attention_backward)
    return dx, {"attn": dattn, "ln1": dln1, "ffn": dffn, "ln2": dln2}


def decoder_layer_forward(x, memory, params, n_head, self_mask=None, cross_mask=None, norm="post", eps=1e-5,
                          activation="relu", p_drop=0.0, rng=None):
    r"""One decoder layer: masked self-attention, cross-attention to ``memory``, FFN, each with Add & Norm.

    post-LN (paper):

    .. math::
        h_1 = \operatorname{LN}_1(x + \operatorname{MHA}(x, x, x; \text{causal})), \quad
        h_2 = \operatorname{LN}_2(h_1 + \operatorname{MHA}(h_1, m, m)), \quad
        y = \operatorname{LN}_3(h_2 + \operatorname{FFN}(h_2))

    pre-LN: :math:`h_1 = x + \operatorname{MHA}(\operatorname{LN}_1(x), \dots)`, and so on. ``memory`` (m) enters
    the cross-attention as it is: it was normalised by the encoder. In training each sublayer's output passes
    through dropout before the "+" (module docstring).

    Parameters
    ----------
    x : ndarray (B, T, C)
        Decoder input.
    memory : ndarray (B, S, C)
        Encoder output.
    params : dict
        ``{"attn", "ln1", "cross_attn", "ln2", "ffn", "ln3"}``.
    n_head : int
    self_mask : bool ndarray (T, T) or (B, H, T, T), axes of size 1 broadcast, optional
        True = may attend. The caller passes the causal mask (``attention.causal_mask(T, T)``), combined with
        any target padding; the layer adds nothing on its own.
    cross_mask : bool ndarray (T, S) or (B, H, T, S), axes of size 1 broadcast, optional
        Typically the source padding mask ``pad[:, None, None, :]``.
    norm : {"post", "pre"}
    eps : float
    activation : {"relu", "gelu", "gelu_tanh"}
    p_drop : float in [0, 1]
        Dropout on each sublayer's output; 0 (evaluation) turns it off.
    rng : numpy.random.Generator, required when ``p_drop > 0``
        Draws the masks: self-attention's, cross-attention's, then the FFN's.

    Returns
    -------
    y : ndarray (B, T, C), x's dtype
    cache : DecoderLayerCache
    """
    _check_layer_args(x, params, DECODER_KEYS, norm)
    check_float("memory", memory)
    if memory.ndim != 3 or memory.shape[0] != x.shape[0] or memory.shape[2] != x.shape[2]:
        raise ValueError(f"memory: expected shape ({x.shape[0]}, S, {x.shape[2]}) to match x {x.shape}, "
                         f"got {memory.shape}")
    drop = (p_drop, rng)
    h1, c1 = _add_norm_forward(x, _self_attention(params["attn"], n_head, self_mask), params["ln1"], norm, eps, *drop)
    h2, c2 = _add_norm_forward(h1, _cross_attention(params["cross_attn"], n_head, memory, cross_mask),
                               params["ln2"], norm, eps, *drop)
    y, c3 = _add_norm_forward(h2, _feed_forward(params["ffn"], activation), params["ln3"], norm, eps, *drop)
    return y, DecoderLayerCache(c1, c2, c3)


def decoder_layer_backward(dy, cache):
    """Gradients of :func:`decoder_layer_forward`.

    Parameters
    ----------
    dy : ndarray (B, T, C)
    cache : from the forward

    Returns
    -------
    dx : ndarray (B, T, C)
    dmemory : ndarray (B, S, C)
    dparams : dict with the nesting of ``params``
    """
    c1, c2, c3 = cache
    # forward: y = AddNorm_3(h2, FFN)
    dh2, dffn, dln3 = _add_norm_backward(dy, c3, _feed_forward_backward)
    # forward: h2 = AddNorm_2(h1, MHA(., memory))
    dh1, (dmemory, dcross), dln2 = _add_norm_backward(dh2, c2, _cross_attention_backward)
    # forward: h1 = AddNorm_1(x, MHA(., .))
    dx, dself, dln1 = _add_norm_backward(dh1, c1, _self_attention_backward)
    dparams = {"attn": dself, "ln1": dln1, "cross_attn": dcross, "ln2": dln2, "ffn": dffn, "ln3": dln3}
    return dx, dmemory, dparams
